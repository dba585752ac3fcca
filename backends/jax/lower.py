"""IR graph -> the model module of a JAX program (model.py): one lowering rule per op kind.

The graph is walked in its (topological) node order; each op's rule returns the Python statement
that computes it, reading the variables that hold its inputs. Variables are named by role (the
encoder stream `x`, the decoder stream `y`, a sublayer's `h`, ...) and a name is reused only when
its previous value is dead, which `_Names` checks, so the output reads like hand-written code.

A Switch layer is a chain of ops (Group, Router, Dispatch, ExpertFFN, Combine, Ungroup, AuxLoss,
RouterZLoss) that runs per device under shard_map; the Group rule emits one call of the runtime's
`experts.switch`, which runs the same ops (runtime/moe.py has one function per op), and the rules
of the rest bind their results. Collective ops (from the sharding pass) emit nothing: jit inserts
them from the shardings, and the Switch layer's all-to-alls are inside the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod

from switchc.ir import Graph, Param, data_inputs, info, op_of
from switchc.ir import ops as ir
from switchc.spec import Spec

INDENT = "    "
LINE_LENGTH = 120  # generated code is formatted as `ruff format --line-length 120` would


def literal(value: object) -> str:
    """A Python literal in the formatter's style (double quotes; spec strings are printable)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        items = [literal(v) for v in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(literal(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def call_lines(head: str, args: list[str], indent: str = INDENT) -> list[str]:
    """`head(args)` as ruff lays it out: on one line, else the args on one line, else one per line."""
    one = f"{indent}{head}({', '.join(args)})"
    if len(one) <= LINE_LENGTH:
        return [one]
    inner = f"{indent}{INDENT}{', '.join(args)}"
    if len(inner) <= LINE_LENGTH:
        return [f"{indent}{head}(", inner, f"{indent})"]
    return [f"{indent}{head}(", *(f"{indent}{INDENT}{arg}," for arg in args), f"{indent})"]


def sum_lines(target: str, terms: list[str], indent: str = INDENT) -> list[str]:
    """`target = a + b + ...`, split before the operators inside parentheses when too long."""
    one = f"{indent}{target} = {' + '.join(terms)}"
    if len(one) <= LINE_LENGTH:
        return [one]
    body = [f"{indent}{INDENT}{terms[0]}", *(f"{indent}{INDENT}+ {term}" for term in terms[1:])]
    return [f"{indent}{target} = (", *body, f"{indent})"]


class LoweringError(Exception):
    """An op this backend has no rule for (a bug in switchc, reported with its spec location)."""


@dataclass
class _Names:
    """Variable names for node outputs; a name is reused only once its value is dead."""

    graph: Graph
    order: dict[str, int]
    holder: dict[str, str] = field(default_factory=dict)  # variable -> node whose value it holds
    var: dict[str, str] = field(default_factory=dict)  # node -> variable
    aliases: dict[str, list[str]] = field(default_factory=dict)  # node -> nodes that read its variable

    def last_use(self, node: str) -> int:
        readers = [node, *self.aliases.get(node, [])]
        users = [self.order[v] for r in readers for v in self.graph.successors(r) if v in self.order]
        return max(users, default=self.order[node])

    def bind(self, node: str, preferred: str) -> str:
        name, suffix = preferred, 1
        while name in self.holder and self.last_use(self.holder[name]) > self.order[node]:
            suffix += 1
            name = f"{preferred}{suffix}"
        self.holder[name] = node
        self.var[node] = name
        return name

    def alias(self, node: str, expression: str, of: str | None = None) -> None:
        """`node`'s value is `expression` (no statement); it reads the variable of node `of`, if any."""
        self.var[node] = expression
        if of is not None:
            self.aliases.setdefault(of, []).append(node)


@dataclass
class _Lowering:
    spec: Spec
    graph: Graph
    names: _Names
    lines: list[str] = field(default_factory=list)
    streams: int = 0  # random streams handed out (dropout, jitter): stream i is fixed per op
    aux_terms: list[str] = field(default_factory=list)
    switch_layers: list[str] = field(default_factory=list)

    def inputs(self, node: str) -> list[str]:
        return [self.names.var[source] for _, source in data_inputs(self.graph, node)]

    def emit(self, line: str = "") -> None:
        self.lines.append(INDENT + line if line else "")

    def call(self, target: str, function: str, *args: str) -> None:
        self.lines += call_lines(f"{target} = {function}", list(args))

    def stream(self) -> int:
        self.streams += 1
        return self.streams


def _stack(op: ir.Op) -> str:
    return op.layer.split(".")[0]


def _stream_var(op: ir.Op) -> str:
    return {"encoder": "x", "decoder": "y"}.get(_stack(op), "h")


# ---- rules: one per op kind ---------------------------------------------------------------------

Rule = Callable[[_Lowering, str, ir.Op], None]


def _input(low: _Lowering, node: str, op: ir.Op) -> None:
    """Input: the batch's int32 [batch, length] token ids, read where they are used."""
    assert isinstance(op, ir.Input)
    low.names.alias(node, f'batch["{op.source}"]')


def _embed(low: _Lowering, node: str, op: ir.Op) -> None:
    """Embed. When both stacks read one shared table, the first lookup fetches both stacks' tokens
    at once and each stack takes its slice: the table's gradient is then one scatter and one
    all-reduce, where two lookups would be all-reduced one by one."""
    assert isinstance(op, ir.Embed)
    sharing = [n for n in low.graph.nodes if isinstance(e := op_of(low.graph, n), ir.Embed) and e.table == op.table]
    var = low.names.bind(node, _stream_var(op))
    if len(sharing) == 1:
        low.call(var, "layers.embed", f'params["{op.table}"]', _embed_ids(low, node, op))
        return
    if node == sharing[0]:
        ids = ", ".join(_embed_ids(low, n, op_of(low.graph, n)) for n in sharing)
        low.emit("# One lookup for both stacks: the shared table's gradient is then reduced once.")
        low.call("embedded", "layers.embed", f'params["{op.table}"]', f"jnp.concatenate([{ids}], axis=1)")
    start = sum(op_of(low.graph, n).length for n in sharing[: sharing.index(node)])  # type: ignore[attr-defined]
    low.emit(f"{var} = embedded[:, {start}:{start + op.length}]")


def _embed_ids(low: _Lowering, node: str, op: ir.Op) -> str:
    """The token ids an Embed reads, written from the batch (they may be read before their Input)."""
    ((_, source),) = data_inputs(low.graph, node)
    input_op = op_of(low.graph, source)
    assert isinstance(input_op, ir.Input)
    ids = f'batch["{input_op.source}"]'
    return f"layers.shift_right({ids})" if _stack(op) == "decoder" else ids


def _relative_bias(low: _Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.RelativeBias)
    var = low.names.bind(node, f"{_stack(op)}_bias")
    low.call(
        var,
        "layers.position_bias",
        f'params["{op.name}/table"]',
        'batch["inputs"].shape[0]',
        str(op.length),
        str(op.kv_length),
        f"bidirectional={op.bidirectional}",
        "max_distance=CONFIG.relative_attention_max_distance",
    )


def _rms_norm(low: _Lowering, node: str, op: ir.Op) -> None:
    (x,) = low.inputs(node)
    final = op.layer.endswith(".final")
    preferred = ("encoded" if _stack(op) == "encoder" else "y") if final else "h"
    var = low.names.bind(node, preferred)
    low.call(var, "layers.rms_norm", x, f'params["{op.name}/scale"]', "CONFIG.layer_norm_epsilon")


def _attention(low: _Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Attention)
    x, other = low.inputs(node)
    if op.cross:
        memory, bias, mask = other, "None", "input_mask"
    else:
        memory, bias, mask = x, other, "causal_mask" if op.causal else "input_mask"
    dropout = [str(op.dropout_rate), f"noise.key({low.stream()})"] if op.dropout_rate else []
    var = low.names.bind(node, "h")
    low.call(var, "layers.attention", f'layers.sub(params, "{op.name}")', x, memory, bias, mask, *dropout)


def _dense_ffn(low: _Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.DenseFFN)
    (x,) = low.inputs(node)
    dropout = [str(op.dropout_rate), f"noise.key({low.stream()})"] if op.dropout_rate else []
    var = low.names.bind(node, "h")
    low.call(var, "layers.dense_ffn", f'layers.sub(params, "{op.name}")', x, literal(op.activation), *dropout)


def _dropout(low: _Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Dropout)
    (x,) = low.inputs(node)
    in_stream = op.layer.endswith((".embed", ".final"))
    preferred = ("encoded" if op.layer == "encoder.final" else _stream_var(op)) if in_stream else "h"
    var = low.names.bind(node, preferred)
    low.call(var, "layers.dropout", x, repr(op.rate), f"noise.key({low.stream()})")


def _residual(low: _Lowering, node: str, op: ir.Op) -> None:
    x, h = low.inputs(node)
    var = low.names.bind(node, _stream_var(op))
    low.emit(f"{var} = {x} + {h}")


SWITCH_OPS = (ir.Router, ir.Dispatch, ir.ExpertFFN, ir.Combine, ir.Ungroup, ir.AuxLoss, ir.RouterZLoss)


def _switch_members(graph: Graph, group: str) -> dict[type[ir.Op], list[str]]:
    """The ops of the Switch layer that starts at `group`, by kind (stops where the layer ends)."""
    members: dict[type[ir.Op], list[str]] = {}
    frontier, seen = [group], {group}
    while frontier:
        for successor in graph.successors(frontier.pop()):
            op = op_of(graph, successor)
            if successor not in seen and isinstance(op, SWITCH_OPS):
                seen.add(successor)
                members.setdefault(type(op), []).append(successor)
                frontier.append(successor)
    return members


def _switch(low: _Lowering, node: str, op: ir.Op) -> None:
    """Group: the whole Switch layer, through to Ungroup and the router losses, in one call."""
    (x,) = low.inputs(node)
    members = _switch_members(low.graph, node)
    (router,) = members[ir.Router]
    (experts,) = members[ir.ExpertFFN]
    router_op, experts_op = op_of(low.graph, router), op_of(low.graph, experts)
    assert isinstance(router_op, ir.Router) and isinstance(experts_op, ir.ExpertFFN)
    layer = op.name.rsplit("/", 1)[0]  # "encoder/1"
    metrics = f'moe["{layer}"]'
    eps = router_op.jitter_eps
    jitter = f"noise.jitter({low.stream()}, {x}.shape, {eps})" if eps else "None"
    rng = f"noise.key({low.stream()})" if experts_op.dropout_rate else "None"
    var = low.names.bind(node, "h")
    low.emit(f"# {layer}: Switch layer (router, dispatch, experts, combine), per device under shard_map")
    low.emit(f'switch_params = {{"router": params["{router}/w"], **layers.sub(params, "{experts}")}}')
    low.call(
        f"{var}, {metrics}",
        "experts.switch",
        "switch_params",
        x,
        "SWITCH if train else SWITCH_EVAL",
        f"jitter={jitter}",
        f"rng={rng}",
    )
    low.switch_layers.append(layer)
    for member in members.get(ir.Ungroup, []):
        low.names.alias(member, var, node)
    for kind, key in ((ir.AuxLoss, "aux_loss"), (ir.RouterZLoss, "z_loss")):
        for member in members.get(kind, []):
            loss_op = op_of(low.graph, member)
            assert isinstance(loss_op, ir.AuxLoss | ir.RouterZLoss)
            low.names.alias(member, f'{metrics}["{key}"]')
            low.aux_terms.append(f'{loss_op.coef!r} * {metrics}["{key}"]')


def _bound_by_switch(low: _Lowering, node: str, op: ir.Op) -> None:
    """Router, Dispatch, ExpertFFN, Combine, Ungroup, AuxLoss, RouterZLoss: lowered by Group."""
    if isinstance(op, ir.Ungroup | ir.AuxLoss | ir.RouterZLoss) and node not in low.names.var:
        raise LoweringError(f"{op.span}: {op.kind} '{node}' is not part of a Switch layer")


def _logits(low: _Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Logits)
    (y,) = low.inputs(node)
    var = low.names.bind(node, "logits")
    if op.tied:  # T5 v1.0: the embedding table, logits scaled by d_model^-0.5
        low.emit(f'{var} = ({y} * {op.d_model**-0.5!r}) @ params["{op.table}"].T')
    else:
        low.emit(f'{var} = {y} @ params["{op.name}/lm_head"]')


def _cross_entropy(low: _Lowering, node: str, op: ir.Op) -> None:
    logits, targets = low.inputs(node)
    var = low.names.bind(node, "token_loss")
    low.emit("# float32 [batch, targets_length]: the loss of every target token")
    low.call(var, "layers.token_cross_entropy", logits, targets)


def _loss(low: _Lowering, node: str, op: ir.Op) -> None:
    token_loss, *_ = low.inputs(node)
    low.emit(f'cross_entropy = layers.masked_mean({token_loss}, batch["targets"] > 0)')
    var = low.names.bind(node, "loss")
    low.lines += sum_lines(var, ["cross_entropy", *low.aux_terms])


def _output(low: _Lowering, node: str, op: ir.Op) -> None:
    (loss,) = low.inputs(node)
    low.emit(f"return {loss}, layers.summarize(cross_entropy, moe)")


def _collective(low: _Lowering, node: str, op: ir.Op) -> None:
    """jit inserts collectives from the shardings; the Switch layer's all-to-alls are in the runtime."""
    ((_, source),) = data_inputs(low.graph, node)
    low.names.alias(node, low.names.var[source], source)


RULES: dict[type[ir.Op], Rule] = {
    ir.Input: _input,
    ir.Embed: _embed,
    ir.RelativeBias: _relative_bias,
    ir.RMSNorm: _rms_norm,
    ir.Attention: _attention,
    ir.DenseFFN: _dense_ffn,
    ir.Dropout: _dropout,
    ir.Residual: _residual,
    ir.Group: _switch,
    ir.Router: _bound_by_switch,
    ir.Dispatch: _bound_by_switch,
    ir.ExpertFFN: _bound_by_switch,
    ir.Combine: _bound_by_switch,
    ir.Ungroup: _bound_by_switch,
    ir.AuxLoss: _bound_by_switch,
    ir.RouterZLoss: _bound_by_switch,
    ir.Logits: _logits,
    ir.CrossEntropy: _cross_entropy,
    ir.Loss: _loss,
    ir.Output: _output,
}


def _rule(op: ir.Op) -> Rule:
    rule = RULES.get(type(op))
    if rule is not None:
        return rule
    if op.kind in ("AllReduce", "ReduceScatter", "AllGather", "AllToAll", "Shard", "BackwardAllReduce"):
        return _collective
    raise LoweringError(f"{op.span}: the JAX backend has no lowering rule for {op.kind} (IR node '{op.name}')")


def forward_body(spec: Spec, graph: Graph) -> tuple[list[str], list[str]]:
    """The statements of loss_fn's body, and the Switch layers' names."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    low = _Lowering(spec, graph, _Names(graph, order))
    low.emit("noise = layers.Noise(rng if train else None)")
    low.emit('input_mask = layers.padding_mask(batch["inputs"])')
    if spec.model.decoder_layers:
        low.emit(f"causal_mask = layers.causal_mask({spec.train.targets_length})")
    low.emit("moe = {}  # Switch layer -> its router losses and routing metrics")
    previous_layer = None
    for node in graph.nodes:
        op = op_of(graph, node)
        if op.layer != previous_layer and op.layer[-1].isdigit():
            low.emit()
            low.emit(f"# {op.layer.replace('.', ' block ')}")
        previous_layer = op.layer
        _rule(op)(low, node, op)
    return low.lines, low.switch_layers


# ---- parameters ---------------------------------------------------------------------------------


def _fan_in(param: Param) -> int:
    """Input size of a weight, for std = sqrt(init_scale / fan_in) (Sec. 2.4)."""
    dims = [d.size for d in param.tensor.dims]
    if param.kind == "expert":
        dims = dims[1:]  # the experts dim is a batch of independent matrices
    if param.name.endswith("/o"):
        return dims[0] * dims[1]  # [heads, d_kv, d_model]: heads and d_kv are both summed over
    return dims[0]


def init_std(param: Param, spec: Spec) -> float:
    """0 means ones (norm scales); the embedding table is N(0, 1) as in T5."""
    if param.kind == "norm":
        return 0.0
    if param.kind == "embedding":
        return 1.0
    scale = spec.model.init_scale
    if param.kind in ("expert", "router") and spec.moe is not None:
        scale = spec.moe.init_scale
    return float((scale / _fan_in(param)) ** 0.5)


def parameters(graph: Graph) -> dict[str, Param]:
    """Every parameter of the graph by name, in first-use order (a shared table appears once)."""
    found: dict[str, Param] = {}
    for node in graph.nodes:
        for param in op_of(graph, node).params():
            found.setdefault(param.name, param)
    return found


def param_axes(param: Param) -> tuple[str | None, ...]:
    return tuple(d.logical[0] if d.logical else None for d in param.tensor.dims)


def param_table(spec: Spec, graph: Graph) -> list[str]:
    """The PARAMS literal: name -> (shape, logical axes, init std)."""
    lines = []
    for name, param in parameters(graph).items():
        shape = tuple(d.size for d in param.tensor.dims)
        std = init_std(param, spec)
        lines.append(f"    {literal(name)}: ({literal(shape)}, {literal(param_axes(param))}, {std!r}),")
    return lines


def parameter_count(graph: Graph) -> int:
    return sum(prod(d.size for d in p.tensor.dims) for p in parameters(graph).values())


def check_layout(graph: Graph) -> None:
    """The lowering reads sizes from the spec; the graph must be the spec's (not yet sharded)."""
    if info(graph).sharded:
        raise LoweringError("lower the unsharded graph: jit places the program on the mesh itself")
