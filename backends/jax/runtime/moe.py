"""The Switch / MoE feed-forward layer: routing, capacity, dispatch, experts, combine (the Switch
Transformer paper's Sec. 2).

This file is runtime support: it is copied verbatim into every generated JAX program and depends
only on jax and runtime/routing.py (routing group size, expert capacity and MoESettings: pure
Python shared with the PyTorch program and switchc's cost model). It has one function per IR op
of a Switch layer (Router, Dispatch, ExpertFFN, Combine, AuxLoss, RouterZLoss); `switch_ffn`
composes them on one device's tokens and runs inside `jax.shard_map` (see parallel.py): each
device routes its own tokens, an all-to-all over the expert mesh axes moves each expert's slots
to the device holding that expert, and a second all-to-all brings the results back (the paper's
Sec. 5).

Shapes: G groups of S tokens (S = routing group size), D = d_model, F = d_ff (or d_ff / model
shards), E experts (E_local on one device), C = expert capacity, k = experts per token.

Dispatch is index-based: each expert slot gathers the token that claimed it, and each token
gathers its slots' outputs back. That costs O(G * E * C * D) data movement and no matmul, where the
one-hot einsum of Mesh-TF costs 2 * G * S * E * C * D FLOPs (quadratic in tokens per group).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import routing

Params = dict[str, Any]


def stacked_einsum(subscripts: str, x: jax.Array, weights: Sequence[jax.Array]) -> jax.Array:
    """einsum(subscripts, x, the weights stacked on axis 1): projections that read one input as
    one einsum, so that x's gradient is one partial sum (with the weights split over a model axis,
    one all-reduce instead of one per weight). Under jax.checkpoint the backward stacks the weights
    again instead of keeping the stacked copy, the size of the weights, from the forward pass."""
    return jax.checkpoint(_stacked_einsum, static_argnums=(0,))(subscripts, x, tuple(weights))


def _stacked_einsum(subscripts: str, x: jax.Array, weights: tuple[jax.Array, ...]) -> jax.Array:
    return jnp.einsum(subscripts, x, jnp.stack(weights, axis=1))


def activate(h: jax.Array, h_gate: jax.Array | None, activation: str) -> jax.Array:
    """The FFN nonlinearity; gated variants multiply by a second projection (GEGLU, SwiGLU).

    The smooth ones run under jax.checkpoint: their backward computes them again from h (and
    h_gate), where autodiff would keep every elementwise intermediate of the tanh GELU (six
    tensors of the hidden size for GEGLU, besides h and h_gate) until the backward pass.
    """
    if activation == "relu":
        return relu(h)
    return jax.checkpoint(_smooth, static_argnums=(2,))(h, h_gate, activation)


@jax.custom_vjp
def relu(h: jax.Array) -> jax.Array:
    """max(h, 0), whose backward reads its output (which the next matmul keeps anyway):
    jax.nn.relu's keeps a mask and a zeros tensor of h's size besides."""
    return jnp.maximum(h, 0)


def _relu_forward(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = relu(h)
    return out, out


def _relu_backward(out: jax.Array, grad: jax.Array) -> tuple[jax.Array]:
    return (jnp.where(out > 0, grad, 0).astype(grad.dtype),)


relu.defvjp(_relu_forward, _relu_backward)


def _smooth(h: jax.Array, h_gate: jax.Array | None, activation: str) -> jax.Array:
    if activation == "gelu":
        return jax.nn.gelu(h, approximate=True)
    assert h_gate is not None, activation
    if activation == "geglu":
        return jax.nn.gelu(h, approximate=True) * h_gate
    if activation == "swiglu":
        return jax.nn.silu(h) * h_gate
    raise ValueError(f"unknown activation {activation!r}")


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity when rate is 0 or rng is None (evaluation). Its backward
    reads the 1-byte mask alone (`_drop`)."""
    if rate == 0.0 or rng is None:
        return x
    return _drop(x, jax.random.bernoulli(rng, 1.0 - rate, x.shape), rate)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _drop(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
    """x / (1 - rate) where `keep`, else 0. Autodiff of jnp.where would keep two more tensors of
    x's size until the backward; this keeps `keep`."""
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _drop_forward(x: jax.Array, keep: jax.Array, rate: float) -> tuple[jax.Array, jax.Array]:
    return _drop(x, keep, rate), keep


def _drop_backward(rate: float, keep: jax.Array, grad: jax.Array) -> tuple[jax.Array, None]:
    return jnp.where(keep, grad / (1.0 - rate), 0.0).astype(grad.dtype), None


_drop.defvjp(_drop_forward, _drop_backward)


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


class Route(NamedTuple):
    """Routing decisions of one Switch layer (a pytree, so it can cross jit boundaries)."""

    experts: jax.Array  # [G, S, k] int32: chosen experts, best first
    gates: jax.Array  # [G, S, k] router dtype: their probabilities
    slot: jax.Array  # [G, S, k] int32: expert * C + position, or E * C when dropped
    kept: jax.Array  # [G, S, k] bool: False where the expert was full (the token is dropped)


def router_logits(w: jax.Array, x: jax.Array, router_dtype: Any, jitter: jax.Array | None = None) -> jax.Array:
    """Router op: [G, S, D] -> [G, S, E] logits in the router's precision (float32: Table 2).

    jitter: multiplicative input noise like x (App. C), drawn by the caller for the global batch so
    that a run gives the same numbers on any mesh; None at evaluation.
    """
    x = x.astype(router_dtype)
    if jitter is not None:
        x = x * jitter.astype(router_dtype)
    return x @ w.astype(router_dtype)


def route(logits: jax.Array, top_k: int, capacity: int, batch_prioritized: bool) -> Route:
    """Top-k experts per token and each (token, choice)'s slot; beyond capacity it is dropped."""
    num_experts = logits.shape[-1]
    probs = jax.nn.softmax(logits, axis=-1)
    gates, experts = lax.top_k(probs, top_k)
    positions = _slot_positions(experts, gates, num_experts, batch_prioritized)
    kept = positions < capacity
    slot = jnp.where(kept, experts * capacity + positions, num_experts * capacity)
    return Route(experts, gates, slot, kept)


def dispatch(x: jax.Array, routed: Route, num_experts: int, capacity: int) -> jax.Array:
    """Dispatch op: [G, S, D] -> [G, E, C, D]; each slot gathers the token that claimed it."""
    groups, group, d_model = x.shape
    slots = num_experts * capacity
    token = jnp.broadcast_to(jnp.arange(group)[None, :, None], routed.slot.shape)
    source = jnp.full((groups, slots + 1), group, jnp.int32)  # `group` indexes a zero pad row
    source = source.at[jnp.arange(groups)[:, None, None], routed.slot].set(token)[:, :slots]
    padded = jnp.concatenate([x, jnp.zeros((groups, 1, d_model), x.dtype)], axis=1)
    gathered = jnp.take_along_axis(padded, source[..., None], axis=1)
    return gathered.reshape(groups, num_experts, capacity, d_model)


def expert_ffn(
    params: Params,
    slots: jax.Array,
    activation: str,
    *,
    dropout_rate: float = 0.0,
    rng: jax.Array | None = None,
    expert_axes: Sequence[str] = (),
    mlp_axes: Sequence[str] = (),
) -> jax.Array:
    """ExpertFFN op: every expert's FFN on its slots, [G, E, C, D] -> [G, E, C, D].

    Inside shard_map, `expert_axes` names the mesh axes the experts are split over: an all-to-all
    trades this device's groups of every expert for everyone's groups of its own experts, and back.
    params: wi (or wi_0, wi_1) [E_local, D, F]; wo [E_local, F, D].
    """
    if expert_axes:  # [G, E, C, D] -> [G * n, E / n, C, D]
        slots = lax.all_to_all(slots, tuple(expert_axes), 1, 0, tiled=True)
    groups, experts, capacity, d_model = slots.shape
    # Expert-major [E, G * C, D]: one plain matmul per expert over all its slots, which XLA:CPU
    # runs faster than a batched einsum that keeps the groups dim inside.
    x = jnp.transpose(slots, (1, 0, 2, 3)).reshape(experts, groups * capacity, d_model)
    if "wi" in params:
        hidden = activate(jnp.einsum("ecd,edf->ecf", x, params["wi"]), None, activation)
    else:  # gated: both input matrices in one einsum, so the slots' gradient is one partial sum
        h, h_gate = stacked_einsum("ecd,etdf->tecf", x, (params["wi_0"], params["wi_1"]))  # [E, 2, D, F]
        hidden = activate(h, h_gate, activation)
    hidden = dropout(hidden, dropout_rate, rng)  # expert dropout (Table 4), training only
    out = jnp.einsum("ecf,efd->ecd", hidden, params["wo"])
    if mlp_axes:  # d_ff is split over the model axes: each device holds a partial sum
        out = lax.psum(out, tuple(mlp_axes))
    out = jnp.transpose(out.reshape(experts, groups, capacity, d_model), (1, 0, 2, 3))
    if expert_axes:
        out = lax.all_to_all(out, tuple(expert_axes), 0, 1, tiled=True)
    return out


def combine(slots: jax.Array, routed: Route, dtype: Any) -> jax.Array:
    """Combine op: [G, E, C, D] -> [G, S, D]; each token sums its slots' outputs times its gates.

    Gates are cast to the model dtype first, so no float32 tensor is multiplied into activations.
    """
    groups, num_experts, capacity, d_model = slots.shape
    group, top_k = routed.slot.shape[1:]
    flat = slots.reshape(groups, num_experts * capacity, d_model)
    flat = jnp.concatenate([flat, jnp.zeros((groups, 1, d_model), flat.dtype)], axis=1)  # dropped -> 0
    picked = jnp.take_along_axis(flat, routed.slot.reshape(groups, group * top_k)[..., None], axis=1)
    weights = jnp.where(routed.kept, routed.gates, 0.0).astype(dtype)
    return jnp.einsum("gskd,gsk->gsd", picked.reshape(groups, group, top_k, d_model), weights)


def load_balancing_loss(logits: jax.Array, routed: Route) -> jax.Array:
    """AuxLoss op (eq. 4-6): N * sum_i f_i * P_i per group, averaged; 1.0 at uniform routing."""
    num_experts = logits.shape[-1]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    fraction = jnp.mean(jax.nn.one_hot(routed.experts[..., 0], num_experts, dtype=jnp.float32), axis=1)
    return num_experts * jnp.mean(jnp.sum(fraction * jnp.mean(probs, axis=1), axis=-1))


def router_z_loss(logits: jax.Array) -> jax.Array:
    """RouterZLoss op (ST-MoE): mean squared log-partition of the router logits."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)))


def routing_metrics(routed: Route, num_experts: int) -> dict[str, jax.Array]:
    """Share of (token, choice) pairs dropped, tokens whose first choice is each expert, top-1 gate."""
    return {
        "dropped_fraction": 1.0 - jnp.mean(routed.kept.astype(jnp.float32)),
        "tokens_per_expert": jnp.sum(jax.nn.one_hot(routed.experts[..., 0], num_experts, dtype=jnp.int32), (0, 1)),
        "top1_gate": jnp.mean(routed.gates[..., 0].astype(jnp.float32)),
    }


def switch_ffn(
    params: Params,
    x: jax.Array,
    settings: routing.MoESettings,
    *,
    jitter: jax.Array | None = None,
    rng: jax.Array | None = None,
    batch_axes: Sequence[str] = (),
    expert_axes: Sequence[str] = (),
    mlp_axes: Sequence[str] = (),
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A whole Switch layer on one device's tokens: x [B, L, D] -> ([B, L, D], losses and metrics).

    params: router [D, E]; wi (or wi_0, wi_1) [E_local, D, F]; wo [E_local, F, D]. Inside
    shard_map, `batch_axes` / `expert_axes` / `mlp_axes` name the mesh axes that split tokens,
    experts and d_ff; losses and metrics are then averaged over the devices that split tokens.
    Routing runs per device on purpose: XLA's partitioner would gather the logits of every device
    to run top_k and the slot scatter if they were left to jit.
    """
    batch, length, d_model = x.shape
    group, capacity = settings.groups(batch * length)
    grouped = x.reshape(-1, group, d_model)
    if jitter is not None:
        jitter = jitter.reshape(grouped.shape)
    logits = router_logits(params["router"], grouped, settings.router_dtype, jitter)
    routed = route(logits, settings.top_k, capacity, settings.batch_prioritized)
    slots = dispatch(grouped, routed, settings.num_experts, capacity)
    if rng is not None:  # each device drops its own units
        for axis in dict.fromkeys((*batch_axes, *expert_axes)):
            rng = jax.random.fold_in(rng, lax.axis_index(axis))
    expert_params = {name: value for name, value in params.items() if name != "router"}
    slots = expert_ffn(
        expert_params,
        slots,
        settings.activation,
        dropout_rate=settings.expert_dropout_rate,
        rng=rng,
        expert_axes=expert_axes,
        mlp_axes=mlp_axes,
    )
    y = combine(slots, routed, x.dtype).reshape(batch, length, d_model)
    metrics = {
        "aux_loss": load_balancing_loss(logits, routed),
        "z_loss": router_z_loss(logits),
        **routing_metrics(routed, settings.num_experts),
    }
    if batch_axes:
        counts = metrics.pop("tokens_per_expert")
        metrics = {name: lax.pmean(value, tuple(batch_axes)) for name, value in metrics.items()}
        metrics["tokens_per_expert"] = lax.psum(counts, tuple(batch_axes))
    return y, metrics
