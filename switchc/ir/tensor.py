"""Tensors of the IR: named dims with logical axes, dtypes, parameters, meshes and layouts.

A `Dim` is a named size plus the logical axes (batch, embed, mlp, experts, ...) that may split
it; `TensorType` is an ordered tuple of dims and a dtype. Logical axes are what the model says;
the spec's mesh rules (switchc.spec MeshConfig.logical_rules) say which mesh axes each one maps
to, and `resolve_axes` turns the dims of one tensor (or one op's loop) into a `Layout`: the mesh
axes of each dim, plus the mesh axes over which the values are still partial sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

DType = Literal["float32", "bfloat16", "int32"]

DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "int32": 4}

# When two dims of one tensor (or op) map to the same mesh axis, the dim whose logical axis
# comes first here takes it, as in t5x's ordered logical-axis rules. Experts come first so that
# the expert axis moves from tokens to experts (the all-to-all of Sec. 6); weight dims come
# before token dims so that a model-parallel axis splits weights, not tokens.
AXIS_PRIORITY: tuple[str, ...] = ("experts", "heads", "kv", "mlp", "vocab", "embed", "batch", "length")


@dataclass(frozen=True)
class Dim:
    """One named dimension. `logical` lists the logical axes that may split it (empty: never)."""

    name: str
    size: int
    logical: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorType:
    """Dims in order and a dtype. Sizes are global (the whole model, the whole batch)."""

    dims: tuple[Dim, ...]
    dtype: DType

    @property
    def numel(self) -> int:
        total = 1
        for dim in self.dims:
            total *= dim.size
        return total

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    @property
    def differentiable(self) -> bool:
        return self.dtype != "int32"

    def shape_text(self) -> str:
        return f"{self.dtype}[{', '.join(f'{d.name}={d.size}' for d in self.dims)}]"


ParamKind = Literal["embedding", "position", "norm", "attention", "ffn", "router", "expert", "logits"]


@dataclass(frozen=True)
class Param:
    """A trainable weight. The name is global: ops that share a weight declare the same Param."""

    name: str
    tensor: TensorType
    kind: ParamKind


@dataclass(frozen=True)
class Mesh:
    """The device mesh: ordered (axis name, size) pairs and the logical-axis rules."""

    axes: tuple[tuple[str, int], ...]
    rules: tuple[tuple[str, tuple[str, ...]], ...]

    @staticmethod
    def of(axes: Mapping[str, int], rules: Mapping[str, tuple[str, ...]]) -> Mesh:
        return Mesh(tuple(axes.items()), tuple((k, tuple(v)) for k, v in rules.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    @property
    def num_devices(self) -> int:
        return self.size(self.names)

    def size(self, axes: Iterable[str]) -> int:
        """Devices in the group spanned by `axes` (1 for none)."""
        sizes = dict(self.axes)
        total = 1
        for axis in axes:
            total *= sizes[axis]
        return total

    def rule(self, logical: str) -> tuple[str, ...]:
        return dict(self.rules).get(logical, ())

    def ordered(self, axes: Iterable[str]) -> tuple[str, ...]:
        """`axes` in mesh order (how collectives name their groups)."""
        wanted = set(axes)
        return tuple(name for name in self.names if name in wanted)


@dataclass(frozen=True)
class Layout:
    """Where a tensor lives: the mesh axes splitting each dim, and axes it is a partial sum over."""

    axes: tuple[tuple[str, ...], ...]
    partial: tuple[str, ...] = ()

    def used(self) -> set[str]:
        return {axis for dim_axes in self.axes for axis in dim_axes}

    def same_as(self, other: Layout) -> bool:
        return self.axes == other.axes and set(self.partial) == set(other.partial)

    def text(self) -> str:
        parts = [",".join(a) if a else "-" for a in self.axes]
        partial = f" partial({','.join(self.partial)})" if self.partial else ""
        return f"[{' '.join(parts)}]{partial}"


def resolve_axes(dims: tuple[Dim, ...], mesh: Mesh) -> tuple[tuple[str, ...], ...]:
    """Mesh axes for each dim: each logical axis's rule, minus axes an earlier dim took.

    Dims are served in AXIS_PRIORITY order of their first logical axis; a mesh axis splits at
    most one dim of a tensor.
    """

    def rank(index: int) -> int:
        logical = dims[index].logical
        return min((AXIS_PRIORITY.index(a) for a in logical if a in AXIS_PRIORITY), default=len(AXIS_PRIORITY))

    used: set[str] = set()
    out: list[tuple[str, ...]] = [() for _ in dims]
    for index in sorted(range(len(dims)), key=rank):
        chosen: list[str] = []
        for logical in dims[index].logical:
            for axis in mesh.rule(logical):
                # An axis of size 1 splits nothing; leaving it out keeps trivial collectives away.
                if axis not in used and mesh.size((axis,)) > 1:
                    chosen.append(axis)
                    used.add(axis)
        out[index] = tuple(chosen)
    return tuple(out)


def local_numel(tensor: TensorType, layout: Layout, mesh: Mesh) -> int:
    """Elements of `tensor` held by one device under `layout`."""
    total = 1
    for dim, axes in zip(tensor.dims, layout.axes, strict=True):
        total *= dim.size // mesh.size(axes)
    return total


def local_bytes(tensor: TensorType, layout: Layout, mesh: Mesh) -> int:
    return local_numel(tensor, layout, mesh) * DTYPE_BYTES[tensor.dtype]
