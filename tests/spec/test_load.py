"""Loading a spec: defaults, spans, YAML 1.2 scalars, overrides, equality."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from switchc.errors import PlainUserError, Source, UserError
from switchc.spec import MoEConfig, load_spec, parse_spec


def parse(text: str, *overrides: str):
    return parse_spec(Source("s.yaml", textwrap.dedent(text)), overrides)


def test_absent_keys_take_the_paper_defaults_and_are_marked() -> None:
    spec = parse("model:\n  d_model: 64\nmoe: {}\n")
    assert spec.model.d_model == 64 and not spec.is_default("model.d_model")
    assert spec.model.vocab_size == 32128 and spec.is_default("model.vocab_size")
    assert spec.moe == MoEConfig()
    assert spec.moe.aux_loss_coef == 0.01 and spec.moe.capacity_factor.train == 1.25
    assert spec.is_default("moe.num_experts")


def test_absent_or_null_moe_is_a_dense_model() -> None:
    assert parse("model: {}\n").moe is None
    assert parse("moe: null\n").moe is None
    assert parse("moe: ~\n").moe is None
    with pytest.raises(UserError, match="the moe section is empty"):  # no value written: refused, see test_errors
        parse("moe:\n")


def test_values_keep_their_spans() -> None:
    spec = parse("model:\n  d_model: 64\nmoe:\n  capacity_factor: {train: 1.5}\n")
    span = spec.span("moe.capacity_factor.train")
    assert (span.line, span.column, span.end_column) == (4, 28, 31)
    key = spec.key_span("model.d_model")
    assert (key.line, key.column) == (2, 3)
    # a defaulted value points at its section, or at the file's start when that is absent too
    assert spec.span("model.d_ff").line == 1
    assert (spec.span("train.steps").line, spec.span("train.steps").column) == (1, 1)


def test_yaml_1_2_scalars() -> None:
    spec = parse("moe:\n  aux_loss_coef: 1e-2\n  z_loss_coef: .001\n  num_experts: 0x10\n")
    assert spec.moe is not None
    assert spec.moe.aux_loss_coef == 0.01  # a string under YAML 1.1 loaders
    assert spec.moe.z_loss_coef == 0.001
    assert spec.moe.num_experts == 16


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    spec = parse("moe:\n  capacity_factor: {train: 2, eval: 3}\n")
    assert spec.moe is not None and spec.moe.capacity_factor.train == 2.0
    assert isinstance(spec.moe.capacity_factor.train, float)


def test_mesh_rules_accept_a_name_a_list_or_null() -> None:
    spec = parse("mesh:\n  axes: {data: 2, expert: 1}\n  rules: {batch: data, experts: [expert], vocab: null}\n")
    rules = spec.mesh.logical_rules()
    assert rules["batch"] == ("data",) and rules["experts"] == ("expert",) and rules["vocab"] == ()


def test_standard_rules_use_only_axes_the_mesh_has() -> None:
    mesh = parse("mesh:\n  axes: {data: 2, expert: 4}\ntrain: {batch_size: 16}\n").mesh
    rules = mesh.logical_rules()
    assert rules["batch"] == ("data", "expert")  # tokens split over every device
    assert rules["mlp"] == () and rules["heads"] == ()
    assert mesh.shards("batch") == 8 and mesh.shards("experts") == 4 and mesh.num_devices == 8


def test_mesh_axes_keep_their_order() -> None:
    mesh = parse("mesh:\n  axes: {model: 2, data: 4}\ntrain: {batch_size: 8}\n").mesh
    assert list(mesh.axes) == ["model", "data"]


def test_overrides_replace_file_values_and_create_sections() -> None:
    spec = parse("model:\n  d_model: 64\n", "model.d_model=128", "moe.num_experts=4", "moe.top_k=2")
    assert spec.model.d_model == 128
    assert spec.moe is not None and (spec.moe.num_experts, spec.moe.top_k) == (4, 2)
    assert spec.span("model.d_model").source.name == "<command line>"
    assert not spec.is_default("moe.num_experts")


def test_override_with_a_mapping_value() -> None:
    spec = parse("train: {batch_size: 8}\n", "mesh.axes={data: 2, expert: 4}")
    assert spec.mesh.axes == {"data": 2, "expert": 4}


def test_the_same_override_twice_is_fine() -> None:
    assert parse("moe: {}\n", "moe.top_k=2", "moe.top_k=2").moe.top_k == 2  # type: ignore[union-attr]


def test_override_to_null_makes_the_model_dense() -> None:
    assert parse("moe: {num_experts: 4}\n", "moe=null").moe is None


def test_equality_ignores_where_values_came_from() -> None:
    a = parse("model:\n  d_model: 64\n")
    b = parse("# a comment moves every line\nmodel: {d_model: 64}\n")
    assert a == b and a.span("model.d_model") != b.span("model.d_model")


def test_builtin_names_and_missing_files() -> None:
    assert load_spec("switch-tiny").moe is not None
    with pytest.raises(PlainUserError, match="no such spec") as info:
        load_spec("switch-tinyy")
    assert info.value.hint == "did you mean 'switch-tiny'?"


def test_a_directory_with_a_builtin_name_hints_at_the_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`switchc compile switch-base -o switch-base` makes such a directory: the name then reads it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "switch-base").mkdir()
    with pytest.raises(PlainUserError, match="switch-base is a directory") as info:
        load_spec("switch-base")
    assert (
        info.value.hint
        == "for the built-in spec switch-base, pass switch-base.yaml (the name alone reads this directory)"
    )
    assert load_spec("switch-base.yaml").moe is not None
    (tmp_path / "other").mkdir()
    with pytest.raises(PlainUserError, match="other is a directory") as info:
        load_spec("other")
    assert info.value.hint == "pass a spec file such as specs/switch-tiny.yaml"


def test_spec_is_frozen() -> None:
    spec = parse("model: {}\n")
    with pytest.raises(AttributeError):
        spec.model.d_model = 1  # type: ignore[misc]


def test_resolved_yaml_loads_back_into_an_equal_spec() -> None:
    from switchc.spec.emit import to_yaml
    from tests.conftest import SPEC_FILES

    for path in SPEC_FILES:
        spec = load_spec(str(path))
        again = parse_spec(Source("resolved.yaml", to_yaml(spec)))
        assert again == spec, path
        assert not any(again.is_default(p) for p, _ in again.leaves()), path  # every key is written
