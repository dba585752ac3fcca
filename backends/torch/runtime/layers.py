"""T5 building blocks as torch modules (the Switch Transformer is a T5 of Switch FFNs). Runtime
support, copied verbatim.

Each module holds the parameters of one IR op under the IR's leaf names (q, k, v, o; wi, wo;
scale; table; ...), with exactly the shapes of the IR (and of the JAX program's PARAMS): q is
[D, H, K], not nn.Linear's [out, in]. A model built from them names every parameter
`encoder.0.attention.q` where the IR says `encoder/0/attention/q` (see `ir_name`), so weights
load by IR name (`load_flat`). Nothing here knows about parallelism: runtime/parallel.py shards
parameters and wraps modules from outside, and the modules read their sizes from their
(possibly sharded) parameters.

Conventions follow T5 / flaxformer and the JAX runtime: scale-only RMS norm, no biases, bucketed
relative position bias shared across a stack's layers, attention logits not scaled by
1/sqrt(d_kv), softmax in float32.

Shapes: B batch, L / M query / key length, D d_model, H heads, K d_kv, F d_ff, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:  # the Switch modules, for Block's annotations (moe.py imports this module)
    from .moe import Experts, Router

T = TypeVar("T")


def ir_name(module_path: str) -> str:
    """A parameter's IR name from its torch path: `encoder.0.attention.q` -> `encoder/0/attention/q`."""
    return module_path.replace(".", "/")


def module_path(name: str) -> str:
    """A parameter's torch path from its IR name (IR names never contain dots)."""
    return name.replace("/", ".")


# ---- randomness ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """One random stream, named by a tuple of integers (seed, step, stream, shard, ...).

    Streams are values, not generator state: the same name gives the same numbers in any process
    and on any device, and a wrapper can derive an independent stream with `fold` (parallel.py
    folds in a rank's shard index so that shards of one tensor draw different units).
    """

    words: tuple[int, ...]

    def fold(self, word: int) -> Stream:
        return Stream((*self.words, word))

    def generator(self, device: torch.device) -> torch.Generator:
        seed = int(np.random.SeedSequence(self.words).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=device).manual_seed(seed)


class Noise:
    """The random streams of one training step; `Noise()` (no seed) is evaluation: no noise at all.

    A batch may be one shard (`rows`) of a global batch of `global_batch` rows. Router jitter is
    drawn per row of the global batch, so it is the same on every mesh (as in the JAX program).
    Dropout streams are per shard: shard i of the batch draws its own masks, so with dropout on,
    runs on different meshes agree in distribution, not in every number.
    """

    def __init__(
        self,
        seed: int | None = None,
        step: int = 0,
        *,
        rows: slice = slice(None),
        global_batch: int | None = None,
        shard: int = 0,
    ) -> None:
        self.seed, self.step = seed, step
        self.rows, self.global_batch, self.shard = rows, global_batch, shard

    def key(self, stream: int) -> Stream | None:
        """The dropout stream `stream` of this batch shard (None: evaluation)."""
        return None if self.seed is None else Stream((self.seed, self.step, stream, self.shard))

    def jitter(self, stream: int, like: torch.Tensor, eps: float) -> torch.Tensor | None:
        """Router input jitter U(1 - eps, 1 + eps) (App. C) for this shard's rows, float32.

        Drawn outside torch.compile's graphs with --compile (keep_draws_eager).

        Row r of the global batch draws from its own stream, so a shard draws its rows only and
        gets the numbers any other mesh would give them.
        """
        if self.seed is None or eps == 0.0:
            return None
        rows = range(self.global_batch or like.shape[0])[self.rows]
        assert len(rows) == like.shape[0], f"{len(rows)} rows of noise for a batch of {like.shape[0]}"
        device = like.device
        noise = torch.stack(
            [
                torch.rand(
                    like.shape[1:],
                    generator=Stream((self.seed, self.step, stream, row)).generator(device),
                    device=device,
                )
                for row in rows
            ]
        )
        return 1.0 - eps + 2.0 * eps * noise


def dropout(x: torch.Tensor, rate: float, stream: Stream | None) -> torch.Tensor:
    """Inverted dropout; the identity when rate is 0 or stream is None (evaluation)."""
    if rate == 0.0 or stream is None:
        return x
    return _stream_dropout(x, rate, stream)


def _stream_dropout(x: torch.Tensor, rate: float, stream: Stream) -> torch.Tensor:
    out: torch.Tensor = _Dropout.apply(x, rate, stream)
    return out


def keep_draws_eager() -> None:
    """--compile: the stream-seeded random draws (router jitter, dropout) run outside
    torch.compile's graphs, since a stream's generator is seeded on the host, which a graph cannot
    hold. Applied only then: torch.compiler.disable imports torch._dynamo (a second at start)."""
    global _stream_dropout
    _stream_dropout = torch.compiler.disable(_stream_dropout)
    Noise.jitter = torch.compiler.disable(Noise.jitter)  # type: ignore[method-assign]


def _dropped(x: torch.Tensor, rate: float, stream: Stream) -> torch.Tensor:
    """x with the units `stream` drops zeroed and the rest scaled by 1 / (1 - rate)."""
    keep = torch.rand(x.shape, generator=stream.generator(x.device), device=x.device) >= rate
    return torch.where(keep, x / (1.0 - rate), torch.zeros((), dtype=x.dtype, device=x.device))


class _Dropout(torch.autograd.Function):
    """Dropout that keeps no mask for the backward pass: the backward draws it again from its
    stream (a stream is a value: the same numbers every time). Keeping none also ends a block's
    recomputation under train.remat at the op before it, as XLA's does (`remat`)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rate: float, stream: Stream) -> torch.Tensor:
        ctx.rate, ctx.stream = rate, stream
        return _dropped(x, rate, stream)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _dropped(grad, ctx.rate, ctx.stream), None, None


def remat(block: Callable[..., T], *args: torch.Tensor) -> T:
    """`block(*args)` with its activations recomputed in the backward pass (train.remat: full):
    torch.utils.checkpoint (non-reentrant) keeps only the arguments, and the backward runs the
    block again up to the last tensor it saved (so not a block's last output projection). A plain
    call where no gradient is recorded (evaluation)."""
    if not torch.is_grad_enabled():
        return block(*args)
    # Every random number of a block comes from a Stream (a value), not from torch's global
    # generators: there is no generator state to save and restore around the recomputation.
    out: T = checkpoint(block, *args, use_reentrant=False, preserve_rng_state=False)
    return out


def stacked_einsum(subscripts: str, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
    """torch.einsum(subscripts, x, the weights stacked on dim 1), for projections that read one
    input (one matmul; with heads split over a model axis, x's gradient is one partial sum). Its
    backward keeps x and the weights, where autograd would keep the stacked copy (as large as the
    weights) from the forward pass to the backward."""
    out: torch.Tensor = _StackedEinsum.apply(subscripts, x, *weights)
    return out


class _StackedEinsum(torch.autograd.Function):
    """stacked_einsum's op: subscripts "x,w->out" of two operands, w the stacked weights."""

    @staticmethod
    def forward(ctx: Any, subscripts: str, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        ctx.subscripts = subscripts
        ctx.save_for_backward(x, *weights)
        return torch.einsum(subscripts, x, torch.stack(weights, dim=1))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # Both gradients as two matmuls over one copy of `grad` laid out [x's own dims, w's own dims],
        # as autograd's bmm backward does: an einsum per gradient permutes `grad` (as large as the
        # projections' output) into its own layout, one copy each, 10% slower on bench_step's attention.
        x, *weights = ctx.saved_tensors
        inputs, out = ctx.subscripts.split("->")
        x_dims, w_dims = inputs.split(",")
        x_own = [d for d in x_dims if d not in w_dims]  # b, l
        w_own = [d for d in w_dims if d not in x_dims]  # t, h, k
        shared = [d for d in x_dims if d in w_dims]  # d: contracted
        assert sorted(out) == sorted(x_own + w_own), ctx.subscripts  # no dim common to all three
        size = dict(zip(out, grad.shape, strict=True)) | dict(zip(x_dims, x.shape, strict=True))
        stacked = torch.stack(weights, dim=1)
        size |= dict(zip(w_dims, stacked.shape, strict=True))

        def flat(t: torch.Tensor, dims: str, rows: list[str], cols: list[str]) -> torch.Tensor:
            """t (named by `dims`) as a [rows, cols] matrix."""
            order = [dims.index(d) for d in rows + cols]
            return t.permute(order).reshape(math.prod(size[d] for d in rows), -1)

        def unflat(m: torch.Tensor, rows: list[str], cols: list[str], dims: str) -> torch.Tensor:
            """The inverse of flat: a [rows, cols] matrix as a tensor named by `dims`."""
            t = m.reshape([size[d] for d in rows + cols])
            return t.permute([(rows + cols).index(d) for d in dims])

        g = flat(grad, out, x_own, w_own)
        grad_x = grad_weights = None
        if ctx.needs_input_grad[1]:
            grad_x = unflat(g @ flat(stacked, w_dims, shared, w_own).T, x_own, shared, x_dims)
        if any(ctx.needs_input_grad[2:]):
            grad_w = flat(x, x_dims, x_own, shared).T @ g
            grad_weights = unflat(grad_w, shared, w_own, w_dims).unbind(dim=1)
        return None, grad_x, *(grad_weights or [None] * len(weights))


def activate(h: torch.Tensor, h_gate: torch.Tensor | None, activation: str) -> torch.Tensor:
    """The FFN nonlinearity; gated variants multiply by a second projection (GEGLU, SwiGLU).

    A gated one runs under torch.utils.checkpoint where gradients are recorded: its backward
    computes the activation of h again, where autograd would keep it, a third tensor of the hidden
    size besides h and h_gate, until the backward pass.
    """
    if activation == "relu":
        return F.relu(h)
    if activation == "gelu":
        return F.gelu(h, approximate="tanh")
    assert h_gate is not None, activation
    if not torch.is_grad_enabled():
        return _gated(h, h_gate, activation)
    out: torch.Tensor = checkpoint(_gated, h, h_gate, activation, use_reentrant=False, preserve_rng_state=False)
    return out


def _gated(h: torch.Tensor, h_gate: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "geglu":
        return F.gelu(h, approximate="tanh") * h_gate
    if activation == "swiglu":
        return F.silu(h) * h_gate
    raise ValueError(f"unknown activation {activation!r}")


# ---- modules ----------------------------------------------------------------------------------------


def _parameter(*shape: int) -> nn.Parameter:
    """Uninitialised: init_params below fills every parameter from the PARAMS table."""
    return nn.Parameter(torch.empty(shape))


class Block(nn.ModuleDict):
    """A transformer block's sublayers by IR name. A block holds the ones its IR op has: a Switch
    block has router and experts instead of ffn, an encoder block no cross-attention; the
    annotations give each name's module type to a type checker (they create no attribute)."""

    attention_norm: RMSNorm
    attention: Attention
    cross_attention_norm: RMSNorm
    cross_attention: Attention
    ffn_norm: RMSNorm
    ffn: FeedForward
    router: Router
    experts: Experts

    def __init__(self, **sublayers: nn.Module) -> None:
        super().__init__(sublayers)


class Stack(nn.ModuleDict):
    """An encoder or decoder: its blocks under their indices ("0", "1", ...) beside the modules
    the whole stack shares (position_bias, final_norm, ...) under their IR names."""

    def block(self, index: int) -> Block:
        """Block `index`, typed as a Block (`self[...]` is any module)."""
        block = self[str(index)]
        if not isinstance(block, Block):
            raise TypeError(f"entry {index} of the stack is a {type(block).__name__}, not a Block")
        return block


class Embedding(nn.Module):
    """The token embedding table `embedding` [V, D]; `attend` is its use as the tied output
    projection (T5 v1.0)."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embedding = _parameter(vocab_size, d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, L, D]."""
        return F.embedding(ids, self.embedding)

    def attend(self, y: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, L, V]: the logit of every row of the table."""
        return y @ self.embedding.T


class Logits(nn.Module):
    """The untied output projection `lm_head` [D, V] (T5 v1.1)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.lm_head = _parameter(d_model, vocab_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.lm_head


class RMSNorm(nn.Module):
    """T5 layer norm: rescale by the root mean square, no mean subtraction, no bias."""

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.scale = _parameter(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.scale.float()).to(x.dtype)


def relative_position_bucket(
    relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's buckets: exact for small distances, logarithmic up to max_distance, then shared."""
    bucket = torch.zeros_like(relative_position)
    distance = -relative_position  # memory position - query position, negated as in T5
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).long() * num_buckets
        distance = distance.abs()
    else:
        distance = distance.clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (num_buckets - max_exact))).long()  # truncates like JAX's astype
    large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(is_small, distance, large)


class PositionBias(nn.Module):
    """Relative position bias `table` [buckets, H], shared by every self-attention of a stack."""

    def __init__(self, num_buckets: int, num_heads: int, *, bidirectional: bool, max_distance: int) -> None:
        super().__init__()
        self.bidirectional, self.max_distance = bidirectional, max_distance
        self.table = _parameter(num_buckets, num_heads)

    def forward(self, query_length: int, key_length: int) -> torch.Tensor:
        """[1, H, L, M] additive attention bias (the same for every row of the batch)."""
        device = self.table.device
        query = torch.arange(query_length, device=device)[:, None]
        key = torch.arange(key_length, device=device)[None, :]
        buckets = relative_position_bucket(
            key - query,
            bidirectional=self.bidirectional,
            num_buckets=self.table.shape[0],
            max_distance=self.max_distance,
        )
        return self.table[buckets].permute(2, 0, 1)[None]  # [L, M, H] -> [1, H, L, M]


class Attention(nn.Module):
    """Multi-head attention: q, k, v [D, H, K]; o [H, K, D]. Heads are read from q's shape, so a
    module whose heads were split by parallel.py runs its own heads only."""

    def __init__(self, d_model: int, num_heads: int, d_kv: int) -> None:
        super().__init__()
        self.q = _parameter(d_model, num_heads, d_kv)
        self.k = _parameter(d_model, num_heads, d_kv)
        self.v = _parameter(d_model, num_heads, d_kv)
        self.o = _parameter(num_heads, d_kv, d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        bias: torch.Tensor | None,
        mask: torch.Tensor | None,
        *,
        dropout_rate: float = 0.0,
        rng: Stream | None = None,
    ) -> torch.Tensor:
        """x [B, L, D] attends over memory [B, M, D]. bias: [1 or B, H, L, M] or None. mask: bool,
        broadcastable to [B, H, L, M], True where attending is allowed. T5 does not scale logits
        by 1/sqrt(K). Dropout (training only) applies to the attention weights. Self-attention is
        recognised by `memory is x`."""
        if memory is x:  # self-attention: q, k and v read x, as one matmul over stacked weights
            q, k, v = stacked_einsum("bld,dthk->tbhlk", x, self.q, self.k, self.v)
        else:  # cross-attention: k and v read the memory
            q = torch.einsum("bld,dhk->bhlk", x, self.q)
            k, v = stacked_einsum("bmd,dthk->tbhmk", memory, self.k, self.v)
        logits = attention_logits(q, k, bias, mask)
        weights = dropout(torch.softmax(logits, dim=-1).to(x.dtype), dropout_rate, rng)
        context = torch.einsum("bhlm,bhmk->bhlk", weights, v)
        return torch.einsum("bhlk,hkd->bld", context, self.o)


def attention_logits(
    q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor:
    """float32 [B, H, L, M]: q [B, H, L, K] . k [B, H, M, K] + bias, masked (Attention.forward's
    operands).

    The mask is additive, as in T5X (flaxformer's combine_biases): the float32 minimum where it is
    False, added with the bias as one term. The minimum absorbs any logit and bias, so a masked
    key gets weight 0; a query with every key masked attends uniformly (the JAX program's
    layers.attention does the same). In a float32 model the matmul adds that term as it writes
    (baddbmm): one pass over the logits instead of three (matmul, add, mask).
    """
    term = None if bias is None else bias.float()
    if mask is not None:
        term = torch.where(mask, 0.0 if term is None else term, torch.finfo(torch.float32).min)
    if term is None or q.dtype != torch.float32:
        logits = torch.einsum("bhlk,bhmk->bhlm", q, k).float()
        return logits if term is None else logits + term
    batch, heads, length, d_kv = q.shape
    memory = k.shape[2]
    term = term.expand(batch, heads, length, memory).reshape(batch * heads, length, memory)
    logits = torch.baddbmm(term, q.reshape(-1, length, d_kv), k.reshape(-1, memory, d_kv).transpose(1, 2))
    return logits.view(batch, heads, length, memory)


class FeedForward(nn.Module):
    """T5 FFN: wi (or wi_0 and wi_1 when gated) [D, F], wo [F, D]; dropout on the hidden units."""

    def __init__(self, d_model: int, d_ff: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        if activation in ("geglu", "swiglu"):
            self.wi_0 = _parameter(d_model, d_ff)
            self.wi_1 = _parameter(d_model, d_ff)
        else:
            self.wi = _parameter(d_model, d_ff)
        self.wo = _parameter(d_ff, d_model)

    def forward(self, x: torch.Tensor, *, dropout_rate: float = 0.0, rng: Stream | None = None) -> torch.Tensor:
        if hasattr(self, "wi"):
            hidden = activate(x @ self.wi, None, self.activation)
        else:
            hidden = activate(x @ self.wi_0, x @ self.wi_1, self.activation)
        return dropout(hidden, dropout_rate, rng) @ self.wo


# ---- functions ------------------------------------------------------------------------------------


def shift_right(targets: torch.Tensor) -> torch.Tensor:
    """Decoder inputs: the targets one step late, starting from id 0 (T5's decoder start token)."""
    return F.pad(targets, (1, 0))[:, :-1]


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, 1, M]: True at real (non-pad) key positions."""
    return (ids > 0)[:, None, None, :]


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """[1, 1, L, L]: True where the key position is not after the query position."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


class CrossEntropy(nn.Module):
    """forward(logits, targets): `token_cross_entropy`. A module, though it has no parameters, so
    that runtime/parallel.py can put the split-vocabulary loss in its place."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_cross_entropy(logits, targets)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, L] cross-entropy in nats of each target token, computed in float32."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -log_probs.gather(-1, targets[..., None].long())[..., 0]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is true (pad targets carry no loss).

    `count` replaces the number of true entries as the divisor. The training loop passes the
    global batch's count divided by the number of batch shards (as batch["target_count"]), so
    that the mean over shards of each shard's result is the global batch's mean.
    """
    weights = mask.to(values.dtype)
    divisor = weights.sum() if count is None else torch.as_tensor(count, dtype=values.dtype, device=values.device)
    return (values * weights).sum() / divisor.clamp(min=1.0)


def summarize(cross_entropy: torch.Tensor, moe: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """Step metrics: the token loss, router losses and routing statistics (mean over Switch layers
    and per layer), so a run shows how each layer routes. The same keys as the JAX program's."""
    metrics: dict[str, Any] = {"cross_entropy": cross_entropy}
    if moe:
        for key in ("aux_loss", "z_loss", "dropped_fraction", "top1_gate"):
            metrics[key] = sum(layer[key] for layer in moe.values()) / len(moe)
        for name, layer in moe.items():
            metrics[f"dropped_fraction/{name}"] = layer["dropped_fraction"]
            metrics[f"tokens_per_expert/{name}"] = layer["tokens_per_expert"]
    return metrics


# ---- parameters by IR name --------------------------------------------------------------------------

ParamTable = Mapping[str, tuple[tuple[int, ...], tuple[str | None, ...], float]]


def truncated_normal(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A standard normal truncated to [-2, 2], by inverting the CDF of a uniform draw (one pass,
    where nn.init.trunc_normal_ rejects and redraws)."""
    low, high = (0.5 * (1.0 + math.erf(bound / math.sqrt(2.0))) for bound in (-2.0, 2.0))
    uniform = torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)
    return (torch.erfinv(2.0 * uniform - 1.0) * math.sqrt(2.0)).clamp(-2.0, 2.0).float()


def init_params(model: nn.Module, table: ParamTable, seed: int) -> None:
    """Truncated-normal weights with PARAMS' std (sqrt(init_scale / fan_in) for kernels, Sec. 2.4; 1 for
    the embedding), norms at 1.

    Every parameter is drawn whole, in table order, from one generator seeded by `seed`: the
    weights do not depend on the mesh (parallel.py keeps each rank's shard afterwards).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, (shape, _, std) in table.items():
            param = model.get_parameter(module_path(name))
            if tuple(param.shape) != tuple(shape):
                raise ValueError(f"{name}: the model's shape {tuple(param.shape)} is not the table's {shape}")
            if std == 0.0:
                param.fill_(1.0)
                continue
            # a normal truncated to [-2, 2] has std 0.8796; rescale so the result has std `std`
            param.copy_(truncated_normal(shape, generator) * (std / 0.87962566))  # cast to the param's dtype


def load_flat(model: nn.Module, params: Mapping[str, Any]) -> None:
    """Load whole (unsharded) weights by IR name, e.g. the arrays of the JAX program's params.

    Call it before parallelize (which keeps each rank's shard). Every parameter must be given,
    with the IR's shape.
    """
    own = {ir_name(path): param for path, param in model.named_parameters()}
    missing, unknown = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or unknown:
        raise KeyError(f"load_flat: missing {missing[:5]}, unknown {unknown[:5]}")
    with torch.no_grad():
        for name, param in own.items():
            value = torch.as_tensor(np.asarray(params[name]))
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"load_flat: {name} has shape {tuple(value.shape)}, the model {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))


def flat_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters by IR name (local shards once parallelized)."""
    return {ir_name(path): param.detach() for path, param in model.named_parameters()}
