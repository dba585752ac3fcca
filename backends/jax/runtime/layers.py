"""T5 building blocks as plain functions over arrays (the Switch Transformer is a T5 of Switch FFNs).

Runtime support, copied verbatim into generated JAX programs. Parameters are nested dicts of
arrays; functions take what they need and return arrays. Conventions follow T5 / flaxformer:
scale-only RMS norm, no biases, bucketed relative position bias shared across a stack's layers,
attention logits not scaled by 1/sqrt(d_kv), softmax in float32.

Shapes: B batch, L / M query / key length, D d_model, H heads, K d_kv, F d_ff, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax

from .moe import activate, dropout, stacked_einsum

T = TypeVar("T")

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
    table: jax.Array,
    batch: int,
    query_length: int,
    key_length: int,
    *,
    bidirectional: bool,
    max_distance: int,
    shards: int = 1,
) -> jax.Array:
    """[B, H, L, M] additive attention bias from a [buckets, H] table.

    The bias is the same for every row, yet each of the batch's `shards` (the devices it is split
    over) gathers its own copy on purpose: the gradient then flows back into a per-shard copy of the
    small table, and the sum over shards (devices) happens on [buckets, H]. Gathered once for the
    whole batch, XLA would all-reduce the [H, L, M] gradient of every layer before scattering it into
    the table, hundreds of times more bytes. One copy per row does the same with B / shards times
    the gather, transpose and scatter work of one per shard.
    """
    query = jnp.arange(query_length)[:, None]
    key = jnp.arange(key_length)[None, :]
    buckets = relative_position_bucket(
        key - query, bidirectional=bidirectional, num_buckets=table.shape[0], max_distance=max_distance
    )
    copies = jnp.broadcast_to(table, (shards, *table.shape))  # [S, buckets, H]
    bias = jnp.transpose(copies[:, buckets], (0, 3, 1, 2))  # [S, H, L, M]
    return jnp.repeat(bias, batch // shards, axis=0)  # [B, H, L, M]: each row reads its shard's copy


def attention(
    params: Params,
    x: jax.Array,
    memory: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
    dropout_rate: float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Multi-head attention of x [B, L, D] over memory [B, M, D].

    params: q, k, v [D, H, K]; o [H, K, D]. bias: [B, H, L, M], [H, L, M] or None. mask: bool,
    broadcastable to [B, H, L, M], True where attending is allowed. T5 does not scale logits by
    1/sqrt(K). Dropout (training only) applies to the attention weights.

    The projections that read the same input run as one einsum over stacked weights: with heads
    split over a model axis, the input's gradient is then one partial sum, all-reduced once
    (separate einsums leave one partial sum each, and XLA reduces each on its own).
    """
    if memory is x:  # self-attention: q, k and v all read x
        q, k, v = stacked_einsum("bld,dthk->tbhlk", x, (params["q"], params["k"], params["v"]))  # [D, 3, H, K]
    else:  # cross-attention: q reads x, k and v read the memory
        q = jnp.einsum("bld,dhk->bhlk", x, params["q"])
        k, v = stacked_einsum("bmd,dthk->tbhmk", memory, (params["k"], params["v"]))  # [D, 2, H, K]
    logits = jnp.einsum("bhlk,bhmk->bhlm", q, k).astype(jnp.float32)
    # The mask is additive, as in T5X: the float32 minimum absorbs any logit and bias, so a masked
    # key gets weight 0, and a query with every key masked attends uniformly.
    term = None if bias is None else bias.astype(jnp.float32)
    if mask is not None:
        term = jnp.where(mask, 0.0 if term is None else term, jnp.finfo(jnp.float32).min)
    if term is not None:
        logits = logits + term
    weights = dropout(softmax(logits).astype(x.dtype), dropout_rate, rng)
    context = jnp.einsum("bhlm,bhmk->bhlk", weights, v)
    return jnp.einsum("bhlk,hkd->bld", context, params["o"])


@jax.custom_vjp
def softmax(logits: jax.Array) -> jax.Array:
    """Softmax over the last axis, whose backward reads its output alone: jax.nn.softmax's keeps
    its exponentials too, a second tensor the size of the attention weights until the backward."""
    return jax.nn.softmax(logits, axis=-1)


def _softmax_forward(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    weights = softmax(logits)
    return weights, weights


def _softmax_backward(weights: jax.Array, grad: jax.Array) -> tuple[jax.Array]:
    return (weights * (grad - jnp.sum(grad * weights, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_forward, _softmax_backward)


def dense_ffn(
    params: Params, x: jax.Array, activation: str, dropout_rate: float = 0.0, rng: jax.Array | None = None
) -> jax.Array:
    """T5 FFN: wi (or wi_0 and wi_1 when gated) [D, F], wo [F, D]; dropout on the hidden units."""
    if "wi" in params:
        hidden = activate(x @ params["wi"], None, activation)
    else:  # gated: both input matrices in one einsum, so x's gradient is one partial sum (see attention)
        h, h_gate = stacked_einsum("...d,dtf->t...f", x, (params["wi_0"], params["wi_1"]))
        hidden = activate(h, h_gate, activation)
    return dropout(hidden, dropout_rate, rng) @ params["wo"]


def remat(block: Callable[..., T], *args: jax.Array) -> T:
    """`block(*args)` with its activations recomputed in the backward pass (train.remat: full):
    jax.checkpoint keeps only the arguments, and what the backward reads is computed again from
    them (XLA leaves out what it does not read, such as a block's last output projection)."""
    return jax.checkpoint(block)(*args)


def embed(table: jax.Array, ids: jax.Array) -> jax.Array:
    """[V, D] table, [B, L] ids -> [B, L, D]."""
    return jnp.take(table, ids, axis=0)


def shard_copies(table: jax.Array, shards: int) -> jax.Array:
    """[S, V, D]: one copy of a tied embedding table per batch shard (S of them: the devices the
    batch is split over), which both its uses read through embed_copies and tied_logits.

    The lookup's and the logits' gradients of each shard then meet in that shard's copy, added on
    the device, and the sum over shards (the broadcast's transpose) is one all-reduce of [V, D].
    Read whole by both uses, XLA all-reduces each use's partial gradient before adding them: twice
    the bytes (as position_bias's per-shard copies, for the same reason)."""
    return jnp.broadcast_to(table, (shards, *table.shape))


def _by_shard(x: jax.Array, shards: int) -> jax.Array:
    """[B, ...] -> [S, B / S, ...]: the rows of each batch shard (rows are split in order)."""
    return x.reshape(shards, x.shape[0] // shards, *x.shape[1:])


def embed_copies(copies: jax.Array, ids: jax.Array) -> jax.Array:
    """[S, V, D] per-shard copies (shard_copies), [B, L] ids -> [B, L, D]: each row from its shard's copy."""
    rows = jax.vmap(lambda table, shard_ids: jnp.take(table, shard_ids, axis=0))(copies, _by_shard(ids, len(copies)))
    return rows.reshape(*ids.shape, copies.shape[-1])


def tied_logits(y: jax.Array, copies: jax.Array, scale: float) -> jax.Array:
    """[B, L, D] decoder output, [S, V, D] per-shard copies of the embedding table -> [B, L, V]
    logits, (y * scale) @ table.T, each row against its shard's copy (T5 v1.0's tied logits)."""
    logits = jnp.einsum("sbld,svd->sblv", _by_shard(y * scale, len(copies)), copies)
    return logits.reshape(*y.shape[:-1], copies.shape[1])


def shift_right(targets: jax.Array) -> jax.Array:
    """Decoder inputs: the targets one step late, starting from id 0 (T5's decoder start token)."""
    return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def padding_mask(ids: jax.Array) -> jax.Array:
    """[B, 1, 1, M]: True at real (non-pad) key positions."""
    return (ids > 0)[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
    """[1, 1, L, L]: True where the key position is not after the query position."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """[B, L] cross-entropy in nats of each target token, computed in float32: logsumexp minus the
    target's logit (optax), which never materialises the [B, L, V] log-probabilities; on XLA:CPU
    log_softmax's backward added a full-vocabulary copy (switchc's benchmarks/bench_loss_head.py)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` where `mask` is true (pad targets carry no loss)."""
    weights = mask.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def sub(params: Params, prefix: str) -> Params:
    """The parameters under `prefix/`, keyed by the rest of their names ("encoder/0/ffn" -> wi, wo)."""
    start = len(prefix) + 1
    return {name[start:]: value for name, value in params.items() if name.startswith(prefix + "/")}


def init(rng: jax.Array, shape: tuple[int, ...], std: float, dtype: Any) -> jax.Array:
    """Truncated normal (2 std), mean 0, standard deviation `std` (Sec. 2.4); std 0 means ones."""
    if std == 0.0:
        return jnp.ones(shape, dtype)
    # a normal truncated to [-2, 2] has std 0.8796; rescale so the result has std `std`
    return (jax.random.truncated_normal(rng, -2.0, 2.0, shape, jnp.float32) * (std / 0.87962566)).astype(dtype)


class Noise:
    """Independent random streams for one step: stream i is the same on every mesh (None: eval)."""

    def __init__(self, rng: jax.Array | None) -> None:
        self.rng = rng

    def key(self, stream: int) -> jax.Array | None:
        return None if self.rng is None else jax.random.fold_in(self.rng, stream)

    def jitter(self, stream: int, shape: tuple[int, ...], eps: float) -> jax.Array | None:
        """Router input jitter U(1 - eps, 1 + eps) (App. C), for the global batch."""
        if self.rng is None or eps == 0.0:
            return None
        return jax.random.uniform(jax.random.fold_in(self.rng, stream), shape, jnp.float32, 1.0 - eps, 1.0 + eps)


def summarize(cross_entropy: jax.Array, moe: dict[str, dict[str, jax.Array]]) -> dict[str, Any]:
    """Step metrics: the token loss, router losses and routing statistics (mean over Switch layers
    and per layer), so a run shows how each layer routes."""
    metrics: dict[str, Any] = {"cross_entropy": cross_entropy}
    if moe:
        for key in ("aux_loss", "z_loss", "dropped_fraction", "top1_gate"):
            metrics[key] = sum(layer[key] for layer in moe.values()) / len(moe)
        for name, layer in moe.items():
            metrics[f"dropped_fraction/{name}"] = layer["dropped_fraction"]
            metrics[f"tokens_per_expert/{name}"] = layer["tokens_per_expert"]
    return metrics
