"""IR graph -> the model module of a PyTorch program (model.py): one lowering rule per op kind.

Two things come out of the graph. The module tree: every op that owns parameters becomes one
runtime module (layers.Attention, moe.Experts, ...) registered at the op's IR path, so that the
torch name of each parameter is its IR name with dots (`encoder.0.attention.q` for
`encoder/0/attention/q`); the token loss is one more, without parameters (`cross_entropy`), so
that runtime/parallel.py can replace it where the vocabulary is split. And the forward pass: the
graph is walked in its (topological) node order and each op's rule writes the statement that
computes it, reading the variables of its inputs. backends/common/lowering.py does the walk, the
variable names and the rules whose statement is the same in every backend (as in the JAX backend,
so both programs read alike); this file registers in RULES the rules that call this program's
modules.

A Switch layer is a chain of ops (Group, Router, Dispatch, ExpertFFN, Combine, Ungroup, AuxLoss,
RouterZLoss); the Group rule emits one call of the runtime's `switch`, which runs those ops, and
the rules of the rest bind its results. Collective ops (from the sharding pass) emit nothing:
runtime/parallel.py places the model on the mesh from outside.
"""

from __future__ import annotations

from switchc.ir import Graph, op_of
from switchc.ir import ops as ir
from switchc.spec import Spec

from ..common.codegen import INDENT, call_lines, literal
from ..common.lowering import (
    Lowering,
    LoweringError,
    RuleTable,
    attention_operands,
    embed_ids,
    lower_forward,
    require_unsharded,
)

BODY = INDENT * 2  # statements inside a method
# The model's attribute holding the token loss: a module without parameters, so that
# runtime/parallel.py can swap in the split-vocabulary one.
CROSS_ENTROPY = "cross_entropy"


def _owner(name: str) -> str:
    """The module path that holds a parameter: its IR name without the leaf."""
    return name.rsplit("/", 1)[0]


def module_expression(path: str) -> str:
    """How forward() reaches the module at IR path `path` (see `module_tree` for the layout):
    `self.shared`, `self.encoder["final_norm"]`, `self.encoder.block(0).attention`."""
    parts = path.split("/")
    expression = f"self.{parts[0]}"
    if len(parts) == 2:
        expression += f"[{literal(parts[1])}]"
    elif len(parts) == 3:
        expression += f".block({_block_index(path)}).{parts[2]}"
    return expression


def _block_index(path: str) -> int:
    """The index of the block that holds the sublayer at IR path stack/block/sublayer."""
    index = path.split("/")[1]
    if not index.isdigit():
        raise LoweringError(f"module '{path}' is not a sublayer of a numbered block")
    return int(index)


# ---- the module tree ----------------------------------------------------------------------------------


def _sizes(op: ir.Op) -> dict[str, tuple[int, ...]]:
    """The op's parameter shapes by leaf name."""
    return {p.name.rsplit("/", 1)[1]: tuple(d.size for d in p.tensor.dims) for p in op.params()}


def _constructor(op: ir.Op) -> str:
    """The runtime module that holds `op`'s parameters, sized from their IR shapes."""
    shapes = _sizes(op)
    if isinstance(op, ir.Embed):
        vocab, d_model = shapes["embedding"]
        return f"layers.Embedding({vocab}, {d_model})"
    if isinstance(op, ir.RelativeBias):
        buckets, heads = shapes["table"]
        return (
            f"layers.PositionBias({buckets}, {heads}, bidirectional={op.bidirectional}, "
            "max_distance=CONFIG.relative_attention_max_distance)"
        )
    if isinstance(op, ir.RMSNorm):
        (d_model,) = shapes["scale"]
        return f"layers.RMSNorm({d_model}, CONFIG.layer_norm_epsilon)"
    if isinstance(op, ir.Attention):
        d_model, heads, d_kv = shapes["q"]
        return f"layers.Attention({d_model}, {heads}, {d_kv})"
    if isinstance(op, ir.DenseFFN):
        d_ff, d_model = shapes["wo"]
        return f"layers.FeedForward({d_model}, {d_ff}, {literal(op.activation)})"
    if isinstance(op, ir.Router):
        d_model, experts = shapes["w"]
        return f"Router({d_model}, {experts})"
    if isinstance(op, ir.ExpertFFN):
        experts, d_ff, d_model = shapes["wo"]
        return f"Experts({experts}, {d_model}, {d_ff}, {literal(op.activation)})"
    if isinstance(op, ir.Logits) and not op.tied:
        d_model, vocab = shapes["lm_head"]
        return f"layers.Logits({d_model}, {vocab})"
    raise LoweringError(f"{op.span}: the PyTorch backend has no module for {op.kind} (IR node '{op.name}')")


Tree = dict[str, "Tree | str"]


def module_tree(graph: Graph) -> Tree:
    """Owner path -> constructor, nested by path components, in first-use order.

    Depth 1 is an attribute of the model (`shared`), depth 2 an entry of a stack (a ModuleDict:
    `encoder["position_bias"]`, or a block `encoder["0"]`), depth 3 a sublayer of a block
    (`encoder["0"].attention`, reached as `encoder.block(0).attention`). The token loss comes
    last, at depth 1 (`cross_entropy`).
    """
    tree: Tree = {}
    for node in graph.nodes:
        op = op_of(graph, node)
        params = op.params()
        if not params:
            continue
        owners = {_owner(p.name) for p in params}
        if len(owners) != 1:
            raise LoweringError(f"{op.span}: {op.kind} '{op.name}' has parameters under several paths: {owners}")
        (path,) = owners
        parts = path.split("/")
        if len(parts) > 3:
            raise LoweringError(f"{op.span}: parameter path '{path}' is deeper than stack/block/sublayer")
        where = tree
        for part in parts[:-1]:
            child = where.setdefault(part, {})
            if isinstance(child, str):
                raise LoweringError(f"{op.span}: '{path}' lies inside the module of '{part}'")
            where = child
        if parts[-1] not in where:  # a shared table is created by its first user
            where[parts[-1]] = _constructor(op)
    if any(isinstance(op_of(graph, node), ir.CrossEntropy) for node in graph.nodes):
        tree[CROSS_ENTROPY] = "layers.CrossEntropy()"
    return tree


def init_lines(tree: Tree) -> list[str]:
    """The body of Transformer.__init__: the modules, registered at their IR paths."""
    lines = [f"{BODY}super().__init__()"]
    for top, sub in tree.items():
        if isinstance(sub, str):
            lines.append(f"{BODY}self.{top} = {sub}")
            continue
        lines.append(f"{BODY}self.{top} = layers.Stack()")
        for key, child in sub.items():
            target = f"self.{top}[{literal(key)}]"
            if isinstance(child, str):
                lines += call_lines(f"{target} = {child.split('(', 1)[0]}", _arguments(child), BODY)
                continue
            sublayers = []
            for name, constructor in child.items():
                if not isinstance(constructor, str) or not name.isidentifier():
                    raise LoweringError(f"module '{top}/{key}/{name}' is not a sublayer of a block")
                _block_index(f"{top}/{key}/{name}")
                sublayers.append(f"{name}={constructor}")
            lines += call_lines(f"{target} = layers.Block", sublayers, BODY)
    return lines


def _arguments(constructor: str) -> list[str]:
    """The arguments of a constructor expression written by `_constructor` (no nested commas)."""
    inside = constructor.split("(", 1)[1].rsplit(")", 1)[0]
    return [argument.strip() for argument in inside.split(",")]


# ---- the forward pass -------------------------------------------------------------------------------------

RULES = RuleTable("PyTorch", "torch.Tensor")


def _dropout_args(low: Lowering, rate: float) -> list[str]:
    """Keyword arguments of a module call that drops out at `rate` (none when rate is 0)."""
    return [f"dropout_rate={rate!r}", f"rng=noise.key({low.stream()})"] if rate else []


@RULES.rule(ir.Embed)
def _embed(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Embed)
    low.call(low.output(node, op), module_expression(_owner(op.table)), embed_ids(low, node, op))


@RULES.rule(ir.RelativeBias)
def _relative_bias(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.RelativeBias)
    low.call(low.output(node, op), module_expression(op.name), str(op.length), str(op.kv_length))


@RULES.rule(ir.RMSNorm)
def _rms_norm(low: Lowering, node: str, op: ir.Op) -> None:
    (x,) = low.inputs(node)
    low.call(low.output(node, op), module_expression(op.name), x)


@RULES.rule(ir.Attention)
def _attention(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Attention)
    x, memory, bias, mask = attention_operands(low, node, op)
    var = low.output(node, op)
    low.call(var, module_expression(op.name), x, memory, bias, mask, *_dropout_args(low, op.dropout_rate))


@RULES.rule(ir.DenseFFN)
def _dense_ffn(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.DenseFFN)
    (x,) = low.inputs(node)
    low.call(low.output(node, op), module_expression(op.name), x, *_dropout_args(low, op.dropout_rate))


@RULES.rule(ir.Group)
def _switch(low: Lowering, node: str, op: ir.Op) -> None:
    """Group: the whole Switch layer, through to Ungroup and the router losses, in one call."""
    layer = low.switch_layer(node, op)
    x, jitter, rng = layer.input, layer.jitter_stream, layer.dropout_stream  # jitter's size: SWITCH's
    low.emit(f"# {layer.name}: Switch layer (router, dispatch, experts, combine) on this process's tokens")
    low.call(
        f"{layer.output}, {layer.metrics}",
        "switch",
        module_expression(layer.router.name),
        module_expression(layer.experts.name),
        x,
        "SWITCH if self.training else SWITCH_EVAL",
        "jitter=None" if jitter is None else f"jitter=noise.jitter({jitter}, {x}, SWITCH.jitter_eps)",
        "rng=None" if rng is None else f"rng=noise.key({rng})",
    )
    low.switch_results(node, layer)


@RULES.rule(ir.Logits)
def _logits(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Logits)
    (y,) = low.inputs(node)
    var = low.output(node, op)
    if op.tied:  # T5 v1.0: the embedding table, logits scaled by d_model^-0.5
        low.emit(f"{var} = {module_expression(_owner(op.table))}.attend({y} * {op.d_model**-0.5!r})")
    else:
        low.call(var, module_expression(op.name), y)


@RULES.rule(ir.CrossEntropy)
def _cross_entropy(low: Lowering, node: str, op: ir.Op) -> None:
    logits, targets = low.inputs(node)
    low.emit("# float32 [batch, targets_length]: the loss of every target token")
    low.call(low.output(node, op), f"self.{CROSS_ENTROPY}", logits, targets)


@RULES.rule(ir.Loss)
def _loss(low: Lowering, node: str, op: ir.Op) -> None:
    token_loss, *_ = low.inputs(node)
    low.emit('# the mean over batch["target_count"] targets when given, else over this batch\'s own')
    targets = ('batch["targets"] > 0', 'batch.get("target_count")')
    low.call("cross_entropy", "layers.masked_mean", token_loss, *targets)
    low.sum(low.output(node, op), ["cross_entropy", *low.aux_terms])


def forward_body(spec: Spec, graph: Graph) -> tuple[list[str], list[str]]:
    """The statements of Transformer.forward's body, and the Switch layers' names."""
    require_unsharded(graph, "runtime/parallel.py places the model on the mesh")
    noise = "noise = noise if self.training and noise is not None else layers.Noise()  # evaluation: no noise"
    prologue = ['input_mask = layers.padding_mask(batch["inputs"])']
    if spec.model.decoder_layers:
        prologue.append(f'causal_mask = layers.causal_mask({spec.train.targets_length}, batch["targets"].device)')
    return lower_forward(spec, graph, RULES, BODY, noise, prologue)
