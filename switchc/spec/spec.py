"""The validated spec: the six sections plus where each value came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchc.errors import Source, Span
from switchc.spec.schema import STACKS, SpecBody, every_blocks, parse_every, placement_blocks


@dataclass(frozen=True)
class Origin:
    """Where a spec came from: its source text and the span of every key and value written.

    Paths are dotted (`moe.capacity_factor.train`). A path with no span took its default.
    """

    name: str
    source: Source
    value_spans: Mapping[str, Span]
    key_spans: Mapping[str, Span]

    @staticmethod
    def unknown(name: str = "<spec>") -> Origin:
        return Origin(name, Source(name, ""), {}, {})


@dataclass(frozen=True)
class Spec(SpecBody):
    """A valid Switch Transformer spec. Equality compares values only, never where they came from."""

    origin: Origin = field(default_factory=Origin.unknown, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.origin.name

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def span(self, path: str) -> Span:
        """Where `path` was written; for a default, the key of the nearest section written, else the file start."""
        exact = self.origin.value_spans.get(path)
        if exact is not None:
            return exact
        parts = path.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            section = self.origin.key_spans.get(".".join(parts[:depth]))
            if section is not None:
                return section
        return self.origin.source.start()

    def key_span(self, path: str) -> Span:
        """Where the key of `path` was written (falls back like `span`)."""
        return self.origin.key_spans.get(path) or self.span(path)

    def is_default(self, path: str) -> bool:
        return path not in self.origin.value_spans

    def stack_depth(self, stack: str) -> int:
        """How many blocks `stack` ("encoder" or "decoder") has."""
        if stack not in STACKS:
            raise ValueError(f"unknown stack {stack!r}; stacks are {', '.join(STACKS)}")
        depth: int = getattr(self.model, f"{stack}_layers")
        return depth

    def switch_blocks(self, stack: str) -> tuple[int, ...]:
        """The FFN blocks of `stack` (0-based, ascending) that are Switch layers; () for a dense model.

        The layout decides for a stack it names; otherwise moe.expert_every does.
        """
        depth = self.stack_depth(stack)
        if self.moe is None:
            return ()
        placement = self.layout.placement(stack)
        if placement is None:
            return every_blocks(self.moe.expert_every, depth)
        return placement_blocks(placement, depth)

    def is_switch_layer(self, stack: str, index: int) -> bool:
        """Whether FFN block `index` (0-based) of `stack` ("encoder" or "decoder") is a Switch layer."""
        depth = self.stack_depth(stack)
        if self.moe is None or not 0 <= index < depth:
            return False
        placement = self.layout.placement(stack)
        if placement is None:
            every = self.moe.expert_every
        elif isinstance(placement, str):
            every = parse_every(placement)
        else:
            return index in placement
        return index % every == every - 1

    def expert_every_agrees(self, stack: str | None = None) -> bool:
        """Whether moe.expert_every gives the same Switch blocks as the layout, for `stack` or every
        stack the layout names (always true for a dense model or a stack the layout leaves out)."""
        if self.moe is None:
            return True
        for name in STACKS if stack is None else (stack,):
            placement = self.layout.placement(name)
            depth = self.stack_depth(name)
            if placement is not None and placement_blocks(placement, depth) != every_blocks(
                self.moe.expert_every, depth
            ):
                return False
        return True

    def body(self) -> SpecBody:
        return SpecBody(self.model, self.moe, self.layout, self.mesh, self.train, self.data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in spec-file form (rules and block lists as lists); moe is None for a dense model."""
        out = dataclasses.asdict(self.body())
        rules = out["mesh"]["rules"]
        out["mesh"]["rules"] = {axis: list(axes) for axis, axes in rules.items()}
        for stack in STACKS:
            placement = out["layout"][stack]
            if placement is not None and isinstance(placement["switch"], tuple):
                placement["switch"] = list(placement["switch"])
        return out

    def leaves(self) -> Iterator[tuple[str, Any]]:
        """(dotted path, value) for every key of the resolved spec, in schema order."""
        yield from _leaves(self.to_dict(), "")


def _leaves(data: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and not path.startswith(("mesh.axes", "mesh.rules")):
            yield from _leaves(value, path + ".")
        else:
            yield path, value
