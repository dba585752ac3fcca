"""The graph container: what a switchc IR graph holds besides its ops, and how to walk it.

A graph is a plain networkx.DiGraph. `graph.graph["info"]` is a `GraphInfo`: the resolved
sections of the spec that analyses need (sizes, mesh, training settings) and where the mesh's
axes and rules were written, so that passes and analyses never go back to the spec text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeAlias

import networkx as nx

from switchc.errors import Span
from switchc.ir.ops import Op, OpLayout
from switchc.ir.routing import Routing
from switchc.ir.tensor import Mesh
from switchc.spec.schema import ModelConfig, MoEConfig, TrainConfig

Graph: TypeAlias = nx.DiGraph


@dataclass(frozen=True)
class GraphInfo:
    """Everything about the model that is not an op: sizes, mesh, training, routing per stack."""

    name: str
    model: ModelConfig
    moe: MoEConfig | None
    train: TrainConfig
    mesh: Mesh
    # Where each mesh axis ("axes.<name>") and rule ("rules.<logical>") was written; a rule the
    # spec did not write maps to the span of the mesh axes it resolves to.
    mesh_spans: Mapping[str, Span] = field(compare=False, repr=False)
    start: Span = field(compare=False, repr=False)
    routing: Mapping[str, Routing] = field(default_factory=dict)  # "encoder" / "decoder" -> routing
    sharded: bool = False

    @property
    def num_devices(self) -> int:
        return self.mesh.num_devices

    def axis_span(self, axes: tuple[str, ...]) -> Span:
        """Where the first of `axes` was defined (the mesh axis a collective runs over)."""
        for axis in axes:
            span = self.mesh_spans.get(f"axes.{axis}")
            if span is not None:
                return span
        return self.mesh_spans.get("axes", self.start)

    def rule_span(self, logical: str) -> Span:
        return self.mesh_spans.get(f"rules.{logical}") or self.mesh_spans.get("axes", self.start)

    def with_sharded(self) -> GraphInfo:
        return replace(self, sharded=True)


class GraphError(Exception):
    """An inconsistent graph: a bug in switchc (a pass or builder), never a user mistake."""

    def __init__(self, node: str, span: Span | None, message: str) -> None:
        self.node = node
        self.span = span
        where = f"{span}: " if span is not None else ""
        super().__init__(f"{where}internal error in IR node '{node}': {message}")


def info(graph: Graph) -> GraphInfo:
    value = graph.graph.get("info")
    if not isinstance(value, GraphInfo):
        raise GraphError("<graph>", None, "graph.graph['info'] is missing")
    return value


def op_of(graph: Graph, node: str) -> Op:
    op: Op = graph.nodes[node]["op"]
    return op


def layout_of(graph: Graph, node: str) -> OpLayout:
    layout = graph.nodes[node].get("layout")
    if not isinstance(layout, OpLayout):
        raise GraphError(node, op_of(graph, node).span, "no layout: the graph has not been sharded")
    return layout


def all_ops(graph: Graph) -> Iterator[Op]:
    """Every op in insertion order, which builders and passes keep topological (verify checks)."""
    for _, data in graph.nodes(data=True):
        yield data["op"]


def data_inputs(graph: Graph, node: str) -> list[tuple[int, str]]:
    """(port, producer) for each data edge into `node`, by port."""
    found = [(data["port"], src) for src, _, data in graph.in_edges(node, data=True) if not data.get("gradient")]
    return sorted(found)
