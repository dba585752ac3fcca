"""IR graph -> the model module of a JAX program (model.py): one lowering rule per op kind.

backends/common/lowering.py walks the graph, names the variables (by role, reused only once dead)
and holds the rules whose statement is the same in every backend (Input, Dropout, Residual,
Output, the Switch layer's members; collectives emit nothing: jit inserts them from the
shardings). This file holds the JAX program's own rules, registered in RULES: each writes the
statement that computes its op over the flat `params` dict with runtime/layers.py's functions.

A Switch layer is a chain of ops (Group, Router, Dispatch, ExpertFFN, Combine, Ungroup, AuxLoss,
RouterZLoss) that runs per device under shard_map; the Group rule emits one call of the runtime's
`experts.switch`, which runs the same ops (runtime/moe.py has one function per op), and the rules
of the rest bind their results. The Switch layer's all-to-alls are inside the runtime.
"""

from __future__ import annotations

from switchc.ir import Graph, op_of
from switchc.ir import ops as ir
from switchc.spec import Spec

from ..common.codegen import (
    INDENT,
    LINE_LENGTH,
    call_lines,
    init_std,
    literal,
    param_axes,
    param_table,
    parameter_count,
    parameters,
    sum_lines,
)
from ..common.lowering import (
    Lowering,
    LoweringError,
    RuleTable,
    attention_operands,
    embed_ids,
    lower_forward,
    require_unsharded,
)

__all__ = [
    "INDENT",
    "LINE_LENGTH",
    "RULES",
    "LoweringError",
    "call_lines",
    "check_layout",
    "forward_body",
    "init_std",
    "literal",
    "param_axes",
    "param_table",
    "parameter_count",
    "parameters",
    "sum_lines",
]

RULES = RuleTable("JAX", "jax.Array")


def _dropout_args(low: Lowering, rate: float) -> list[str]:
    """Trailing arguments of a layer call that drops out at `rate` (none when rate is 0)."""
    return [str(rate), f"noise.key({low.stream()})"] if rate else []


TIED_COPIES = "tied_copies"  # the variable of a tied table's per-shard copies


def _tied_copies(low: Lowering, table: str) -> bool:
    """Whether `table` is read by tied logits on a mesh that splits the batch: both its uses then
    read per-shard copies of it (layers.shard_copies)."""
    tied = any(isinstance(o := op_of(low.graph, n), ir.Logits) and o.tied and o.table == table for n in low.graph.nodes)
    return tied and low.spec.mesh.shards("batch") > 1


@RULES.rule(ir.Embed)
def _embed(low: Lowering, node: str, op: ir.Op) -> None:
    """Embed. When both stacks read one shared table, the first lookup fetches both stacks' tokens
    at once and each stack takes its slice: the table's gradient is then one scatter and one
    all-reduce, where two lookups would be all-reduced one by one."""
    assert isinstance(op, ir.Embed)
    sharing = [n for n in low.graph.nodes if isinstance(e := op_of(low.graph, n), ir.Embed) and e.table == op.table]
    var = low.output(node, op)
    lookup, table = "layers.embed", f'params["{op.table}"]'
    if _tied_copies(low, op.table) and node == sharing[0]:
        shards = low.spec.mesh.shards("batch")
        low.emit(f"# A copy of the tied table per batch shard ({shards}): its two uses' gradients are added")
        low.emit("# on each device, and the table's gradient is all-reduced once (layers.shard_copies).")
        low.call(TIED_COPIES, "layers.shard_copies", table, str(shards))
    if _tied_copies(low, op.table):
        lookup, table = "layers.embed_copies", TIED_COPIES
    if len(sharing) == 1:
        low.call(var, lookup, table, embed_ids(low, node, op))
        return
    if node == sharing[0]:
        ids = ", ".join(embed_ids(low, n, op_of(low.graph, n)) for n in sharing)
        low.emit("# One lookup for both stacks: the shared table's gradient is then reduced once.")
        low.call("embedded", lookup, table, f"jnp.concatenate([{ids}], axis=1)")
    start = sum(op_of(low.graph, n).length for n in sharing[: sharing.index(node)])  # type: ignore[attr-defined]
    low.emit(f"{var} = embedded[:, {start}:{start + op.length}]")


@RULES.rule(ir.RelativeBias)
def _relative_bias(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.RelativeBias)
    low.call(
        low.output(node, op),
        "layers.position_bias",
        f'params["{op.name}/table"]',
        'batch["inputs"].shape[0]',
        str(op.length),
        str(op.kv_length),
        f"bidirectional={op.bidirectional}",
        "max_distance=CONFIG.relative_attention_max_distance",
        f"shards={low.spec.mesh.shards('batch')}",
    )


@RULES.rule(ir.RMSNorm)
def _rms_norm(low: Lowering, node: str, op: ir.Op) -> None:
    (x,) = low.inputs(node)
    scale = f'params["{op.name}/scale"]'
    low.call(low.output(node, op), "layers.rms_norm", x, scale, "CONFIG.layer_norm_epsilon")


@RULES.rule(ir.Attention)
def _attention(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Attention)
    x, memory, bias, mask = attention_operands(low, node, op)
    dropout = _dropout_args(low, op.dropout_rate)
    low.call(
        low.output(node, op), "layers.attention", f'layers.sub(params, "{op.name}")', x, memory, bias, mask, *dropout
    )


@RULES.rule(ir.DenseFFN)
def _dense_ffn(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.DenseFFN)
    (x,) = low.inputs(node)
    dropout = _dropout_args(low, op.dropout_rate)
    weights = f'layers.sub(params, "{op.name}")'
    low.call(low.output(node, op), "layers.dense_ffn", weights, x, literal(op.activation), *dropout)


@RULES.rule(ir.Group)
def _switch(low: Lowering, node: str, op: ir.Op) -> None:
    """Group: the whole Switch layer, through to Ungroup and the router losses, in one call."""
    layer = low.switch_layer(node, op)
    x, jitter, rng = layer.input, layer.jitter_stream, layer.dropout_stream  # jitter's size: SWITCH's
    where = "per device under shard_map" if low.spec.mesh.num_devices > 1 else "on the one device"
    low.emit(f"# {layer.name}: Switch layer (router, dispatch, experts, combine), {where}")
    router, experts = layer.router.name, layer.experts.name
    low.emit(f'switch_params = {{"router": params["{router}/w"], **layers.sub(params, "{experts}")}}')
    low.call(
        f"{layer.output}, {layer.metrics}",
        "experts.switch",
        "switch_params",
        x,
        "SWITCH if train else SWITCH_EVAL",
        "jitter=None" if jitter is None else f"jitter=noise.jitter({jitter}, {x}.shape, SWITCH.jitter_eps)",
        "rng=None" if rng is None else f"rng=noise.key({rng})",
    )
    low.switch_results(node, layer)


@RULES.rule(ir.Logits)
def _logits(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Logits)
    (y,) = low.inputs(node)
    var = low.output(node, op)
    if op.tied and _tied_copies(low, op.table):  # each batch shard's rows against its copy of the table
        low.call(var, "layers.tied_logits", y, TIED_COPIES, repr(op.d_model**-0.5))
    elif op.tied:  # T5 v1.0: the embedding table, logits scaled by d_model^-0.5
        low.emit(f'{var} = ({y} * {op.d_model**-0.5!r}) @ params["{op.table}"].T')
    else:
        low.emit(f'{var} = {y} @ params["{op.name}/lm_head"]')


@RULES.rule(ir.CrossEntropy)
def _cross_entropy(low: Lowering, node: str, op: ir.Op) -> None:
    logits, targets = low.inputs(node)
    low.emit("# float32 [batch, targets_length]: the loss of every target token")
    low.call(low.output(node, op), "layers.token_cross_entropy", logits, targets)


@RULES.rule(ir.Loss)
def _loss(low: Lowering, node: str, op: ir.Op) -> None:
    token_loss, *_ = low.inputs(node)
    low.emit(f'cross_entropy = layers.masked_mean({token_loss}, batch["targets"] > 0)')
    low.sum(low.output(node, op), ["cross_entropy", *low.aux_terms])


def forward_body(spec: Spec, graph: Graph) -> tuple[list[str], list[str]]:
    """The statements of loss_fn's body, and the Switch layers' names."""
    prologue = ['input_mask = layers.padding_mask(batch["inputs"])']
    if spec.model.decoder_layers:
        prologue.append(f"causal_mask = layers.causal_mask({spec.train.targets_length})")
    return lower_forward(spec, graph, RULES, INDENT, "noise = layers.Noise(rng if train else None)", prologue)


def check_layout(graph: Graph) -> None:
    """The lowering reads sizes from the spec; the graph must be the spec's (not yet sharded)."""
    require_unsharded(graph, "jit places the program on the mesh itself")
