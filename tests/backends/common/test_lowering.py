"""The shared half of lowering: every backend has a rule for every model op, and fails loudly otherwise."""

from __future__ import annotations

import pytest
from switchc.backends.common.lowering import SHARED_RULES, LoweringError, output_name
from switchc.backends.jax.lower import RULES as JAX_RULES
from switchc.backends.torch.lower import RULES as TORCH_RULES

from switchc.ir import build_graph, op_of
from switchc.ir import ops as ir
from switchc.spec import load_spec


@pytest.mark.parametrize("table", [JAX_RULES, TORCH_RULES], ids=lambda table: table.backend)
def test_every_model_op_has_one_rule(table) -> None:
    for kind in ir.MODEL_OPS:
        assert (kind in table.rules) != (kind in SHARED_RULES), kind.__name__


def test_an_op_without_a_rule_is_a_located_error() -> None:
    graph = build_graph(load_spec("switch-tiny"))
    op = op_of(graph, "encoder/1/router")
    with pytest.raises(LoweringError, match=r"has no variable of its own"):
        output_name(op)
    reduction = ir.GradientAllReduce(
        name="grad",
        layer="encoder.1",
        span=op.span,
        params_reduced=(),
        mesh_axes=("data",),
        group_size=2,
        bytes_per_device=0,
        source="encoder/1/router",
    )
    with pytest.raises(LoweringError, match=r"the PyTorch backend has no lowering rule for GradientAllReduce"):
        TORCH_RULES.lookup(reduction)
