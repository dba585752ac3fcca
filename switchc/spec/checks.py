"""Checks that involve more than one value: the model must fit its mesh, routing must make sense.

Each check is a function `Spec -> diagnostics`, pointing at the value a user would change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from switchc.errors import Diagnostic, did_you_mean

if TYPE_CHECKING:
    from switchc.spec.spec import Spec

Check = Callable[["Spec"], Iterator[Diagnostic]]


def _check_routing(spec: Spec) -> Iterator[Diagnostic]:
    moe = spec.moe
    if moe is None:
        return
    if moe.top_k > moe.num_experts:
        yield Diagnostic(
            f"top_k {moe.top_k} is larger than num_experts {moe.num_experts}",
            spec.span("moe.top_k"),
            "a token cannot be routed to more experts than there are: lower top_k or add experts",
        )
    deepest = max(spec.model.encoder_layers, spec.model.decoder_layers)
    if moe.expert_every > deepest:
        yield Diagnostic(
            f"expert_every {moe.expert_every} exceeds the deepest stack ({deepest} blocks): "
            "no block would be a Switch layer",
            spec.span("moe.expert_every"),
            "use expert_every <= the number of blocks, or remove the moe section for a dense model",
        )


def _check_rules(spec: Spec) -> Iterator[Diagnostic]:
    mesh = spec.mesh
    for logical, mesh_axes in mesh.rules.items():
        path = f"mesh.rules.{logical}"
        for axis in mesh_axes:
            if axis not in mesh.axes:
                yield Diagnostic(
                    f"rule '{logical}' names mesh axis '{axis}', which mesh.axes does not define",
                    spec.span(path),
                    did_you_mean(axis, mesh.axes) or f"mesh axes: {', '.join(mesh.axes)}",
                )
        repeated = sorted({a for a in mesh_axes if mesh_axes.count(a) > 1})
        if repeated:
            yield Diagnostic(
                f"rule '{logical}' uses mesh axis '{repeated[0]}' twice",
                spec.span(path),
                "a dimension is split over each mesh axis at most once",
            )


def _divisible(spec: Spec, logical: str, size: int, what: str, path: str) -> Iterator[Diagnostic]:
    mesh = spec.mesh
    axes = [a for a in mesh.logical_rules()[logical] if a in mesh.axes]
    shards = 1
    for axis in axes:
        shards *= mesh.axes[axis]
    if size % shards:
        over = " x ".join(f"{a}={mesh.axes[a]}" for a in axes)
        yield Diagnostic(
            f"{what} ({size}) is not divisible by the {shards} shards of mesh axes {over}",
            spec.span(path),
            f"make {what} a multiple of {shards}, or change mesh.axes / mesh.rules.{logical}",
        )


def _check_sharding(spec: Spec) -> Iterator[Diagnostic]:
    if any(axis not in spec.mesh.axes for axes in spec.mesh.rules.values() for axis in axes):
        return  # reported by _check_rules; shard counts would be meaningless
    model = spec.model
    yield from _divisible(spec, "batch", spec.train.batch_size, "the global batch", "train.batch_size")
    if spec.moe is not None:
        yield from _divisible(spec, "experts", spec.moe.num_experts, "num_experts", "moe.num_experts")
    yield from _divisible(spec, "heads", model.num_heads, "num_heads", "model.num_heads")
    yield from _divisible(spec, "mlp", model.d_ff, "d_ff", "model.d_ff")
    yield from _divisible(spec, "vocab", model.vocab_size, "vocab_size", "model.vocab_size")
    yield from _divisible(spec, "embed", model.d_model, "d_model", "model.d_model")
    yield from _divisible(spec, "kv", model.d_kv, "d_kv", "model.d_kv")


def _check_data(spec: Spec) -> Iterator[Diagnostic]:
    data = spec.data
    if data.source in ("text", "jsonl") and data.path is None:
        yield Diagnostic(
            f"data.source '{data.source}' needs data.path",
            spec.span("data.source"),
            "set data.path to a file or a directory of files",
        )
    if data.source == "shakespeare" and data.path is not None:
        yield Diagnostic(
            "data.path is set but data.source is 'shakespeare', the built-in corpus",
            spec.span("data.path"),
            "set data.source to 'text' or 'jsonl' to read your own files",
        )


CHECKS: tuple[Check, ...] = (_check_routing, _check_rules, _check_sharding, _check_data)


def cross_check(spec: Spec) -> Iterator[Diagnostic]:
    for check in CHECKS:
        yield from check(spec)
