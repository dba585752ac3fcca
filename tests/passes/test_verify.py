"""The verifier: it accepts every graph the passes make and rejects broken ones, precisely."""

from __future__ import annotations

import dataclasses
import re

import networkx as nx
import pytest

from switchc.errors import UserError
from switchc.ir import GraphError, Layout, build_graph, op_of
from switchc.ir.ops import OpLayout, Output
from switchc.passes import lower, shard, verify
from tests.conftest import SPEC_FILES
from tests.ir.tiny import tiny, tiny_dense


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_every_library_spec_lowers_and_verifies(path) -> None:
    from switchc.spec import load_spec

    verify(lower(load_spec(str(path))))


@pytest.mark.parametrize(
    "mesh",
    [
        "{data: 4}",
        "{model: 4}",
        "{data: 2, model: 2}",
        "{data: 2, expert: 4}",
        "{data: 2, expert: 2, model: 2}",
        "{expert: 8}",
    ],
)
def test_every_parallelism_mode_verifies(mesh: str) -> None:
    verify(lower(tiny(f"mesh.axes={mesh}")))


def test_an_op_outside_the_vocabulary_is_rejected() -> None:
    graph = build_graph(tiny())
    graph.nodes["encoder/0/ffn"]["op"] = "not an op"
    with pytest.raises(GraphError, match="not an op of the IR vocabulary"):
        verify(graph)


def test_a_port_whose_shape_disagrees_is_rejected() -> None:
    graph = build_graph(tiny())
    op = op_of(graph, "encoder/0/ffn")
    graph.nodes["encoder/0/ffn"]["op"] = dataclasses.replace(op, d_model=64)
    with pytest.raises(GraphError, match=r"encoder/0/ffn.*port 0 expects"):
        verify(graph)


def test_a_missing_input_is_rejected() -> None:
    graph = build_graph(tiny())
    graph.remove_edge("encoder/0/attention_norm", "encoder/0/attention")
    with pytest.raises(GraphError, match="ports fed"):
        verify(graph)


def test_a_second_output_is_rejected() -> None:
    graph = build_graph(tiny())
    extra = dataclasses.replace(op_of(graph, "output"), name="output2")
    graph.add_node("output2", op=extra)
    graph.add_edge("loss", "output2", port=0, tensor=op_of(graph, "loss").output())
    with pytest.raises(GraphError, match="one Output"):
        verify(graph)


def test_a_cycle_is_rejected() -> None:
    graph = build_graph(tiny())
    graph.add_edge("output", "encoder/0/attention_residual", port=2, tensor=None)
    with pytest.raises(GraphError):
        verify(graph)


def test_a_layout_mismatch_after_sharding_is_rejected() -> None:
    graph = shard(build_graph(tiny("mesh.axes={data: 2, expert: 4}")))
    node = "encoder/1/experts"
    placed: OpLayout = graph.nodes[node]["layout"]
    wrong = dataclasses.replace(placed, inputs=(Layout((("data", "expert"), (), (), ())),))
    graph.nodes[node]["layout"] = wrong
    with pytest.raises(GraphError, match="reads"):
        verify(graph)


def test_sharding_twice_is_an_error() -> None:
    with pytest.raises(GraphError, match="already sharded"):
        shard(lower(tiny()))


def test_a_dim_that_does_not_divide_is_a_located_user_error() -> None:
    """The lowering's own check, the net under the spec's (which refuse a length rule, and check
    the divisibility of every dim they allow): a spec built in code with the sequence over 3."""
    checked = tiny_dense("mesh.axes={data: 1, seq: 3}", "mesh.rules={batch: [data, seq]}", "train.batch_size=3")
    spec = dataclasses.replace(checked, mesh=dataclasses.replace(checked.mesh, rules={"length": ("seq",)}))
    with pytest.raises(UserError) as info:
        lower(spec)
    text = info.value.render()
    assert "length (128)" in text and "not divisible by its 3 shards" in text
    assert re.match(r"<command line>:\d+:\d+: error: ", text)  # located (with no rule written: at the size)


def test_collectives_in_an_unsharded_graph_are_rejected() -> None:
    sharded = lower(tiny("mesh.axes={data: 2}"))
    plain = nx.DiGraph(sharded)
    plain.graph["info"] = dataclasses.replace(plain.graph["info"], sharded=False)
    with pytest.raises(GraphError, match="has not been sharded"):
        verify(plain)


def test_output_is_the_one_sink() -> None:
    graph = lower(tiny())
    sinks = [n for n in graph.nodes if graph.out_degree(n) == 0 and isinstance(op_of(graph, n), Output)]
    assert sinks == ["output"]
