"""Checks that involve more than one value: the model must fit its mesh, routing must make sense.

Each check is a function `Spec -> diagnostics`, pointing at the value a user would change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from switchc.errors import Diagnostic, Span, did_you_mean
from switchc.spec.dsl import depth_from_blocks
from switchc.spec.schema import STACKS, STANDARD_RULES, parse_every

if TYPE_CHECKING:
    from switchc.spec.spec import Spec

Check = Callable[["Spec"], Iterator[Diagnostic]]
OVERRIDE_SOURCE_NAME = "<command line>"  # as in load.py, which imports this module


def _written(spec: Spec, yaml_text: str, dsl_text: str, path: str | None = None) -> str:
    """A snippet in the format of what wrote `path` (default: the spec's file), for hints: a .switch
    file is DSL; anything else, --set's values included, is YAML."""
    source = spec.span(path).source if path is not None else spec.origin.source
    return dsl_text if source.name.endswith(".switch") else yaml_text


def _check_routing(spec: Spec) -> Iterator[Diagnostic]:
    moe = spec.moe
    if moe is None:
        return
    if moe.top_k > moe.num_experts:
        yield Diagnostic(
            f"top_k {moe.top_k} is larger than num_experts {moe.num_experts}",
            spec.span("moe.top_k"),
            "a token cannot be routed to more experts than there are: lower top_k or add experts",
        )
    if any(spec.switch_blocks(stack) for stack in STACKS) or _out_of_range(spec):
        return
    by_rule = [stack for stack in STACKS if spec.layout.placement(stack) is None]
    if len(by_rule) == len(STACKS):
        deepest = max(spec.stack_depth(stack) for stack in STACKS)
        blocks = f"{deepest} block{'s' if deepest != 1 else ''}"
        yield Diagnostic(
            f"expert_every {moe.expert_every} exceeds the deepest stack ({blocks}): no block would be a Switch layer",
            spec.span("moe.expert_every"),
            "use expert_every <= the number of blocks, or remove the moe section for a dense model",
        )
        return
    yield Diagnostic(
        "the spec has a moe section but its layout places no Switch layer",
        spec.key_span("layout"),
        f"place Switch layers (e.g. `{_written(spec, 'switch: every 2', 'switch = every 2')}`), "
        "or remove the moe section for a dense model",
    )


def _out_of_range(spec: Spec) -> bool:
    """Whether a layout list names a block past its stack (reported by _check_layout)."""
    for stack in STACKS:
        placement = spec.layout.placement(stack)
        if isinstance(placement, tuple) and any(i >= spec.stack_depth(stack) for i in placement):
            return True
    return False


def _check_layout(spec: Spec) -> Iterator[Diagnostic]:
    """Block indices in range, listed once, ascending; Switch layers need a moe section; expert_every agrees."""
    for stack in STACKS:
        placement = spec.layout.placement(stack)
        if placement is None:
            continue
        path = f"layout.{stack}.switch"
        depth = spec.stack_depth(stack)
        if isinstance(placement, str):
            every = parse_every(placement)
            if every > depth:
                yield Diagnostic(
                    f"'{placement}' places no Switch layer in the {depth}-block {stack}",
                    spec.span(path),
                    f"write `{_written(spec, 'switch: []', 'switch = []', path)}` for a dense stack, "
                    "or use a smaller K",
                )
            elif spec.moe is None:  # 'every K' within the stack places Switch layers, as a list does
                yield from _switch_layers_without_moe(spec, stack, spec.span(path))
            continue
        yield from _check_block_list(spec, stack, placement, depth)
        if spec.moe is None and placement:
            yield from _switch_layers_without_moe(spec, stack, spec.span(f"{path}.0"))
    yield from _check_expert_every_agrees(spec)


def _switch_layers_without_moe(spec: Spec, stack: str, where: Span) -> Iterator[Diagnostic]:
    """The layout places Switch layers in `stack` (at `where`), but the spec has no moe section."""
    path = f"layout.{stack}.switch"
    removed = spec.origin.value_spans.get("moe")
    if removed is not None and removed.source.name == OVERRIDE_SOURCE_NAME:  # --set moe=null
        yield Diagnostic(
            f"the layout places Switch layers in the {stack}, but --set moe=null removed the moe section",
            where,
            f"make the {stack} dense as well: --set '{path}=[]'",
            notes=(("moe removed here", removed),),
        )
        return
    listed = depth_from_blocks(spec.span(f"model.{stack}_layers"), stack)  # the DSL's blocks
    dense = _written(spec, "`switch: []`", "blocks with `ffn`" if listed else "`switch = []`")
    yield Diagnostic(
        f"the layout places Switch layers in the {stack}, but the spec has no moe section",
        where,
        f"add a moe section (e.g. `{_written(spec, 'moe: {num_experts: 8}', 'moe { num_experts = 8 }')}`), "
        f"or make the stack dense ({dense})",
    )


def _deeper(spec: Spec, stack: str) -> str:
    """How to make `stack` deeper: its setting, or, where a DSL file lists its blocks, more blocks
    in the file."""
    if depth_from_blocks(spec.span(f"model.{stack}_layers"), stack):
        return f"add blocks to the file's '{stack}' for a deeper {stack}"
    return f"set model.{stack}_layers for a deeper {stack}"


# Mistakes said one by one in a list of blocks; the rest are counted (a range typed as thousands of
# blocks would print thousands of errors).
SHOWN_PER_LIST = 5


def _check_block_list(spec: Spec, stack: str, blocks: tuple[int, ...], depth: int) -> Iterator[Diagnostic]:
    path = f"layout.{stack}.switch"
    found = list(_block_list_mistakes(spec, stack, blocks, depth))
    yield from found[:SHOWN_PER_LIST]
    if len(found) > SHOWN_PER_LIST:
        yield Diagnostic(
            f"{len(found) - SHOWN_PER_LIST} more mistakes in {path} (the first {SHOWN_PER_LIST} are said one by "
            "one); the next is here",
            found[SHOWN_PER_LIST].span,
            "fix the ones above and check again",
        )


def _block_list_mistakes(spec: Spec, stack: str, blocks: tuple[int, ...], depth: int) -> Iterator[Diagnostic]:
    path = f"layout.{stack}.switch"
    first: dict[int, int] = {}
    for position, index in enumerate(blocks):
        span = spec.span(f"{path}.{position}")
        if index >= depth:
            yield Diagnostic(
                f"block {index} is out of range: the {stack} has {depth} blocks (0 to {depth - 1})",
                span,
                f"blocks are numbered from 0; {_deeper(spec, stack)}",
            )
        elif index in first:
            yield Diagnostic(
                f"block {index} is listed twice in {path}",
                span,
                "list each Switch block once",
                notes=(("first listed here", spec.span(f"{path}.{first[index]}")),),
            )
        elif position and index < blocks[position - 1]:
            yield Diagnostic(
                f"block {index} comes after block {blocks[position - 1]}: list the blocks in ascending order",
                span,
                f"write [{_listed(sorted(set(blocks)))}]",
            )
        first.setdefault(index, position)


def _listed(blocks: list[int], most: int = 12) -> str:
    """Block indices for a hint: all of a short list; the first and last few of a long one."""
    if len(blocks) <= most:
        return ", ".join(map(str, blocks))
    half = most // 2
    return ", ".join(map(str, blocks[:half])) + ", ..., " + ", ".join(map(str, blocks[-half:]))


def _check_expert_every_agrees(spec: Spec) -> Iterator[Diagnostic]:
    """With a layout, expert_every only covers the stacks the layout leaves out. Written beside the
    layout, it must agree with every stack the layout names; a layout given with --set overrides
    what the file's expert_every says about the stacks it names."""
    moe = spec.moe
    if moe is None or spec.is_default("moe.expert_every"):
        return
    every_source = spec.span("moe.expert_every").source
    disagree = []
    for stack in STACKS:
        placement = spec.layout.placement(stack)
        if placement is None:
            continue
        layout_source = spec.span(f"layout.{stack}.switch").source
        if layout_source.name == OVERRIDE_SOURCE_NAME and every_source is not layout_source:
            continue
        if not spec.expert_every_agrees(stack):
            disagree.append(stack)
    if not disagree:
        return
    hint = (
        "the layout says where Switch layers sit in the stacks it names: remove moe.expert_every, or make the two agree"
    )
    # A depth given with --set, beside a file's layout and expert_every: the layout lists the blocks
    # of the depth the file wrote, and it is what the --set made disagree.
    deepened = [
        stack
        for stack in disagree
        if spec.span(f"model.{stack}_layers").source.name == OVERRIDE_SOURCE_NAME
        and spec.span(f"layout.{stack}.switch").source is not spec.span(f"model.{stack}_layers").source
    ]
    overrides = " ".join(f"--set 'layout.{stack}.switch=every {moe.expert_every}'" for stack in disagree)
    if every_source.name == OVERRIDE_SOURCE_NAME:  # the file's layout stays: --set the layout itself
        hint = f"the layout says where Switch layers sit in the stacks it names: set it instead, {overrides}"
    elif deepened:
        hint = (
            f"the layout lists the Switch blocks of the depth the file gives: set it for the new one too, {overrides}"
        )
    layouts = " and ".join(f"layout.{stack}.switch" for stack in disagree)
    yield Diagnostic(
        f"moe.expert_every {moe.expert_every} disagrees with {layouts}",
        spec.span("moe.expert_every"),
        hint,
        notes=tuple((f"the {stack} layout is written here", spec.span(f"layout.{stack}.switch")) for stack in disagree)
        + tuple((f"model.{stack}_layers is set here", spec.span(f"model.{stack}_layers")) for stack in deepened),
    )


def _check_rules(spec: Spec) -> Iterator[Diagnostic]:
    mesh = spec.mesh
    for logical, mesh_axes in mesh.rules.items():
        path = f"mesh.rules.{logical}"
        for axis in mesh_axes:
            if axis not in mesh.axes:
                yield Diagnostic(
                    f"rule '{logical}' names mesh axis '{axis}', which mesh.axes does not define",
                    spec.span(path),
                    did_you_mean(axis, mesh.axes) or f"mesh axes: {', '.join(mesh.axes)}",
                )
        repeated = sorted({a for a in mesh_axes if mesh_axes.count(a) > 1})
        if repeated:
            yield Diagnostic(
                f"rule '{logical}' uses mesh axis '{repeated[0]}' twice",
                spec.span(path),
                "a dimension is split over each mesh axis at most once",
            )
    # An axis no rule splits anything over replicates the whole step on each of its devices: a
    # misspelt axis ('experts') would otherwise pass, and the report would count the work twice.
    resolved = mesh.logical_rules()
    used = {axis for axes in resolved.values() for axis in axes}
    standard = sorted({axis for axes in STANDARD_RULES.values() for axis in axes})
    for axis, size in mesh.axes.items():
        if size == 1 or axis in used:
            continue
        dropped = [logical for logical, axes in STANDARD_RULES.items() if axis in axes]
        if dropped:  # a standard axis whose standard rules mesh.rules overrode
            hint = f"mesh.rules.{dropped[0]} leaves it out (by default {dropped[0]} is split over it): add it there"
        else:
            example = ", ".join((*resolved["batch"], axis))
            hint = did_you_mean(axis, standard) or (
                f"use a standard axis ({', '.join(standard)}), or map a dimension onto it in mesh.rules "
                f"(e.g. batch: [{example}])"
            )
        yield Diagnostic(
            f"mesh axis '{axis}' ({size} devices) splits nothing: no rule maps a dimension onto it, so its "
            f"{size} devices would each do the same work",
            spec.span(f"mesh.axes.{axis}"),
            hint,
        )


# Pairs of weight axes that share a tensor of the model (embedding [vocab, embed], attention
# [embed, heads, kv], FFN [embed, mlp], experts [experts, embed, mlp]; tests/spec check it against
# the IR). One mesh axis cannot split both dims of one tensor: XLA refuses such a sharding, and
# the report's rule (the first in AXIS_PRIORITY takes the axis) is not what the programs run.
# Token axes (batch, length) may share a mesh axis with a weight axis: the expert axis moves
# from tokens to experts that way (Sec. 6).
SHARED_TENSOR_AXES: frozenset[frozenset[str]] = frozenset(
    frozenset(pair)
    for pair in (
        ("vocab", "embed"),
        ("embed", "heads"),
        ("embed", "kv"),
        ("heads", "kv"),
        ("embed", "mlp"),
        ("embed", "experts"),
        ("experts", "mlp"),
    )
)


def _check_shared_mesh_axes(spec: Spec) -> Iterator[Diagnostic]:
    """Two weight axes of one tensor split over the same mesh axis (mesh.rules {mlp: expert} beside
    the default experts: expert): an error naming both rules. Pairs with embed or kv are left to
    _check_unsplit_axes, which refuses splitting those at all."""
    resolved = spec.mesh.logical_rules()
    for pair in sorted(SHARED_TENSOR_AXES, key=sorted):
        if pair & set(UNSPLIT_AXES):
            continue
        first, second = sorted(pair)
        common = [
            axis
            for axis in resolved.get(first, ())
            if axis in resolved.get(second, ()) and spec.mesh.axes.get(axis, 1) > 1  # one device splits nothing
        ]
        if not common:
            continue
        written = [name for name in (first, second) if name in spec.mesh.rules]
        where = f"mesh.rules.{written[-1]}" if written else "mesh.rules"
        yield Diagnostic(
            f"mesh axis '{common[0]}' splits both {first} and {second}, two dims of one weight tensor; a mesh axis "
            "can split one dim of a tensor",
            spec.span(where),
            f"split {first} and {second} over different mesh axes, or leave one of them out of mesh.rules "
            f"({first}: {list(resolved.get(first, ()))}, {second}: {list(resolved.get(second, ()))} now)",
        )


# Dimensions that the cost model and the programs do not split, with why. A layer is one op of the
# IR, and the shard pass adds a collective where an op's output is a partial sum; an attention or
# FFN layer split over embed or kv sums over the split dim inside (its projections, its scores),
# which needs all-reduces the report does not count (28% of the FLOPs and most collective bytes
# off XLA's on switch-tiny), and the JAX program runs Switch layers whole on each device (XLA
# gathers them). No program constrains the sequence dim, so XLA runs it whole.
UNSPLIT_AXES = {
    "embed": "attention and FFN layers sum over d_model inside, which needs all-reduces the cost report "
    "does not count, and parameter sharding (FSDP) is not modelled",
    "kv": "attention scores sum over d_kv before the softmax, which needs all-reduces the cost report does not count",
    "length": "the programs never split the sequence (XLA would run it whole on every device)",
}


# Weight axes that tensor parallelism splits; the axis that does it must split no tokens or experts.
TENSOR_PARALLEL_AXES = ("heads", "mlp", "vocab")


def _check_unsplit_axes(spec: Spec) -> Iterator[Diagnostic]:
    """Rules whose cost the report would not count as the programs run them, on a mesh axis of two
    or more devices (an axis of one device splits nothing, so rules onto it stay allowed):
    - embed, kv or length split at all (UNSPLIT_AXES);
    - the experts over an axis that does not split the batch: both programs route each device's
      tokens with an all-to-all over the experts' axes, so with tokens whole on that axis every
      device sends the same tokens (on {data: 2, model: 2} with {experts: model}: 18% more FLOPs
      than the report in PyTorch; the JAX program failed to trace);
    - heads, mlp or vocab over an axis that also splits the batch or the experts: the report
      gathers and scatters between the two layouts while XLA reshards with all-to-alls of its own
      choosing (on {data: 2} with {mlp: data}, 15% fewer FLOPs and every collective row off)."""
    resolved = spec.mesh.logical_rules()
    standard = (
        "split heads, mlp and vocab over a model axis, the batch over data and expert, and the experts over "
        "expert (the standard rules)"
    )

    def splitting(logical: str) -> list[str]:
        return [axis for axis in resolved.get(logical, ()) if spec.mesh.axes.get(axis, 1) > 1]

    for logical, why in UNSPLIT_AXES.items():
        for axis in splitting(logical)[:1]:
            yield Diagnostic(
                f"switchc cannot split {logical} over mesh axis '{axis}' ({spec.mesh.axes[axis]} devices): {why}",
                spec.span(f"mesh.rules.{logical}"),
                f"remove mesh.rules.{logical}; {standard}",
            )
    for axis in [axis for axis in splitting("experts") if axis not in resolved.get("batch", ())][:1]:
        batch = [*resolved.get("batch", ()), axis]
        yield Diagnostic(
            f"switchc cannot split the experts over mesh axis '{axis}' ({spec.mesh.axes[axis]} devices), which does "
            "not split the batch: expert parallelism sends each device's own tokens to the devices of their experts "
            "(an all-to-all over the axis), so the batch is split over every axis the experts are",
            spec.span("mesh.rules.experts" if "experts" in spec.mesh.rules else "mesh.rules.batch"),
            f"split the batch over '{axis}' too (batch: [{', '.join(batch)}]), or the experts over an axis that "
            "splits the batch",
        )
    for axis, size in spec.mesh.axes.items():
        weights = [logical for logical in TENSOR_PARALLEL_AXES if axis in splitting(logical)]
        also = [what for what in ("batch", "experts") if axis in resolved.get(what, ())]
        if size == 1 or not weights or not also:
            continue
        # point at the rule the spec wrote: a tensor-parallel one, else the batch's or the experts'
        written = [key for key in (*weights, *also) if spec.origin.value_spans.get(f"mesh.rules.{key}")]
        named, splits = _and(weights), _and([f"the {what}" for what in also])
        yield Diagnostic(
            f"switchc cannot split {named} over mesh axis '{axis}' ({size} devices), which also splits {splits}: "
            "the report's gathers between the two layouts are not how XLA reshards",
            spec.span(f"mesh.rules.{written[0] if written else weights[0]}"),
            f"use '{axis}' for {named} or for {splits}, not both; {standard}",
        )


def _and(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _divisible(spec: Spec, logical: str, size: int, what: str, path: str) -> Iterator[Diagnostic]:
    mesh = spec.mesh
    axes = [a for a in mesh.logical_rules()[logical] if a in mesh.axes]
    shards = 1
    for axis in axes:
        shards *= mesh.axes[axis]
    if size % shards:
        over = " x ".join(f"{a}={mesh.axes[a]}" for a in axes)
        # Point at the mesh axis that splits it when the size was written nowhere (a default), or
        # when the axis came from --set and the size from a file: the user's change is the news.
        default = spec.is_default(path)
        axis_span, size_span = spec.span(f"mesh.axes.{axes[-1]}"), spec.span(path)
        changed = axis_span.source.name == OVERRIDE_SOURCE_NAME != size_span.source.name
        yield Diagnostic(
            f"{what} ({size}{', the default' if default else ''}) is not divisible by the {shards} shards of "
            f"mesh axes {over}",
            axis_span if default or changed else size_span,
            f"set {path} to a multiple of {shards}, or change mesh.axes / mesh.rules.{logical}",
        )


def _check_sharding(spec: Spec) -> Iterator[Diagnostic]:
    if any(axis not in spec.mesh.axes for axes in spec.mesh.rules.values() for axis in axes):
        return  # reported by _check_rules; shard counts would be meaningless
    model = spec.model
    yield from _divisible(spec, "batch", spec.train.batch_size, "the global batch", "train.batch_size")
    if spec.moe is not None:
        yield from _divisible(spec, "experts", spec.moe.num_experts, "num_experts", "moe.num_experts")
    yield from _divisible(spec, "heads", model.num_heads, "num_heads", "model.num_heads")
    yield from _divisible(spec, "mlp", model.d_ff, "d_ff", "model.d_ff")
    yield from _divisible(spec, "vocab", model.vocab_size, "vocab_size", "model.vocab_size")
    yield from _divisible(spec, "embed", model.d_model, "d_model", "model.d_model")
    yield from _divisible(spec, "kv", model.d_kv, "d_kv", "model.d_kv")


def _check_data(spec: Spec) -> Iterator[Diagnostic]:
    data = spec.data
    if data.source in ("text", "jsonl") and data.path is None:
        yield Diagnostic(
            f"data.source '{data.source}' needs data.path",
            spec.span("data.source"),
            "set data.path to a file or a directory of files",
        )
    if data.source == "shakespeare" and data.path is not None:
        yield Diagnostic(
            "data.path is set but data.source is 'shakespeare', the built-in corpus",
            spec.span("data.path"),
            "set data.source to 'text' or 'jsonl' to read your own files",
        )
    if data.objective == "span_corruption" and data.noise_density == 0:
        yield Diagnostic(
            "span corruption with noise_density 0 has nothing to corrupt (each example would still lose one "
            "token to a span)",
            spec.span("data.noise_density"),
            "set data.noise_density above 0 (T5 uses 0.15), or use data.objective: prefix_lm",
        )
    if data.objective == "span_corruption" and data.mean_noise_span < 1:
        yield Diagnostic(
            f"data.mean_noise_span {data.mean_noise_span:g} is shorter than one token",
            spec.span("data.mean_noise_span"),
            "set data.mean_noise_span to 1 or more (T5 uses 3)",
        )
    if data.eval_path is not None and data.source == "shakespeare":
        yield Diagnostic(
            "data.eval_path is set but data.source is 'shakespeare', the built-in corpus",
            spec.span("data.eval_path"),
            "set data.source to 'text' or 'jsonl' to read your own files (eval_path is read the same way)",
        )
    if data.eval_path is not None and data.eval_fraction > 0:
        yield Diagnostic(
            f"data.eval_fraction {data.eval_fraction:g} and data.eval_path both choose the text to evaluate on",
            spec.span("data.eval_fraction"),
            "keep data.eval_path (all of data.path then trains), or drop it to hold out data.eval_fraction",
        )
    if data.spm_model is not None and data.tokenizer != "sentencepiece":
        yield Diagnostic(
            f"data.spm_model is set but data.tokenizer is '{data.tokenizer}'",
            spec.span("data.spm_model"),
            "set data.tokenizer to 'sentencepiece', or remove data.spm_model",
        )


def _check_schedule(spec: Spec) -> Iterator[Diagnostic]:
    """A cosine schedule warms up for warmup_steps, then decays to zero at train.steps: a warm-up
    as long as the run would never reach the peak, nor decay."""
    optimizer, steps = spec.train.optimizer, spec.train.steps
    if optimizer.schedule == "cosine" and optimizer.warmup_steps >= steps:
        path = "train.optimizer.warmup_steps"
        # a default warm-up: the cosine schedule chose it; else the warm-up, or the steps it outlasts
        span, notes = (
            (spec.span("train.optimizer.schedule"), ())
            if spec.is_default(path)
            else _where_pair(spec, path, "train.steps")
        )
        yield Diagnostic(
            f"the cosine schedule's warm-up ({optimizer.warmup_steps} steps"
            f"{', the default' if spec.is_default(path) else ''}) is not shorter than train.steps ({steps}): it would "
            "never reach the peak learning rate, nor decay to zero at the end",
            span,
            f"set {path} below {steps} (a tenth of the steps is common: {steps // 10}), "
            + (f"train.steps above {optimizer.warmup_steps}, " if span == spec.span("train.steps") else "")
            + "or use the rsqrt or constant schedule",
            notes,
        )


def _where_pair(spec: Spec, path: str, other: str) -> tuple[Span, tuple[tuple[str, Span], ...]]:
    """Where an error about two keys that disagree points, and its note: at `path`, unless `path` is
    a default and `other` was written, or `path` came from the file and `other` from --set (the
    user's change is the news, as in _divisible); a note then points at the other key where that was
    written too."""
    here, there = (None if spec.is_default(key) else spec.span(key) for key in (path, other))
    if here is None or there is None:
        return here or there or spec.span(path), ()
    if there.source.name == OVERRIDE_SOURCE_NAME != here.source.name:
        path, other, here, there = other, path, there, here
    given = "given with --set" if there.source.name == OVERRIDE_SOURCE_NAME else "written"
    return here, ((f"{other} is {given} here", there),)


def _check_position_buckets(spec: Spec) -> Iterator[Diagnostic]:
    """T5's relative-position buckets: exact up to max_exact (num_buckets // 4 in the encoder, whose
    buckets are split by direction, num_buckets // 2 in the decoder), logarithmic from there to
    max_distance. Fewer than 4 buckets leave the encoder no exact bucket, and a max_distance not past
    the decoder's exact range leaves no logarithmic range (log(max_distance / max_exact) <= 0: a
    division by zero, or bucket indices out of the table)."""
    model = spec.model
    buckets, distance = model.relative_attention_num_buckets, model.relative_attention_max_distance
    if buckets < 4:
        yield Diagnostic(
            f"relative_attention_num_buckets {buckets} leaves the encoder no exact bucket (it has num_buckets // 4)",
            spec.span("model.relative_attention_num_buckets"),
            "set model.relative_attention_num_buckets to 4 or more (T5 uses 32)",
        )
    elif distance <= buckets // 2:
        span, notes = _where_pair(spec, "model.relative_attention_max_distance", "model.relative_attention_num_buckets")
        yield Diagnostic(
            f"relative_attention_max_distance {distance} is within the decoder's {buckets // 2} exact buckets "
            f"(num_buckets // 2 of {buckets}), so no distance is left for the logarithmic buckets",
            span,
            f"set model.relative_attention_max_distance above {buckets // 2} (T5 uses 128 with 32 buckets), "
            "or lower model.relative_attention_num_buckets",
            notes,
        )


CHECKS: tuple[Check, ...] = (
    _check_position_buckets,
    _check_schedule,
    _check_layout,
    _check_routing,
    _check_rules,
    _check_shared_mesh_axes,
    _check_unsplit_axes,
    _check_sharding,
    _check_data,
)


def cross_check(spec: Spec) -> Iterator[Diagnostic]:
    for check in CHECKS:
        yield from check(spec)
