"""The IR: a networkx graph of typed ops (switchc.ir.ops) with named, logically-sharded tensors.

from switchc.ir import build_graph
graph = build_graph(load_spec("specs/switch-base.yaml"))
"""

from switchc.ir.build import build_graph, mesh_of
from switchc.ir.graph import Graph, GraphError, GraphInfo, all_ops, data_inputs, info, layout_of, op_of
from switchc.ir.routing import Routing, expert_capacity, routing, tokens_per_group
from switchc.ir.tensor import DTYPE_BYTES, Dim, Layout, Mesh, Param, TensorType

__all__ = [
    "DTYPE_BYTES",
    "Dim",
    "Graph",
    "GraphError",
    "GraphInfo",
    "Layout",
    "Mesh",
    "Param",
    "Routing",
    "TensorType",
    "all_ops",
    "build_graph",
    "data_inputs",
    "expert_capacity",
    "info",
    "layout_of",
    "mesh_of",
    "op_of",
    "routing",
    "tokens_per_group",
]
