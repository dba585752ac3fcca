"""`switchc verify`: compare the cost report with what the framework's compiler really runs."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from switchc.analysis import DEFAULT_HARDWARE, hardware, report_for
from switchc.backends import target
from switchc.cli.options import example, overrides
from switchc.errors import PlainUserError
from switchc.spec import load_spec

EXIT_MISMATCH = 1


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 or value == int(value) else f"{value:.4g}"


@click.command(
    epilog=example(
        "switchc verify switch-tiny --set 'mesh.axes={data: 2, expert: 4}'",
        "switchc verify specs/switch-tiny.yaml --format json",
    )
)
@click.argument("spec", metavar="SPEC")
@overrides
@click.option("--backend", type=click.Choice(["jax"]), default="jax", show_default=True)
@click.option("--flops-tolerance", type=float, default=0.05, show_default=True, help="Relative, matmul FLOPs.")
@click.option(
    "--total-flops-tolerance",
    type=float,
    default=0.10,
    show_default=True,
    help="Relative, against cost_analysis (which adds elementwise work).",
)
@click.option("--bytes-tolerance", type=float, default=0.02, show_default=True, help="Relative, for bytes.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Keep the program and HLO here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def verify(
    spec: str,
    overrides: tuple[str, ...],
    backend: str,
    flops_tolerance: float,
    total_flops_tolerance: float,
    bytes_tolerance: float,
    keep: Path | None,
    fmt: str,
) -> None:
    """Compile the spec's train step on its mesh (fake CPU devices) and compare XLA's FLOPs and
    collectives with the report. Exit 0 when all agree within the tolerances, 1 when not."""
    resolved = load_spec(spec, overrides)
    target(backend).require()
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise PlainUserError(f"{keep} is not empty", "--keep needs a new or empty directory")
    from switchc.backends.jax.verify import verify as run_verify

    report = report_for(resolved, hardware(DEFAULT_HARDWARE)).to_json()
    click.echo(f"compiling {resolved.name}'s train step on {resolved.mesh.num_devices} fake device(s)...", err=True)
    result = run_verify(
        resolved,
        report,
        flops_tolerance=flops_tolerance,
        total_flops_tolerance=total_flops_tolerance,
        bytes_tolerance=bytes_tolerance,
        keep=keep,
    )
    if fmt == "json":
        rows = [
            {
                "what": c.what,
                "report": c.report,
                "xla": c.xla,
                "relative_error": c.relative_error,
                "tolerance": c.tolerance,
                "ok": c.ok,
                "note": c.note,
            }
            for c in result.comparisons
        ]
        click.echo(json.dumps({"spec": result.spec_name, "devices": result.devices, "ok": result.ok, "rows": rows}))
    else:
        table = Table(title=f"switchc verify {result.spec_name} ({result.devices} devices, jax)", title_justify="left")
        for column in ("quantity", "report", "XLA", "error", "tolerance", "", "note"):
            table.add_column(column, justify="right" if column in ("report", "XLA", "error") else "left")
        for c in result.comparisons:
            table.add_row(
                c.what,
                _number(c.report),
                _number(c.xla),
                f"{c.relative_error:.2%}",
                "exact" if c.tolerance == 0 else f"{c.tolerance:.0%}",
                "ok" if c.ok else "MISMATCH",
                c.note,
                style="" if c.ok else "bold red",
            )
        Console().print(table)
    if not result.ok:
        raise SystemExit(EXIT_MISMATCH)


COMMANDS = (verify,)
