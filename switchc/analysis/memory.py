"""Memory per device: parameters, gradients, optimizer state, and activations kept for backward.

- Parameters and gradients are in the model dtype (model.dtype), each device holding its shard.
- Optimizer state, as both generated programs keep it (optax's defaults, and the PyTorch
  optimizers that mirror them): second moments in the parameter's dtype; Adafactor factors them
  as optax does: for a weight whose two largest dims are both >= 128, a row and a column vector
  (the weight with one of those dims removed, each), otherwise a full second moment; plus a full
  float32 first moment when it has momentum (train.optimizer.beta1 > 0). Adam keeps two full
  moments in the parameter's dtype.
- Activations: each op's rule says which of its inputs its backward pass reads and how many bytes
  of its own intermediates it keeps. A tensor read by several ops is kept once. With
  train.remat = full, only the tensors entering each block are kept between the passes, and one
  block's activations exist again while its backward runs (the largest block counts).
XLA's buffer sharing, fusion temporaries and allocator overheads are not modelled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from switchc.analysis.common import Sizes, local_sizes, rule_for
from switchc.ir import ops
from switchc.ir.graph import Graph, all_ops, data_inputs, info, layout_of, op_of
from switchc.ir.tensor import DTYPE_BYTES, Layout, Mesh, Param, local_bytes, local_numel

# Adafactor's first moment (optax.adafactor's dtype_momentum); every other moment is kept in the
# parameter's dtype (optax.adam's mu_dtype=None, torch's zeros_like).
MOMENTUM_DTYPE = "float32"
# optax.adafactor's default: dims smaller than this are not worth factoring.
ADAFACTOR_MIN_DIM_TO_FACTOR = 128
MASK_BYTES = 1  # a dropout mask keeps one byte per element
SOFTMAX_BYTES = 4  # attention softmax runs in float32


@dataclass(frozen=True)
class Saved:
    """What an op's backward pass reads: some of its inputs, and bytes of its own intermediates."""

    inputs: tuple[int, ...] = ()
    internal: int = 0


NOTHING = Saved()


def _nothing(op: ops.Op, n: Sizes) -> Saved:
    return NOTHING


def _rms_norm(op: ops.Op, n: Sizes) -> Saved:
    """Its input and one float32 reciprocal RMS per token."""
    return Saved((0,), n("batch") * n("length") * 4)


def _dropout(op: ops.Op, n: Sizes) -> Saved:
    return Saved((), n("batch") * n("length") * n("embed") * MASK_BYTES)


def _attention(op: ops.Op, n: Sizes) -> Saved:
    """Legend: B batch, L query length, M key length, H heads, K d_kv, b dtype bytes.

    Keeps q, k, v and the context (weights v) besides its inputs, and per attention weight: the
    float32 softmax output (its backward reads it), the weights in the model dtype that the
    context matmul reads (another copy when that dtype is not float32 or dropout is on), and
    dropout's mask.
    """
    assert isinstance(op, ops.Attention)
    B, L, M, H, K, b = n("batch"), n("length"), n("kv_length"), n("heads"), n("kv"), DTYPE_BYTES[op.dtype]
    per_weight = SOFTMAX_BYTES
    if b != SOFTMAX_BYTES or op.dropout_rate > 0:
        per_weight += b
    if op.dropout_rate > 0:
        per_weight += MASK_BYTES
    kept = (B * L * H * K * 2 + B * M * H * K * 2) * b + B * H * L * M * per_weight
    return Saved((0, 1) if op.cross else (0,), kept)


def _ffn_hidden(count: int, activation: str, rate: float, b: int) -> int:
    """Bytes of an FFN's hidden activations for `count` hidden units: what the output matmul reads
    (the activation, or with dropout the dropped activation and the mask) and what the
    activation's backward reads: ReLU its own output; GELU its input; a gated one both inputs."""
    if activation in ops.GATED:
        read = 2
    elif activation == "gelu":
        read = 1
    else:  # ReLU's output is the output matmul's input too, unless dropout comes between them
        read = 1 if rate > 0 else 0
    return count * (read + 1) * b + (count * MASK_BYTES if rate > 0 else 0)


def _dense_ffn(op: ops.Op, n: Sizes) -> Saved:
    assert isinstance(op, ops.DenseFFN)
    hidden = n("batch") * n("length") * n("mlp")
    return Saved((0,), _ffn_hidden(hidden, op.activation, op.dropout_rate, DTYPE_BYTES[op.dtype]))


def _experts(op: ops.Op, n: Sizes) -> Saved:
    assert isinstance(op, ops.ExpertFFN)
    hidden = n("groups") * n("experts") * n("capacity") * n("mlp")
    return Saved((0,), _ffn_hidden(hidden, op.activation, op.dropout_rate, DTYPE_BYTES[op.dtype]))


def _router(op: ops.Op, n: Sizes) -> Saved:
    """Its input, the float32 router probabilities, and what the logits matmul's weight gradient
    reads in moe.router_dtype: the jittered input and the jitter noise (which the input gradient
    reads) when training with jitter, else the input cast to the router's dtype when that differs."""
    assert isinstance(op, ops.Router)
    tokens = n("groups") * n("group_tokens")
    copies = 2 if op.jitter_eps > 0 else int(op.router_dtype != op.dtype)
    return Saved((0,), tokens * n("experts") * 4 + copies * tokens * n("embed") * DTYPE_BYTES[op.router_dtype])


def _dispatch(op: ops.Op, n: Sizes) -> Saved:
    """The int32 token index of every slot (the backward scatters slot gradients back)."""
    return Saved((), n("groups") * n("experts") * n("capacity") * 4)


def _combine(op: ops.Op, n: Sizes) -> Saved:
    """Expert outputs (for the gate gradient) and router logits (for the output gradient)."""
    return Saved((0, 1), 0)


def _router_loss(op: ops.Op, n: Sizes) -> Saved:
    return Saved((0,), 0)


def _logits(op: ops.Op, n: Sizes) -> Saved:
    return Saved((0,), 0)


def _cross_entropy(op: ops.Op, n: Sizes) -> Saved:
    """The float32 log-probabilities over the (local) vocabulary."""
    return Saved((), n("batch") * n("length") * n("vocab") * 4)


ActivationRule = Callable[[ops.Op, Sizes], Saved]

ACTIVATION_RULES: dict[type[ops.Op], ActivationRule] = {
    ops.Input: _nothing,
    ops.Embed: _nothing,  # its backward needs only the token ids
    ops.RelativeBias: _nothing,
    ops.RMSNorm: _rms_norm,
    ops.Attention: _attention,
    ops.DenseFFN: _dense_ffn,
    ops.Group: _nothing,
    ops.Router: _router,
    ops.Dispatch: _dispatch,
    ops.ExpertFFN: _experts,
    ops.Combine: _combine,
    ops.Ungroup: _nothing,
    ops.AuxLoss: _router_loss,
    ops.RouterZLoss: _router_loss,
    ops.Residual: _nothing,
    ops.Dropout: _dropout,
    ops.Logits: _logits,
    ops.CrossEntropy: _cross_entropy,
    ops.Loss: _nothing,
    ops.Output: _nothing,
    ops.AllReduce: _nothing,
    ops.ReduceScatter: _nothing,
    ops.AllGather: _nothing,
    ops.AllToAll: _nothing,
    ops.Shard: _nothing,
    ops.BackwardAllReduce: _nothing,
    ops.GradientAllReduce: _nothing,
}


# What of an op inside a block the backward pass computes again under train.remat = full.
Recompute = Literal["all", "internal", "none"]


def recomputation(graph: Graph) -> dict[str, Recompute]:
    """train.remat = full: for every op inside a block, what the backward pass computes again from
    the tensors entering the block. "all": the op's output is read again, by the backward of an op
    of its block or by an op that is itself computed again; "internal": only its own intermediates
    (an FFN's hidden activations, without its output projection; a dropout mask, from the random
    stream alone); "none": nothing (a block's last combine, its residual sum). This is what the
    PyTorch program runs (torch.utils.checkpoint stops at the last tensor the block saved); XLA
    leaves out the same, and keeps the cross-attention's keys and values of the encoder output
    too (backends/jax/verify.py, kept_cross_attention_flops)."""
    mesh = info(graph).mesh
    block_of = {node: op_of(graph, node).layer if op_of(graph, node).in_block else None for node in graph.nodes}
    saved = {
        node: rule_for(ACTIVATION_RULES, "memory", op_of(graph, node))(
            op_of(graph, node), local_sizes(op_of(graph, node), layout_of(graph, node), mesh)
        )
        for node, block in block_of.items()
        if block is not None
    }
    out: dict[str, Recompute] = {}
    for node in reversed(list(graph.nodes)):
        block = block_of[node]
        if block is None:
            continue
        needed = False
        for _, consumer, edge in graph.out_edges(node, data=True):
            if edge.get("gradient") or block_of[consumer] != block:
                continue
            # a dropout whose output is not read again draws only its mask, from the random stream
            mask_only = out[consumer] == "internal" and isinstance(op_of(graph, consumer), ops.Dropout)
            computed_again = out[consumer] != "none" and not mask_only
            needed = needed or edge["port"] in saved[consumer].inputs or computed_again
        out[node] = "all" if needed else "internal" if saved[node].internal > 0 else "none"
    return out


@dataclass(frozen=True)
class MemoryReport:
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    optimizer: str
    activations_bytes: int  # for the spec's train.remat
    activations_no_remat_bytes: int
    activations_full_remat_bytes: int
    remat: str
    per_device_bytes: int  # params + grads + optimizer + activations
    device_capacity_bytes: float | None = None  # of the hardware profile, when one is given
    fits: bool | None = None  # per_device_bytes <= device_capacity_bytes


def optimizer_state_bytes(param: Param, layout: Layout, mesh: Mesh, optimizer: str, momentum: bool) -> int:
    """Bytes of optimizer state for one parameter on one device."""
    local = local_numel(param.tensor, layout, mesh)
    own = DTYPE_BYTES[param.tensor.dtype]
    if optimizer == "adam":
        return 2 * local * own
    shape = [d.size for d in param.tensor.dims]
    local_shape = [d.size // mesh.size(axes) for d, axes in zip(param.tensor.dims, layout.axes, strict=True)]
    second = local
    if len(shape) >= 2:
        smaller, larger = sorted(range(len(shape)), key=lambda i: shape[i])[-2:]
        if shape[smaller] >= ADAFACTOR_MIN_DIM_TO_FACTOR:
            second = local // local_shape[larger] + local // local_shape[smaller]
    return second * own + (local * DTYPE_BYTES[MOMENTUM_DTYPE] if momentum else 0)


def _params_memory(graph: Graph) -> tuple[int, int]:
    """(parameter bytes, optimizer bytes) on one device."""
    meta = info(graph)
    optimizer = meta.train.optimizer
    momentum = optimizer.name == "adafactor" and bool(optimizer.beta1)
    seen: set[str] = set()
    params = state = 0
    for op in all_ops(graph):
        for param, layout in zip(op.params(), layout_of(graph, op.name).params, strict=True):
            if param.name in seen:
                continue
            seen.add(param.name)
            params += local_numel(param.tensor, layout, meta.mesh) * DTYPE_BYTES[param.tensor.dtype]
            state += optimizer_state_bytes(param, layout, meta.mesh, optimizer.name, momentum)
    return params, state


def _activations(graph: Graph) -> tuple[int, int]:
    """(bytes kept without remat, bytes kept with full remat) on one device."""
    mesh = info(graph).mesh
    kept_outputs: dict[str, int] = {}  # producer -> bytes of its output, counted once
    internal: dict[str, int] = {}
    block_of: dict[str, str | None] = {}
    for node in graph.nodes:
        op = op_of(graph, node)
        layout = layout_of(graph, node)
        block_of[node] = op.layer if op.in_block else None
        saved = rule_for(ACTIVATION_RULES, "memory", op)(op, local_sizes(op, layout, mesh))
        internal[node] = saved.internal
        inputs = dict(data_inputs(graph, node))
        for port in saved.inputs:
            producer = inputs[port]
            produced = op_of(graph, producer).output()
            out_layout = layout_of(graph, producer).output
            assert produced is not None and out_layout is not None
            kept_outputs[producer] = local_bytes(produced, out_layout, mesh)

    no_remat = sum(internal.values()) + sum(kept_outputs.values())

    # Full remat: ops outside blocks keep what they kept; between the passes a block keeps only
    # the tensors that enter it; while one block's backward runs, its activations exist again.
    outside_internal = sum(size for node, size in internal.items() if block_of[node] is None)
    between = {src: size for src, size in kept_outputs.items() if block_of[src] is None}
    for src, dst, edge in graph.edges(data=True):
        block = block_of[dst]
        if edge.get("gradient") or block is None or block_of[src] == block:
            continue
        produced = op_of(graph, src).output()
        out_layout = layout_of(graph, src).output
        assert produced is not None and out_layout is not None
        between[src] = local_bytes(produced, out_layout, mesh)
    per_block: dict[str, int] = defaultdict(int)
    for node, size in internal.items():
        if block_of[node] is not None:
            per_block[str(block_of[node])] += size
    for src, size in kept_outputs.items():
        if block_of[src] is not None:
            per_block[str(block_of[src])] += size
    full_remat = outside_internal + sum(between.values()) + max(per_block.values(), default=0)
    return no_remat, full_remat


def count_memory(graph: Graph) -> MemoryReport:
    meta = info(graph)
    params, optimizer = _params_memory(graph)
    no_remat, full_remat = _activations(graph)
    activations = full_remat if meta.train.remat == "full" else no_remat
    return MemoryReport(
        params_bytes=params,
        grads_bytes=params,
        optimizer_bytes=optimizer,
        optimizer=meta.train.optimizer.name,
        activations_bytes=activations,
        activations_no_remat_bytes=no_remat,
        activations_full_remat_bytes=full_remat,
        remat=meta.train.remat,
        per_device_bytes=2 * params + optimizer + activations,
    )
