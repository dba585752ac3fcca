"""`switchc train`: compile a spec and run the program in one command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from switchc.backends import target
from switchc.cli.compile_commands import program_files, write_program
from switchc.cli.options import example, overrides
from switchc.errors import PlainUserError
from switchc.spec import load_spec


@click.command(
    epilog=example(
        "switchc train switch-tiny --steps 200",
        "switchc train switch-tiny --set 'mesh.axes={data: 2, expert: 4}' --out runs/ep",
    )
)
@click.argument("spec", metavar="SPEC", default="switch-tiny")
@overrides
@click.option("--backend", type=click.Choice(["jax"]), default="jax", show_default=True)
@click.option("--steps", type=click.IntRange(min=0), help="Override train.steps for this run.")
@click.option("--devices", type=click.IntRange(min=1), help="Fake this many CPU devices (default: the mesh's).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/latest"),
    show_default=True,
    help="Run directory: the program in OUT/program, metrics in OUT/metrics.jsonl.",
)
def train(
    spec: str, overrides: tuple[str, ...], backend: str, steps: int | None, devices: int | None, out: Path
) -> None:
    """Compile SPEC (default: the built-in switch-tiny) and train it on its data, printing progress."""
    resolved = load_spec(spec, overrides)
    target(backend).require()
    program = out / "program"
    if out.exists() and not (program / "train.py").is_file() and any(out.iterdir()):
        raise PlainUserError(f"{out} exists and is not a switchc run directory", "choose another --out")
    write_program(program_files(resolved, backend), program)
    command = [sys.executable, "train.py", "--out", str(out.resolve())]
    if steps is not None:
        command += ["--steps", str(steps)]
    wanted = devices or resolved.mesh.num_devices
    if wanted > 1:
        command += ["--devices", str(wanted)]
    click.echo(f"running {' '.join(command[1:])} in {program}", err=True)
    result = subprocess.run(command, cwd=program)
    if result.returncode:
        raise SystemExit(result.returncode)


COMMANDS = (train,)
