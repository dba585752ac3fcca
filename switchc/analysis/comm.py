"""Communication per train step: every collective of a sharded graph, its bytes and its time.

Each collective node (switchc.passes.shard) becomes one entry per pass it runs in: `forward`,
`backward` (the transpose the backward pass needs: an all-to-all's is an all-to-all, an
all-gather's a reduce-scatter, a model-parallel input's an all-reduce), `recompute` (forward
collectives inside blocks whose output the backward reads again under train.remat = full:
memory.recomputation) and `gradient` (parameter
gradient all-reduces, once per step). `bytes_per_device` is the buffer one device contributes.

Time per collective, for a group of n devices, S bytes per device, bandwidth B (bytes/s one way,
per device), latency a, and L = ceil(log2 n) steps (the costs of Thakur, Rabenseifner and Gropp,
"Optimization of collective communication operations in MPICH", 2005, exact for n a power of 2):

    all-reduce        2 (n-1)/n * S/B + 2 L a         (reduce-scatter by recursive halving, then
                                                       all-gather by recursive doubling: a ring's
                                                       bandwidth term with log-many latencies)
    reduce-scatter      (n-1)/n * S/B +   L a
    all-gather          (n-1)/n * S/B +   L a
    all-to-all        min((n-1)/n * S/B + (n-1) a,     (pairwise exchange: large buffers)
                          L (a + S/(2B)))              (Bruck: small buffers, many devices)

Collective libraries choose such algorithms by size (NCCL's trees and rings, MPI's tuned
collectives); a ring's 2 (n-1) a would charge a 4-byte all-reduce over 2048 GPUs, at h100's network
latency of 10 us, 2 x 2047 x 10 us = 41 ms.

A profile with a `network` groups its devices in nodes (GPUs: NVLink inside a node, InfiniBand
between nodes). Devices are numbered in mesh order, the last axis fastest (jax.make_mesh's and
DeviceMesh's order), and node i holds devices [i * per_node, (i + 1) * per_node). A group whose
members span nodes is timed with the network's bandwidth N and latency b: the log-step
collectives as above with their slowest hop's, min(B, N) and max(a, b) (a profile may give a
network faster than its interconnect; with several members on a node, a step that crosses nodes
also takes hops inside one; with one member per node, N and b), and
the pairwise all-to-all sends the (k-1)/n of its buffer bound for the k-1 peers on its node over
the interconnect while the (n-k)/n bound elsewhere crosses the network:

    all-to-all          min(max((k-1)/n * S/B, (n-k)/n * S/N) + (k-1) a + (n-k) b,
                            L (a' + S/(2 B')))        (B', a': the slowest hop's, as above)

Gradient all-reduces over the same mesh axes are timed as one combined all-reduce (see
_bucket_gradients); every other collective waits on the one before it and is timed alone.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from switchc.analysis.hardware import HardwareProfile
from switchc.analysis.memory import recomputation
from switchc.ir import ops
from switchc.ir.graph import Graph, all_ops, info
from switchc.ir.tensor import Mesh


def _ring_link(n: int, local: int, hw: HardwareProfile) -> tuple[float, float]:
    """(bandwidth, latency) of a ring over n devices, `local` of them on each node: its slowest hop's
    (with one member per node every hop crosses the network; with several, some stay inside a node)."""
    if hw.network is None or local >= n:
        return hw.interconnect_bandwidth, hw.latency
    if local == 1:
        return hw.network.bandwidth, hw.network.latency
    return min(hw.interconnect_bandwidth, hw.network.bandwidth), max(hw.latency, hw.network.latency)


def _log_steps(n: int) -> int:
    """Steps of recursive halving or doubling over n devices: ceil(log2 n)."""
    return (n - 1).bit_length()


def _all_reduce(n: int, size: float, hw: HardwareProfile, local: int) -> float:
    """Legend: n group size, size bytes per device, local members per node; hw gives the links."""
    bandwidth, latency = _ring_link(n, local, hw)
    return 2 * (n - 1) / n * size / bandwidth + 2 * _log_steps(n) * latency


def _one_pass(n: int, size: float, hw: HardwareProfile, local: int) -> float:
    """Reduce-scatter, all-gather: every device sends (n-1)/n of its buffer, in log2 n steps."""
    bandwidth, latency = _ring_link(n, local, hw)
    return (n - 1) / n * size / bandwidth + _log_steps(n) * latency


def _all_to_all(n: int, size: float, hw: HardwareProfile, local: int) -> float:
    """The faster of pairwise exchange ((n-1)/n of the buffer leaves, the off-node share over the
    network; a latency per peer) and Bruck's (log2 n steps, each moving half the buffer)."""
    bandwidth, latency = _ring_link(n, local, hw)
    bruck = _log_steps(n) * (latency + size / 2 / bandwidth)
    if hw.network is None or local >= n:
        pairwise = (n - 1) / n * size / bandwidth + (n - 1) * latency
    else:
        inside = (local - 1) / n * size / hw.interconnect_bandwidth
        outside = (n - local) / n * size / hw.network.bandwidth
        pairwise = max(inside, outside) + (local - 1) * hw.latency + (n - local) * hw.network.latency
    return min(pairwise, bruck)


CollectiveTime = Callable[[int, float, HardwareProfile, int], float]

COLLECTIVE_TIME: dict[str, CollectiveTime] = {
    "all-reduce": _all_reduce,
    "reduce-scatter": _one_pass,
    "all-gather": _one_pass,
    "all-to-all": _all_to_all,
}


def members_per_node(mesh: Mesh, axes: tuple[str, ...], hw: HardwareProfile) -> int:
    """How many devices of a group over `axes` share a node: the group of device 0, numbered in
    mesh order with the last axis fastest; the whole group when the profile has no network."""
    group = mesh.size(axes)
    if hw.network is None:
        return group
    sizes = dict(mesh.axes)
    stride, strides = 1, {}
    for name, size in reversed(mesh.axes):
        strides[name] = stride
        stride *= size
    members = [0]
    for name in axes:
        members = [m + i * strides[name] for m in members for i in range(sizes[name])]
    return sum(1 for m in members if m < hw.network.devices_per_node)


PHASES = ("forward", "backward", "recompute", "gradient")


@dataclass(frozen=True)
class CollectiveCost:
    """One collective in one phase of a train step."""

    kind: str
    mesh_axes: tuple[str, ...]
    group_size: int
    phase: str
    count: int  # times per train step
    bytes_per_device: int  # per occurrence
    seconds: float  # all occurrences
    purpose: str
    source: str  # the op it serves
    layer: str
    span: str  # file:line:col of the spec value that op came from
    node: str


@dataclass(frozen=True)
class CollectiveSummary:
    kind: str
    mesh_axes: tuple[str, ...]
    phase: str
    count: int
    bytes_per_device: int  # all occurrences
    seconds: float


@dataclass(frozen=True)
class CommReport:
    collectives: tuple[CollectiveCost, ...]
    summary: tuple[CollectiveSummary, ...]
    bytes_per_device: int  # per train step, all phases
    seconds: float  # per train step if nothing overlapped
    seconds_by_phase: dict[str, float]


def _cost(
    node: str, op: ops.Op, kind: str, phase: str, size: int, hw: HardwareProfile, purpose: str, mesh: Mesh
) -> CollectiveCost:
    assert isinstance(op, ops.Collective | ops.GradientAllReduce)
    seconds = COLLECTIVE_TIME[kind](op.group_size, size, hw, members_per_node(mesh, op.mesh_axes, hw))
    return CollectiveCost(
        kind=kind,
        mesh_axes=op.mesh_axes,
        group_size=op.group_size,
        phase=phase,
        count=1,
        bytes_per_device=size,
        seconds=seconds,
        purpose=purpose,
        source=op.source,
        layer=op.layer,
        span=str(op.span),
        node=node,
    )


def _bucket_gradients(entries: list[CollectiveCost], hw: HardwareProfile, mesh: Mesh) -> list[CollectiveCost]:
    """Gradient all-reduces over the same mesh axes run as one combined all-reduce (XLA's
    all-reduce combiner, DDP's buckets): the latency is paid once per group of axes, and each
    entry's seconds are its share of that combined all-reduce, by bytes."""
    totals: dict[tuple[str, ...], int] = defaultdict(int)
    for entry in entries:
        if entry.phase == "gradient":
            totals[entry.mesh_axes] += entry.bytes_per_device
    out = []
    for entry in entries:
        if entry.phase == "gradient" and totals[entry.mesh_axes] > 0:
            local = members_per_node(mesh, entry.mesh_axes, hw)
            combined = COLLECTIVE_TIME[entry.kind](entry.group_size, totals[entry.mesh_axes], hw, local)
            entry = dataclasses.replace(entry, seconds=combined * entry.bytes_per_device / totals[entry.mesh_axes])
        out.append(entry)
    return out


def count_comm(graph: Graph, hw: HardwareProfile) -> CommReport:
    meta = info(graph)
    mesh = meta.mesh
    again = recomputation(graph) if meta.train.remat == "full" else {}
    entries: list[CollectiveCost] = []
    for op in all_ops(graph):
        if isinstance(op, ops.GradientAllReduce):
            names = ", ".join(p.name.rsplit("/", 1)[-1] for p in op.params_reduced)
            entries.append(
                _cost(op.name, op, "all-reduce", "gradient", op.bytes_per_device, hw, f"gradients of {names}", mesh)
            )
            continue
        if not isinstance(op, ops.Collective):
            continue
        if op.FORWARD is not None:
            entries.append(_cost(op.name, op, op.FORWARD, "forward", op.bytes_per_device, hw, op.purpose, mesh))
            if again.get(op.name) == "all":  # its output is read again: see memory.recomputation
                entries.append(_cost(op.name, op, op.FORWARD, "recompute", op.bytes_per_device, hw, op.purpose, mesh))
        if op.BACKWARD is not None:
            entries.append(
                _cost(op.name, op, op.BACKWARD, "backward", op.bytes_per_device, hw, f"backward of: {op.purpose}", mesh)
            )

    entries = _bucket_gradients(entries, hw, mesh)
    grouped: dict[tuple[str, tuple[str, ...], str], list[CollectiveCost]] = defaultdict(list)
    for entry in entries:
        grouped[(entry.kind, entry.mesh_axes, entry.phase)].append(entry)
    summary = tuple(
        CollectiveSummary(
            kind=kind,
            mesh_axes=axes,
            phase=phase,
            count=sum(e.count for e in found),
            bytes_per_device=sum(e.bytes_per_device * e.count for e in found),
            seconds=sum(e.seconds for e in found),
        )
        for (kind, axes, phase), found in sorted(
            grouped.items(), key=lambda item: (PHASES.index(item[0][2]), item[0][0], item[0][1])
        )
    )
    by_phase = {phase: sum((e.seconds for e in entries if e.phase == phase), 0.0) for phase in PHASES}
    return CommReport(
        collectives=tuple(entries),
        summary=summary,
        bytes_per_device=sum(e.bytes_per_device * e.count for e in entries),
        seconds=sum(e.seconds for e in entries),
        seconds_by_phase=by_phase,
    )
