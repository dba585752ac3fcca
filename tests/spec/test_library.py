"""The spec library: every file validates, and the paper's models say what PAPER.md says."""

from __future__ import annotations

import pytest

from switchc.spec import builtin_spec_names, load_spec
from tests.conftest import SPEC_FILES

# Table 9 of the paper: d_model, GEGLU, d_ff, d_kv, heads, layers per stack, experts, expert every.
TABLE_9 = {
    "t5-base": (768, True, 2048, 64, 12, 12, None, None),
    "t5-large": (1024, True, 2816, 64, 16, 24, None, None),
    "t5-xxl": (4096, True, 10240, 64, 64, 24, None, None),
    "switch-base": (768, True, 2048, 64, 12, 12, 128, 2),
    "switch-large": (1024, True, 2816, 64, 16, 24, 128, 2),
    "switch-xxl": (4096, True, 10240, 64, 64, 24, 64, 2),
    "switch-c": (2080, False, 6144, 64, 32, 15, 2048, 1),
}


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_every_spec_in_the_library_validates(path) -> None:
    spec = load_spec(str(path))
    assert spec.name == path.stem


def test_library_holds_the_paper_models_and_the_cpu_pair() -> None:
    names = set(builtin_spec_names())
    assert set(TABLE_9) | {"moe-base", "switch-tiny", "dense-tiny"} <= names


@pytest.mark.parametrize("name", sorted(TABLE_9))
def test_table_9_rows(name: str) -> None:
    d_model, geglu, d_ff, d_kv, heads, layers, experts, every = TABLE_9[name]
    spec = load_spec(name)
    model = spec.model
    assert (model.d_model, model.d_ff, model.d_kv, model.num_heads) == (d_model, d_ff, d_kv, heads)
    assert model.encoder_layers == model.decoder_layers == layers
    assert (model.ffn_activation == "geglu") is geglu
    assert model.vocab_size == 32128
    assert (spec.train.inputs_length, spec.train.targets_length) == (512, 114)
    if experts is None:
        assert spec.moe is None
    else:
        assert spec.moe is not None
        assert (spec.moe.num_experts, spec.moe.expert_every, spec.moe.top_k) == (experts, every, 1)


def test_switch_c_uses_its_capacity_factors() -> None:
    moe = load_spec("switch-c").moe
    assert moe is not None
    assert (moe.capacity_factor.train, moe.capacity_factor.eval) == (1.0, 2.0)


def test_moe_base_is_switch_base_with_top_2() -> None:
    moe_base, switch_base = load_spec("moe-base"), load_spec("switch-base")
    assert moe_base.model == switch_base.model
    assert moe_base.moe is not None and moe_base.moe.top_k == 2
    assert moe_base.moe.num_experts == 128


def test_dense_tiny_is_switch_tiny_without_experts() -> None:
    dense, switch = load_spec("dense-tiny"), load_spec("switch-tiny")
    assert dense.moe is None and switch.moe is not None
    assert dense.model == switch.model
    assert (dense.mesh, dense.train, dense.data) == (switch.mesh, switch.train, switch.data)
    assert switch.model.dtype == "float32"
