"""The IR builder: the closed vocabulary, one node per op instance, experts as a dim, spans."""

from __future__ import annotations

import importlib
from collections import Counter
from importlib import resources

from switchc.ir import build_graph, op_of
from switchc.ir import ops as irops
from switchc.ir.routing import expert_capacity, routing, tokens_per_group
from switchc.passes import verify
from switchc.spec import load_spec
from tests.ir.tiny import TINY, tiny


def kinds(graph) -> Counter[str]:
    return Counter(op_of(graph, node).kind for node in graph.nodes)


def test_every_model_op_kind_appears_in_a_tiny_spec() -> None:
    spec = tiny("model.dropout_rate=0.1", "moe.z_loss_coef=0.001")
    found = set(kinds(verify(build_graph(spec))))
    assert found == {op.__name__ for op in irops.MODEL_OPS}


def test_switch_tiny_has_the_hand_counted_nodes() -> None:
    # 2+2 blocks, expert_every 2: block 1 of each stack is a Switch layer, block 0 a dense FFN.
    counted = kinds(build_graph(tiny()))
    assert counted["Attention"] == 2 + 2 * 2  # encoder self; decoder self + cross
    assert counted["RMSNorm"] == (2 * 2 + 1) + (2 * 3 + 1)  # per sublayer, plus a final norm per stack
    assert counted["Residual"] == 2 * 2 + 2 * 3
    assert counted["DenseFFN"] == 2
    for kind in ("Group", "Router", "Dispatch", "ExpertFFN", "Combine", "Ungroup", "AuxLoss"):
        assert counted[kind] == 2, kind
    assert counted["Embed"] == 2 and counted["RelativeBias"] == 2
    assert counted["Dropout"] == 0 and counted["RouterZLoss"] == 0  # rates and coefficients are 0


def test_experts_are_one_node_and_the_graph_does_not_grow_with_them() -> None:
    small = build_graph(load_spec("specs/switch-c.yaml", ["moe.num_experts=64", "mesh.axes={expert: 64}"]))
    large = build_graph(load_spec("specs/switch-c.yaml"))
    assert small.number_of_nodes() == large.number_of_nodes()
    experts = [op_of(large, n) for n in large.nodes if op_of(large, n).kind == "ExpertFFN"]
    assert len(experts) == 30
    assert all(isinstance(op, irops.ExpertFFN) and op.num_experts == 2048 for op in experts)
    wi = experts[0].params()[0]
    assert wi.tensor.names == ("experts", "embed", "mlp") and wi.tensor.dims[0].size == 2048


def test_nodes_keep_the_span_of_the_spec_value_they_came_from() -> None:
    graph = build_graph(tiny())
    lines = TINY.splitlines()
    experts = op_of(graph, "encoder/1/experts")
    assert lines[experts.span.line - 1].strip().startswith("num_experts: 8")
    attention = op_of(graph, "decoder/0/cross_attention")
    assert lines[attention.span.line - 1].strip().startswith("num_heads: 4")
    assert str(experts.span) == f"tiny.yaml:{experts.span.line}:16"


def test_an_override_span_points_at_the_command_line() -> None:
    graph = build_graph(tiny("moe.num_experts=16"))
    assert op_of(graph, "encoder/1/router").span.source.name == "<command line>"


def test_shared_embedding_is_one_parameter_for_both_stacks_and_tied_logits() -> None:
    graph = build_graph(tiny("model.tie_embeddings=true"))
    names = {op_of(graph, n).params()[0].name for n in ("encoder/embed", "decoder/embed", "decoder/logits")}
    assert names == {"shared/embedding"}


def test_routing_groups_and_capacity_follow_the_documented_rule() -> None:
    assert tokens_per_group(32768, 4096) == 4096
    assert tokens_per_group(7296, 4096) == 3648  # 64 x 114 decoder tokens: two groups
    assert tokens_per_group(512, 4096) == 512  # fewer tokens than a group: one group
    assert tokens_per_group(1000, 3) == 2  # largest divisor at most 3
    assert expert_capacity(4096, 128, 1, 1.25, 4) == 40  # eq. 3
    assert expert_capacity(3648, 128, 1, 1.25, 4) == 36  # ceil(35.625)
    assert expert_capacity(4096, 128, 2, 2.0, 4) == 128  # top-2 claims two slots per token
    assert expert_capacity(512, 2048, 1, 1.0, 4) == 4  # the floor
    assert expert_capacity(3, 2, 1, 2.0, 4) == 3  # never more than the group
    assert expert_capacity(4096, 8, 1, 1e308, 4) == 4096  # a factor whose product overflows to inf: the group
    plan = routing(7296, 4096, 128, 1, 1.25, 4)
    assert (plan.tokens_per_group, plan.groups_per_device, plan.capacity) == (3648, 2, 36)


def test_routing_is_the_one_rule_every_generated_program_carries() -> None:
    """The cost model's rule is backends/common/routing.py, which both programs copy and import."""
    from switchc.backends.common import routing as shared

    assert tokens_per_group is shared.routing_group_size
    assert expert_capacity is shared.expert_capacity
    for backend in ("jax", "torch"):
        program = importlib.import_module(f"switchc.backends.{backend}.program")
        assert "routing.py" in program.COMMON_MODULES
        moe = (resources.files(f"switchc.backends.{backend}.runtime") / "moe.py").read_text(encoding="utf-8")
        assert "from . import routing" in moe
        assert "def expert_capacity" not in moe and "def routing_group_size" not in moe
