"""Mesh construction and logical-axis sharding (runtime support, copied into generated programs).

A generated program names every tensor dimension with a logical axis (batch, embed, heads, mlp,
experts, ...). `Rules` maps each logical axis to the mesh axes it is split over; this module turns
a tuple of logical axes into a PartitionSpec / NamedSharding, so the model code never mentions
the mesh.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def fake_cpu_devices(count: int) -> None:
    """Ask XLA for `count` CPU devices; must run before jax initialises its backends."""
    flag = f"--xla_force_host_platform_device_count={count}"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])


def make_mesh(axes: Mapping[str, int]) -> Mesh:
    """A mesh with the spec's axes, in order, over the first prod(sizes) devices."""
    needed = int(np.prod(list(axes.values())))
    shown = " x ".join(f"{axis}={size}" for axis, size in axes.items())
    devices = jax.devices()  # the job's, with several processes
    processes = jax.process_count()
    if len(devices) < needed and processes == 1:
        raise SystemExit(
            f"error: the mesh {shown} needs {needed} devices, this host has {len(devices)}.\n"
            f"hint: on a CPU host pass --devices {needed} to fake them; on accelerators run on more hosts."
        )
    # fewer: too few; more: a process with no device in the mesh would have no part to play
    if processes > 1 and len(devices) != needed:
        per_process = f"--devices {needed // processes} on CPU hosts, " if needed % processes == 0 else ""
        raise SystemExit(
            f"error: the mesh {shown} needs {needed} devices, and the job's {processes} processes have "
            f"{len(devices)} ({len(jax.local_devices())} on this one); with several processes the mesh uses every "
            f"device of the job.\nhint: {per_process}or a mesh of {len(devices)} devices"
        )
    grid = np.array(devices[:needed]).reshape(tuple(axes.values()))
    return Mesh(grid, tuple(axes))


# When two dims of one tensor map to the same mesh axis (mesh.rules {embed: model} beside the
# default {vocab: model}), the dim whose logical axis comes first here takes it and the other goes
# without, as in t5x's ordered rules: a mesh axis splits at most one dim of a tensor. The same order
# as switchc's IR (switchc.ir.tensor.AXIS_PRIORITY), so the program splits what the report counts.
AXIS_PRIORITY = ("experts", "heads", "kv", "mlp", "vocab", "embed", "batch", "length")


@dataclass(frozen=True)
class Rules:
    """Logical axis -> mesh axes. Logical axes not listed are replicated."""

    table: Mapping[str, tuple[str, ...]]

    def spec(self, logical_axes: Sequence[str | None]) -> PartitionSpec:
        def rank(index: int) -> int:
            axis = logical_axes[index]
            return AXIS_PRIORITY.index(axis) if axis in AXIS_PRIORITY else len(AXIS_PRIORITY)

        used: set[str] = set()
        parts: list[str | tuple[str, ...] | None] = [None] * len(logical_axes)
        for index in sorted(range(len(logical_axes)), key=rank):
            axis = logical_axes[index]
            mesh_axes = [m for m in self.table.get(axis, ()) if m not in used] if axis is not None else []
            used.update(mesh_axes)
            parts[index] = None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes)
        return PartitionSpec(*parts)

    def sharding(self, mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
        return NamedSharding(mesh, self.spec(logical_axes))

    def axes(self, logical_axis: str) -> tuple[str, ...]:
        return tuple(self.table.get(logical_axis, ()))
