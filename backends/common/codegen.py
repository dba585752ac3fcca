"""Backend-neutral pieces of code generation: literals and ruff-style line layout, variable naming,
the parameter table of a graph, the Config dataclass of a spec, the Switch layers' settings,
MFU's constants, and the run's identity that checkpoints record.

Every backend writes the same PARAMS table (IR name -> shape, logical axes, init std), the same
Config fields and the same MoESettings, so weights and settings mean the same thing in a JAX and a
PyTorch program; only the framework's dtype names differ (`dtypes`: spec dtype -> expression).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from math import prod
from typing import Any

from switchc.analysis import DEFAULT_HARDWARE, builtin_profiles
from switchc.analysis.flops import count_flops
from switchc.ir import Graph, Param, op_of
from switchc.passes import lower
from switchc.spec import Spec
from switchc.spec.emit import escape_unprintable, extendable, spec_digest

INDENT = "    "
LINE_LENGTH = 120  # generated code is formatted as `ruff format --line-length 120` would


def _escaped(text: str, quote: str) -> str:
    """`text` as it may stand between two `quote`s in generated code and read back as it was: a
    backslash or that quote is escaped (no escape sequence starts, no quote ends the string) and a
    character that is not printable (a newline in a file name, a bidi override) is written as its
    escape."""
    return escape_unprintable(text.replace("\\", "\\\\").replace(quote, "\\" + quote))


def docstring_text(text: str) -> str:
    """`text` from outside switchc (a spec file's name, the --set overrides) as it may stand in a
    generated (double-quoted) docstring (`_escaped`)."""
    return _escaped(text, '"')


def literal(value: object) -> str:
    """A Python literal in the formatter's style (double quotes, unless single ones need fewer
    escapes). A string's unprintable characters (a control character, a bidi override that would
    make the line display other than it runs) are written as escapes (`_escaped`)."""
    if isinstance(value, str):
        quote = "'" if value.count('"') > value.count("'") else '"'  # the formatter's choice: fewer escapes
        return quote + _escaped(value, quote) + quote
    if isinstance(value, tuple):
        items = [literal(v) for v in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(literal(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def call_lines(head: str, args: list[str], indent: str = INDENT, after: str = "") -> list[str]:
    """`head(args)after` as ruff lays it out: on one line, else the args on one line, else one per
    line. `after` follows the closing parenthesis (a def's ` -> T:`)."""
    one = f"{indent}{head}({', '.join(args)}){after}"
    if len(one) <= LINE_LENGTH:
        return [one]
    inner = f"{indent}{INDENT}{', '.join(args)}"
    if len(inner) <= LINE_LENGTH:
        return [f"{indent}{head}(", inner, f"{indent}){after}"]
    return [f"{indent}{head}(", *(f"{indent}{INDENT}{arg}," for arg in args), f"{indent}){after}"]


def assignment_lines(target: str, value: Mapping[str, object]) -> list[str]:
    """`target = {...}` at module level as ruff lays it out: on one line, else one item per line
    (a collection that does not fit is always split that way)."""
    one = f"{target} = {literal(value)}"
    if len(one) <= LINE_LENGTH:
        return [one]
    return [f"{target} = {{", *(f"{INDENT}{literal(k)}: {literal(v)}," for k, v in value.items()), "}"]


def sum_lines(target: str, terms: list[str], indent: str = INDENT) -> list[str]:
    """`target = a + b + ...`, split before the operators inside parentheses when too long."""
    one = f"{indent}{target} = {' + '.join(terms)}"
    if len(one) <= LINE_LENGTH:
        return [one]
    body = [f"{indent}{INDENT}{terms[0]}", *(f"{indent}{INDENT}+ {term}" for term in terms[1:])]
    return [f"{indent}{target} = (", *body, f"{indent})"]


@dataclass
class Names:
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


# ---- parameters ---------------------------------------------------------------------------------


def fan_in(param: Param) -> int:
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
    return float((scale / fan_in(param)) ** 0.5)


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


def params_lines(spec: Spec, graph: Graph) -> list[str]:
    """model.py's PARAMS table and PARAM_AXES, after a blank line."""
    return [
        "",
        f"# Every parameter ({parameter_count(graph):,} in all): shape, logical axes, init std (0: ones).",
        "PARAMS = {",
        *param_table(spec, graph),
        "}",
        "PARAM_AXES = {name: axes for name, (_, axes, _) in PARAMS.items()}",
    ]


# ---- the Config dataclass -------------------------------------------------------------------------


def config_values(spec: Spec) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Config's fields and values by group (a title, then (name, value) pairs): every scalar the
    model, the loop and the data pipeline read."""
    optimizer = spec.train.optimizer
    model_fields = [(f.name, getattr(spec.model, f.name)) for f in fields(spec.model)]
    return [
        ("model (T5's encoder-decoder; Switch layers: the Switch Transformer paper's Sec. 2)", model_fields),
        (
            "training",
            [
                ("batch_size", spec.train.batch_size),
                ("inputs_length", spec.train.inputs_length),
                ("targets_length", spec.train.targets_length),
                ("steps", spec.train.steps),
                ("seed", spec.train.seed),
                ("optimizer", optimizer.name),
                ("learning_rate", optimizer.learning_rate),
                ("schedule", optimizer.schedule),
                ("warmup_steps", optimizer.warmup_steps),
                ("beta1", optimizer.beta1),
                ("beta2", optimizer.beta2),
                ("weight_decay", optimizer.weight_decay),
                ("clip_grad_norm", optimizer.clip_grad_norm),
            ],
        ),
        ("data", [(f.name, getattr(spec.data, f.name)) for f in fields(spec.data)]),
        *(
            [
                (
                    "router losses (load balancing: the Switch Transformer paper's Sec. 2.2; z-loss: ST-MoE's)",
                    [
                        ("aux_loss_coef", spec.moe.aux_loss_coef),
                        ("z_loss_coef", spec.moe.z_loss_coef),
                    ],
                )
            ]
            if spec.moe is not None
            else []
        ),
    ]


def config_fields(spec: Spec) -> list[str]:
    """Config's field lines (config_values), annotated, with their values as defaults."""
    lines: list[str] = []
    for title, items in config_values(spec):
        lines.append(f"    # {title}")
        for name, value in items:
            annotation = type(value).__name__ if value is not None else "str | None"
            if name in ("beta1", "beta2"):
                annotation = "float | None"
            lines.append(f"    {name}: {annotation} = {literal(value)}")
    return lines


def config_lines(spec: Spec, dtypes: Mapping[str, str]) -> list[str]:
    """model.py's Config dataclass, CONFIG and DTYPE (the model's dtype, as the framework names it)."""
    return [
        "@dataclass(frozen=True)",
        "class Config:",
        '    """What the spec fixed (see spec.yaml beside this file for every value and its meaning).',
        "",
        "    runtime/ reads the training and data settings from here. The model code below is specialized:",
        "    most model values (sizes, activation, loss coefficients) are written into it as literals, not",
        "    read from here. To change the model, change the spec and compile again.",
        '    """',
        "",
        *config_fields(spec),
        "",
        "",
        "CONFIG = Config()",
        f"DTYPE = {dtypes[spec.model.dtype]}",
    ]


# ---- Switch layers --------------------------------------------------------------------------------


def _switch_settings(spec: Spec, factor: float, dtypes: Mapping[str, str]) -> str:
    moe = spec.moe
    assert moe is not None
    return (
        "MoESettings(\n"
        f"    num_experts={moe.num_experts},\n"
        f"    top_k={moe.top_k},\n"
        f"    capacity_factor={factor!r},\n"
        f"    min_capacity={moe.min_capacity},\n"
        f"    group_size={moe.group_size},\n"
        f"    jitter_eps={moe.jitter_eps!r},\n"
        f"    router_dtype={dtypes[moe.router_dtype]},\n"
        f"    batch_prioritized={moe.batch_prioritized_routing},\n"
        f"    expert_dropout_rate={moe.expert_dropout_rate!r},\n"
        f'    activation="{spec.model.ffn_activation}",\n'
        ")"
    )


def switch_lines(spec: Spec, dtypes: Mapping[str, str]) -> list[str]:
    """model.py's SWITCH and SWITCH_EVAL (runtime/routing.py's MoESettings); none for a dense model."""
    if spec.moe is None:
        return []
    return [
        "# Switch layers in training and in evaluation (they differ in capacity factor only).",
        f"SWITCH = {_switch_settings(spec, spec.moe.capacity_factor.train, dtypes)}",
        f"SWITCH_EVAL = {_switch_settings(spec, spec.moe.capacity_factor.eval, dtypes)}",
    ]


# ---- MFU ----------------------------------------------------------------------------------------


def cost_lines(spec: Spec) -> list[str]:
    """MFU's numerator and denominators, as model.py lines: the step's model FLOPs, and peak FLOP/s
    per hardware profile (runtime/metrics.py divides them; the same in every backend's program)."""
    flops = count_flops(lower(spec)).model.train_step
    devices = spec.mesh.num_devices
    dtype = spec.model.dtype
    peaks = sorted((name, hw.profile.peak(dtype)) for name, hw in builtin_profiles().items())
    return [
        "# Model FLOPs of one train step of the global batch, all devices together (switchc's cost model;",
        f"# report.json: flops.model.train_step, and flops.model.train_step_per_device = this / {devices}): the",
        "# model's math, each token through top_k experts, no capacity padding, no router, no recomputation;",
        "# multiply-add = 2, backward = 2 x forward. The numerator of MFU (runtime/metrics.py).",
        f"MODEL_FLOPS_PER_STEP = {flops}",
        f"# Peak dense matmul FLOP/s of one device in {dtype} (the model's dtype), per switchc hardware profile",
        "# (switchc/analysis/hardware.yaml; `cpu` was measured). --hardware picks one; MFU =",
        "# MODEL_FLOPS_PER_STEP / (step seconds x devices x PEAK_FLOPS[hardware]).",
        "PEAK_FLOPS = {",
        *(f"    {literal(name)}: {float(peak)!r}," for name, peak in peaks),
        "}",
        f"DEFAULT_HARDWARE = {literal(DEFAULT_HARDWARE)}  # off CPU, when the device's name matches no profile",
    ]


# ---- run identity -------------------------------------------------------------------------------


def identity_lines(spec: Spec) -> list[str]:
    """SPEC_DIGEST and EXTENDABLE, as model.py lines: what every checkpoint records and --resume compares."""
    if extendable(spec):
        left_out = "EXTENDABLE, the settings left out of it: more steps continue the same run."
    else:
        left_out = "Nothing is left out of it: the cosine schedule decays to zero over train.steps."
    return [
        "# The run this program trains: a digest of its resolved spec (spec.yaml beside it). Every checkpoint",
        "# records it, and --resume refuses a checkpoint that records another unless given --allow-changes",
        f"# (runtime/flags.py). {left_out}",
        f"SPEC_DIGEST = {literal(spec_digest(spec))}",
        f"EXTENDABLE = {literal(extendable(spec))}",
        "# What the weights compute besides their shapes: an exported weights file records it, and a program",
        "# started from a file that records other values says so (runtime/weights.py, architecture_note).",
        "ARCHITECTURE = {",  # one entry a line, with a trailing comma: ruff keeps it so
        *(f"    {literal(key)}: {literal(value)}," for key, value in architecture(spec)),
        "}",
    ]


# Settings that change what given weights compute without changing their shapes (which a weights
# file's check already covers): training-only settings (dropout, init_scale) and routing capacity
# are not among them.
ARCHITECTURE_SETTINGS = (
    "model.ffn_activation",
    "model.dtype",
    "model.layer_norm_epsilon",
    "model.relative_attention_max_distance",
    "moe.top_k",
)


def architecture(spec: Spec) -> list[tuple[str, Any]]:
    """(setting, value) of ARCHITECTURE_SETTINGS for model.py's ARCHITECTURE (a dense model has no moe.*)."""
    found = []
    for key in ARCHITECTURE_SETTINGS:
        section, name = key.split(".")
        holder = getattr(spec, section)
        if holder is not None:
            found.append((key, getattr(holder, name)))
    return found


def remat_lines(spec: Spec) -> list[str]:
    """model.py's docstring lines on train.remat (none when it is `none`)."""
    if spec.train.remat != "full":
        return []
    return [
        "",
        wrap(
            "train.remat: full. Each block is a function called through layers.remat: the backward pass "
            "computes its activations again instead of keeping them."
        ),
    ]


def wrap(text: str, width: int = 100) -> str:
    """A docstring paragraph wrapped to `width` columns."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))
