"""The spec format, v1: one frozen dataclass per section, one field per key.

This file is the single source of truth for the format. Every field carries its type, its range,
its default (taken from the paper unless stated) and a description that says
why; validation, `switchc explain` and `switchc schema` (JSON Schema) are all derived from it.

Sections: `model` (the T5 backbone), `moe` (absent or null = a dense model), `layout` (which FFN
blocks of each stack are Switch layers; absent = moe.expert_every decides), `mesh` (device axes
and the logical-axis rules that map tensors onto them), `train`, `data`.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field, is_dataclass
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    with_config,
)

SPEC_VERSION = 1

_SECTION = ConfigDict(extra="forbid", validate_default=False)

# Sizes are bounded so that a typo (an extra zero or ten) fails here, not in an allocator.
_MAX_DIM = 2**24
Dim = Annotated[StrictInt, Field(ge=1, le=_MAX_DIM)]
Count = Annotated[StrictInt, Field(ge=0, le=_MAX_DIM)]
# Blocks per stack: the paper's deepest has 24 (T5-XXL); the IR holds ops per block, and a report
# takes seconds per thousand, so a depth past this is a typo, not a model.
MAX_LAYERS = 1024
Layers = Annotated[StrictInt, Field(ge=1, le=MAX_LAYERS)]
Positive = Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)]
Probability = Annotated[StrictFloat, Field(ge=0, lt=1)]
NonNegative = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]

# Free text that may later be written into generated code: printable, one line, bounded.
# Generated programs quote it with repr(); this keeps out the control characters: C0, DEL and C1
# (a terminal takes \x9b for an escape sequence), and the Unicode line and paragraph separators
# (str.splitlines breaks a line at them, as at \x85). Format characters (a bidi override) pass:
# repr() escapes them in code, and error messages show them as U+FFFD.
_PRINTABLE_LINE = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
SafeText = Annotated[str, Field(strict=True), StringConstraints(pattern=_PRINTABLE_LINE, max_length=4096)]

# A key of a JSON object (data.jsonl_field): any SafeText but the empty one.
JsonKey = Annotated[str, Field(strict=True), StringConstraints(pattern=_PRINTABLE_LINE, min_length=1, max_length=4096)]

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,31}$"


def _not_keyword(name: str) -> str:
    if keyword.iskeyword(name):
        raise ValueError(f"'{name}' is a Python keyword")
    return name


# Python's keywords, which no Identifier may be: the JSON schema says so as the validation does.
NOT_A_KEYWORD_SCHEMA: dict[str, Any] = {"not": {"enum": sorted(keyword.kwlist)}}

# A name that becomes an identifier in generated code (mesh axes): checked, never escaped.
Identifier = Annotated[
    str,
    Field(strict=True, json_schema_extra=NOT_A_KEYWORD_SCHEMA),
    StringConstraints(pattern=IDENTIFIER_PATTERN),
    AfterValidator(_not_keyword),
]

Activation = Literal["relu", "gelu", "geglu", "swiglu"]
DType = Literal["float32", "bfloat16"]
LogicalAxis = Literal["batch", "length", "embed", "heads", "kv", "mlp", "vocab", "experts"]
LOGICAL_AXES: tuple[str, ...] = get_args(LogicalAxis)


@with_config(_SECTION)
@dataclass(frozen=True)
class ModelConfig:
    """The T5 encoder-decoder backbone (the Switch Transformer paper's Table 9). Defaults: T5-Base / Switch-Base."""

    vocab_size: Annotated[Dim, Field(description="Vocabulary size; T5's SentencePiece has 32,128.")] = 32128
    d_model: Annotated[Dim, Field(description="Width of the residual stream.")] = 768
    d_ff: Annotated[Dim, Field(description="Hidden width of each FFN and each expert.")] = 2048
    d_kv: Annotated[Dim, Field(description="Width of one attention head (T5 decouples it from d_model / heads).")] = 64
    num_heads: Annotated[Dim, Field(description="Attention heads per layer.")] = 12
    encoder_layers: Annotated[Layers, Field(description="Blocks in the encoder stack.")] = 12
    decoder_layers: Annotated[Layers, Field(description="Blocks in the decoder stack.")] = 12
    ffn_activation: Annotated[
        Activation,
        Field(description="FFN nonlinearity; geglu/swiglu are gated (two input matrices), Table 9's FFN_GEGLU."),
    ] = "geglu"
    tie_embeddings: Annotated[
        StrictBool,
        Field(
            description="Share input and output embeddings (T5 v1.0, logits scaled by d_model^-0.5); false is T5 v1.1."
        ),
    ] = False
    dropout_rate: Annotated[
        Probability,
        Field(description="Dropout outside experts; T5 v1.1 pre-trains with 0, Table 4 fine-tunes with 0.1."),
    ] = 0.0
    dtype: Annotated[DType, Field(description="Activation and parameter dtype; the paper trains in bfloat16.")] = (
        "bfloat16"
    )
    relative_attention_num_buckets: Annotated[
        Dim, Field(description="Buckets of the relative position bias (one table per stack, shared by its layers).")
    ] = 32
    relative_attention_max_distance: Annotated[
        Dim, Field(description="Distance beyond which relative positions share the last bucket.")
    ] = 128
    layer_norm_epsilon: Annotated[Positive, Field(description="Epsilon of the scale-only RMS norm.")] = 1e-6
    init_scale: Annotated[
        Positive,
        Field(description="Truncated-normal init, std = sqrt(init_scale / fan_in); Sec. 2.4 recommends 0.1 over 1.0."),
    ] = 0.1


@with_config(_SECTION)
@dataclass(frozen=True)
class CapacityFactor:
    """Expert capacity = ceil(tokens_per_group / num_experts * factor), eq. 3."""

    train: Annotated[Positive, Field(description="Capacity factor while training (Switch-Base 1.25).")] = 1.25
    eval: Annotated[Positive, Field(description="Capacity factor at evaluation (2.0 in the reference code).")] = 2.0


@with_config(_SECTION)
@dataclass(frozen=True)
class MoEConfig:
    """Switch / MoE layers replacing FFN blocks (the Switch Transformer paper's Sec. 2). Defaults: Switch-Base."""

    num_experts: Annotated[Dim, Field(description="Experts per Switch layer.")] = 128
    expert_every: Annotated[
        Dim,
        Field(
            description="FFN block i of a stack is a Switch layer when i % expert_every == expert_every - 1 "
            "(1 = all, Switch-C; 2 = every other, Switch-Base/Large/XXL). A stack named in `layout` follows "
            "the layout instead."
        ),
    ] = 2
    top_k: Annotated[Dim, Field(description="Experts per token: 1 is Switch, 2 is the MoE baseline of Table 1.")] = 1
    capacity_factor: Annotated[CapacityFactor, Field(description="Capacity factors for training and evaluation.")] = (
        field(default_factory=CapacityFactor)
    )
    min_capacity: Annotated[Count, Field(description="Floor on expert capacity (4 in Mesh-TF and flaxformer).")] = 4
    group_size: Annotated[
        Dim, Field(description="Most tokens in one routing group; capacity is computed per group.")
    ] = 4096
    batch_prioritized_routing: Annotated[
        StrictBool,
        Field(
            description="Claim expert slots in order of router probability instead of position, in every Switch "
            "layer (in the decoder's, a target's slot then depends on later targets: the report notes it)."
        ),
    ] = False
    aux_loss_coef: Annotated[
        NonNegative, Field(description="Load-balancing loss weight alpha (eq. 4), 1e-2 in the paper.")
    ] = 1e-2
    z_loss_coef: Annotated[
        NonNegative, Field(description="Router z-loss weight (ST-MoE, 1e-3 there); the paper's Switch has none.")
    ] = 0.0
    jitter_eps: Annotated[
        Probability, Field(description="Router input jitter U(1-eps, 1+eps) in training (App. C: 1e-2).")
    ] = 1e-2
    router_dtype: Annotated[
        DType, Field(description="Router precision; float32 is the paper's selective precision (Table 2).")
    ] = "float32"
    expert_dropout_rate: Annotated[
        Probability, Field(description="Dropout on the expert hidden activation (Table 4: 0.4 when fine-tuning).")
    ] = 0.0
    init_scale: Annotated[Positive, Field(description="init_scale for router and expert weights (Sec. 2.4).")] = 0.1


# ---- layout: where the Switch layers sit ---------------------------------------------------------

STACKS: tuple[str, ...] = ("encoder", "decoder")
_EVERY = re.compile(r"every ([1-9][0-9]{0,7})")


def parse_every(placement: str) -> int:
    """K of a placement written 'every K' (already validated)."""
    match = _EVERY.fullmatch(placement)
    if match is None:
        raise ValueError(f"not an 'every K' placement: {placement!r}")
    return int(match[1])


def every_blocks(every: int, depth: int) -> tuple[int, ...]:
    """The blocks the expert_every rule makes Switch layers: i % every == every - 1."""
    return tuple(range(every - 1, depth, every))


def placement_blocks(placement: str | tuple[int, ...], depth: int) -> tuple[int, ...]:
    """The Switch blocks (ascending, each < depth) of a placement: 'every K' or a list of blocks."""
    if isinstance(placement, str):
        return every_blocks(parse_every(placement), depth)
    return tuple(sorted({index for index in placement if index < depth}))


def _placement(value: Any) -> str | tuple[int, ...]:
    """'every K' (K >= 1) or a list of block indices (integers >= 0); ranges are checked per stack."""
    if isinstance(value, str):
        if _EVERY.fullmatch(value):
            return value
        if re.fullmatch(r"every 0+", value):
            raise ValueError(f"'{value}': K in 'every K' is at least 1 ('every 1' makes every block a Switch layer)")
        raise ValueError(f"expected 'every K' or a list of block indices, got '{value}'")
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < _MAX_DIM:
                shown = "true" if item is True else "false" if item is False else repr(item)
                raise ValueError(f"block indices are integers >= 0, got {shown}")
        return tuple(value)
    shown = "null" if value is None else repr(value)
    raise ValueError(f"expected 'every K' or a list of block indices, got {shown}")


SwitchPlacement = Annotated[
    str | tuple[int, ...],
    PlainValidator(
        _placement,
        json_schema_input_type=Annotated[str, StringConstraints(pattern=f"^{_EVERY.pattern}$")]  # JSON: anywhere
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(json_schema_extra={"uniqueItems": True})],
    ),
]


@with_config(_SECTION)
@dataclass(frozen=True)
class StackLayout:
    """Which FFN blocks of one stack are Switch layers."""

    switch: Annotated[
        SwitchPlacement,
        Field(
            description="'every K' (blocks K-1, 2K-1, ...: the expert_every rule) or a list of 0-based "
            "block indices in ascending order; [] is a dense stack."
        ),
    ]


def _null_is_empty(value: Any) -> Any:
    return {} if value is None else value


@with_config(_SECTION)
@dataclass(frozen=True)
class LayoutConfig:
    """Where Switch layers sit in each stack; a stack left out follows moe.expert_every.

    moe.expert_every, when written beside a layout, must agree with every stack the layout names.
    """

    encoder: Annotated[
        StackLayout | None, Field(description="Switch layers of the encoder; absent = moe.expert_every.")
    ] = None
    decoder: Annotated[
        StackLayout | None, Field(description="Switch layers of the decoder; absent = moe.expert_every.")
    ] = None

    def placement(self, stack: str) -> str | tuple[int, ...] | None:
        """The stack's placement as written, or None when the layout leaves the stack out."""
        if stack not in STACKS:
            raise ValueError(f"unknown stack {stack!r}; stacks are {', '.join(STACKS)}")
        found: StackLayout | None = getattr(self, stack)
        return None if found is None else found.switch


def _as_axis_tuple(value: Any) -> Any:
    """A rule may name one mesh axis, a list of them, or null (replicated)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(value)
    return value


MeshAxes = Annotated[
    tuple[Identifier, ...], BeforeValidator(_as_axis_tuple, json_schema_input_type=Identifier | list[Identifier] | None)
]

# Logical axis -> mesh axes, before the mesh is known. Axes the mesh lacks are dropped, so the
# same rules serve a data-only mesh and a data x expert x model one. Tokens are split over the
# expert axis too: in Switch's expert parallelism every core routes its own tokens (Sec. 6).
STANDARD_RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "expert"),
    "experts": ("expert",),
    "mlp": ("model",),
    "heads": ("model",),
    "vocab": ("model",),
}


@with_config(_SECTION)
@dataclass(frozen=True)
class MeshConfig:
    """Devices as a named mesh, and which tensor dimensions are split over which axes (Sec. 6)."""

    axes: Annotated[
        dict[Identifier, Dim],
        Field(
            description="Ordered mesh axes, name -> size, e.g. {data: 2, expert: 4, model: 1}. The standard "
            "rules split the batch over data and expert, the experts over expert, and d_ff, heads and vocab over "
            "model; an axis of more than one device that no rule splits anything over is an error.",
            # names must match the pattern (patternProperties) and be no Python keyword
            json_schema_extra={"additionalProperties": False, "propertyNames": NOT_A_KEYWORD_SCHEMA},
        ),
    ] = field(default_factory=lambda: {"data": 1})
    rules: Annotated[
        dict[LogicalAxis, MeshAxes],
        Field(
            description="Logical axis -> mesh axes (a name, a list, or null), overriding the standard rules. "
            "embed, kv and length stay whole: a rule may map them onto an axis of one device only."
        ),
    ] = field(default_factory=dict)

    @property
    def num_devices(self) -> int:
        total = 1
        for size in self.axes.values():
            total *= size
        return total

    @property
    def shape(self) -> str:
        """The axes as summaries print them: `data=2 x expert=4` ('' for a mesh of no axes)."""
        return " x ".join(f"{axis}={size}" for axis, size in self.axes.items())

    def logical_rules(self) -> dict[str, tuple[str, ...]]:
        """Every logical axis -> the mesh axes it is split over: standard rules, then the spec's."""
        resolved: dict[str, tuple[str, ...]] = {axis: () for axis in LOGICAL_AXES}
        for axis, mesh_axes in STANDARD_RULES.items():
            resolved[axis] = tuple(a for a in mesh_axes if a in self.axes)
        for axis, mesh_axes in self.rules.items():
            resolved[axis] = mesh_axes
        return resolved

    def shards(self, logical_axis: str) -> int:
        """How many pieces a dimension with this logical axis is split into."""
        total = 1
        for mesh_axis in self.logical_rules()[logical_axis]:
            total *= self.axes[mesh_axis]
        return total


@with_config(_SECTION)
@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and learning-rate schedule (Sec. 4: Adafactor with an inverse-square-root schedule)."""

    name: Annotated[Literal["adafactor", "adam"], Field(description="adafactor (factored second moments) or adam.")] = (
        "adafactor"
    )
    learning_rate: Annotated[
        Positive,
        Field(description="Peak learning rate; rsqrt gives 1/sqrt(max(step, warmup)) scaled so the peak is this."),
    ] = 1e-2
    schedule: Annotated[
        Literal["rsqrt", "constant", "cosine"], Field(description="rsqrt (T5), constant, or cosine decay to zero.")
    ] = "rsqrt"
    warmup_steps: Annotated[
        Count,
        Field(
            description="rsqrt: steps at the constant peak before the decay; cosine: steps of linear warm-up "
            "(fewer than train.steps); constant: none (ignored)."
        ),
    ] = 10000
    beta1: Annotated[
        Probability | None,
        Field(description="First-moment decay; null = the optimizer's default (Adafactor: no momentum, Adam: 0.9)."),
    ] = None
    beta2: Annotated[
        Probability | None,
        Field(description="Second-moment decay; null = the optimizer's default (Adafactor: 0.8 decay, Adam: 0.999)."),
    ] = None
    weight_decay: Annotated[NonNegative, Field(description="Decoupled weight decay.")] = 0.0
    clip_grad_norm: Annotated[
        NonNegative, Field(description="Clip the global gradient norm to this; 0 disables clipping.")
    ] = 0.0


@with_config(_SECTION)
@dataclass(frozen=True)
class TrainConfig:
    """One training run: batch shape, length, steps (Sec. 4: 2^20 tokens per batch)."""

    batch_size: Annotated[Dim, Field(description="Sequences per step, over all devices.")] = 2048
    inputs_length: Annotated[Dim, Field(description="Encoder tokens per sequence (512 in pre-training).")] = 512
    targets_length: Annotated[
        Dim, Field(description="Decoder tokens per sequence (114 for 512 inputs with 15% noise, mean span 3).")
    ] = 114
    steps: Annotated[Dim, Field(description="Training steps (Table 1 compares at 100k).")] = 100000
    optimizer: Annotated[OptimizerConfig, Field(description="Optimizer and schedule.")] = field(
        default_factory=OptimizerConfig
    )
    remat: Annotated[
        Literal["none", "full"], Field(description="Recompute each block's activations in the backward pass.")
    ] = "none"
    seed: Annotated[Count, Field(description="Seed for init, data order, dropout and jitter.")] = 0


@with_config(_SECTION)
@dataclass(frozen=True)
class DataConfig:
    """Where text comes from and how it becomes (inputs, targets) pairs (Sec. 4)."""

    source: Annotated[
        Literal["shakespeare", "text", "jsonl"],
        Field(description="shakespeare (built in, no download), text files, or JSONL records."),
    ] = "shakespeare"
    path: Annotated[
        SafeText | None,
        Field(
            description="File or directory for source text/jsonl: a directory's files, in name order, hidden ones "
            "(.git/, .*) left out; UTF-8 text. A relative path is relative to where the program runs (switchc "
            "train records it as an absolute path); ~ is the home directory."
        ),
    ] = None
    eval_path: Annotated[
        SafeText | None,
        Field(
            description="A file or directory (read as data.path, in data.source's format) to evaluate on, instead "
            "of holding out data.eval_fraction of data.path: all of data.path then trains."
        ),
    ] = None
    jsonl_field: Annotated[JsonKey, Field(description="Field of each JSONL record that holds the text.")] = "text"
    tokenizer: Annotated[
        Literal["byte", "sentencepiece"],
        Field(
            description="byte (no files) or SentencePiece: a unigram model trained on the training split at first "
            "use and cached under $SWITCHC_CACHE (default ~/.cache/switchc); its top 100 ids are sentinels."
        ),
    ] = "sentencepiece"
    spm_model: Annotated[
        SafeText | None,
        Field(
            description="An existing SentencePiece .model to use instead of training one (pad 0, eos 1, unk 2; "
            "at most vocab_size - 100 pieces); a path as for data.path."
        ),
    ] = None
    objective: Annotated[
        Literal["span_corruption", "prefix_lm"], Field(description="T5 span corruption, or prefix LM.")
    ] = "span_corruption"
    noise_density: Annotated[Probability, Field(description="Fraction of input tokens corrupted (0.15).")] = 0.15
    mean_noise_span: Annotated[Positive, Field(description="Mean corrupted span length in tokens (3).")] = 3.0
    eval_fraction: Annotated[
        Probability,
        Field(description="Share of the corpus held out for evaluation (0 when data.eval_path is set: that text is)."),
    ] = 0.05


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "moe": MoEConfig,
    "layout": LayoutConfig,
    "mesh": MeshConfig,
    "train": TrainConfig,
    "data": DataConfig,
}


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class SpecBody:
    """What a spec file says: the six sections. `moe` None means a dense model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig | None = None
    layout: Annotated[LayoutConfig, BeforeValidator(_null_is_empty, json_schema_input_type=LayoutConfig | None)] = (
        field(default_factory=LayoutConfig)
    )
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the spec format, for editors and other tools."""
    schema = TypeAdapter(SpecBody).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://switchc.dev/schema/spec-v{SPEC_VERSION}.json",
        "title": f"switchc spec, format v{SPEC_VERSION}",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def field_docs() -> dict[str, str]:
    """Dotted path -> description, for every key of the format (sections included)."""
    docs: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, hint in get_type_hints(cls, include_extras=True).items():
            path = f"{prefix}{name}"
            described = [m for m in getattr(hint, "__metadata__", ()) if getattr(m, "description", None)]
            if described:
                docs[path] = described[0].description
            inner = section_type(hint)
            if inner is not None:
                docs.setdefault(path, (inner.__doc__ or "").strip())
                walk(inner, path + ".")

    walk(SpecBody, "")
    return docs


def strip_annotated(hint: Any) -> Any:
    while get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return hint


def section_type(hint: Any) -> type | None:
    """The section dataclass a field holds (unwrapping Annotated and Optional), else None."""
    hint = strip_annotated(hint)
    candidates = [a for a in get_args(hint) if a is not type(None)] or [hint]
    for candidate in candidates:
        if is_dataclass(candidate) and isinstance(candidate, type):
            return candidate
    return None
