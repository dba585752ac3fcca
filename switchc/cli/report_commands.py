"""`switchc report` and `switchc graph`: what a model costs, and what its IR looks like."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from switchc.analysis import (
    DEFAULT_HARDWARE,
    DEFAULT_MFU,
    REPORT_VERSION,
    Report,
    builtin_profiles,
    hardware,
    plot,
    report_for,
    rich_table,
    to_markdown,
)
from switchc.cli.options import Number, check_output_parent, example, overrides, table_console
from switchc.cli.plot_commands import PLOT_HINT
from switchc.cli.spec_commands import warn_unless_compilable
from switchc.errors import PlainUserError
from switchc.files import figure_formats
from switchc.ir.build import build_graph
from switchc.ir.dot import FORMATS, write_drawing
from switchc.passes import lower, verify
from switchc.spec import Spec, load_spec


@click.command(
    epilog=example(
        "switchc report specs/switch-base.yaml",
        "switchc report t5-base switch-base moe-base --hardware a100",
        "switchc report switch-c --format json",
        "switchc report switch-tiny --hardware cpu --plot layers.png",
        "switchc report switch-base --set mesh.axes='{data: 4, expert: 8}' --mfu 0.4",
        "switchc report switch-base --hardware-file my-gpus.yaml --hardware my-gpu",
    )
)
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@overrides
@click.option(
    "--hardware",
    "hardware_name",
    default=DEFAULT_HARDWARE,
    show_default=True,
    help=f"Hardware profile for the step time: {', '.join(builtin_profiles())}, or one from --hardware-file.",
)
@click.option(
    "--hardware-file",
    "hardware_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="YAML file of extra hardware profiles (the format of switchc/analysis/hardware.yaml); repeatable.",
)
@click.option(
    "--mfu",
    type=Number(0, 1, min_open=True),
    default=DEFAULT_MFU,
    show_default=True,
    help="Fraction of peak FLOP/s the executed FLOPs reach (capacity padding, router and recompute "
    "included: a hardware FLOPs utilization); the report shows the MFU that follows.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw per-layer FLOPs and bytes to this file (.png, .pdf, .svg, ...: its suffix names the format).",
)
def report(
    specs: tuple[str, ...],
    overrides: tuple[str, ...],
    hardware_name: str,
    hardware_files: tuple[str, ...],
    mfu: float,
    fmt: str,
    plot_path: Path | None,
) -> None:
    """Parameters, FLOPs, memory, communication and step time of each SPEC, side by side.

    Every --set applies to each SPEC. The conventions behind every number are listed in --format
    json and markdown output.
    """
    hw = hardware(hardware_name, hardware_files)
    loaded = [load_spec(name, overrides) for name in specs]
    if overrides and len(specs) > 1:  # every --set applies to every SPEC: say where that changes its kind
        for name, spec in zip(specs, loaded, strict=True):
            if spec.moe is not None and load_spec(name).moe is None:
                click.echo(f"note: {name} is dense; the --set options make it a Switch model too", err=True)
    refusals = [warn_unless_compilable(spec, "the report counts its shapes as given") for spec in loaded]
    reports: list[Report] = []
    for spec, label, refused in zip(loaded, _labels(loaded), refusals, strict=True):
        report = report_for(spec, hw, mfu)
        summary = dataclasses.replace(report.spec, name=label)
        # JSON and markdown are files a tool or a reader gets without stderr: they carry the refusal too
        carried = refused if fmt != "table" else ()
        reports.append(dataclasses.replace(report, spec=summary, notes=report.notes + carried))
    if plot_path is not None:  # a path that cannot be drawn to is refused before anything is said
        _check_plot_path(plot_path)
    if fmt == "json":
        if len(reports) == 1:
            click.echo(json.dumps(reports[0].to_json(), indent=2))
        else:
            click.echo(json.dumps({"version": REPORT_VERSION, "reports": [r.to_json() for r in reports]}, indent=2))
    elif fmt == "markdown":
        click.echo(to_markdown(reports), nl=False)
    else:
        table_console(200).print(rich_table(reports))  # piped: long values kept on one line
    if plot_path is not None:  # after the report: a plot that fails to draw loses nothing else
        plot(reports, str(plot_path))
        click.echo(f"wrote {plot_path}", err=True)


def _labels(specs: list[Spec]) -> list[str]:
    """Each spec's name; specs that share one (a.yaml and a.switch, or a.yaml in two folders) are
    told apart by their file's name, then by its path."""
    names = [spec.name for spec in specs]
    for longer in (lambda source: Path(source).name, lambda source: source):
        if len(set(names)) == len(names):
            break
        names = [
            longer(spec.origin.source.name) if names.count(name) > 1 else name
            for spec, name in zip(specs, names, strict=True)
        ]
    return names


def _check_plot_path(path: Path) -> None:
    check_output_parent(path)
    try:
        formats = figure_formats()
    except ImportError:
        raise PlainUserError("--plot needs matplotlib", PLOT_HINT) from None
    if path.suffix.lower().removeprefix(".") not in formats:
        said = f"unknown format '{path.suffix}'" if path.suffix else "no suffix to name its format"
        raise PlainUserError(f"cannot plot to '{path.name}': {said}", f"end it in one of .{', .'.join(formats)}")


@click.command(
    epilog=example(
        "switchc graph switch-tiny -o switch-tiny.dot",
        "switchc graph specs/switch-base.yaml -o switch-base.svg",
        "switchc graph switch-tiny --set mesh.axes='{data: 2, expert: 4}' -o sharded.png",
        "switchc graph switch-tiny --unsharded -o logical.dot",
    )
)
@click.argument("spec", metavar="SPEC")
@overrides
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where to draw: {', '.join(FORMATS)} (.svg and .png need Graphviz's `dot`).",
)
@click.option("--unsharded", is_flag=True, help="Draw the graph before the sharding pass (no collectives).")
def graph(spec: str, overrides: tuple[str, ...], output: Path, unsharded: bool) -> None:
    """Draw the IR graph of SPEC: every op, and every collective once sharded."""
    resolved = load_spec(spec, overrides)
    drawn = verify(build_graph(resolved)) if unsharded else lower(resolved)
    check_output_parent(output)
    write_drawing(drawn, output)
    click.echo(f"wrote {output} ({drawn.number_of_nodes()} nodes)", err=True)


COMMANDS = (report, graph)
