"""`switchc plot`: a training run's metrics.jsonl as PNGs (loss curves, expert load)."""

from __future__ import annotations

import errno
from pathlib import Path

import click

from switchc.cli.options import example
from switchc.errors import PlainUserError
from switchc.runs import draw, read_run

PLOT_HINT = "pip install 'switchc[plot]' (in a checkout: pip install -e '.[plot]')"


@click.command(
    epilog=example(
        "python train.py --steps 200 --out runs/switch   # in a compiled program: writes metrics.jsonl",
        "switchc plot runs/switch                        # runs/switch/loss.png, runs/switch/experts.png",
        "switchc plot runs/dense runs/switch -o runs/compare",
        "switchc plot runs/switch --last 1               # expert load of the last step only",
    )
)
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the PNGs; created if missing. Default: RUN_DIR, when there is one.",
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Average the expert load over the last N train records that report it.",
)
def plot(run_dirs: tuple[Path, ...], out: Path | None, last: int) -> None:
    """Draw training runs from their metrics.jsonl: losses, and expert load for Switch models.

    Writes loss.png (train and eval loss and cross-entropy by step; the load-balancing loss and
    the router z-loss each in a panel of its own, when present) and, when a run has Switch layers,
    experts.png: for each run a
    heatmap of the fraction of tokens each expert got in each layer, and the dropped fraction of
    each layer by step. Several RUN_DIRs are drawn on the same axes, e.g. dense vs Switch.
    """
    runs = [read_run(directory) for directory in run_dirs]
    for run in runs:
        if run.partial_line:
            click.echo(f"note: {run.name}: the last line of metrics.jsonl is still being written; left out", err=True)
    if out is None:
        if len(run_dirs) > 1:
            raise PlainUserError("plotting several runs needs -o DIR", "e.g. switchc plot RUN_A RUN_B -o compare")
        out = run_dirs[0]
    try:
        out.mkdir(parents=True, exist_ok=True)  # created if missing, as -o's help says
        written = draw(runs, out, last)
    except ImportError:
        raise PlainUserError("switchc plot needs matplotlib", PLOT_HINT) from None
    except OSError as error:  # a run on read-only storage, say: the PNGs can go elsewhere
        if error.filename is None or error.errno == errno.ENOENT:  # switchc's own handler says these
            raise
        message = f"{error.filename}: {error.strerror or error}"
        raise PlainUserError(message, "write the PNGs elsewhere: -o DIR") from None
    for path in written:
        click.echo(f"wrote {path}", err=True)
    stale = out / "experts.png"
    if stale not in written and stale.is_file():  # an earlier plot's, of other runs: it would pass for these
        stale.unlink()
        click.echo(f"removed {stale}, an earlier plot's: these runs have no Switch layers", err=True)


COMMANDS = (plot,)
