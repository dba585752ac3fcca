"""Every YAML spec in specs/ has a DSL twin that builds the identical IR graph."""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from pathlib import Path

import pytest

from switchc.ir import build_graph, op_of
from switchc.passes import lower
from switchc.spec import builtin_spec_names, load_spec
from switchc.spec.emit import differences, spec_digest, to_yaml
from switchc.spec.printer import format_spec
from switchc.spec.schema import LayoutConfig
from tests.conftest import REPO, SPEC_FILES, SPECS_DIR

TWINS = sorted(SPECS_DIR.glob("*.switch"))


def assert_same_graph(a, b) -> None:
    """Same nodes in the same order, equal ops (spans aside), same edges with equal tensors, same info."""
    assert list(a.nodes) == list(b.nodes)
    for node in a.nodes:
        assert op_of(a, node) == op_of(b, node), node
    assert list(a.edges(data=True)) == list(b.edges(data=True))
    assert a.graph["info"] == b.graph["info"]


def test_every_yaml_spec_has_a_twin_and_every_twin_a_yaml_spec() -> None:
    assert [p.stem for p in SPEC_FILES] == [p.stem for p in TWINS]
    assert set(builtin_spec_names()) == {p.stem for p in SPEC_FILES}


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_twins_build_identical_graphs(path) -> None:
    twin = path.with_suffix(".switch")
    yaml, dsl = load_spec(str(path)), load_spec(str(twin))
    assert dsl.name == yaml.name
    # the same spec, except that the twin writes its blocks (a layout) where YAML has expert_every
    assert dataclasses.replace(dsl, layout=LayoutConfig()) == yaml
    assert dsl.layout.encoder is not None and dsl.layout.decoder is not None
    assert_same_graph(build_graph(yaml), build_graph(dsl))
    assert_same_graph(lower(yaml), lower(dsl))
    # ... and one run: a run started from either resumes from the other (spec.yaml, checkpoints)
    assert differences(to_yaml(yaml), dsl) == [] and differences(to_yaml(dsl), yaml) == []
    assert spec_digest(yaml) == spec_digest(dsl)
    assert _header(path) == _header(twin)


def _header(path: Path) -> list[str]:
    """The comment lines a spec file opens with."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return list(itertools.takewhile(lambda line: line.startswith("#"), lines))


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.stem)
def test_twins_are_formatted(path) -> None:
    assert format_spec(load_spec(str(path)), "dsl") == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_library_yaml_is_formatted(path) -> None:
    assert format_spec(load_spec(str(path)), "yaml") == path.read_text(encoding="utf-8")


def test_builtin_twins_load_by_name() -> None:
    assert load_spec("switch-c.switch").origin.source.name == "<builtin>/switch-c.switch"
    assert_same_graph(build_graph(load_spec("switch-c")), build_graph(load_spec("switch-c.switch")))


def test_the_grammar_and_the_twins_ship_in_the_package() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.lark" in data["switchc.spec"] and "*.switch" in data["switchc.specs"]
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("lark") for d in dependencies)
