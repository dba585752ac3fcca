"""The Report: every analysis of one spec in one frozen value, and its JSON, markdown, table and plot.

    from switchc.analysis import report_for
    report = report_for(load_spec("specs/switch-base.yaml"), hardware("tpuv3"))
    json.dumps(report.to_json())

JSON shape (version REPORT_VERSION; docs/cost-model.md describes every field): `version`,
`spec`, `conventions`, `params`, `flops` (`model`, `executed`, `by_layer`, `by_op_kind`),
`memory`, `comm` (`collectives[]`, `summary[]`), `time`, `layers[]`, `notes[]`, `full_remat`.
Fields are added in later versions, never renamed or removed without a version bump.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from switchc.analysis.comm import CommReport, count_comm
from switchc.analysis.flops import FlopsReport, count_flops
from switchc.analysis.hardware import Hardware
from switchc.analysis.memory import MemoryReport, count_memory
from switchc.analysis.params import ParamsReport, count_params
from switchc.analysis.step_time import DEFAULT_MFU, TimeReport, estimate_time
from switchc.files import save_figure
from switchc.ir import expert_capacity, ops
from switchc.ir.graph import Graph, all_ops, info
from switchc.passes import lower
from switchc.spec import Spec
from switchc.spec.emit import escape_unprintable

REPORT_VERSION = 1

MEMORY_CONVENTIONS: tuple[str, ...] = (
    "parameters and gradients in the model dtype; optimizer state as optax keeps it: second moments in the "
    "parameter dtype (Adafactor: factored row and column ones for weights whose two largest dims are >= 128; "
    "Adam: two full moments), Adafactor's momentum in float32",
    "activations: what each op's backward reads, each tensor once; with train.remat = full only block inputs "
    "plus one block's activations",
)
COMM_CONVENTIONS: tuple[str, ...] = (
    "bytes_per_device: the buffer one device contributes (the partial tensor of an all-reduce, the gathered "
    "tensor of an all-gather, either side of an all-to-all); expert dispatch moves [groups, experts, capacity, "
    "d_model] in the model dtype",
    "time, with L = ceil(log2 n): all-reduce 2(n-1)/n*S/B + 2L*latency (recursive halving and doubling); "
    "reduce-scatter and all-gather (n-1)/n*S/B + L*latency; all-to-all the faster of pairwise exchange "
    "(n-1)/n*S/B + (n-1)*latency and Bruck's L*(latency + S/(2B)); full bisection bandwidth assumed; gradient "
    "all-reduces over the same mesh axes are timed as one combined all-reduce",
)


@dataclass(frozen=True)
class StackRouting:
    stack: str
    tokens_on_device: int
    tokens_per_group: int
    groups_per_device: int
    capacity: int


@dataclass(frozen=True)
class SpecSummary:
    name: str
    description: str
    devices: int
    mesh: dict[str, int]
    batch_size: int
    inputs_length: int
    targets_length: int
    dtype: str
    num_experts: int  # 0 for a dense model
    top_k: int
    capacity_factor: float
    group_size: int  # moe.group_size: the most tokens a routing group may have (0 for a dense model)
    routing: tuple[StackRouting, ...]


@dataclass(frozen=True)
class LayerRow:
    layer: str
    params: int
    model_forward_flops: int
    executed_forward_flops_per_device: int
    comm_bytes_per_device: int  # per train step, all phases


@dataclass(frozen=True)
class FullRemat:
    """The same spec with train.remat = full, analysed when it does not fit as written (remat none)."""

    per_device_bytes: int
    fits: bool
    step_seconds: float
    recompute_flops_per_device: int


@dataclass(frozen=True)
class Report:
    version: int
    spec: SpecSummary
    conventions: tuple[str, ...]
    params: ParamsReport
    flops: FlopsReport
    memory: MemoryReport
    comm: CommReport
    time: TimeReport
    layers: tuple[LayerRow, ...]
    notes: tuple[str, ...] = ()  # what a user should know of the spec (routing_notes)
    full_remat: FullRemat | None = None  # when the spec does not fit without remat

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (the documented, versioned shape)."""
        data: dict[str, Any] = dataclasses.asdict(self)
        data["flops"].pop("conventions")  # listed once, at the top
        return data


def describe(graph: Graph) -> str:
    """One line: dense or Switch (and in how many FFN blocks, read from the graph), shape, mesh."""
    meta = info(graph)
    model = meta.model
    blocks = f"{model.encoder_layers}+{model.decoder_layers} blocks"
    heads = f"{model.num_heads} head{'s' if model.num_heads != 1 else ''}"
    shape = f"d_model {model.d_model}, d_ff {model.d_ff}, {heads}, {blocks}"
    mesh = " x ".join(f"{axis}={size}" for axis, size in meta.mesh.axes) or "of no axes (1 device)"
    if meta.moe is None:
        return f"dense T5; {shape}; mesh {mesh}"
    moe = meta.moe
    routing = "Switch" if moe.top_k == 1 else f"MoE top-{moe.top_k}"
    switch_layers = sum(isinstance(op, ops.ExpertFFN) for op in all_ops(graph))
    blocks_total = model.encoder_layers + model.decoder_layers
    where = f"in {switch_layers} of {blocks_total} FFN blocks"
    experts = f"{moe.num_experts} expert{'s' if moe.num_experts > 1 else ''}"
    return f"{routing}, {experts} {where}; {shape}; mesh {mesh}"


def _spec_summary(graph: Graph) -> SpecSummary:
    meta = info(graph)
    moe = meta.moe
    routing = tuple(
        StackRouting(stack, r.tokens_on_device, r.tokens_per_group, r.groups_per_device, r.capacity)
        for stack, r in meta.routing.items()
    )
    return SpecSummary(
        name=meta.name,
        description=describe(graph),
        devices=meta.num_devices,
        mesh=dict(meta.mesh.axes),
        batch_size=meta.train.batch_size,
        inputs_length=meta.train.inputs_length,
        targets_length=meta.train.targets_length,
        dtype=meta.model.dtype,
        num_experts=moe.num_experts if moe else 0,
        top_k=moe.top_k if moe else 0,
        capacity_factor=moe.capacity_factor.train if moe else 0.0,
        group_size=moe.group_size if moe else 0,
        routing=routing,
    )


def analyse(graph: Graph, hw: Hardware, mfu: float = DEFAULT_MFU) -> Report:
    """Every analysis of a sharded graph, on hardware `hw` at matmul efficiency `mfu`."""
    meta = info(graph)
    params = count_params(graph)
    flops = count_flops(graph)
    found = count_memory(graph)
    capacity = float(hw.profile.memory_bytes)
    memory = dataclasses.replace(found, device_capacity_bytes=capacity, fits=found.per_device_bytes <= capacity)
    comm = count_comm(graph, hw.profile)
    time = estimate_time(flops, comm, hw, meta.model.dtype, mfu, meta.train.batch_size)
    layer_params = {row.layer: row.params for row in params.by_layer}
    layer_bytes: dict[str, int] = defaultdict(int)
    for entry in comm.collectives:
        layer_bytes[entry.layer] += entry.bytes_per_device * entry.count
    layers = tuple(
        LayerRow(
            layer=row.layer,
            params=layer_params.get(row.layer, 0),
            model_forward_flops=row.model_forward,
            executed_forward_flops_per_device=row.executed_forward_per_device,
            comm_bytes_per_device=layer_bytes.get(row.layer, 0),
        )
        for row in flops.by_layer
    )
    conventions = (*flops.conventions, *MEMORY_CONVENTIONS, *COMM_CONVENTIONS, f"step time: {time.overlap}")
    summary = _spec_summary(graph)
    notes = (*routing_notes(summary), *_causality_notes(graph))
    full_remat = None
    if not memory.fits and meta.train.remat == "none":
        again = analyse(_with_full_remat(graph), hw, mfu)
        assert again.memory.fits is not None
        full_remat = FullRemat(
            per_device_bytes=again.memory.per_device_bytes,
            fits=again.memory.fits,
            step_seconds=again.time.step_seconds,
            recompute_flops_per_device=again.flops.executed.recompute_per_device,
        )
    return Report(REPORT_VERSION, summary, conventions, params, flops, memory, comm, time, layers, notes, full_remat)


def _with_full_remat(graph: Graph) -> Graph:
    """The same sharded graph with train.remat = full: the analyses read remat from its info."""
    meta = info(graph)
    again: Graph = graph.copy()
    again.graph["info"] = dataclasses.replace(meta, train=dataclasses.replace(meta.train, remat="full"))
    return again


def report_for(spec: Spec, hw: Hardware, mfu: float = DEFAULT_MFU) -> Report:
    """Build, shard and verify the graph of `spec`, then analyse it."""
    return analyse(lower(spec), hw, mfu)


# ---- human-readable forms -----------------------------------------------------------------------


def _count(value: float) -> str:
    """1234567 -> '1.23M': three significant digits with an SI suffix."""
    for suffix, scale in (("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _bytes(value: float) -> str:
    """3 significant digits in binary units; below 1 KiB in bytes, spelt out ('B' is a billion in
    the counts beside it)."""
    for suffix, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f} byte" + ("" if value == 1 else "s")


def _seconds(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f} s"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


def _percent(value: float) -> str:
    """One decimal (45.2%); below 1%, two significant digits (0.11%), not a rounded 0.1%."""
    return f"{value:.1%}" if value >= 0.01 else f"{value * 100:.2g}%"


def _rate(value: float) -> str:
    """Whole numbers with thousands separators from 1000 on (55,750), never an exponent."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """(metric, value) rows: what `switchc report` prints for one spec."""
    p, f, m, c, t, s = report.params, report.flops, report.memory, report.comm, report.time, report.spec
    fits = "fits" if m.fits else "does not fit"
    rows = [
        ("model", s.description),
        ("devices", f"{s.devices}"),
        ("params total", _count(p.total)),
        ("params experts / other", f"{_count(p.experts)} / {_count(p.non_expert)}"),
        ("params active per token", _count(p.active_per_token)),
        ("FLOPs/seq forward, model", _count(f.model.forward_per_sequence)),
        ("FLOPs/seq forward, Table 9 convention", _count(f.model.paper_forward_per_sequence)),
        ("FLOPs/seq forward, executed", _count(f.executed.forward_per_sequence)),
        ("FLOPs/step/device, model", _count(f.model.train_step_per_device)),
        ("FLOPs/step/device, executed", _count(f.executed.train_step_per_device)),
        (
            "  forward / backward / recompute",
            " / ".join(
                _count(x)
                for x in (
                    f.executed.forward_per_device,
                    f.executed.backward_per_device,
                    f.executed.recompute_per_device,
                )
            ),
        ),
    ]
    for r in s.routing:
        rows.append(
            (
                f"routing {r.stack}",
                f"groups/device {r.groups_per_device} x {r.tokens_per_group} tokens, capacity {r.capacity}",
            )
        )
    # rows are keyed by name (specs side by side share a row): several notes are numbered
    labels = ["  note"] if len(report.notes) == 1 else [f"  note {n}" for n in range(1, len(report.notes) + 1)]
    rows += list(zip(labels, report.notes, strict=True))
    rows += [
        ("memory/device", f"{_bytes(m.per_device_bytes)} ({fits} in {_bytes(m.device_capacity_bytes or 0)})"),
        (
            "  params / grads / optimizer",
            " / ".join(_bytes(x) for x in (m.params_bytes, m.grads_bytes, m.optimizer_bytes)),
        ),
        (f"  activations (remat {m.remat})", _bytes(m.activations_bytes)),
        (
            "  activations no remat / full remat",
            f"{_bytes(m.activations_no_remat_bytes)} / {_bytes(m.activations_full_remat_bytes)}",
        ),
    ]
    if report.full_remat is not None:
        remat = report.full_remat
        rows.append(
            (
                "  with train.remat: full",
                f"{_bytes(remat.per_device_bytes)} ({'fits' if remat.fits else 'does not fit either'}); step "
                f"{_seconds(remat.step_seconds)}: +{_count(remat.recompute_flops_per_device)} FLOPs/device to "
                "recompute each block",
            )
        )
    rows += [
        ("comm/step/device", f"{_bytes(c.bytes_per_device)} in {sum(x.count for x in c.summary)} collectives"),
    ]
    for entry in c.summary:
        rows.append(
            (
                f"  {entry.phase} {entry.kind} over {','.join(entry.mesh_axes)}",
                f"{entry.count} x, {_bytes(entry.bytes_per_device)}, {_seconds(entry.seconds)}",
            )
        )
    rows += [
        (f"step time on {t.hardware} at {_percent(t.mfu).replace('.0%', '%')} of peak", _seconds(t.step_seconds)),
        (
            "  compute fwd / bwd / recompute",
            " / ".join(_seconds(x) for x in (t.forward_seconds, t.backward_seconds, t.recompute_seconds)),
        ),
        ("  exposed communication", _seconds(t.exposed_comm_seconds)),
        ("  MFU (model FLOPs / step / peak)", _percent(t.model_flops_utilization)),
        ("sequences per second", _rate(t.sequences_per_second)),
    ]
    return rows


SMALL_GROUP_RATIO = 4  # a routing group this many times smaller than it could be gets a note


def _share_at_least(part: int, whole: int) -> str:
    """part / whole as a percentage rounded down (an "at least" stays true): 49.9%, <0.1%."""
    tenths = 1000 * part // whole
    return f"{tenths / 10:g}%" if tenths else "<0.1%"


def routing_notes(spec: SpecSummary) -> list[str]:
    """What a report says of routing: a capacity too small for a group's tokens however evenly they
    route; and routing groups far smaller than moe.group_size allows: each group is the largest
    divisor of a device's tokens up to group_size, so a token count with no divisor near it (a
    prime) leaves groups of a few tokens, each padded to num_experts x capacity slots."""
    notes = []
    for r in spec.routing:
        slots, routed = spec.num_experts * r.capacity, r.tokens_per_group * spec.top_k
        if slots < routed:  # capacity alone drops tokens, however evenly they route
            what = f"{routed} tokens" if spec.top_k == 1 else f"{r.tokens_per_group} tokens x top_k {spec.top_k}"
            notes.append(
                f"{r.stack}: {spec.num_experts} experts x capacity {r.capacity} = {slots} slots per routing group "
                f"for {what}: at least {routed - slots} ({_share_at_least(routed - slots, routed)}) of "
                f"{'them' if spec.top_k == 1 else 'these assignments'} find no slot however evenly they route (the "
                "residual carries them); model FLOPs, MFU's numerator, count them all"
            )
        possible = min(r.tokens_on_device, spec.group_size)
        if r.tokens_per_group * SMALL_GROUP_RATIO > possible:
            notes += _floor_note(spec, r)
            continue
        length = "inputs_length" if r.stack == "encoder" else "targets_length"
        per_token = spec.num_experts * r.capacity / r.tokens_per_group
        notes.append(
            f"{r.stack}: routing groups of {r.tokens_per_group} token{'s' if r.tokens_per_group > 1 else ''}, the "
            f"largest divisor of its {r.tokens_on_device} tokens per device up to moe.group_size {spec.group_size}: "
            f"{per_token:.3g} expert slots per token; choose train.batch_size and train.{length} so that the tokens "
            f"per device have a divisor near {possible}, or raise moe.group_size to {r.tokens_on_device}"
        )
    return notes


def _causality_notes(graph: Graph) -> list[str]:
    """A note when batch-prioritized routing reaches the decoder's Switch layers: a target token's
    slot (whether it is dropped) then depends on the router probabilities of later targets, which
    teacher-forced training sees and token-by-token decoding cannot."""
    moe = info(graph).moe
    if moe is None or not moe.batch_prioritized_routing:
        return []
    decoder = [op.name.rsplit("/", 1)[0] for op in all_ops(graph) if isinstance(op, ops.ExpertFFN)]
    decoder = [name for name in decoder if name.startswith("decoder/")]
    if not decoder:
        return []
    return [
        f"decoder: moe.batch_prioritized_routing orders the decoder's Switch layers ({', '.join(decoder)}) too, "
        "so whether a target token finds an expert slot depends on the router probabilities of the targets after "
        "it: teacher-forced training sees them, decoding one token at a time cannot (the paper proposes it for "
        "the encoder); to keep it there only, make the decoder dense (layout.decoder.switch: [])"
    ]


FLOOR_PADDING_RATIO = 2  # capacity slots this many times the routed tokens, set by the floor, get a note


def _floor_note(spec: SpecSummary, r: StackRouting) -> list[str]:
    """A note when moe.min_capacity, not the capacity factor, sets a stack's capacity and the
    slots it pads every group to are at least FLOOR_PADDING_RATIO times the tokens routed."""
    wanted = expert_capacity(r.tokens_per_group, spec.num_experts, spec.top_k, spec.capacity_factor, 0)
    slots, routed = spec.num_experts * r.capacity, r.tokens_per_group * spec.top_k
    if r.capacity <= wanted or slots < FLOOR_PADDING_RATIO * routed:
        return []
    return [
        f"{r.stack}: capacity {r.capacity} is moe.min_capacity's floor (capacity factor {spec.capacity_factor:g} "
        f"gives {wanted}): {spec.num_experts} experts x {r.capacity} = {slots} slots per routing group for "
        f"{routed} routed tokens, so the experts execute {slots / routed:.3g}x the FLOPs the tokens need (executed "
        "FLOPs count every slot); fewer experts, larger routing groups (moe.group_size, more tokens per device) "
        "or a lower moe.min_capacity pad less"
    ]


def rich_table(reports: Sequence[Report]) -> Table:
    """One column per report: several reports compare side by side."""
    title = reports[0].spec.name if len(reports) == 1 else "comparison"
    table = Table(title=escape(f"switchc report: {title}"), title_justify="left")
    table.add_column("metric", no_wrap=True)
    for report in reports:
        table.add_column(escape(report.spec.name), overflow="fold")
    for metric, values in _aligned(reports):  # the spec's names and paths are text, not rich markup
        table.add_row(escape(metric), *map(escape, values))
    return table


def _aligned(reports: Sequence[Report]) -> list[tuple[str, list[str]]]:
    """Rows keyed by metric across reports, in first-seen order; '-' where a report lacks one."""
    rows = [summary_rows(report) for report in reports]
    values: dict[str, dict[int, str]] = defaultdict(dict)
    for index, report_rows in enumerate(rows):
        for metric, value in report_rows:
            values[metric][index] = value
    order = merged_order([metric for metric, _ in report_rows] for report_rows in rows)
    return [(metric, [values[metric].get(i, "-") for i in range(len(reports))]) for metric in order]


def merged_order(sequences: Iterable[Sequence[str]]) -> list[str]:
    """Every name of `sequences` in one order that keeps each sequence's own: a name only some
    have (a metric one report lacks, a deeper stack's encoder.12) goes right after the name it
    follows in its sequence."""
    order: list[str] = []
    for names in sequences:
        previous: str | None = None
        for name in names:
            if name not in order:
                order.insert(0 if previous is None else order.index(previous) + 1, name)
            previous = name
    return order


def _cell(text: str) -> str:
    """`text` as one markdown table cell: a | would end it, a line break end the row."""
    return escape_unprintable(text).replace("|", "\\|")


def to_markdown(reports: Sequence[Report]) -> str:
    names = [_cell(r.spec.name) for r in reports]  # a file's name may hold a |
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for metric, values in _aligned(reports):
        lines.append(f"| {metric.strip()} | " + " | ".join(_cell(v) for v in values) + " |")
    lines.append("")
    lines.append("Conventions:")
    lines += [f"- {c}" for c in reports[0].conventions]
    return "\n".join(lines) + "\n"


def plot(reports: Sequence[Report], path: str) -> None:
    """Per-layer FLOPs (model and executed per device) and communication bytes, one line per spec,
    drawn to `path` (its suffix names the format)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    fig = layer_figure(reports)
    save_figure(fig, Path(path))
    plt.close(fig)


def layer_figure(reports: Sequence[Report]) -> Any:
    """The figure `plot` draws. Each layer has one place on the x axis, by name, so specs of other
    depths line up: encoder.final is one tick for every spec, and a deeper spec's extra blocks get
    ticks between the others'."""
    import matplotlib.pyplot as plt

    labels = layer_order(reports)
    place = {name: index for index, name in enumerate(labels)}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=False)
    for report in reports:
        rows = report.layers
        x = [place[r.layer] for r in rows]
        top.plot(
            x,
            [r.model_forward_flops / report.spec.devices for r in rows],
            marker=".",
            label=f"{report.spec.name} model / devices",
        )
        top.plot(
            x,
            [r.executed_forward_flops_per_device for r in rows],
            marker="x",
            linestyle="--",
            label=f"{report.spec.name} executed",
        )
        bottom.plot(x, [r.comm_bytes_per_device for r in rows], marker=".", label=report.spec.name)
    for axis in (top, bottom):
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels(labels, rotation=90, fontsize=6 if len(labels) <= 60 else 4)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    top.set_ylabel("forward FLOPs per device")
    bottom.set_ylabel("bytes per device per step")
    top.set_title("per layer: forward FLOPs (top), collective bytes (bottom)")
    fig.tight_layout()
    return fig


def layer_order(reports: Sequence[Report]) -> list[str]:
    """Every report's layer names in one order that keeps each report's own (`merged_order`)."""
    return merged_order([row.layer for row in report.layers] for report in reports)
