"""Training metrics of a generated program: records, metrics.jsonl, TensorBoard events, progress, MFU.

Runtime support, numpy only, copied verbatim into every generated program (JAX and PyTorch alike),
so both backends write the same files. TensorBoard events need `tensorboardX` and the progress bar
`tqdm`; without them a program still writes metrics.jsonl and prints plain lines.

metrics.jsonl holds one flat JSON object per line (tools such as `switchc plot` read it):

    step                    int    optimizer steps done when the record was made (1 = after the first)
    split                   str    "train" or "eval"
    loss                    float  the objective: cross_entropy + aux_loss_coef x aux + z_loss_coef x z,
                                   summed over Switch layers
    cross_entropy           float  mean over non-padding target tokens (nats)
    neg_log_perplexity      float  -cross_entropy
    aux_loss                float  load-balancing loss before its coefficient, mean over Switch layers
    z_loss                  float  router z-loss before its coefficient, mean over Switch layers
    dropped_fraction        float  (token, choice) pairs over expert capacity (top-1: tokens), mean
                                   over Switch layers
    top1_gate               float  mean router probability of the chosen expert, mean over layers
    dropped_fraction/<layer>   float      per Switch layer, e.g. "dropped_fraction/encoder/1"
    tokens_per_expert/<layer>  [int, ...] tokens whose first choice each expert is (before
                                          capacity), per layer: they sum to the tokens
  train records only:
    grad_norm               float  global L2 norm of the gradients (before clipping)
    learning_rate           float  the schedule's value at this step
    step_seconds            float  mean wall time of the steps since the previous train record
    tokens_per_second       float  (inputs_length + targets_length) x batch_size / step_seconds
    mfu                     float  model FLOPs utilization, 0..1: see model_flops_utilization

The router keys (aux_loss .. tokens_per_expert/<layer>) appear only for models with Switch layers.
A train record holds the metrics of its own step (not a mean over steps); step_seconds and
tokens_per_second are means over the steps since the previous train record. An eval record is the
mean over its eval batches (per-expert counts: the sum), computed with train=False (the eval
capacity factor, no jitter or dropout) on the held-out split. Keys are added, never renamed.

TensorBoard (OUT/tensorboard): every float key as a scalar `<split>/<key>` (e.g. `train/loss`,
`eval/dropped_fraction/encoder/1`); tokens_per_expert/<layer> as a histogram over expert index.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

SPLITS = ("train", "eval")
HEAD = ("step", "split", "loss", "cross_entropy", "neg_log_perplexity")
ROUTER_MEANS = ("aux_loss", "z_loss", "dropped_fraction", "top1_gate")
TRAIN_ONLY = ("grad_norm", "learning_rate", "step_seconds", "tokens_per_second", "mfu")
PER_EXPERT = "tokens_per_expert/"
NON_FINITE_EXIT = 3  # the exit status of a run stopped by a NaN or Inf


# ---- records -----------------------------------------------------------------------------------


def _value(key: str, value: Any) -> float | list[int]:
    array = np.asarray(value)
    if key.startswith(PER_EXPERT):
        return [int(count) for count in array.reshape(-1)]
    if array.size != 1:
        raise ValueError(f"metric {key!r} has shape {array.shape}; only {PER_EXPERT}<layer> may be a list")
    return float(array.reshape(()))


def record(step: int, split: str, metrics: Mapping[str, Any], **extra: float) -> dict[str, Any]:
    """One flat JSONL record: floats, per-expert counts as lists of int, the schema's keys first.

    `metrics` are a step's (or an evaluation's) values as numpy or framework scalars and arrays;
    it must hold loss and cross_entropy. neg_log_perplexity is added here.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    values = {key: _value(key, value) for key, value in {**metrics, **extra}.items()}
    for key in ("loss", "cross_entropy"):
        if key not in values:
            raise ValueError(f"a metrics record needs {key!r}")
    cross_entropy = values["cross_entropy"]
    assert isinstance(cross_entropy, float)
    values["neg_log_perplexity"] = -cross_entropy
    first = [key for key in (*HEAD[2:], *ROUTER_MEANS) if key in values]
    last = [key for key in TRAIN_ONLY if key in values]
    middle = sorted(set(values) - set(first) - set(last))
    return {"step": int(step), "split": split, **{key: values[key] for key in (*first, *middle, *last)}}


def train_record(
    step: int,
    metrics: Mapping[str, Any],
    step_seconds: float,
    tokens_per_step: int,
    model_flops_per_step: float,
    devices: int,
    peak_flops_per_device: float,
    **extra: float,
) -> dict[str, Any]:
    """A train record: the step's metrics (see record), the mean seconds of a step since the last
    record, and the throughput and MFU (model_flops_utilization) they make."""
    return record(
        step,
        "train",
        metrics,
        **extra,
        step_seconds=step_seconds,
        tokens_per_second=tokens_per_step / step_seconds,
        mfu=model_flops_utilization(model_flops_per_step, step_seconds, devices, peak_flops_per_device),
    )


def average(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics over several eval batches: the mean of each value, the sum of per-expert counts."""
    if not batches:
        raise ValueError("no batches to average")
    out: dict[str, Any] = {}
    for key in batches[0]:
        stacked = np.stack([np.asarray(batch[key]) for batch in batches])
        out[key] = stacked.sum(axis=0) if key.startswith(PER_EXPERT) else stacked.astype(np.float64).mean(axis=0)
    return out


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a line cut short by a killed process is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# ---- throughput and MFU --------------------------------------------------------------------------


def model_flops_utilization(
    model_flops_per_step: float, step_seconds: float, devices: int, peak_flops_per_device: float
) -> float:
    """MFU = model FLOPs of one step / (step seconds x devices x peak FLOP/s of one device).

    Model FLOPs are the model's math for the global batch (switchc's cost model,
    flops.model.train_step: each token through top_k experts, no capacity padding, no router, no
    recomputation; backward = 2 x forward), so MFU does not reward padding or recomputation.
    """
    if step_seconds <= 0 or devices <= 0 or peak_flops_per_device <= 0:
        return float("nan")
    return model_flops_per_step / (step_seconds * devices * peak_flops_per_device)


def choose_hardware(
    requested: str | None, platform: str, device_kind: str, profiles: Iterable[str], default: str
) -> str:
    """The hardware profile to measure MFU against.

    `requested` if given (it must be one of `profiles`); else `cpu` on a CPU; else the profile
    whose name the device kind spells (e.g. "NVIDIA H200" -> h200, "TPU v3" -> tpuv3); else
    `default` (the cost report's).
    """
    names = sorted(profiles)
    if requested is not None:
        if requested not in names:
            raise SystemExit(f"error: unknown hardware profile {requested!r}; profiles: {', '.join(names)}")
        return requested
    if platform == "cpu" and "cpu" in names:
        return "cpu"
    matches = [name for name in names if name != "cpu" and _names(device_kind, name)]
    return max(matches, key=len) if matches else default


def _names(device_kind: str, profile: str) -> bool:
    """Whether the device's kind spells the profile's name ("NVIDIA H200" -> h200, "TPU v3" -> tpuv3)."""
    return profile in "".join(device_kind.lower().split())


def mfu_against(hardware: str, peak: float, requested: str | None, device_kind: str, default: str) -> str:
    """The start line's word on MFU's peak. A profile that no name chose (`choose_hardware` fell back
    to `default`: no profile is named in the device's kind, an L4 say) says so, with the way to pick one."""
    said = f"MFU against {hardware} ({peak:.3g} FLOP/s per device)"
    named = hardware == "cpu" or _names(device_kind, hardware)
    if requested is None and not named and hardware == default:
        said += f": no profile is named in {device_kind!r}, so the spec's; --hardware NAME picks another"
    return said


# ---- non-finite values ---------------------------------------------------------------------------


class NonFiniteError(Exception):
    """A NaN or Inf in the loss or the gradients of one step; the message says which and where."""

    def __init__(self, step: int, quantity: str, detail: str) -> None:
        super().__init__(f"step {step}: {quantity} is {detail}")
        self.step = step
        self.quantity = quantity


def check_finite(step: int, loss: Any, gradient_non_finite: Mapping[str, Any]) -> None:
    """Raise NonFiniteError if the loss is NaN or Inf, or a gradient has NaN or Inf elements.

    `gradient_non_finite` maps each parameter's name to how many elements of its gradient are
    not finite. The loss is named first (a NaN loss makes every gradient NaN), else the first
    parameter with a bad gradient, and how many others have one.
    """
    value = float(np.asarray(loss, dtype=np.float64).reshape(()))
    if not math.isfinite(value):
        raise NonFiniteError(step, "the loss", str(value))
    bad = {name: int(np.asarray(count)) for name, count in gradient_non_finite.items() if int(np.asarray(count))}
    if bad:
        name, count = next(iter(bad.items()))
        others = f" (and of {len(bad) - 1} more parameters)" if len(bad) > 1 else ""
        raise NonFiniteError(step, f"the gradient of {name}{others}", f"not finite ({count} NaN/Inf elements)")


def said(text: str) -> None:
    """Print `text` and a newline to stderr in one write, flushed: the processes of a job share
    their launcher's stderr, and print() writes the newline separately, so with PYTHONUNBUFFERED
    (usual in containers) two ranks' lines could run together on one line."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def stop_training(error: NonFiniteError, kept_step: int | None, who: str = "") -> NoReturn:
    """End a run stopped by `error`: say so on stderr, with the checkpoint it can resume from, and
    exit with NON_FINITE_EXIT. `who` prefixes the message (e.g. "rank 1: " with several processes)."""
    if not kept_step:
        where = "no checkpoint was saved"
    elif kept_step == error.step - 1:  # the weights this step started from: its loss may be theirs
        where = f"the latest checkpoint is step {kept_step}, the weights this step started from"
    else:
        where = f"the latest checkpoint is step {kept_step}, from before it"
    said(f"error: {who}{error}; training stopped ({where}).")
    raise SystemExit(NON_FINITE_EXIT) from None


def stop_writing(error: OSError, kept_step: int | None, who: str = "") -> NoReturn:
    """End a run whose files could not be written (a full disk, a folder gone read-only): one line
    naming the file, the system's reason and the checkpoint to resume from, then exit 1 at once
    (JAX: orbax's save threads, left failed, would keep the interpreter from exiting)."""
    where = f"{error.filename}: " if error.filename else ""
    then = (
        f"the latest checkpoint is step {kept_step}; once there is room, the same command with --resume continues"
        if kept_step
        else "no checkpoint was saved"
    )
    said(f"error: {who}cannot write {where}{error.strerror or error}; training stopped ({then}).")
    sys.stdout.flush()
    os._exit(1)


class StopRequest:
    """SIGTERM during training (a scheduler's preemption notice, torchrun shutting its workers
    down, `switchc train` passing one on) asks the loop to stop after the step in progress, which
    it checkpoints first. More SIGTERMs are the same request: a job may be signalled both directly
    and through its launcher. Ctrl-C (KeyboardInterrupt) is the way to stop at once.

    install() makes this object SIGTERM's handler and restore() puts the previous one back. A
    multi-process JAX job installs nothing: its distributed runtime catches SIGTERM itself and makes
    the processes agree on the step to stop at (reached_preemption_sync_point).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def install(self) -> StopRequest:
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        self._installed = True
        return self

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def stop_interrupted(
    signal_number: int,
    step: int,
    kept_step: int | None,
    announce: bool = True,
    *,
    who: str = "",
    at_once: bool = False,
    first: int = 0,
    unevaluated: bool = False,
) -> NoReturn:
    """End a run stopped by a signal after `step` steps: say where it stopped and how to go on, and
    exit with the shell's status for the signal (128 + its number). A save in flight was committed.
    `who` prefixes the message ("process 1: "); `at_once` exits without the interpreter's shutdown
    (one process of several, whose distributed runtime would wait there for the others); `first`:
    the step the run started from (a resumed run's), where `step` stands if it trained none;
    `unevaluated`: `step` was due an evaluation, which the stop skipped."""
    name = signal.Signals(signal_number).name
    if announce:
        if kept_step is not None and kept_step == step and step > first:
            where = f"checkpoint {step} saved"
        elif kept_step:
            where = f"the latest checkpoint is step {kept_step}"
        else:
            where = "no checkpoint was saved"
        then = "; the same command with --resume continues from it" if kept_step else ""
        after = f"after step {step}" if step > first else "before its first step ended"  # none trained here
        skipped = "not evaluated; " if unevaluated else ""
        said(f"\n{who}{name}: training stopped {after} ({skipped}{where}{then}).")
    if at_once:
        sys.stdout.flush()
        os._exit(128 + signal_number)
    raise SystemExit(128 + signal_number) from None


# ---- files -------------------------------------------------------------------------------------


class MetricsLog:
    """metrics.jsonl and TensorBoard events in one directory.

    With `resume_step`, records after that step (written by a run that went on past its last
    checkpoint) are dropped from metrics.jsonl, and TensorBoard is told to purge them too, so the
    files read as one uninterrupted run. Without it the run starts afresh: an earlier run's records
    and TensorBoard event files (one that saved no checkpoint, or the program would have refused
    to start) are removed, so neither file shows two runs on one time axis.

    Nothing is written until `start`, which the loops call as their steps begin (or the first
    record): a run stopped before then (Ctrl-C or SIGTERM while the step compiles) leaves the
    directory as it found it, and one stopped after has no earlier run's records beside its own
    checkpoints.
    """

    def __init__(self, directory: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.directory = directory
        self.path = directory / "metrics.jsonl"
        self.resume_step = resume_step
        self.note: str | None = None
        if resume_step is None:
            earlier = [self.path.name] if self.path.is_file() and self.path.stat().st_size else []
            if self._events():
                earlier.append("its TensorBoard events" if earlier else "TensorBoard events")
            if earlier:
                self.note = f"note: starting afresh in {directory}: removing an earlier run's {' and '.join(earlier)}"
        self.file: TextIO | None = None
        self.tensorboard: Any = None
        self._writer: Any = None  # tensorboardX's SummaryWriter class, imported now (not in a timed step)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                missing = "no TensorBoard events: tensorboardX is not installed (pip install tensorboardX)"
                self.note = f"{self.note}\n{missing}" if self.note else missing
            else:
                self._writer = SummaryWriter
                # tensorboardX warns of each NaN or Inf it is given; a NaN step is the run's own error
                # to report (loop: NaN stop), and the events record the NaN as given
                logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)

    def _events(self) -> list[Path]:
        return sorted((self.directory / "tensorboard").glob("events.out.tfevents.*"))

    def start(self) -> TextIO:
        """Start the files: clear or trim what an earlier run left (once; the first record starts them
        if nothing did before)."""
        if self.file is not None:
            return self.file
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.resume_step is None:
            for event in self._events():
                event.unlink()
            self.path.write_text("", encoding="utf-8")
        else:
            step = self.resume_step
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step] if self.path.exists() else []
            staging = self.path.with_name(f".{self.path.name}.tmp")
            staging.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            os.replace(staging, self.path)
        self.file = self.path.open("a", encoding="utf-8")
        if self._writer is not None:
            purge = None if self.resume_step is None else self.resume_step + 1
            self.tensorboard = self._writer(str(self.directory / "tensorboard"), purge_step=purge, flush_secs=10)
        return self.file

    def write(self, entry: Mapping[str, Any]) -> None:
        file = self.start()
        file.write(json.dumps(entry) + "\n")
        file.flush()
        if self.tensorboard is None:
            return
        split, step = entry["split"], entry["step"]
        for key, value in entry.items():
            if key in ("step", "split"):
                continue
            if isinstance(value, list):
                self._histogram(f"{split}/{key}", value, step)
            else:
                self.tensorboard.add_scalar(f"{split}/{key}", value, step)

    def _histogram(self, tag: str, counts: list[int], step: int) -> None:
        """Counts per expert as a histogram over expert index (bucket i holds expert i)."""
        index = np.arange(len(counts), dtype=np.float64)
        weights = np.asarray(counts, dtype=np.float64)
        used = index[weights > 0]
        if used.size == 0:
            return
        self.tensorboard.add_histogram_raw(
            tag,
            min=float(used.min()),
            max=float(used.max()),
            num=float(weights.sum()),
            sum=float((index * weights).sum()),
            sum_squares=float((index * index * weights).sum()),
            bucket_limits=(index + 0.5).tolist(),
            bucket_counts=weights.tolist(),
            global_step=step,
        )

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- progress ----------------------------------------------------------------------------------


def _number(value: float) -> str:
    """4 significant digits; thousands to billions with a suffix (12.3k, 4.56M)."""
    if not math.isfinite(value) or not 1e4 <= abs(value) < 1e12:
        return f"{value:.4g}"
    suffix, scale = next((s, v) for s, v in (("G", 1e9), ("M", 1e6), ("k", 1e3)) if abs(value) >= v)
    return f"{value / scale:.3g}{suffix}"


def unweighted(config: Any) -> tuple[str, ...]:
    """The router losses a program's CONFIG gives coefficient 0: metrics, not parts of its loss."""
    return tuple(key for key in ("aux_loss", "z_loss") if getattr(config, f"{key}_coef", None) == 0)


def summary(entry: Mapping[str, Any], hidden: Sequence[str] = ()) -> str:
    """The headline numbers of a record on one line (metrics.jsonl has all of them), less the keys
    in `hidden` (the z-loss where its coefficient is 0: shown, it would read as part of the loss)."""
    parts = [f"loss {_number(entry['loss'])}", f"ce {_number(entry['cross_entropy'])}"]
    for key, short in (("aux_loss", "aux"), ("z_loss", "z"), ("dropped_fraction", "dropped")):
        if key in entry and key not in hidden:
            parts.append(f"{short} {_number(entry[key])}")
    for key, short in (("grad_norm", "gnorm"), ("learning_rate", "lr"), ("tokens_per_second", "tok/s")):
        if key in entry:
            parts.append(f"{short} {_number(entry[key])}")
    if "mfu" in entry:
        parts.append(f"mfu {100 * entry['mfu']:.3g}%")
    return "  ".join(parts)


def _wide_terminal(stream: TextIO) -> bool:
    """A terminal wide enough for a bar (a pseudo-terminal of width 0 would hide every record)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns >= 60
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """A tqdm progress bar on a terminal; plain lines, one per record, anywhere else (CI, a pipe, a
    terminal narrower than 60 columns).

    The bar shows the latest train record's headline numbers (`summary`, less `hidden`); eval
    records and messages are printed above it. Off a terminal (or without tqdm) every record is
    printed as one line.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        stream: TextIO | None = None,
        bar: bool | None = None,
        hidden: Sequence[str] = (),
    ) -> None:
        self.stream = stream or sys.stdout
        self.total = total
        self.hidden = tuple(hidden)
        self.bar: Any = None
        if bar is None:
            bar = _wide_terminal(self.stream)
        if bar:
            try:
                from tqdm import tqdm
            except ImportError:
                pass  # plain lines
            else:
                self.bar = tqdm(
                    total=total, initial=initial, unit="step", file=self.stream, dynamic_ncols=True, smoothing=0.1
                )

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def show(self, entry: Mapping[str, Any]) -> None:
        if self.bar is not None and entry["split"] == "train":
            self.bar.set_postfix_str(summary(entry, self.hidden), refresh=True)
            return
        width = len(str(self.total))
        self.message(f"{entry['split']:<5} step {entry['step']:>{width}}/{self.total}  {summary(entry, self.hidden)}")

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
