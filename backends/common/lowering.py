"""The backend-independent half of lowering an IR graph into a model's forward pass.

`lower_forward` walks the graph in its (topological) node order and hands each op to its
backend's rule, which writes the Python statement that computes it. Everything that does not
depend on the target framework lives here, so both backends' programs read alike:

- the walk, with a `# encoder block 1` comment where each block starts;
- the variables: an op's output is named by its role (`output_name`: the encoder stream `x`, the
  decoder stream `y`, a sublayer's `h`, ...) and a name is reused only once its value is dead
  (codegen.Names); `Lowering.inputs` reads the variables of an op's data inputs, in port order;
- the random streams, handed out in op order (stream i is fixed per op, whatever the backend);
- the Switch layer: the Group rule lowers its whole chain of ops in one call of the runtime;
  `Lowering.switch_layer` finds the ops, hands out the layer's random streams and binds its output,
  and `Lowering.switch_results` binds what Ungroup and the router losses read;
- the rules whose statement is the same in every backend (`SHARED_RULES`: Input, Dropout,
  Residual, Output, the Switch layer's members) and collectives, which emit nothing
  (each backend's runtime places the program on the mesh itself).

A backend's lower.py holds a `RuleTable` with its own rule for every other op kind: only the
strings that differ. Its statements may read what the backend's prologue defines (`input_mask`,
`causal_mask` when there is a decoder), `noise` through `Lowering.stream()` (which is what makes
the backend's noise statement appear), and what the program provides (`batch`, `layers`,
`CONFIG`); `moe` (Switch layer -> its router losses and metrics) is defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from switchc.ir import Graph, data_inputs, info, op_of
from switchc.ir import ops as ir
from switchc.spec import Spec

from .codegen import INDENT, Names, call_lines, sum_lines


class LoweringError(Exception):
    """An op a backend has no rule for, or a graph it cannot lower (a bug in switchc, reported with
    its spec location)."""


def require_unsharded(graph: Graph, why: str) -> None:
    """The lowering reads sizes from the spec; the graph must be the spec's (not yet sharded)."""
    if info(graph).sharded:
        raise LoweringError(f"lower the unsharded graph: {why}")


# ---- variables ----------------------------------------------------------------------------------


def stack(op: ir.Op) -> str:
    """The stack an op belongs to: `encoder`, `decoder`, or a model-level name (`output`, ...)."""
    return op.layer.split(".")[0]


def stream_var(op: ir.Op) -> str:
    """The variable of the residual stream of the op's stack."""
    return {"encoder": "x", "decoder": "y"}.get(stack(op), "h")


def output_name(op: ir.Op) -> str:
    """The preferred variable for an op's output (`Names.bind` numbers it while that name is live)."""
    if isinstance(op, ir.Embed | ir.Residual):
        return stream_var(op)
    if isinstance(op, ir.RelativeBias):
        return f"{stack(op)}_bias"
    if isinstance(op, ir.RMSNorm):
        if op.layer.endswith(".final"):  # the stack's output
            return "encoded" if stack(op) == "encoder" else "y"
        return "h"
    if isinstance(op, ir.Dropout):
        if op.layer == "encoder.final":
            return "encoded"
        return stream_var(op) if op.layer.endswith((".embed", ".final")) else "h"
    if isinstance(op, ir.Attention | ir.DenseFFN | ir.Group):  # a sublayer (Group: a whole Switch layer)
        return "h"
    if isinstance(op, ir.Logits):
        return "logits"
    if isinstance(op, ir.CrossEntropy):
        return "token_loss"
    if isinstance(op, ir.Loss):
        return "loss"
    raise LoweringError(f"{op.span}: {op.kind} '{op.name}' has no variable of its own")


# ---- the Switch layer ---------------------------------------------------------------------------

SWITCH_OPS = (ir.Router, ir.Dispatch, ir.ExpertFFN, ir.Combine, ir.Ungroup, ir.AuxLoss, ir.RouterZLoss)


def switch_members(graph: Graph, group: str) -> dict[type[ir.Op], list[str]]:
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


@dataclass(frozen=True)
class SwitchLayer:
    """One Switch layer, found from its Group op: the ops its runtime call runs, what the call reads
    and the variable it binds."""

    name: str  # "encoder/1": its key in `moe`
    router: ir.Router
    experts: ir.ExpertFFN
    members: dict[type[ir.Op], list[str]]
    input: str  # the variable of the layer's input
    output: str  # the variable bound to its output
    jitter_stream: int | None  # the random stream of the router's input jitter (None: no jitter)
    dropout_stream: int | None  # the random stream of expert dropout (None: no dropout)

    @property
    def metrics(self) -> str:
        """The expression of the layer's router losses and routing metrics."""
        return f'moe["{self.name}"]'


# ---- the walk -----------------------------------------------------------------------------------


@dataclass
class Lowering:
    """The forward pass being written: its statements and what the rules share while writing them."""

    spec: Spec
    graph: Graph
    indent: str  # of a statement: a function's body, or a method's
    names: Names = field(init=False)
    lines: list[str] = field(default_factory=list)
    streams: int = 0  # random streams handed out (dropout, jitter): stream i is fixed per op
    aux_terms: list[str] = field(default_factory=list)  # the router losses, added to the loss
    switch_layers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = Names(self.graph, {node: index for index, node in enumerate(self.graph.nodes)})

    def inputs(self, node: str) -> list[str]:
        """The variables (or expressions) of the node's data inputs, in port order."""
        return [self.names.var[source] for _, source in data_inputs(self.graph, node)]

    def output(self, node: str, op: ir.Op) -> str:
        """Bind the node's output to a variable named by its role (`output_name`), and return it."""
        return self.names.bind(node, output_name(op))

    def stream(self) -> int:
        self.streams += 1
        return self.streams

    def emit(self, line: str = "") -> None:
        self.lines.append(self.indent + line if line else "")

    def call(self, target: str, function: str, *args: str) -> None:
        self.lines += call_lines(f"{target} = {function}", list(args), self.indent)

    def sum(self, target: str, terms: Sequence[str]) -> None:
        self.lines += sum_lines(target, list(terms), self.indent)

    def switch_layer(self, group: str, op: ir.Op) -> SwitchLayer:
        """For the Group rule: the Switch layer that starts at `group`, its random streams handed out
        (jitter, then expert dropout) and its output bound."""
        members = switch_members(self.graph, group)
        (router,) = members[ir.Router]
        (experts,) = members[ir.ExpertFFN]
        router_op, experts_op = op_of(self.graph, router), op_of(self.graph, experts)
        assert isinstance(router_op, ir.Router) and isinstance(experts_op, ir.ExpertFFN)
        (x,) = self.inputs(group)
        jitter = self.stream() if router_op.jitter_eps else None
        dropout = self.stream() if experts_op.dropout_rate else None
        name = op.name.rsplit("/", 1)[0]  # "encoder/1/group" -> "encoder/1"
        return SwitchLayer(name, router_op, experts_op, members, x, self.output(group, op), jitter, dropout)

    def switch_results(self, group: str, layer: SwitchLayer) -> None:
        """After the Group rule's call: Ungroup reads its output, the router losses `layer.metrics`."""
        self.switch_layers.append(layer.name)
        for member in layer.members.get(ir.Ungroup, []):
            self.names.alias(member, layer.output, group)
        for kind, key in ((ir.AuxLoss, "aux_loss"), (ir.RouterZLoss, "z_loss")):
            for member in layer.members.get(kind, []):
                loss_op = op_of(self.graph, member)
                assert isinstance(loss_op, ir.AuxLoss | ir.RouterZLoss)
                self.names.alias(member, f'{layer.metrics}["{key}"]')
                self.aux_terms.append(f'{loss_op.coef!r} * {layer.metrics}["{key}"]')


Rule = Callable[[Lowering, str, ir.Op], None]


@dataclass
class RuleTable:
    """One backend's rules: op kind -> rule, its own (registered with `rule`) before SHARED_RULES."""

    backend: str  # "JAX", "PyTorch": named in the error for an op without a rule
    array_type: str  # the type of a tensor in the program's annotations: "jax.Array", "torch.Tensor"
    rules: dict[type[ir.Op], Rule] = field(default_factory=dict)

    def rule(self, kind: type[ir.Op]) -> Callable[[Rule], Rule]:
        """Decorator: the function is this backend's rule for ops of `kind`."""

        def register(function: Rule) -> Rule:
            if kind in self.rules:
                raise ValueError(f"the {self.backend} backend has two rules for {kind.__name__}")
            self.rules[kind] = function
            return function

        return register

    def apply(self, low: Lowering, node: str) -> None:
        """Write the statement of `node` with its op's rule."""
        op = op_of(low.graph, node)
        self.lookup(op)(low, node, op)

    def lookup(self, op: ir.Op) -> Rule:
        rule = self.rules.get(type(op)) or SHARED_RULES.get(type(op))
        if rule is not None:
            return rule
        if isinstance(op, ir.Collective):
            return collective
        raise LoweringError(
            f"{op.span}: the {self.backend} backend has no lowering rule for {op.kind} (IR node '{op.name}')"
        )


def lower_forward(
    spec: Spec, graph: Graph, rules: RuleTable, indent: str, noise: str, prologue: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The statements of the forward pass, and the Switch layers' names. They start with `noise`,
    the statement that defines the step's noise, when a rule drew a random stream from it (a model
    with neither dropout nor router jitter draws none), then `prologue`."""
    low = Lowering(spec, graph, indent)
    for line in prologue:
        low.emit(line)
    defines_moe = len(low.lines)
    low.emit("moe = {}  # Switch layer -> its router losses and routing metrics")
    for layer, nodes in _segments(graph):
        if not layer[-1].isdigit():  # embeddings, position biases, final norms, the output
            for node in nodes:
                rules.apply(low, node)
            continue
        low.emit()
        if spec.train.remat == "full":
            _rematerialized_block(low, rules, layer, nodes)
            continue
        low.emit(f"# {layer.replace('.', ' block ')}")
        for node in nodes:
            rules.apply(low, node)
    if not low.switch_layers:  # a dense model: no router losses, so nothing reads `moe` (see `output`)
        del low.lines[defines_moe]
    drawn = [indent + noise] if low.streams else []
    return drawn + low.lines, low.switch_layers


def _segments(graph: Graph) -> list[tuple[str, list[str]]]:
    """The graph's nodes in order, cut where the layer changes: (layer, its nodes) runs."""
    segments: list[tuple[str, list[str]]] = []
    for node in graph.nodes:
        layer = op_of(graph, node).layer
        if segments and segments[-1][0] == layer:
            segments[-1][1].append(node)
        else:
            segments.append((layer, [node]))
    return segments


def _rematerialized_block(low: Lowering, rules: RuleTable, layer: str, nodes: list[str]) -> None:
    """train.remat = full: the block as a function of the activations it reads from outside (its
    residual stream first; the position bias, the encoder's output), called through the runtime's
    `layers.remat`, so that the backward pass recomputes its activations instead of keeping them.
    Parameters and masks it reads from the enclosing function. It returns its Switch layers' router
    losses and metrics (a `moe` of its own) rather than writing the outer one. What enters the
    block is then what the block keeps between the passes (switchc/analysis/memory.py)."""
    name = layer.replace(".", "_block_")
    inside = set(nodes)
    arguments: list[str] = []
    for node in nodes:
        for _, source in data_inputs(low.graph, node):
            var = None if source in inside else low.names.var[source]
            if var is not None and var.isidentifier() and var not in arguments:
                arguments.append(var)
    switch = any(isinstance(op_of(low.graph, node), ir.Group) for node in nodes)
    returns = f"tuple[{rules.array_type}, dict[str, Any]]" if switch else rules.array_type
    low.emit(f"# {layer.replace('.', ' block ')}: recomputed in the backward pass (train.remat: full)")
    parameters = [f"{var}: {rules.array_type}" for var in arguments]
    low.lines += call_lines(f"def {name}", parameters, low.indent, after=f" -> {returns}:")
    outer = low.indent
    low.indent = outer + INDENT
    if switch:
        low.emit("moe = {}")
    for node in nodes:
        rules.apply(low, node)
    # the residual stream the block writes last (a router loss bound after it reads from `moe`)
    output = next(var for var in (low.names.var[node] for node in reversed(nodes)) if var.isidentifier())
    low.emit(f"return {output}, moe" if switch else f"return {output}")
    low.indent = outer
    low.emit()
    if switch:
        low.call(f"{output}, block_moe", "layers.remat", name, *arguments)
        low.emit("moe.update(block_moe)")
    else:
        low.call(output, "layers.remat", name, *arguments)


# ---- helpers of backend rules -------------------------------------------------------------------


def embed_ids(low: Lowering, node: str, op: ir.Op) -> str:
    """The token ids an Embed reads, written from the batch (they may be read before their Input)."""
    ((_, source),) = data_inputs(low.graph, node)
    input_op = op_of(low.graph, source)
    assert isinstance(input_op, ir.Input)
    ids = f'batch["{input_op.source}"]'
    return f"layers.shift_right({ids})" if stack(op) == "decoder" else ids


def attention_operands(low: Lowering, node: str, op: ir.Attention) -> tuple[str, str, str, str]:
    """(queries, memory, position bias, mask): self-attention reads the bias of its stack and the
    stack's mask; cross-attention reads the encoder's output and the inputs' padding mask."""
    x, other = low.inputs(node)
    if op.cross:
        return x, other, "None", "input_mask"
    return x, x, other, "causal_mask" if op.causal else "input_mask"


# ---- rules that write the same statement in every backend ---------------------------------------


def read_input(low: Lowering, node: str, op: ir.Op) -> None:
    """Input: the batch's integer [batch, length] token ids, read where they are used."""
    assert isinstance(op, ir.Input)
    low.names.alias(node, f'batch["{op.source}"]')


def dropout(low: Lowering, node: str, op: ir.Op) -> None:
    assert isinstance(op, ir.Dropout)
    (x,) = low.inputs(node)
    low.call(low.output(node, op), "layers.dropout", x, repr(op.rate), f"noise.key({low.stream()})")


def residual(low: Lowering, node: str, op: ir.Op) -> None:
    x, h = low.inputs(node)
    low.emit(f"{low.output(node, op)} = {x} + {h}")


def bound_by_switch(low: Lowering, node: str, op: ir.Op) -> None:
    """Router, Dispatch, ExpertFFN, Combine, Ungroup, AuxLoss, RouterZLoss: lowered by Group."""
    if isinstance(op, ir.Ungroup | ir.AuxLoss | ir.RouterZLoss) and node not in low.names.var:
        raise LoweringError(f"{op.span}: {op.kind} '{node}' is not part of a Switch layer")


def output(low: Lowering, node: str, op: ir.Op) -> None:
    (loss,) = low.inputs(node)
    low.emit(f"return {loss}, layers.summarize(cross_entropy, {'moe' if low.switch_layers else '{}'})")


def collective(low: Lowering, node: str, op: ir.Op) -> None:
    """A collective emits nothing: each backend's runtime places the program on the mesh itself
    (JAX: jit, from the shardings; PyTorch: runtime/parallel.py); the Switch layer's all-to-alls
    are inside the runtime."""
    ((_, source),) = data_inputs(low.graph, node)
    low.names.alias(node, low.names.var[source], source)


SHARED_RULES: dict[type[ir.Op], Rule] = {
    ir.Input: read_input,
    ir.Dropout: dropout,
    ir.Residual: residual,
    **dict.fromkeys(SWITCH_OPS, bound_by_switch),
    ir.Output: output,
}
