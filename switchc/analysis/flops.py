"""FLOPs: one forward rule per op kind, two columns (model and executed), forward and backward apart.

Conventions (printed in every report, see CONVENTIONS):
- a multiply-add is 2 FLOPs; only matrix multiplications count (einsums / dot_generals);
  elementwise ops, norms, softmax, activations, the loss, gathers and scatters count 0;
- attention counts its q, k, v, o projections and both score matmuls (q k^T, weights v) over the
  full length x length square: no causal halving (the program computes the whole square);
- the output logits count; the embedding lookup is a gather and counts 0;
- backward = 2 x forward for every matmul (one matmul for the input gradient, one for the weight
  gradient, or one per operand when both are activations);
- model FLOPs are the math of the model: each token through top_k experts, no capacity padding,
  and no router (the paper compares Switch and dense models as FLOP-matched, so a Switch layer's
  model FLOPs equal its dense twin's for top_k = 1 and do not grow with num_experts);
- executed FLOPs are what the generated program runs: experts on every one of
  groups x num_experts x capacity slots (padding included), the router matmul, the combine
  einsum (each token's top_k slot outputs weighted by their gates: 2 x tokens x top_k x d_model),
  index/gather dispatch (0 FLOPs; no one-hot O(tokens^2) dispatch einsum), and with
  train.remat = full every block's forward once more during the backward pass, but for what the
  backward does not read (memory.recomputation): a block's last FFN output projection, or its
  last combine.

Executed FLOPs per device use each op's per-device loop sizes after sharding, so computation
that is replicated (a router on every model-parallel device) is counted on every device. This is
what XLA's compiled.cost_analysis()["flops"] of one device's train step counts for its dots; XLA
also counts elementwise ops (about 1 FLOP per element), which this model leaves out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from switchc.analysis.common import Sizes, global_sizes, local_sizes, rule_for
from switchc.analysis.memory import recomputation
from switchc.ir import ops
from switchc.ir.graph import Graph, all_ops, info, layout_of


@dataclass(frozen=True)
class ForwardFlops:
    """One op's forward FLOPs: the model's math, and what the program executes."""

    model: int
    executed: int


ZERO = ForwardFlops(0, 0)
BACKWARD_FACTOR = 2  # backward matmuls per forward matmul


def _zero(op: ops.Op, n: Sizes) -> ForwardFlops:
    return ZERO


def _ffn_matrices(activation: str) -> int:
    """Matmuls of one FFN application: wi (wi_0 and wi_1 when gated) and wo."""
    return 3 if activation in ops.GATED else 2


def _attention(op: ops.Op, n: Sizes) -> ForwardFlops:
    """Legend: B batch, L query length, M key length, D d_model, H heads, K d_kv."""
    assert isinstance(op, ops.Attention)
    B, L, M, D, H, K = n("batch"), n("length"), n("kv_length"), n("embed"), n("heads"), n("kv")
    projections = 2 * B * L * D * H * K * 2 + 2 * B * M * D * H * K * 2  # q, o on queries; k, v on keys
    scores_and_values = 2 * B * H * L * M * K * 2  # q k^T and weights v
    total = projections + scores_and_values
    return ForwardFlops(total, total)


def _dense_ffn(op: ops.Op, n: Sizes) -> ForwardFlops:
    """Legend: B batch, L length, D d_model, F d_ff."""
    assert isinstance(op, ops.DenseFFN)
    B, L, D, F = n("batch"), n("length"), n("embed"), n("mlp")
    total = 2 * B * L * D * F * _ffn_matrices(op.activation)
    return ForwardFlops(total, total)


def _router(op: ops.Op, n: Sizes) -> ForwardFlops:
    """Legend: G groups, S tokens per group, D d_model, X experts. Not model FLOPs (see above)."""
    G, S, D, X = n("groups"), n("group_tokens"), n("embed"), n("experts")
    return ForwardFlops(0, 2 * G * S * D * X)


def _experts(op: ops.Op, n: Sizes) -> ForwardFlops:
    """Legend: G groups, X experts, C capacity, D d_model, F d_ff, S tokens per group, k top_k."""
    assert isinstance(op, ops.ExpertFFN)
    G, X, C, D, F = n("groups"), n("experts"), n("capacity"), n("embed"), n("mlp")
    S, k = op.group_tokens, op.top_k
    per_slot = 2 * D * F * _ffn_matrices(op.activation)
    return ForwardFlops(model=G * S * k * per_slot, executed=G * X * C * per_slot)


def _combine(op: ops.Op, n: Sizes) -> ForwardFlops:
    """Legend: G groups, S tokens per group, k top_k, D d_model: the gate-weighted sum einsum."""
    assert isinstance(op, ops.Combine)
    G, S, D = n("groups"), n("group_tokens"), n("embed")
    return ForwardFlops(0, 2 * G * S * op.top_k * D)


def _logits(op: ops.Op, n: Sizes) -> ForwardFlops:
    """Legend: B batch, L length, D d_model, V vocab."""
    B, L, D, V = n("batch"), n("length"), n("embed"), n("vocab")
    total = 2 * B * L * D * V
    return ForwardFlops(total, total)


FlopRule = Callable[[ops.Op, Sizes], ForwardFlops]


def _without_output_projection(op: ops.Op, n: Sizes, executed: int) -> int:
    """An FFN's (or the experts') matmuls but wo: its hidden activations."""
    assert isinstance(op, ops.DenseFFN | ops.ExpertFFN)
    matrices = _ffn_matrices(op.activation)
    return executed * (matrices - 1) // matrices


def _attention_without_output_projection(op: ops.Op, n: Sizes, executed: int) -> int:
    """Attention but its o projection (2 B L D H K): q, k, v, the weights and the context."""
    return executed - 2 * n("batch") * n("length") * n("embed") * n("heads") * n("kv")


# train.remat = full, an op whose output the backward does not read but whose intermediates it
# does (memory.recomputation: "internal"): the forward FLOPs run again. Other kinds: all of them.
INTERNAL_RULES: dict[type[ops.Op], Callable[[ops.Op, Sizes, int], int]] = {
    ops.DenseFFN: _without_output_projection,
    ops.ExpertFFN: _without_output_projection,
    ops.Attention: _attention_without_output_projection,
}

# One rule per op kind; an op kind missing here is an error (MissingRuleError), never a silent 0.
FLOP_RULES: dict[type[ops.Op], FlopRule] = {
    ops.Input: _zero,
    ops.Embed: _zero,  # a gather
    ops.RelativeBias: _zero,  # a gather
    ops.RMSNorm: _zero,
    ops.Attention: _attention,
    ops.DenseFFN: _dense_ffn,
    ops.Group: _zero,
    ops.Router: _router,
    ops.Dispatch: _zero,  # index gather into slots
    ops.ExpertFFN: _experts,
    ops.Combine: _combine,
    ops.Ungroup: _zero,
    ops.AuxLoss: _zero,
    ops.RouterZLoss: _zero,
    ops.Residual: _zero,
    ops.Dropout: _zero,
    ops.Logits: _logits,
    ops.CrossEntropy: _zero,
    ops.Loss: _zero,
    ops.Output: _zero,
    ops.AllReduce: _zero,
    ops.ReduceScatter: _zero,
    ops.AllGather: _zero,
    ops.AllToAll: _zero,
    ops.Shard: _zero,
    ops.BackwardAllReduce: _zero,
    ops.GradientAllReduce: _zero,
}


def _no_weights(op: ops.Op) -> int:
    return 0


def _attention_weights(op: ops.Op) -> int:
    assert isinstance(op, ops.Attention)
    return 4 * op.d_model * op.heads * op.d_kv


def _ffn_weights(op: ops.Op) -> int:
    assert isinstance(op, ops.DenseFFN)
    return op.d_model * op.d_ff * _ffn_matrices(op.activation)


def _expert_weights(op: ops.Op) -> int:
    assert isinstance(op, ops.ExpertFFN)
    return op.top_k * op.d_model * op.d_ff * _ffn_matrices(op.activation)


def _logits_weights(op: ops.Op) -> int:
    assert isinstance(op, ops.Logits)
    return op.d_model * op.vocab


# Table 9's FLOPs/seq follows the "2 x parameters x tokens" rule: every matmul weight a token
# passes through costs 2 FLOPs per token of its stack. One rule per op kind: the matmul weights
# one token uses (top_k experts; no router; the embedding lookup is a gather).
PAPER_RULES: dict[type[ops.Op], Callable[[ops.Op], int]] = {
    **{kind: _no_weights for kind in ops.VOCABULARY},
    ops.Attention: _attention_weights,
    ops.DenseFFN: _ffn_weights,
    ops.ExpertFFN: _expert_weights,
    ops.Logits: _logits_weights,
}

PAPER_CONVENTION = (
    "Table 9 convention (flops.model.paper_forward_per_sequence): 2 x the matmul weights a token passes "
    "through (top_k experts, output projection, no router, no embedding lookup) x the tokens of its stack "
    "(inputs_length in the encoder, targets_length in the decoder, cross-attention included); attention "
    "score matmuls not counted"
)

CONVENTIONS: tuple[str, ...] = (
    "a multiply-add is 2 FLOPs; only matmuls (einsums) count, elementwise ops, norms, softmax, "
    "activations, losses, gathers and scatters count 0",
    "attention counts the q/k/v/o projections and both score matmuls over the full square: no causal halving",
    "the output logits matmul counts; the embedding lookup is a gather (0)",
    "backward = 2 x forward for every matmul",
    "model FLOPs: each token through top_k experts, no capacity padding, router not counted",
    "executed FLOPs: experts on all groups x num_experts x capacity slots, router matmul, combine einsum "
    "(2 x tokens x top_k x d_model), dispatch by index gather (0), and with train.remat = full each block's "
    "forward again in the backward pass, up to what its backward reads (not its last wo or combine)",
    "per sequence: the spec's inputs_length encoder tokens and targets_length decoder tokens",
    "model FLOPs per device = the step's model FLOPs / devices; executed FLOPs per device use the "
    "per-device loop sizes after sharding (replicated work counts on every device)",
    PAPER_CONVENTION,
)


@dataclass(frozen=True)
class OpFlops:
    """One op's FLOPs in a train step: model (global) and executed (per device)."""

    name: str
    kind: str
    layer: str
    model_forward: int
    executed_forward_per_device: int
    executed_forward_global: int
    recompute_per_device: int  # forward FLOPs run again in the backward pass (train.remat = full)


@dataclass(frozen=True)
class ModelFlops:
    forward_per_sequence: float
    paper_forward_per_sequence: int  # PAPER_CONVENTION: reproduces Table 9's FLOPs/seq
    backward_per_sequence: float
    forward_per_step: int
    backward_per_step: int
    train_step: int
    train_step_per_device: float


@dataclass(frozen=True)
class ExecutedFlops:
    forward_per_sequence: float
    backward_per_sequence: float
    forward_per_device: int
    backward_per_device: int
    recompute_per_device: int
    train_step_per_device: int


@dataclass(frozen=True)
class LayerFlops:
    layer: str
    model_forward: int
    executed_forward_per_device: int


@dataclass(frozen=True)
class FlopsReport:
    model: ModelFlops
    executed: ExecutedFlops
    by_layer: tuple[LayerFlops, ...]
    by_op_kind: dict[str, int]  # model forward FLOPs of the step by op kind
    conventions: tuple[str, ...]


def op_flops(graph: Graph) -> list[OpFlops]:
    """FLOPs of every op of a sharded graph."""
    meta = info(graph)
    again = recomputation(graph) if meta.train.remat == "full" else {}
    out = []
    for op in all_ops(graph):
        rule = rule_for(FLOP_RULES, "FLOPs", op)
        whole = rule(op, global_sizes(op))
        sizes = local_sizes(op, layout_of(graph, op.name), meta.mesh)
        local = rule(op, sizes)
        recompute = again.get(op.name, "none")
        if recompute == "internal":
            recompute_flops = INTERNAL_RULES.get(type(op), lambda op, n, flops: flops)(op, sizes, local.executed)
        else:
            recompute_flops = local.executed if recompute == "all" else 0
        out.append(
            OpFlops(
                name=op.name,
                kind=op.kind,
                layer=op.layer,
                model_forward=whole.model,
                executed_forward_per_device=local.executed,
                executed_forward_global=whole.executed,
                recompute_per_device=recompute_flops,
            )
        )
    return out


def count_flops(graph: Graph) -> FlopsReport:
    meta = info(graph)
    per_op = op_flops(graph)
    sequences = meta.train.batch_size
    model_forward = sum(f.model_forward for f in per_op)
    executed_forward_global = sum(f.executed_forward_global for f in per_op)
    executed_forward = sum(f.executed_forward_per_device for f in per_op)
    recompute = sum(f.recompute_per_device for f in per_op)
    model_step = model_forward * (1 + BACKWARD_FACTOR)
    model = ModelFlops(
        forward_per_sequence=model_forward / sequences,
        paper_forward_per_sequence=paper_forward_per_sequence(graph),
        backward_per_sequence=model_forward * BACKWARD_FACTOR / sequences,
        forward_per_step=model_forward,
        backward_per_step=model_forward * BACKWARD_FACTOR,
        train_step=model_step,
        train_step_per_device=model_step / meta.num_devices,
    )
    executed = ExecutedFlops(
        forward_per_sequence=executed_forward_global / sequences,
        backward_per_sequence=executed_forward_global * BACKWARD_FACTOR / sequences,
        forward_per_device=executed_forward,
        backward_per_device=executed_forward * BACKWARD_FACTOR,
        recompute_per_device=recompute,
        train_step_per_device=executed_forward * (1 + BACKWARD_FACTOR) + recompute,
    )
    layer_model: dict[str, int] = defaultdict(int)
    layer_executed: dict[str, int] = defaultdict(int)
    by_kind: dict[str, int] = defaultdict(int)
    for f in per_op:
        layer_model[f.layer] += f.model_forward
        layer_executed[f.layer] += f.executed_forward_per_device
        if f.model_forward:
            by_kind[f.kind] += f.model_forward
    layers = tuple(LayerFlops(layer, layer_model[layer], layer_executed[layer]) for layer in layer_model)
    return FlopsReport(model, executed, layers, dict(by_kind), CONVENTIONS)


def paper_forward_per_sequence(graph: Graph) -> int:
    """FLOPs of one sequence's forward pass by Table 9's convention (PAPER_CONVENTION)."""
    train = info(graph).train
    total = 0
    for op in all_ops(graph):
        weights = rule_for(PAPER_RULES, "Table 9 FLOPs", op)(op)
        tokens = train.inputs_length if op.layer.startswith("encoder") else train.targets_length
        total += 2 * weights * tokens
    return total
