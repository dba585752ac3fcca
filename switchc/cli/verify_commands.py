"""`switchc verify`: compare the cost report with what the framework's compiler really runs."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from switchc.analysis import DEFAULT_HARDWARE, hardware, report_for
from switchc.backends import target
from switchc.backends.common.verify import (
    BYTES_TOLERANCE,
    FLOPS_TOLERANCE,
    TIMEOUT,
    TOTAL_FLOPS_TOLERANCE,
    MeasurementFailed,
)
from switchc.cli.options import Number, example, overrides, table_console
from switchc.errors import PlainUserError
from switchc.spec import load_spec

EXIT_MISMATCH = 1
EXIT_NOT_MEASURED = 3  # the step failed or ran out of time: nothing to compare
OUTPUT_LINES = 30  # of a failed step's output, shown under the error
MEASURED = {"jax": "xla", "torch": "torch"}  # the JSON key of the measured value


def _per_backend(defaults: dict[str, float]) -> str:
    return ", ".join(f"{value:g} for {backend}" for backend, value in defaults.items())


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 or value == int(value) else f"{value:.4g}"


@click.command(
    epilog=example(
        "switchc verify switch-tiny --set 'mesh.axes={data: 2, expert: 4}'",
        "switchc verify specs/switch-tiny.yaml --format json",
        "switchc verify switch-tiny --backend torch --set 'mesh.axes={data: 2}'",
    )
)
@click.argument("spec", metavar="SPEC")
@overrides
@click.option("--backend", type=click.Choice(["jax", "torch"]), default="jax", show_default=True)
@click.option(
    "--flops-tolerance",
    type=Number(min=0),
    default=None,
    help=f"Relative, matmul FLOPs.  [default: {_per_backend(FLOPS_TOLERANCE)}]",
)
@click.option(
    "--total-flops-tolerance",
    type=Number(min=0),
    default=None,
    help="Relative, against cost_analysis (which adds elementwise work; jax only).  "
    f"[default: {TOTAL_FLOPS_TOLERANCE:g}]",
)
@click.option(
    "--bytes-tolerance",
    type=Number(min=0),
    default=BYTES_TOLERANCE,
    show_default=True,
    help="Relative, for bytes.",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the program (and, for jax, its HLO) here: a new or empty folder, or one an earlier verify kept.",
)
@click.option(
    "--timeout",
    type=Number(min=0, max=1_000_000, min_open=True),
    default=None,
    help=f"Seconds the step may take, compile included.  [default: {_per_backend(TIMEOUT)}]",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def verify(
    spec: str,
    overrides: tuple[str, ...],
    backend: str,
    flops_tolerance: float | None,
    total_flops_tolerance: float | None,
    bytes_tolerance: float,
    keep: Path | None,
    timeout: float | None,
    fmt: str,
) -> None:
    """Run the spec's train step on its mesh and compare its FLOPs and collectives with the report.

    jax: XLA's compiled step on fake CPU devices (its HLO and cost analysis). torch: one step of
    the PyTorch program on one gloo process per device, under FlopCounterMode, with every
    torch.distributed collective recorded (docs/verify.md). Exit 0 when all agree within the
    tolerances, 1 when not, 3 when the step failed or ran past --timeout (nothing was compared)."""
    if backend == "torch" and total_flops_tolerance is not None:
        raise PlainUserError(
            "--total-flops-tolerance applies only to --backend jax (XLA's cost analysis of the step)",
            "the PyTorch verify compares matmul FLOPs alone: --flops-tolerance",
        )
    resolved = load_spec(spec, overrides)
    target(backend).require()
    if keep is not None:
        _clear_kept(keep)
    report = report_for(resolved, hardware(DEFAULT_HARDWARE)).to_json()
    devices = resolved.mesh.num_devices
    if backend == "torch":
        from switchc.backends.torch.program import generate
        from switchc.backends.torch.verify import verify as run_verify

        where = f"on {devices} gloo processes" if devices > 1 else "in one process"
        starting = f"running {resolved.name}'s train step {where}..."
        options: dict[str, float] = {}
    else:
        from switchc.backends.jax.program import generate
        from switchc.backends.jax.verify import verify as run_verify

        starting = f"compiling {resolved.name}'s train step on {devices} fake device{'s' if devices > 1 else ''}..."
        options = {
            "total_flops_tolerance": TOTAL_FLOPS_TOLERANCE if total_flops_tolerance is None else total_flops_tolerance
        }
    files = generate(resolved)  # what compile refuses (the data pipeline's shapes, the backend's limits) stops here
    click.echo(starting, err=True)
    if flops_tolerance is None:
        flops_tolerance = FLOPS_TOLERANCE[backend]
    seconds = TIMEOUT[backend] if timeout is None else timeout
    try:
        with _stoppable():
            result: Any = run_verify(
                resolved,
                report,
                flops_tolerance=flops_tolerance,
                bytes_tolerance=bytes_tolerance,
                keep=keep,
                timeout=seconds,
                files=files,
                **options,
            )
    except MeasurementFailed as failure:
        click.echo(_not_measured(failure, keep), err=True)
        raise SystemExit(EXIT_NOT_MEASURED) from None
    except _Stopped as stopped:
        name = signal.Signals(stopped.signal).name
        click.echo(f"switchc verify: stopped by {name}; nothing was compared", err=True)
        raise SystemExit(128 + stopped.signal) from None
    measured_column = MEASURED[backend]
    if fmt == "json":
        rows = [
            {
                "what": c.what,
                "report": c.report,
                measured_column: c.measured,
                "relative_error": c.relative_error if math.isfinite(c.relative_error) else None,  # JSON has no inf
                "tolerance": c.tolerance,
                "ok": c.ok,
                "note": c.note,
            }
            for c in result.comparisons
        ]
        mesh = dict(resolved.mesh.axes)
        summary = {
            "spec": result.spec_name,
            "devices": result.devices,
            "mesh": mesh,
            "backend": backend,
            "ok": result.ok,
        }
        click.echo(json.dumps({**summary, "rows": rows}))
    else:
        plural = "s" if result.devices != 1 else ""
        mesh_shape = f"mesh {resolved.mesh.shape}, " if resolved.mesh.shape else ""
        title = f"switchc verify {result.spec_name} ({mesh_shape}{result.devices} device{plural}, {backend})"
        table = Table(title=title, title_justify="left")
        heading = "XLA" if backend == "jax" else "torch"
        for column in ("quantity", "report", heading, "error", "tolerance", "", "note"):
            table.add_column(column, justify="right" if column in ("report", heading, "error") else "left")
        for c in result.comparisons:
            table.add_row(
                c.what,
                _number(c.report),
                _number(c.measured),
                f"{c.relative_error:.2%}" if math.isfinite(c.relative_error) else "inf",
                "exact" if c.tolerance == 0 else f"{100 * c.tolerance:.3g}%",  # 1e-07 is no 0%
                "ok" if c.ok else "MISMATCH",
                c.note,
                style="" if c.ok else "bold red",
            )
        table_console(200).print(table)
    if not result.ok:
        raise SystemExit(EXIT_MISMATCH)


class _Stopped(Exception):
    """verify was told to stop (Ctrl-C, SIGTERM) while the step ran."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.signal = number


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """While the step runs, SIGTERM (a CI job's time limit, `kill`) stops verify as Ctrl-C does:
    as an exception, so that on the way out the step's processes are killed and the scratch
    directory removed (Python's default for SIGTERM ends switchc alone, leaving both behind)."""

    def stop(number: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise _Stopped(number)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        raise _Stopped(signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


KEPT = ".switchc-verify"  # marks a --keep directory verify wrote, which a later verify may clear
KEPT_ENTRIES = ("program", "hlo", "counts")  # what verify writes there (the backends' verify.py)


def _clear_kept(keep: Path) -> None:
    """--keep DIR: new, empty, or an earlier verify's (its KEPT marker and nothing but KEPT_ENTRIES),
    which is cleared; a verify that timed out or was stopped leaves its files there, and running it
    again must not need them removed by hand. Anything else in DIR is not verify's to delete."""
    if keep.exists() and any(keep.iterdir()):
        names = {entry.name for entry in keep.iterdir()}
        if KEPT not in names or not names <= {KEPT, *KEPT_ENTRIES}:
            raise PlainUserError(
                f"{keep} is not empty", "--keep needs a new or empty directory, or one an earlier switchc verify kept"
            )
        for name in names - {KEPT}:
            entry = keep / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:  # a link is removed, never what it points to
                entry.unlink()
    keep.mkdir(parents=True, exist_ok=True)
    (keep / KEPT).write_text("kept by switchc verify; a later verify --keep here replaces it\n", encoding="utf-8")


def _not_measured(failure: MeasurementFailed, keep: Path | None) -> str:
    """What verify says when the step could not be measured: the error, the end of the step's
    output, and what to do."""
    lines = [f"error: {failure.message}"]
    output = failure.output.rstrip().splitlines()[-OUTPUT_LINES:]
    if output:
        lines += ["the step's output ended with:", *(f"  {line}" for line in output)]
    if failure.timeout is not None:
        lines.append(
            f"hint: a larger model or mesh takes longer to compile and run on this host's CPUs: raise "
            f"--timeout (it was {failure.timeout:g}s), or verify a smaller --set of the spec"
        )
    elif keep is None:
        lines.append("hint: add --keep DIR to keep the generated program and rerun its step by hand")
    else:
        lines.append(f"hint: the generated program is in {keep / 'program'}, to rerun its step by hand")
    return "\n".join(lines)


COMMANDS = (verify,)
