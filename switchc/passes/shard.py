"""The sharding pass: place every op on the mesh and make every collective an explicit node.

Each op's loop dims get mesh axes from the spec's logical-axis rules (switchc.ir.tensor
resolve_axes); the tensors it reads, writes and owns get the restriction of that layout. Where a
producer's output layout differs from what its consumer reads, the pass inserts the collectives
that turn one into the other, in this order:

    partial sums      -> AllReduce (or ReduceScatter when the consumer splits a dim over that axis)
    new split         -> Shard (a local slice; its backward is an all-gather)
    axis changes dim  -> AllToAll (expert dispatch: tokens -> experts; combine: experts -> tokens)
    split removed     -> AllGather

An input the consumer reads whole while the consumer's loop is split over more axes gets a
BackwardAllReduce: its gradient is a partial sum over those axes (the input of a model-parallel
matmul, Sec. 6: "an all-reduce in the forward and again in the backward pass"). Every parameter
gets a GradientAllReduce over the mesh axes its op's loop is split over but the parameter is not
(the devices holding replicas of it): data-parallel groups for dense weights, and only the
replicas of the same expert for expert weights.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import networkx as nx

from switchc.ir import ops
from switchc.ir.graph import Graph, GraphError, info
from switchc.ir.tensor import DTYPE_BYTES, Layout, Mesh, Param, TensorType, local_bytes, local_numel


@dataclass(frozen=True)
class Step:
    """One collective of a reshard: its kind, the layouts around it, and its mesh axes."""

    kind: type[ops.Collective]
    src: Layout
    dst: Layout
    axes: tuple[str, ...]
    bytes_per_device: int


def _dim_of(layout: Layout) -> dict[str, int]:
    return {axis: index for index, axes in enumerate(layout.axes) for axis in axes}


def _move(current: Layout, target: Layout, axes: set[str], partial: tuple[str, ...]) -> Layout:
    """`current` with `axes` taken out of their dims and put where `target` has them."""
    target_dim = _dim_of(target)
    out = []
    for index, dim_axes in enumerate(current.axes):
        kept = [a for a in dim_axes if a not in axes]
        added = [a for a in target.axes[index] if a in axes and target_dim.get(a) == index]
        merged = kept + added
        # Keep the target's order within a dim once a dim holds the target's axes.
        out.append(target.axes[index] if set(merged) == set(target.axes[index]) else tuple(merged))
    return Layout(tuple(out), partial)


def plan_reshard(tensor: TensorType, src: Layout, dst: Layout, mesh: Mesh) -> list[Step]:
    """The collectives that turn `tensor` laid out as `src` into `dst` (empty when equal)."""
    if not set(dst.partial) <= set(src.partial):
        raise ValueError(f"cannot make a partial sum over {dst.partial} from {src.partial}")
    steps: list[Step] = []
    current = src
    dst_dim = _dim_of(dst)

    reduce = [a for a in src.partial if a not in dst.partial]
    scatter = {a for a in reduce if a in dst_dim and a not in current.used()}
    summed = [a for a in reduce if a not in scatter]
    if summed:
        after = Layout(current.axes, tuple(a for a in current.partial if a not in summed))
        steps.append(Step(ops.AllReduce, current, after, mesh.ordered(summed), local_bytes(tensor, current, mesh)))
        current = after
    if scatter:
        after = _move(current, dst, scatter, tuple(a for a in current.partial if a not in scatter))
        steps.append(Step(ops.ReduceScatter, current, after, mesh.ordered(scatter), local_bytes(tensor, current, mesh)))
        current = after

    new_splits = {a for a in dst.used() if a not in current.used()}
    if new_splits:
        after = _move(current, dst, new_splits, current.partial)
        # The backward all-gather rebuilds the unsplit gradient: that is the buffer it moves.
        steps.append(Step(ops.Shard, current, after, mesh.ordered(new_splits), local_bytes(tensor, current, mesh)))
        current = after

    current_dim = _dim_of(current)
    moved = {a for a, index in current_dim.items() if a in dst_dim and dst_dim[a] != index}
    if moved:
        after = _move(current, dst, moved, current.partial)
        steps.append(Step(ops.AllToAll, current, after, mesh.ordered(moved), local_bytes(tensor, current, mesh)))
        current = after

    gathered = {a for a in current.used() if a not in dst_dim}
    if gathered:
        after = _move(current, dst, gathered, current.partial)
        steps.append(Step(ops.AllGather, current, after, mesh.ordered(gathered), local_bytes(tensor, after, mesh)))
        current = after

    if current.axes != dst.axes:
        raise ValueError(f"cannot reshard {src.text()} to {dst.text()}: mesh axes in a different order")
    return steps


def _purpose(kind: type[ops.Collective], producer: ops.Op, consumer: ops.Op) -> tuple[str, ops.Op]:
    """What a collective is for, and the op it serves (whose layer and span it reports)."""
    if kind is ops.AllToAll and isinstance(consumer, ops.ExpertFFN):
        return "dispatch: send each expert its slots", consumer
    if kind is ops.AllToAll and isinstance(producer, ops.ExpertFFN):
        return "combine: return expert outputs to their tokens", producer
    if kind in (ops.AllReduce, ops.ReduceScatter):
        if isinstance(producer, ops.Loss):
            return "sum the loss over the batch", producer
        if isinstance(producer, ops.CrossEntropy):
            return "sum softmax statistics over the split vocabulary", producer
        if isinstance(producer, ops.Embed):
            return "sum the lookups of a split embedding table", producer
        return f"sum the partial results of {producer.kind} over its split contraction", producer
    if kind is ops.BackwardAllReduce:
        return f"sum the input gradient of {consumer.kind} over its split loop", consumer
    if kind is ops.AllGather:
        return f"gather a split dim that {consumer.kind} needs whole", consumer
    if kind is ops.Shard:
        return f"split the input of {consumer.kind}", consumer
    return f"reshard for {consumer.kind}", consumer


def _collective(
    step: Step, tensor: TensorType, producer: ops.Op, consumer: ops.Op, name: str, mesh: Mesh
) -> ops.Collective:
    purpose, served = _purpose(step.kind, producer, consumer)
    return step.kind(
        name=name,
        layer=served.layer,
        span=served.span,
        in_block=served.in_block,
        tensor=tensor,
        src=step.src,
        dst=step.dst,
        mesh_axes=step.axes,
        group_size=mesh.size(step.axes),
        bytes_per_device=step.bytes_per_device,
        source=served.name,
        purpose=purpose,
    )


_SLUG = {
    ops.AllReduce: "all_reduce",
    ops.ReduceScatter: "reduce_scatter",
    ops.AllGather: "all_gather",
    ops.AllToAll: "all_to_all",
    ops.Shard: "shard",
    ops.BackwardAllReduce: "backward_all_reduce",
}


def shard(graph: Graph) -> Graph:
    """A new graph: `graph` placed on its mesh, with every collective of a train step as a node."""
    meta = info(graph)
    if meta.sharded:
        raise GraphError("<graph>", meta.start, "the graph is already sharded")
    mesh = meta.mesh
    placed = {node: data["op"].place(mesh) for node, data in graph.nodes(data=True)}

    # Gradients that reach a GRADS_ONLY_TO_PARAMS op as partial sums join its parameter reduction.
    extra_grad_axes: dict[str, set[str]] = defaultdict(set)
    backward_needs: dict[tuple[str, str], tuple[str, ...]] = {}
    for src, dst, data in graph.edges(data=True):
        tensor: TensorType = data["tensor"]
        if not tensor.differentiable:
            continue
        consumer_layout = placed[dst]
        port_layout = consumer_layout.inputs[data["port"]]
        need = consumer_layout.loop_axes() - port_layout.used() - set(port_layout.partial)
        if not need:
            continue
        if graph.nodes[src]["op"].GRADS_ONLY_TO_PARAMS:
            extra_grad_axes[src] |= need
        else:
            backward_needs[(src, dst)] = mesh.ordered(need)

    gradients = _gradient_reductions(graph, placed, extra_grad_axes, mesh)

    out: Graph = nx.DiGraph()
    out.graph.update(graph.graph)
    out.graph["info"] = meta.with_sharded()
    reduced: dict[tuple[str, tuple[str, ...]], str] = {}  # (producer, axes) -> its all-reduce node
    for node, data in graph.nodes(data=True):
        consumer: ops.Op = data["op"]
        edges_in: list[tuple[str, int, TensorType]] = []
        for src, _, edge in sorted(graph.in_edges(node, data=True), key=lambda e: e[2]["port"]):
            port = edge["port"]
            tensor = edge["tensor"]
            producer: ops.Op = graph.nodes[src]["op"]
            src_layout = placed[src].output
            dst_layout = placed[node].inputs[port]
            if src_layout is None:
                raise GraphError(src, producer.span, f"has no output but feeds {node}")
            try:
                steps = plan_reshard(tensor, src_layout, dst_layout, mesh)
            except ValueError as err:
                raise GraphError(node, consumer.span, f"input {port} from {src}: {err}") from None
            need = backward_needs.get((src, node))
            if need:
                size = local_bytes(tensor, dst_layout, mesh)
                steps.append(Step(ops.BackwardAllReduce, dst_layout, dst_layout, need, size))
            previous = src
            if steps and steps[0].kind is ops.AllReduce:
                # A partial sum is summed once, however many ops read it.
                key = (src, steps[0].axes)
                if key in reduced:
                    previous = reduced[key]
                    steps = steps[1:]
            for step in steps:
                name = f"{node}/{_SLUG[step.kind]}.in{port}"
                if step.kind is ops.AllReduce:
                    name = f"{src}/{_SLUG[step.kind]}"
                    reduced[(src, step.axes)] = name
                collective = _collective(step, tensor, producer, consumer, name, mesh)
                out.add_node(name, op=collective, layout=collective.place(mesh))
                out.add_edge(previous, name, port=0, tensor=tensor)
                previous = name
            edges_in.append((previous, port, tensor))
        # The op goes in after every collective that feeds it, keeping insertion order topological.
        out.add_node(node, op=consumer, layout=placed[node])
        for previous, port, tensor in edges_in:
            out.add_edge(previous, node, port=port, tensor=tensor)
        for reduction in gradients.get(node, ()):
            out.add_node(reduction.name, op=reduction, layout=reduction.place(mesh))
            out.add_edge(node, reduction.name, gradient=True)
    return out


def _gradient_reductions(
    graph: Graph, placed: dict[str, ops.OpLayout], extra: dict[str, set[str]], mesh: Mesh
) -> dict[str, list[ops.GradientAllReduce]]:
    """One GradientAllReduce per (owning op, mesh axes): the replicas of each parameter."""
    owner: dict[str, str] = {}  # parameter -> the first op that declares it
    axes: dict[str, set[str]] = defaultdict(set)  # parameter -> mesh axes its gradient is partial over
    found: dict[str, tuple[Param, Layout]] = {}
    for node, data in graph.nodes(data=True):
        op: ops.Op = data["op"]
        layout = placed[node]
        for param, param_layout in zip(op.params(), layout.params, strict=True):
            previous = found.get(param.name)
            if previous is not None and (previous[0] != param or previous[1] != param_layout):
                raise GraphError(node, op.span, f"shares parameter {param.name} with a different shape or layout")
            owner.setdefault(param.name, node)
            found[param.name] = (param, param_layout)
            axes[param.name] |= (layout.loop_axes() - param_layout.used()) | extra.get(node, set())

    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for name, node in owner.items():
        if axes[name]:
            grouped[(node, mesh.ordered(axes[name]))].append(name)
    out: dict[str, list[ops.GradientAllReduce]] = defaultdict(list)
    for (node, group_axes), names in grouped.items():
        op = graph.nodes[node]["op"]
        params = tuple(found[n][0] for n in names)
        size = sum(local_numel(p.tensor, found[p.name][1], mesh) * DTYPE_BYTES[p.tensor.dtype] for p in params)
        suffix = "" if len(out[node]) == 0 else f".{len(out[node])}"
        out[node].append(
            ops.GradientAllReduce(
                name=f"{node}/gradient_all_reduce{suffix}",
                layer=op.layer,
                span=op.span,
                in_block=op.in_block,
                params_reduced=params,
                mesh_axes=group_axes,
                group_size=mesh.size(group_axes),
                bytes_per_device=size,
                source=node,
            )
        )
    return out
