"""What every analysis shares: dim sizes of a placed op, and the error for a missing rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from switchc.ir.graph import GraphError
from switchc.ir.ops import Op, OpLayout
from switchc.ir.tensor import Mesh

Sizes = Callable[[str], int]
R = TypeVar("R")


class MissingRuleError(GraphError):
    """An analysis met an op kind it has no rule for: a bug, named with the op and its spec span."""

    def __init__(self, analysis: str, op: Op) -> None:
        super().__init__(op.name, op.span, f"the {analysis} analysis has no rule for op kind {op.kind}")


def rule_for(table: Mapping[type[Op], R], analysis: str, op: Op) -> R:
    """The rule of `table` for `op`'s exact type (no inheritance: every kind is listed)."""
    rule = table.get(type(op))
    if rule is None:
        raise MissingRuleError(analysis, op)
    return rule


def global_sizes(op: Op) -> Sizes:
    """Loop dim name -> its size over the whole model and batch."""
    sizes = {dim.name: dim.size for dim in op.loop()}
    return sizes.__getitem__


def local_sizes(op: Op, layout: OpLayout, mesh: Mesh) -> Sizes:
    """Loop dim name -> the part of it one device holds."""
    split = dict(layout.loop)
    sizes = {dim.name: dim.size // mesh.size(split[dim.name]) for dim in op.loop()}
    return sizes.__getitem__
