"""T5 building blocks as plain functions over arrays (PAPER.md Sec. 1).

Runtime support, copied verbatim into generated JAX programs. Parameters are nested dicts of
arrays; functions take what they need and return arrays. Conventions follow T5 / flaxformer:
scale-only RMS norm, no biases, bucketed relative position bias shared across a stack's layers,
attention logits not scaled by 1/sqrt(d_kv), softmax in float32.

Shapes: B batch, L / M query / key length, D d_model, H heads, K d_kv, F d_ff, V vocab.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .moe import activate

Params = dict[str, Any]


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """T5 layer norm: rescale by the root mean square, no mean subtraction, no bias."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (normed * scale.astype(jnp.float32)).astype(x.dtype)


def relative_position_bucket(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's buckets: exact for small distances, logarithmic up to max_distance, then shared."""
    bucket = jnp.zeros_like(relative_position)
    distance = -relative_position  # memory position - query position, negated as in T5
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


def position_bias(
    table: jax.Array, query_length: int, key_length: int, *, bidirectional: bool, max_distance: int
) -> jax.Array:
    """[H, L, M] additive attention bias from a [buckets, H] table."""
    query = jnp.arange(query_length)[:, None]
    key = jnp.arange(key_length)[None, :]
    buckets = relative_position_bucket(
        key - query, bidirectional=bidirectional, num_buckets=table.shape[0], max_distance=max_distance
    )
    return jnp.transpose(table[buckets], (2, 0, 1))


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity when rate is 0 or rng is None (evaluation)."""
    if rate == 0.0 or rng is None:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def attention(
    params: Params,
    x: jax.Array,
    memory: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
) -> jax.Array:
    """Multi-head attention of x [B, L, D] over memory [B, M, D].

    params: q, k, v [D, H, K]; o [H, K, D]. bias: [H, L, M] or None. mask: bool, broadcastable to
    [B, H, L, M], True where attending is allowed. T5 does not scale logits by 1/sqrt(K).
    """
    q = jnp.einsum("bld,dhk->bhlk", x, params["q"])
    k = jnp.einsum("bmd,dhk->bhmk", memory, params["k"])
    v = jnp.einsum("bmd,dhk->bhmk", memory, params["v"])
    logits = jnp.einsum("bhlk,bhmk->bhlm", q, k).astype(jnp.float32)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
    context = jnp.einsum("bhlm,bhmk->bhlk", weights, v)
    return jnp.einsum("bhlk,hkd->bld", context, params["o"])


def dense_ffn(params: Params, x: jax.Array, activation: str) -> jax.Array:
    """T5 FFN: wi (or wi_0 and wi_1 when gated) [D, F], wo [F, D]."""
    if "wi" in params:
        hidden = activate(x @ params["wi"], None, activation)
    else:
        hidden = activate(x @ params["wi_0"], x @ params["wi_1"], activation)
    return hidden @ params["wo"]


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean token cross-entropy (nats) over positions with weight 1, and the weight sum."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_loss = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    total = jnp.sum(weights)
    return jnp.sum(token_loss * weights) / jnp.maximum(total, 1.0), total
