"""The Switch / MoE feed-forward layer: routing, capacity, dispatch, experts, combine (PAPER.md Sec. 2-3).

This file is runtime support: it is copied verbatim into every generated JAX program and depends
only on jax. It is written per device: `switch_ffn` is meant to run inside `jax.shard_map`, where
each device routes its own tokens, an all-to-all over the expert mesh axes moves each expert's
slots to the device that holds that expert, and a second all-to-all brings the results back.

Shapes (per device):
    G groups of S tokens (S = routing group size), D = d_model, F = d_ff (or d_ff / model shards),
    E experts (E_local on this device), C = expert capacity, k = experts per token.

Dispatch is index-based: each expert slot gathers the token that claimed it, and each token
gathers its slots' outputs back. That costs O(G * E * C * D) data movement and no matmul, where the
one-hot einsum of Mesh-TF costs 2 * G * S * E * C * D FLOPs (quadratic in tokens per group).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Params = dict[str, Any]


@dataclass(frozen=True)
class MoESettings:
    """What the generated program fixes about one Switch layer."""

    num_experts: int
    top_k: int
    capacity_factor: float  # the train or eval factor, chosen by the caller
    min_capacity: int
    group_size: int  # most tokens per routing group
    jitter_eps: float
    router_dtype: Any
    batch_prioritized: bool
    expert_dropout_rate: float
    activation: str  # relu | gelu | geglu | swiglu


def routing_group_size(tokens: int, group_size: int) -> int:
    """Tokens per routing group: the largest divisor of `tokens` that is at most `group_size`."""
    size = min(tokens, group_size)
    while tokens % size:
        size -= 1
    return size


def expert_capacity(group_tokens: int, num_experts: int, top_k: int, factor: float, min_capacity: int) -> int:
    """Slots per expert and group: ceil(k * S / E * factor) (eq. 3), at least `min_capacity`, at most S."""
    capacity = max(math.ceil(top_k * group_tokens / num_experts * factor), min_capacity)
    return min(capacity, group_tokens)


def activate(h: jax.Array, h_gate: jax.Array | None, activation: str) -> jax.Array:
    """The FFN nonlinearity; gated variants multiply by a second projection (GEGLU, SwiGLU)."""
    if activation == "relu":
        return jax.nn.relu(h)
    if activation == "gelu":
        return jax.nn.gelu(h, approximate=True)
    assert h_gate is not None, activation
    if activation == "geglu":
        return jax.nn.gelu(h, approximate=True) * h_gate
    if activation == "swiglu":
        return jax.nn.silu(h) * h_gate
    raise ValueError(f"unknown activation {activation!r}")


def _slot_positions(experts: jax.Array, gates: jax.Array, num_experts: int, prioritized: bool) -> jax.Array:
    """Position of each (token, choice) in its expert's queue: [G, S, k].

    First choices queue before second choices (GShard); within a choice, tokens queue in
    sequence order, or by router probability when batch-prioritized.
    """
    groups, tokens, top_k = experts.shape
    if prioritized:
        order = jnp.argsort(-gates[..., 0], axis=-1)  # [G, S] most confident first
    else:
        order = jnp.broadcast_to(jnp.arange(tokens), (groups, tokens))
    inverse = jnp.argsort(order, axis=-1)
    positions = []
    claimed = jnp.zeros((groups, num_experts), jnp.int32)  # slots taken by earlier choices
    for choice in range(top_k):
        chosen = jnp.take_along_axis(experts[..., choice], order, axis=-1)  # [G, S] in queue order
        one_hot = jax.nn.one_hot(chosen, num_experts, dtype=jnp.int32)  # [G, S, E]
        queue = jnp.cumsum(one_hot, axis=1) - 1 + claimed[:, None, :]
        position = jnp.sum(queue * one_hot, axis=-1)  # [G, S] in queue order
        positions.append(jnp.take_along_axis(position, inverse, axis=-1))
        claimed = claimed + jnp.sum(one_hot, axis=1)
    return jnp.stack(positions, axis=-1)


def switch_ffn(
    params: Params,
    x: jax.Array,
    settings: MoESettings,
    *,
    train: bool,
    jitter: jax.Array | None = None,
    rng: jax.Array | None = None,
    expert_axes: Sequence[str] = (),
    mlp_axes: Sequence[str] = (),
    batch_axes: Sequence[str] = (),
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One Switch layer on this device's tokens x: [B, L, D] -> ([B, L, D], metrics).

    params: router [D, E]; wi (or wi_0, wi_1 for gated FFNs) [E_local, D, F]; wo [E_local, F, D].
    jitter: multiplicative router-input noise like x, drawn by the caller over the global batch so
    that a run gives the same numbers on any mesh (None: no jitter). rng: for expert dropout.
    `expert_axes` / `mlp_axes` / `batch_axes` name the mesh axes that experts, d_ff and tokens are
    split over (empty outside shard_map). Metrics are averaged over `batch_axes`.
    """
    batch, length, d_model = x.shape
    num_experts, top_k = settings.num_experts, settings.top_k
    tokens = batch * length
    group = routing_group_size(tokens, settings.group_size)
    groups = tokens // group
    capacity = expert_capacity(group, num_experts, top_k, settings.capacity_factor, settings.min_capacity)
    x_groups = x.reshape(groups, group, d_model)

    # Router in its own precision (float32: "selective precision", Table 2), with input jitter.
    router_in = x_groups.astype(settings.router_dtype)
    if train and jitter is not None:
        router_in = router_in * jitter.reshape(router_in.shape).astype(settings.router_dtype)
    logits = router_in @ params["router"].astype(settings.router_dtype)  # [G, S, E]
    probs = jax.nn.softmax(logits, axis=-1)
    gates, experts = lax.top_k(probs, top_k)  # [G, S, k]

    # Load balancing (eq. 4-6): f = share of tokens whose top-1 is expert i, P = mean probability.
    top1 = jax.nn.one_hot(experts[..., 0], num_experts, dtype=jnp.float32)
    fraction = jnp.mean(top1, axis=1)  # [G, E]
    mean_prob = jnp.mean(probs.astype(jnp.float32), axis=1)  # [G, E]
    aux_loss = num_experts * jnp.mean(jnp.sum(fraction * mean_prob, axis=-1))
    z_loss = jnp.mean(jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)))

    positions = _slot_positions(experts, gates, num_experts, settings.batch_prioritized)
    kept = positions < capacity  # [G, S, k]; a dropped token rides the residual
    slots = num_experts * capacity
    slot = jnp.where(kept, experts * capacity + positions, slots)  # `slots` is a discard bin

    # Dispatch by gather: slot j of group g holds token source[g, j] (S = the zero pad row).
    token_index = jnp.broadcast_to(jnp.arange(group)[None, :, None], slot.shape)
    source = jnp.full((groups, slots + 1), group, jnp.int32)
    source = source.at[jnp.arange(groups)[:, None, None], slot].set(token_index)[:, :slots]
    padded = jnp.concatenate([x_groups, jnp.zeros((groups, 1, d_model), x.dtype)], axis=1)
    dispatched = jnp.take_along_axis(padded, source[..., None], axis=1)  # [G, E*C, D]
    dispatched = dispatched.reshape(groups, num_experts, capacity, d_model)

    if expert_axes:  # [G, E, C, D] -> [G * n, E / n, C, D]: this device's experts, everyone's slots
        dispatched = lax.all_to_all(dispatched, tuple(expert_axes), 1, 0, tiled=True)
    if rng is not None:  # each device drops its own units
        for axis in dict.fromkeys((*batch_axes, *expert_axes)):
            rng = jax.random.fold_in(rng, lax.axis_index(axis))
    expert_out = _experts(params, dispatched, settings, train=train, rng=rng, mlp_axes=mlp_axes)
    if expert_axes:
        expert_out = lax.all_to_all(expert_out, tuple(expert_axes), 0, 1, tiled=True)

    # Combine by gather: each (token, choice) reads its slot, weighted by its router probability.
    flat = expert_out.reshape(groups, slots, d_model)
    flat = jnp.concatenate([flat, jnp.zeros((groups, 1, d_model), flat.dtype)], axis=1)
    picked = jnp.take_along_axis(flat, slot.reshape(groups, group * top_k)[..., None], axis=1)
    picked = picked.reshape(groups, group, top_k, d_model)
    weights = jnp.where(kept, gates, 0.0).astype(x.dtype)  # cast back: no float32 crosses the mesh
    y = jnp.einsum("gskd,gsk->gsd", picked, weights).reshape(batch, length, d_model)

    metrics = {
        "aux_loss": aux_loss,
        "z_loss": z_loss,
        "dropped_fraction": 1.0 - jnp.mean(kept.astype(jnp.float32)),
        "tokens_per_expert": jnp.sum(top1, axis=(0, 1)),
        "top1_gate": jnp.mean(gates[..., 0].astype(jnp.float32)),
    }
    if batch_axes:
        metrics = {k: lax.pmean(v, tuple(batch_axes)) for k, v in metrics.items()}
        metrics["tokens_per_expert"] = metrics["tokens_per_expert"] * _axis_size(batch_axes)
    return y, metrics


def _axis_size(axes: Sequence[str]) -> int:
    size = 1
    for axis in axes:
        size *= lax.axis_size(axis)
    return size


def _experts(
    params: Params,
    slots: jax.Array,
    settings: MoESettings,
    *,
    train: bool,
    rng: jax.Array | None,
    mlp_axes: Sequence[str],
) -> jax.Array:
    """Every local expert's FFN on its slots: [G', E_local, C, D] -> [G', E_local, C, D]."""
    if "wi" in params:
        hidden = activate(jnp.einsum("gecd,edf->gecf", slots, params["wi"]), None, settings.activation)
    else:
        h = jnp.einsum("gecd,edf->gecf", slots, params["wi_0"])
        h_gate = jnp.einsum("gecd,edf->gecf", slots, params["wi_1"])
        hidden = activate(h, h_gate, settings.activation)
    if train and settings.expert_dropout_rate > 0:
        assert rng is not None, "expert dropout needs an rng"
        keep = 1.0 - settings.expert_dropout_rate
        mask = jax.random.bernoulli(rng, keep, hidden.shape)
        hidden = jnp.where(mask, hidden / keep, 0.0).astype(hidden.dtype)
    out = jnp.einsum("gecf,efd->gecd", hidden, params["wo"])
    if mlp_axes:  # d_ff is split over the model axis: each device holds a partial sum
        out = lax.psum(out, tuple(mlp_axes))
    return out


def jitter_noise(rng: jax.Array, shape: Sequence[int], eps: float, dtype: Any = jnp.float32) -> jax.Array:
    """Router input jitter U(1 - eps, 1 + eps) (App. C), drawn for the whole global batch."""
    return jax.random.uniform(rng, tuple(shape), dtype, 1.0 - eps, 1.0 + eps)
