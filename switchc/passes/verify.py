"""The verifier: checks a graph's structure, shapes and (once sharded) shardings after every pass.

Structure: only ops from the closed vocabulary; node names equal op names; insertion order is a
topological order; every input port fed exactly once, by a producer whose output has the port's
dim sizes and dtype; one Output sink; no collectives before sharding.
Sharding: every tensor of every op is laid out over existing mesh axes, each used once per
tensor, and every split dim divides evenly; each data edge's producer layout equals its
consumer's (the pass inserted whatever collective was needed); each collective's declared layouts,
group size and bytes match what they move.

A dim that does not divide over its mesh axes is the user's to fix (a located UserError at the
rule or axis that split it); anything else is a switchc bug (GraphError).
"""

from __future__ import annotations

from switchc.errors import Diagnostic, UserError
from switchc.ir import ops
from switchc.ir.graph import Graph, GraphError, GraphInfo, info
from switchc.ir.tensor import DTYPE_BYTES, Layout, TensorType, local_bytes, local_numel

_VOCABULARY = frozenset(ops.VOCABULARY)


def verify(graph: Graph) -> Graph:
    """Raise GraphError (or UserError for an impossible split) unless `graph` is valid; return it."""
    meta = info(graph)
    position = {node: index for index, node in enumerate(graph.nodes)}
    sinks = 0
    for node, data in graph.nodes(data=True):
        op = data.get("op")
        if type(op) not in _VOCABULARY:
            raise GraphError(node, None, f"{type(op).__name__} is not an op of the IR vocabulary")
        assert isinstance(op, ops.Op)
        if op.name != node:
            raise GraphError(node, op.span, f"node holds op named '{op.name}'")
        if isinstance(op, ops.Output):
            sinks += 1
        if isinstance(op, ops.Collective | ops.GradientAllReduce) and not meta.sharded:
            raise GraphError(node, op.span, "a collective in a graph that has not been sharded")
        _check_ports(graph, node, op, position)
    if sinks != 1:
        raise GraphError("<graph>", meta.start, f"expected one Output node, found {sinks}")
    if meta.sharded:
        _check_sharding(graph, meta)
    return graph


def _same_shape(a: TensorType, b: TensorType) -> bool:
    # Dim names are local to an op, like einsum indices (the encoder's `length` is a
    # cross-attention's `kv_length`): an edge must agree on sizes and dtype, position by position.
    return a.dtype == b.dtype and [d.size for d in a.dims] == [d.size for d in b.dims]


def _check_ports(graph: Graph, node: str, op: ops.Op, position: dict[str, int]) -> None:
    expected = op.inputs()
    ports: list[int] = []
    gradient_sources = 0
    for src, _, edge in graph.in_edges(node, data=True):
        if position[src] >= position[node]:
            raise GraphError(node, op.span, f"its input {src} comes later in the graph (a cycle or bad order)")
        if edge.get("gradient"):
            gradient_sources += 1
            continue
        port = edge["port"]
        ports.append(port)
        if not 0 <= port < len(expected):
            raise GraphError(node, op.span, f"edge from {src} into port {port}; the op has {len(expected)} inputs")
        produced = graph.nodes[src]["op"].output()
        if produced is None or not _same_shape(produced, expected[port]):
            got = produced.shape_text() if produced else "nothing"
            raise GraphError(node, op.span, f"port {port} expects {expected[port].shape_text()}, {src} gives {got}")
        if not _same_shape(edge["tensor"], produced):
            raise GraphError(node, op.span, f"edge from {src} is labelled {edge['tensor'].shape_text()}")
    if sorted(ports) != list(range(len(expected))):
        raise GraphError(node, op.span, f"input ports fed: {sorted(ports)}; expected 0..{len(expected) - 1}")
    wants_gradient = isinstance(op, ops.GradientAllReduce)
    if gradient_sources != (1 if wants_gradient else 0):
        raise GraphError(node, op.span, f"{gradient_sources} gradient edges in")


def _check_layout(meta: GraphInfo, node: str, op: ops.Op, what: str, tensor: TensorType, layout: Layout) -> None:
    mesh = meta.mesh
    if len(layout.axes) != len(tensor.dims):
        raise GraphError(node, op.span, f"{what}: layout {layout.text()} does not fit {tensor.shape_text()}")
    seen: set[str] = set()
    for dim, axes in zip(tensor.dims, layout.axes, strict=True):
        for axis in (*axes, *layout.partial):
            if axis not in mesh.names:
                raise GraphError(node, op.span, f"{what}: unknown mesh axis '{axis}'")
        repeated = seen & set(axes)
        if repeated:
            raise GraphError(node, op.span, f"{what}: mesh axis '{sorted(repeated)[0]}' splits two dims")
        seen |= set(axes)
        shards = mesh.size(axes)
        if dim.size % shards:
            logical = dim.logical[0] if dim.logical else dim.name
            raise UserError(
                [
                    Diagnostic(
                        f"{dim.name} ({dim.size}) of {op.kind} '{op.name}' is not divisible by its "
                        f"{shards} shards over mesh axes {', '.join(axes)}",
                        meta.rule_span(logical),
                        f"change mesh.rules.{logical} or mesh.axes so that {dim.size} divides evenly",
                        notes=(("the op comes from here", op.span),),
                    )
                ]
            )


def _check_sharding(graph: Graph, meta: GraphInfo) -> None:
    mesh = meta.mesh
    param_layouts: dict[str, Layout] = {}
    for _, data in graph.nodes(data=True):
        layout = data.get("layout")
        if isinstance(layout, ops.OpLayout):
            param_layouts.update({p.name: pl for p, pl in zip(data["op"].params(), layout.params, strict=True)})
    for node, data in graph.nodes(data=True):
        op: ops.Op = data["op"]
        layout = data.get("layout")
        if not isinstance(layout, ops.OpLayout):
            raise GraphError(node, op.span, "no layout after sharding")
        loop_dims = op.loop()
        if [name for name, _ in layout.loop] != [d.name for d in loop_dims]:
            raise GraphError(node, op.span, "layout loop dims differ from the op's loop")
        _check_layout(meta, node, op, "loop", _loop_type(loop_dims), Layout(tuple(a for _, a in layout.loop)))
        for port, (tensor, placed) in enumerate(zip(op.inputs(), layout.inputs, strict=True)):
            _check_layout(meta, node, op, f"input {port}", tensor, placed)
        out = op.output()
        if (out is None) != (layout.output is None):
            raise GraphError(node, op.span, "output and output layout disagree")
        if out is not None and layout.output is not None:
            _check_layout(meta, node, op, "output", out, layout.output)
        for param, placed in zip(op.params(), layout.params, strict=True):
            _check_layout(meta, node, op, f"parameter {param.name}", param.tensor, placed)
        for src, _, edge in graph.in_edges(node, data=True):
            if edge.get("gradient"):
                continue
            produced = graph.nodes[src]["layout"].output
            wanted = layout.inputs[edge["port"]]
            if produced is None or not produced.same_as(wanted):
                got = produced.text() if produced else "nothing"
                raise GraphError(node, op.span, f"port {edge['port']} reads {wanted.text()} but {src} writes {got}")
        if isinstance(op, ops.Collective):
            _check_collective(meta, node, op)
        if isinstance(op, ops.GradientAllReduce):
            size = sum(
                local_numel(p.tensor, param_layouts[p.name], mesh) * DTYPE_BYTES[p.tensor.dtype]
                for p in op.params_reduced
            )
            if size != op.bytes_per_device or op.group_size != mesh.size(op.mesh_axes) or not op.mesh_axes:
                raise GraphError(node, op.span, "gradient reduction size or group disagrees with its parameters")


def _loop_type(dims: tuple[ops.Dim, ...]) -> TensorType:
    return TensorType(dims, "float32")


def _check_collective(meta: GraphInfo, node: str, op: ops.Collective) -> None:
    mesh = meta.mesh
    if not op.mesh_axes or op.group_size != mesh.size(op.mesh_axes):
        raise GraphError(node, op.span, f"group of {op.group_size} over {op.mesh_axes}")
    if isinstance(op, ops.AllGather):
        expected = local_bytes(op.tensor, op.dst, mesh)
    else:
        expected = local_bytes(op.tensor, op.src, mesh)
    if expected != op.bytes_per_device:
        raise GraphError(node, op.span, f"declares {op.bytes_per_device} bytes per device, moves {expected}")
