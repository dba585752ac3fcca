"""What a training run wrote: its metrics.jsonl, read and checked, and drawn as PNGs.

A generated program run with `--out DIR` appends one JSON object per line to DIR/metrics.jsonl:

    {"step": int, "split": "train" | "eval",
     "loss", "cross_entropy", "neg_log_perplexity": float,
     "aux_loss", "z_loss", "dropped_fraction", "top1_gate": float,       models with Switch layers
     "dropped_fraction/<layer>": float, "tokens_per_expert/<layer>": [int, ...],   layer: "encoder/1"
     "grad_norm", "learning_rate", "tokens_per_second", "mfu", "step_seconds": float}   train only

Records written before "split" existed are train records. Any other key is kept and ignored.

This is the last stage of the pipeline (DESIGN.md: run -> checkpoints, metrics), kept apart from
analysis/, whose reports are pure functions of a spec's graph: these are measurements, read from
files a program wrote, and nothing here knows the spec, the IR or a backend. Reading and the data
each figure shows (`loss_curves`, `expert_load`, `dropped_curves`) are plain functions that tests
check directly; `draw` only hands that data to matplotlib.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchc.errors import PlainUserError
from switchc.files import read_text, save_figure

METRICS_FILE = "metrics.jsonl"
SPLITS = ("train", "eval")
TOKENS_PER_EXPERT = "tokens_per_expert/"
DROPPED_FRACTION = "dropped_fraction/"
# The curves drawn, a panel each: the router losses apart, since a z-loss weighted 0 (switch-tiny's)
# is still recorded, at a scale that would flatten the load-balancing loss drawn beside it
LOSSES_BY_PANEL = {
    "loss": ("loss", "cross_entropy"),
    "load-balancing loss": ("aux_loss",),
    "router z-loss": ("z_loss",),
}
LOSSES = tuple(key for keys in LOSSES_BY_PANEL.values() for key in keys)


@dataclass(frozen=True)
class Record:
    """One line of metrics.jsonl: its step, its split, and every other key as written."""

    step: int
    split: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Run:
    """A run directory's records in file order; `name` is the directory as the user wrote it."""

    name: str
    records: tuple[Record, ...]
    # a last line still being written (no newline yet, not JSON yet): left out, as of now
    partial_line: bool = False

    def of(self, split: str) -> list[Record]:
        return [r for r in self.records if r.split == split]


@dataclass(frozen=True)
class Curve:
    """One line of a figure: `key` of `run`'s `split` records, at the steps that have a number for it."""

    run: str
    split: str
    key: str
    steps: tuple[int, ...]
    values: tuple[float, ...]

    @property
    def label(self) -> str:
        return f"{self.run} {self.split} {self.key}"


@dataclass(frozen=True)
class ExpertLoad:
    """Fraction of routed tokens each expert got, per Switch layer (rows) and expert (columns).

    Averaged over the train records at `steps` (the last few that report expert counts); layers
    are in model order (encoder blocks, then decoder blocks). A layer with fewer experts than the widest is padded
    with NaN (drawn blank).
    """

    run: str
    layers: tuple[str, ...]
    fractions: tuple[tuple[float, ...], ...]
    steps: tuple[int, ...]

    @property
    def label(self) -> str:
        if len(self.steps) == 1:
            return f"{self.run}: train step {self.steps[0]}"
        return f"{self.run}: mean of the last {len(self.steps)} train records (steps {self.steps[0]}-{self.steps[-1]})"


# ---- reading -------------------------------------------------------------------------------------


def read_run(directory: Path) -> Run:
    """The records of `directory`/metrics.jsonl; a missing or malformed file is a PlainUserError."""
    if not directory.exists():
        raise PlainUserError(f"run directory {directory} does not exist")
    if not directory.is_dir():
        raise PlainUserError(f"{directory} is not a directory", f"pass the run directory that holds {METRICS_FILE}")
    path = directory / METRICS_FILE
    if not path.is_file():
        raise PlainUserError(
            f"{directory} has no {METRICS_FILE}",
            "a generated program writes it when run as `python train.py --out DIR`",
        )
    lines, complete = _lines(path)
    partial = False
    while lines and not lines[-1].strip():  # blank lines at the end, as an editor may leave: no record
        lines.pop()
        complete = True
    if lines and not complete:  # a program appends one line per record: the last may be half written
        try:
            json.loads(lines[-1])
        except ValueError:
            lines, partial = lines[:-1], True
    records = [_record(path, number, line) for number, line in enumerate(lines, 1)]
    if not records:
        raise PlainUserError(f"{path} is empty", "the run has not logged a step yet")
    return Run(str(directory), tuple(records), partial)


def _lines(path: Path) -> tuple[list[str], bool]:
    """The file's lines, and whether its last one is complete (ends in a newline)."""
    text = read_text(path)
    return text.splitlines(), text.endswith("\n")


def _record(path: Path, number: int, line: str) -> Record:
    where = f"{path}:{number}"
    if not line.strip():
        raise PlainUserError(f"{where}: empty line", "each line must be one JSON object")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise PlainUserError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(value, dict):
        raise PlainUserError(f"{where}: expected a JSON object, got {type(value).__name__}")
    if "step" not in value:
        raise PlainUserError(f"{where}: no 'step' key", "each record says which optimizer step it is: 'step': N")
    step = value["step"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise PlainUserError(f"{where}: 'step' must be an integer, got {step!r}")
    split = value.get("split", "train")
    if split not in SPLITS:
        raise PlainUserError(f"{where}: 'split' must be 'train' or 'eval', got {split!r}")
    for key, item in value.items():
        if key.startswith(TOKENS_PER_EXPERT) and not _is_counts(item):
            raise PlainUserError(f"{where}: {key!r} must be a list of numbers")
        if (key in LOSSES or key.startswith(DROPPED_FRACTION)) and item is not None and not _is_number(item):
            raise PlainUserError(f"{where}: {key!r} must be a number, got {item!r}")
    return Record(step, split, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_counts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_number(v) for v in value)


# ---- what each figure shows ---------------------------------------------------------------------


def curve(run: Run, split: str, key: str) -> Curve | None:
    """`key` over the steps of `run`'s `split` records that hold a number for it; None if none do."""
    points = [(r.step, float(r.values[key])) for r in run.of(split) if _is_number(r.values.get(key))]
    if not points:
        return None
    return Curve(run.name, split, key, tuple(s for s, _ in points), tuple(v for _, v in points))


def loss_curves(runs: Sequence[Run]) -> dict[str, list[Curve]]:
    """Panel title -> its curves: the losses, then each router loss (a panel only if a run has it)."""
    panels: dict[str, list[Curve]] = {title: [] for title in LOSSES_BY_PANEL}
    for run in runs:
        for split in SPLITS:
            for panel, keys in LOSSES_BY_PANEL.items():
                for key in keys:
                    panels[panel] += _present(curve(run, split, key))
    return {title: curves for title, curves in panels.items() if curves}


def _present(found: Curve | None) -> list[Curve]:
    return [found] if found is not None else []


def expert_load(run: Run, last: int) -> ExpertLoad | None:
    """Tokens per expert as fractions of each layer's routed tokens, averaged over the last `last`
    train records that report them; None for a run without Switch layers."""
    records = [r for r in run.of("train") if any(k.startswith(TOKENS_PER_EXPERT) for k in r.values)][-last:]
    if not records:
        return None
    layers = sorted(
        (k.removeprefix(TOKENS_PER_EXPERT) for k in records[-1].values if k.startswith(TOKENS_PER_EXPERT)),
        key=layer_order,
    )
    width = max(len(records[-1].values[TOKENS_PER_EXPERT + layer]) for layer in layers)
    rows = []
    for layer in layers:
        key = TOKENS_PER_EXPERT + layer
        shares = [_shares(r.values[key]) for r in records if key in r.values]
        shares = [s for s in shares if len(s) == len(shares[-1])]  # a layer's expert count never changes in a run
        mean = [sum(column) / len(shares) for column in zip(*shares, strict=True)]
        rows.append(tuple(mean + [math.nan] * (width - len(mean))))
    return ExpertLoad(run.name, tuple(layers), tuple(rows), tuple(r.step for r in records))


def layer_order(layer: str) -> tuple[int, str, int, str]:
    """Model order for layer names like "encoder/3": encoder before decoder, then by block number."""
    stack, _, block = layer.partition("/")
    return {"encoder": 0, "decoder": 1}.get(stack, 2), stack, int(block) if block.isdigit() else -1, layer


def _shares(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [c / total if total else math.nan for c in counts]


def dropped_curves(run: Run) -> list[Curve]:
    """Per Switch layer, the fraction of tokens over capacity (dropped) at each train step."""
    keys = {k for r in run.of("train") for k in r.values if k.startswith(DROPPED_FRACTION)}
    curves = [
        curve(run, "train", key) for key in sorted(keys, key=lambda k: layer_order(k.removeprefix(DROPPED_FRACTION)))
    ]
    return [c for c in curves if c is not None]


# ---- drawing -------------------------------------------------------------------------------------


def draw(runs: Sequence[Run], out: Path, last: int = 10) -> list[Path]:
    """loss.png, and experts.png when a run has Switch layers, in `out`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = [out / "loss.png"]
    panels = loss_curves(runs)
    if not panels:
        raise PlainUserError("no run has a 'loss' to plot", f"is {METRICS_FILE} from a switchc training program?")
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 4 * len(panels)), squeeze=False)
    colors = {run.name: f"C{index % 10}" for index, run in enumerate(runs)}  # one color per run
    for axis, (title, curves) in zip(axes[:, 0], panels.items(), strict=True):
        for item in curves:
            style: dict[str, Any] = {"color": colors[item.run]} if len(runs) > 1 else {}
            style["linestyle"] = "-" if item.key in ("loss", "aux_loss") else ":"
            # eval points, and a line of one point (a run of --log-every steps), are drawn as markers
            style |= (
                {"marker": "o", "markersize": 3, "alpha": 0.8} if item.split == "eval" or len(item.steps) == 1 else {}
            )
            axis.plot(item.steps, item.values, label=item.label, **style)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, written[0])
    plt.close(fig)

    loads = [load for load in (expert_load(run, last) for run in runs) if load is not None]
    if not loads:
        return written
    dropped = [c for run in runs for c in dropped_curves(run)]
    rows = 1 + bool(dropped)
    fig, axes = plt.subplots(rows, len(loads), figsize=(6 * len(loads), 4 * rows), squeeze=False)
    for axis, load in zip(axes[0], loads, strict=True):
        image = axis.imshow(load.fractions, aspect="auto", cmap="viridis", vmin=0)
        axis.set_yticks(range(len(load.layers)), load.layers, fontsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("expert")
        axis.set_title(f"fraction of tokens per expert\n{load.label}", fontsize=8)
        fig.colorbar(image, ax=axis, label=f"fraction (uniform = {1 / len(load.fractions[0]):.3g})")
    if dropped:
        joined = fig.add_subplot(rows, 1, 2)
        for axis in axes[1]:
            axis.remove()
        for item in dropped:
            layer = item.key.removeprefix(DROPPED_FRACTION)
            name = f"{item.run} {layer}" if len(runs) > 1 else layer
            joined.plot(item.steps, item.values, label=name, marker="o" if len(item.steps) == 1 else None)
        joined.set_title("dropped fraction per Switch layer (train)")
        joined.set_xlabel("step")
        joined.grid(alpha=0.3)
        joined.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    written.append(out / "experts.png")
    save_figure(fig, written[-1])
    plt.close(fig)
    return written
