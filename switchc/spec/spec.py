"""The validated spec: the five sections plus where each value came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchc.errors import Source, Span
from switchc.spec.schema import SpecBody


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

    def is_switch_layer(self, index: int) -> bool:
        """Whether FFN block `index` (0-based, within either stack) is a Switch layer."""
        if self.moe is None:
            return False
        every = self.moe.expert_every
        return index % every == every - 1

    def body(self) -> SpecBody:
        return SpecBody(self.model, self.moe, self.mesh, self.train, self.data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in spec-file form (rules as lists); moe is None for a dense model."""
        out = dataclasses.asdict(self.body())
        rules = out["mesh"]["rules"]
        out["mesh"]["rules"] = {axis: list(axes) for axis, axes in rules.items()}
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
