"""`switchc train`: compile a spec and run the program in one command."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from shlex import quote

import click
import yaml

from switchc.analysis import hardware as analysis_hardware
from switchc.backends import target
from switchc.backends.common import data, weights
from switchc.backends.common.codegen import parameters
from switchc.backends.common.flags import (
    LOCK_NAME,
    check_checkpoint_directory,
    in_use,
    latest_checkpoint,
    lock_for_child,
    lock_run_directory,
    other_optimizer_state,
    other_tokenizer,
    recorded,
    recorded_seed,
    release_run_directory,
    remove_made,
    run_directory_user,
    shape_differences,
)
from switchc.backends.common.program import evaluates, program_config
from switchc.cli.compile_commands import program_as_written, program_files, write_program
from switchc.cli.options import Directory, example, overrides
from switchc.errors import PlainUserError, Source, UserError
from switchc.files import read_text
from switchc.ir import build_graph
from switchc.spec import Spec, load_spec, parse_spec
from switchc.spec.checks import OVERRIDE_SOURCE_NAME
from switchc.spec.emit import HOW_NOT_WHAT, differences, extendable, to_yaml


def _yaml_value(value: object, limit: int = 60) -> str:
    """A value as YAML flow text (0.003, null, [1, 2], {num_experts: 8, ...}); a list or mapping is
    shortened past `limit` (a string, such as a path, is shown whole: its end may be what differs)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).removesuffix("...\n").strip()
    shorten = isinstance(value, (list, dict)) and len(text) > limit
    return text[: limit - 4].rstrip() + " ..." if shorten else text


def _shown(changed: list[tuple[str, object, object]]) -> list[tuple[str, str, str]]:
    """Each change's old and new values as text (`_yaml_value`). A whole mapping (mesh.rules) too
    long to show whole shows only the entries that differ: shortened, both could read the same."""
    shown: list[tuple[str, str, str]] = []
    for key, old, new in changed:
        if isinstance(old, dict) and isinstance(new, dict) and max(len(_yaml_value(v, 10**6)) for v in (old, new)) > 60:
            names = [name for name in [*old, *(n for n in new if n not in old)] if old.get(name) != new.get(name)]
            shown.append((key, _some_entries(old, names), _some_entries(new, names)))
        else:
            shown.append((key, _yaml_value(old), _yaml_value(new)))
    return shown


def _some_entries(mapping: dict[str, object], names: list[str]) -> str:
    """The entries of `mapping` named in `names`, then "..." for the ones left out (the same on both
    sides of a change): `{}` would read as a mapping with no entries at all."""
    entries = [f"{name}: {_yaml_value(mapping[name])}" for name in names if name in mapping]
    return "{" + ", ".join([*entries, "..."]) + "}"


def changed_settings(run_spec: str, spec: Spec) -> list[tuple[str, object, object]]:
    """How `spec` differs from the spec a run was trained with (its spec.yaml's text), leaving out
    what more steps may change (`extendable`: train.steps, unless the schedule is cosine) and how a
    step is computed (HOW_NOT_WHAT: train.remat)."""
    changes = differences(run_spec, spec)
    return [change for change in changes if change[0] not in (*extendable(spec), *HOW_NOT_WHAT)]


def _program_backend(program: Path) -> str | None:
    """The backend of the program switchc compiled into `program` (its docstring names it)."""
    train = program / "train.py"
    if not train.is_file():
        return None
    found = re.search(r"switchc compile --backend (\w+)", train.read_text(encoding="utf-8"))
    return found.group(1) if found else None


TORCHRUN = "switchc.cli.torchrun"  # torchrun, quiet when a signal stops the job

# What a run writes into its directory (docs/training.md), beside switchc train's program/ and the
# run lock: a fresh start removes these.
RUN_OUTPUTS = ("metrics.jsonl", "tensorboard", "checkpoints")
# The exit status where switchc train runs its program's own checks before the program (the data,
# the run directory's lock, its checkpoint folders): the program's, as if it had refused (README).
REFUSED = 1


def _is_run_directory(out: Path) -> bool:
    """A directory switchc train wrote (its program/), one a generated program wrote with --out
    (only what runs write there: metrics, events, checkpoints, the lock), or one a run is setting
    up (its lock taken, its program not written yet)."""
    if (out / "program" / "train.py").is_file():
        return True
    names = {entry.name for entry in out.iterdir()}
    return names <= {*RUN_OUTPUTS, LOCK_NAME} and bool(names & {"checkpoints", LOCK_NAME})


def _check_resume_settings(out: Path, spec: Spec, allow_changes: bool, backend: str) -> Spec:
    """--resume continues one run: settings that differ from the run's would mix two runs in one.

    Refused unless `allow_changes` (then listed on stderr, so the log says where the run changed).
    Returns the spec to compile: `spec`, with its data paths spelt as the run spells them where they
    name the same files (`_spelt_as_run`).
    """
    run_spec = out / "program" / "spec.yaml"
    if run_spec.is_file():
        text, source = read_text(run_spec), str(run_spec)  # not UTF-8: an error naming it; a BOM dropped
    else:  # a run a generated program wrote: its checkpoints record the spec (and OUT/program is not made yet)
        written = recorded(out / "checkpoints", backend, "spec")
        if written is None:
            return spec
        text, source = written, f"{out / 'checkpoints'} (the spec its latest checkpoint records)"
    try:  # not validated: a plain --resume lists what differs, whatever keys the run's switchc wrote
        ran = yaml.safe_load(text)
    except Exception:  # YAMLError, or a tagged scalar pyyaml cannot make (!!int abc): parse_spec says where
        ran = None
    if not isinstance(ran, dict):  # damaged: the located error of reading it as a spec
        parse_spec(Source(source, text))
        ran = {}
    seed = recorded_seed(out / "checkpoints", backend)  # train.py --seed N: the run's seed, not its spec's
    given_seed = None  # the --seed that the run's program was given, where it is not its spec's
    if seed is not None and isinstance(ran.get("train"), dict) and ran["train"].get("seed", seed) != seed:
        ran["train"]["seed"] = given_seed = seed
        text = yaml.safe_dump(ran, sort_keys=False)
    spec = _spelt_as_run(ran.get("data"), spec)
    changed = changed_settings(text, spec)
    if not changed:
        return spec
    lines = "\n".join(f"  {key}: {old} in the run, {new} now" for key, old, new in _shown(changed))
    if allow_changes:
        _check_continuable(out, parse_spec(Source(source, text)), spec, lines, backend)
        click.echo(f"note: --resume --allow-changes: {out} continues with other settings:\n{lines}", err=True)
        return spec
    cosine = not extendable(spec) and any(key == "train.steps" for key, _, _ in changed)
    why = " (the cosine schedule decays to zero over train.steps: more steps are another schedule)" if cosine else ""
    on = "" if backend == "jax" else f" --backend {backend}"
    if run_spec.is_file():
        command = f"switchc train {quote(str(run_spec))}{on} --out {quote(str(out))} --resume"
        own = (
            f"resume from the run's own resolved spec ({command}{')' if cosine else ', adding --steps N to train on)'}"
        )
    else:
        own = f"resume with the program that wrote the run ({_programs_resume(ran, out, backend, given_seed)})"
    if cosine and len(changed) == 1:  # the run's own spec cannot give more steps: it ends at its train.steps
        hint = (
            "add --allow-changes to go on under the new schedule (the learning rate follows it from the "
            "checkpoint's step on), or train a new run into another --out"
        )
    else:
        hint = (
            f"{own}; or add --allow-changes to continue with the new settings (a lower learning rate after a NaN "
            "stop); or train into another --out"
        )
    run_seed = next((old for key, old, _ in changed if key == "train.seed"), None)
    if run_seed is not None:  # the one setting --allow-changes cannot change: say how to keep it first
        hint = f"keep the run's seed: --set train.seed={run_seed}; {hint}"
    raise PlainUserError(f"--resume: {out} was trained with other settings than these{why}:\n{lines}", hint)


def _programs_resume(ran: dict[str, object], out: Path, backend: str, seed: int | None) -> str:
    """The command that resumes OUT, a run a generated program wrote, with that program (PROGRAM:
    wherever it is), `ran` its spec (as YAML reads its text): under torchrun, one process per device,
    for a PyTorch program of several, and with the `seed` its checkpoints record when the program
    was given one (`train.py --seed N`; None: its spec's)."""
    mesh = ran.get("mesh")
    axes = mesh.get("axes") if isinstance(mesh, dict) else None
    sizes = list(axes.values()) if isinstance(axes, dict) else []
    processes = math.prod(sizes) if all(isinstance(size, int) for size in sizes) else 1
    launcher = ["python"]
    if backend == "torch" and processes > 1:
        launcher = ["torchrun", "--standalone", "--nproc-per-node", str(processes)]
    seeded = [] if seed is None else ["--seed", str(seed)]
    return shlex.join([*launcher, "PROGRAM/train.py", *seeded, "--out", str(out), "--resume"])


def _check_continuable(out: Path, run: Spec, spec: Spec, lines: str, backend: str) -> None:
    """What --allow-changes cannot change, refused before OUT/program is rewritten (the program
    would refuse it too, but only after the run's own program and spec.yaml were replaced by these,
    and the way on for the optimizer state needs the run's program): the seed (it fixes the data
    order and the noise), any parameter's shape, and the layout of the optimizer state."""
    if run.train.seed != spec.train.seed:
        raise PlainUserError(
            f"--resume: {out} was trained with train.seed {run.train.seed}, not {spec.train.seed}: a resumed run "
            f"keeps its seed (its data order and noise), even with --allow-changes; the settings that differ from "
            f"the run's:\n{lines}",
            f"keep the run's seed (--set train.seed={run.train.seed}), or train into another --out",
        )
    wrong = shape_differences(_parameter_shapes(run), _parameter_shapes(spec), "in the run", "now")
    if wrong:
        raise PlainUserError(
            f"--resume --allow-changes: {out}'s checkpoints do not fit the model these settings make:"
            + "".join(f"\n  {line}" for line in wrong)
            + f"\nthe settings that differ from the run's:\n{lines}",
            "--allow-changes continues a run with other training settings (learning rate, schedule, clipping); "
            "a model with other shapes is a new run: choose another --out",
        )
    trained = recorded(out / "checkpoints", backend, "tokenizer")
    if trained is not None and (run.data != spec.data or run.model.vocab_size != spec.model.vocab_size):
        try:  # the tokenizer these settings make (a SentencePiece model is trained on the training split)
            tokenizer = data.dataset(program_config(spec)).tokenizer
        except SystemExit as stop:  # runtime/data.py's "error: ...\nhint: ..."
            raise PlainUserError(*_runtime_error(str(stop.code)), status=REFUSED) from None
        if tokenizer != trained:
            error, hint = other_tokenizer(f"{out}'s latest checkpoint", trained, tokenizer)
            raise PlainUserError(f"{error}; the settings that differ from the run's:\n{lines}", hint)
    other = other_optimizer_state(to_yaml(run), to_yaml(spec), backend)
    if other is not None:
        weights = out.absolute().with_name(f"{out.absolute().name}-weights.safetensors")  # not inside the run
        # a run a program wrote has no OUT/program: the export is that program's
        own = out / "program" / "train.py" if (out / "program" / "train.py").is_file() else Path("PROGRAM/train.py")
        raise PlainUserError(
            f"--resume --allow-changes: {out}'s checkpoints hold the optimizer state of {other[0]}; the optimizer "
            f"of these settings ({other[1]}) keeps other state, which theirs cannot become; the settings that "
            f"differ from the run's:\n{lines}",
            "keep the run's optimizer settings; or start a new run from the run's weights: "
            f"python {quote(str(own))} --export-init {quote(str(weights))} --resume --out "
            f"{quote(str(out))}, then switchc train with these settings, --init-from {quote(str(weights))} and "
            "another --out",
        )


def _parameter_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """IR parameter name -> global shape: the PARAMS table a program of `spec` checks checkpoints against."""
    return {name: tuple(d.size for d in p.tensor.dims) for name, p in parameters(build_graph(spec)).items()}


@click.command(
    epilog=example(
        "switchc train switch-tiny --steps 200",
        "switchc train switch-tiny --set 'mesh.axes={data: 2, expert: 4}' --out runs/ep",
        "switchc train switch-tiny --backend torch --set 'mesh.axes={data: 2, expert: 2}'   # 4 torchrun processes",
    )
)
@click.argument("spec", metavar="[SPEC]", default="switch-tiny")
@overrides
@click.option("--backend", type=click.Choice(["jax", "torch"]), default="jax", show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    help="Train until this step: sets train.steps (and so a cosine schedule's length and the default eval and "
    "checkpoint intervals).",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    help="jax: fake this many CPU devices (at least the mesh's size); torch: start this many processes (the "
    "mesh's size). Default: the mesh's size.",
)
@click.option(
    "--out",
    type=Directory("run directory"),  # an empty --out would clear this directory's run files
    default=Path("runs/latest"),
    show_default=True,
    help="Run directory: the program in OUT/program, OUT/metrics.jsonl, OUT/tensorboard, OUT/checkpoints.",
)
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its latest checkpoint (else start afresh).")
@click.option(
    "--allow-changes",
    is_flag=True,
    help="With --resume: continue even though settings other than train.steps (under a cosine schedule: any) "
    "differ from the run's.",
)
@click.option("--eval-every", type=click.IntRange(min=0), help="Evaluate every N steps (0: never; default: steps/10).")
@click.option("--eval-batches", type=click.IntRange(min=1), help="Batches per evaluation (default: 10).")
@click.option("--log-every", type=click.IntRange(min=1), help="A train record every N steps (default: 10).")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    help="Save a checkpoint every N steps (0: never; default: steps/10).",
)
@click.option("--keep", type=click.IntRange(min=1), metavar="K", help="Keep the newest K checkpoints (default: 3).")
@click.option(
    "--init-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Start from these weights (safetensors keyed by IR names: either program's --export-init writes it).",
)
@click.option(
    "--hardware",
    metavar="NAME",
    help="Hardware profile for the MFU the progress shows (default: cpu on CPUs, else the device's).",
)
def train(
    spec: str,
    overrides: tuple[str, ...],
    backend: str,
    steps: int | None,
    devices: int | None,
    out: Path,
    resume: bool,
    allow_changes: bool,
    eval_every: int | None,
    eval_batches: int | None,
    log_every: int | None,
    checkpoint_every: int | None,
    keep: int | None,
    init_from: Path | None,
    hardware: str | None,
) -> None:
    """Compile SPEC (default: the built-in switch-tiny) and train it on its data, printing progress.

    Both backends take the same flags and write the same run directory (docs/training.md); the
    options from --eval-every on are passed to the program; for its others (--export-init, and each
    backend's own) run OUT/program/train.py yourself; the seed is the spec's (--set train.seed=N).
    Without --resume a run starts afresh: OUT's metrics, TensorBoard events and checkpoints from an
    earlier run are removed first. With --resume, settings other than train.steps (under a cosine schedule,
    train.steps too) must match the run's (OUT/program/spec.yaml, or what its checkpoints record) unless
    --allow-changes is given; its tokenizer must match in any case.
    """
    if allow_changes and not resume:
        raise PlainUserError("--allow-changes applies only with --resume", "add --resume, or drop --allow-changes")
    resolved = load_spec(spec, overrides)
    if steps is not None:  # the program's schedule and intervals follow train.steps, so it is set in the spec
        if resolved.span("train.steps").source.name != OVERRIDE_SOURCE_NAME:
            overrides = (*overrides, f"train.steps={steps}")
            resolved = load_spec(spec, overrides)
        elif resolved.train.steps != steps:  # the same value (02 is 2) is the user's own --set already
            raise PlainUserError(
                f"--steps {steps} and --set train.steps={resolved.train.steps} disagree (--steps sets train.steps)",
                "keep one of the two",
            )
    resolved = _absolute_data_paths(resolved)
    target(backend).require()
    needed = resolved.mesh.num_devices
    if devices is not None and (devices < needed if backend == "jax" else devices != needed):
        if backend == "jax":
            what = "device" if needed == 1 else "devices"
        else:
            what = f"{'process' if needed == 1 else 'processes'}, one per device"
        shape = resolved.mesh.shape or "of no axes"
        raise PlainUserError(
            f"--devices {devices}: the mesh {shape} needs {needed} {what}",
            "drop --devices (it defaults to the mesh's size), or change the mesh (--set 'mesh.axes={...}')",
        )
    if eval_every and not evaluates(resolved):  # the program refuses it too; say so before compiling
        raise UserError.at(
            resolved.span("data.eval_fraction"),
            f"--eval-every {eval_every}: the spec has no text to evaluate on (data.eval_fraction is 0 and no "
            "data.eval_path)",
            "set data.eval_fraction (e.g. --set data.eval_fraction=0.05) or data.eval_path, or drop --eval-every",
        )
    if eval_batches is not None and (eval_every == 0 or not evaluates(resolved)):  # the program refuses it too
        why = "this one does not: --eval-every is 0" if eval_every == 0 else "the spec holds out no text"
        raise PlainUserError(f"--eval-batches applies only to a run that evaluates ({why})", "drop --eval-batches")
    if hardware is not None:  # the programs know the built-in profiles (their PEAK_FLOPS)
        hardware = analysis_hardware(hardware, None).name
    passed = {
        "--eval-every": eval_every,
        "--eval-batches": eval_batches,
        "--log-every": log_every,
        "--checkpoint-every": checkpoint_every,
        "--keep": keep,
        "--init-from": None if init_from is None else init_from.resolve(),
        "--hardware": hardware,
    }
    program = out / "program"
    if out.exists() and any(out.iterdir()) and not _is_run_directory(out):
        raise PlainUserError(f"{out} exists and is not a switchc run directory", "choose another --out")
    holder = run_directory_user(out)
    if holder is not None:  # nothing of it is touched: its program, metrics and checkpoints are in use
        raise PlainUserError(*in_use(out, holder), status=REFUSED)
    earlier = _program_backend(program)
    if earlier is None and resume:  # a run a program wrote has no RUN/program: its checkpoints say
        found = [kind for kind in ("jax", "torch") if latest_checkpoint(out / "checkpoints", kind) is not None]
        earlier = found[0] if len(found) == 1 else None
    if resume and earlier is not None and earlier != backend:
        raise PlainUserError(
            f"--resume: {out} is a run of the {earlier} program; this command would continue it with {backend}",
            f"add --backend {earlier}",
        )
    if resume:
        try:  # another backend's step, or one left incomplete: the program's refusal, before anything is written
            check_checkpoint_directory(out / "checkpoints", backend)
        except SystemExit as stop:
            raise PlainUserError(*_runtime_error(str(stop.code)), status=REFUSED) from None
        resolved = _check_resume_settings(out, resolved, allow_changes, backend)
        reached = latest_checkpoint(out / "checkpoints", backend)
        if reached is not None and reached >= resolved.train.steps:  # the program is left as the run wrote it
            click.echo(
                f"note: {out} is at step {reached} already (its latest checkpoint) and train.steps is "
                f"{resolved.train.steps}: nothing to train; the run and its program are left as they are (a larger "
                "--steps goes on)",
                err=True,
            )
            return
    if init_from is not None:
        _check_weights(init_from, resolved)
    if not resume and any((out / name).exists() for name in RUN_OUTPUTS):
        _check_data(resolved, out, evaluate=eval_every != 0)
    files = program_files(resolved, backend)  # what the backend refuses leaves no OUT behind
    made = [folder for folder in (*reversed(out.parents), out) if not folder.exists()]  # outermost first
    _hold_run_directory(out)
    replaced: dict[str, str] | None = None  # the run's own program, once --allow-changes replaced it
    # a run a program wrote has no RUN/program: until a checkpoint of this command's is saved, the
    # run is still the program's, and the RUN/program written here goes again on a failure
    added_program = resume and not program.exists()
    status, saved = 1, _saved_steps(out)
    try:
        # --allow-changes replaces the run's program; until a checkpoint of the new settings is saved,
        # the run is still the old one, and so is its program (a stop before that puts it back)
        runs_own = program_as_written(program) if resume and allow_changes else None
        try:
            if not resume:  # all of the earlier run goes, or none of it: checked before anything changes
                _check_removable(out)
            write_program(files, program, elsewhere="train with another --out")
        except PlainUserError:  # refused before anything changed: the lock file and folders made go too
            remove_made(argparse.Namespace(out=out, made=made))
            raise
        replaced = runs_own
        if not resume:
            _clear_earlier_run(out)
        wanted = devices or needed
        # run from the user's directory, as train.py run by hand would be (data paths are absolute by now)
        arguments = [str((program / "train.py").resolve()), "--out", str(out.resolve())]
        launcher = ["python"]
        if backend == "torch" and wanted > 1:  # one process per device, started by torchrun
            launcher = ["torchrun", "--standalone", "--nproc-per-node", str(wanted)]
        if backend == "jax" and wanted > 1:
            arguments += ["--devices", str(wanted)]
        if resume:
            arguments += ["--resume", "--allow-changes"] if allow_changes else ["--resume"]
        arguments += [text for flag, value in passed.items() if value is not None for text in (flag, str(value))]
        click.echo(f"running {shlex.join([*launcher, *arguments])}", err=True)
        start = [sys.executable] if launcher == ["python"] else [sys.executable, "-m", TORCHRUN, *launcher[1:]]
        status = _run_program([*start, *arguments], *lock_for_child(out))
        if status and not resume and not any((out / name).exists() for name in RUN_OUTPUTS):
            _remove_untrained(out, program, made)
    finally:  # however this ended (a status, an error, a signal to switchc itself)
        if replaced is not None and _saved_steps(out) == saved:
            _put_back(replaced, program)
        elif added_program and status and _saved_steps(out) == saved:
            shutil.rmtree(program, ignore_errors=True)
        release_run_directory(out)
    if status:
        raise SystemExit(status)


def _put_back(files: dict[str, str], program: Path) -> None:
    """Write the run's own program back into RUN/program (--allow-changes stopped before a checkpoint
    of the changes), with Ctrl-C and SIGTERM held off: cut between its renames, the swap would leave
    no program at all. A failure is said, and leaves the changed program and the run's status."""
    held = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        write_program(files, program, elsewhere="train with another --out")
    except (PlainUserError, OSError) as error:
        click.echo(f"warning: could not put the run's own program back in {program}: {error}", err=True)
        return
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
    click.echo(
        f"note: no checkpoint of the changed settings was saved: {program} is the run's own again (the same "
        "command goes on with the changes)",
        err=True,
    )


def _saved_steps(out: Path) -> dict[str, tuple[int, int]]:
    """The committed checkpoints in OUT/checkpoints (numbered folders), each with its inode and
    modification time: a step saved again is another folder."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return {}
    steps = (entry for entry in folder.iterdir() if entry.name.isdigit())
    return {step.name: (step.stat().st_ino, step.stat().st_mtime_ns) for step in steps}


def _remove_untrained(out: Path, program: Path, made: list[Path]) -> None:
    """A fresh run that stopped before its first step (a data path that is not there, Ctrl-C while
    it compiled) leaves no trace, as the program itself does: its program/, the lock file, and the
    folders this command made for OUT (`made`, outermost first) once empty."""
    shutil.rmtree(program, ignore_errors=True)
    remove_made(argparse.Namespace(out=out, made=made))
    if program.exists():
        click.echo(f"note: nothing was trained; {program} could not be removed", err=True)
    else:
        click.echo(f"note: nothing was trained; removed what this command wrote in {out}", err=True)


# What a run writes inside its checkpoints/ (a step; a save in flight, PyTorch's or orbax's) and
# tensorboard/ folders: clearing them for a fresh start removes nothing else.
_RUN_WROTE = {
    "checkpoints": re.compile(r"[0-9]+(\.tmp|\.orbax-checkpoint-tmp(-[0-9]+)?)?/"),  # orbax 0.12: no -<n>
    "tensorboard": re.compile(r"events\.out\.tfevents\..+[^/]"),
}


def _not_written_by_runs(out: Path) -> list[str]:
    """What of OUT's run outputs no run wrote (a folder with a trailing /): a metrics.jsonl that is
    a folder, files of another tool in a folder named checkpoints/. Clearing them would lose them."""
    found = []
    for name in RUN_OUTPUTS:
        path = out / name
        if name not in _RUN_WROTE:
            if path.is_dir():
                found.append(f"{name}/")
            continue
        if path.exists() and not path.is_dir():
            found.append(name)
        elif path.is_dir():
            entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in path.iterdir())
            found += [f"{name}/{entry}" for entry in entries if not _RUN_WROTE[name].fullmatch(entry)]
    return found


def _check_removable(out: Path) -> None:
    """Refuse a fresh start whose clearing of OUT would lose what no run wrote (another tool's files
    in a folder named checkpoints/), or stop half-way (a read-only checkpoints/): it would leave,
    say, checkpoints without the metrics of their run."""
    foreign = _not_written_by_runs(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PlainUserError(
            f"cannot start afresh in {out}: it holds what no run wrote ({shown}), which clearing the earlier "
            "run would lose",
            "move those files out of it, or choose another --out",
        )
    for name in RUN_OUTPUTS:
        path = out / name
        if not path.exists():
            continue
        folders = [out, *(Path(top) for top, _, _ in os.walk(path))] if path.is_dir() else [out]
        for folder in folders:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PlainUserError(
                    f"cannot start afresh in {out}: the earlier run's {name} cannot be removed "
                    f"(no permission to delete in {folder}, or it is on a read-only file system)",
                    "choose another --out, or continue that run with --resume",
                )


def _check_weights(path: Path, spec: Spec) -> None:
    """--init-from, read and checked here as the program will (runtime/weights.py) before anything
    in OUT changes: a file of another spec, or a damaged one, stops the command with OUT as it was."""
    try:
        weights.load(path, _parameter_shapes(spec))
    except (weights.WeightsError, OSError) as error:
        hint = getattr(error, "hint", None) or "give a weights file that --export-init wrote for a program of this spec"
        raise PlainUserError(f"--init-from: {error}", hint) from None


def _check_data(spec: Spec, out: Path, *, evaluate: bool) -> None:
    """Build the program's examples here (runtime/data.py, with its CONFIG) before a fresh start
    removes the earlier run in OUT: a mistake in the data settings (a misspelt data.path, a broken
    JSONL line) then stops the command with that run intact, not after its checkpoints are gone. A
    SentencePiece model trained here is cached, and the program loads it."""
    config = program_config(spec)
    try:
        data.dataset(config)
        if evaluate and evaluates(spec):
            data.dataset(config, "eval")
    except SystemExit as stop:  # runtime/data.py's "error: ...\nhint: ..."
        message, hint = _runtime_error(str(stop.code))
        said = f"{message}\n(nothing was removed: the earlier run in {out} is as it was)"
        raise PlainUserError(said, hint, status=REFUSED) from None


def _runtime_error(text: str) -> tuple[str, str | None]:
    """(message, hint) of an error a runtime module words as "error: MESSAGE\nhint: HINT"."""
    message, _, hint = text.removeprefix("error: ").partition("\nhint: ")
    return message, hint or None


def _clear_earlier_run(out: Path) -> None:
    """A fresh start: remove what an earlier run wrote into OUT (its program/ is rewritten)."""
    removed = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if removed:
        click.echo(f"note: starting afresh in {out}: removing the earlier run's {', '.join(removed)}", err=True)
    try:
        for name in removed:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
    except OSError as error:  # _check_removable passed, yet the system refused (an immutable file, a mount)
        raise PlainUserError(
            f"cannot start afresh in {out}: removing {error.filename} failed ({error.strerror or error})",
            "remove what is left of the earlier run by hand, or choose another --out",
        ) from None


def _spelt_as_run(run: object, spec: Spec) -> Spec:
    """`spec` (its data paths absolute, `_absolute_data_paths`) with each data path that a run's spec
    names relatively, and that names the same file from here, spelt as the run spells it. A run a
    generated program wrote keeps the spec's paths as given (relative to the directory the program
    ran in); the spec digest its checkpoints record hashes that spelling, which the program compiled
    for --resume must then share, or it would refuse the run's checkpoints as another spec's. `run`:
    the data section of the run's spec.yaml as YAML reads it (not a mapping: nothing to spell)."""

    def spelt(name: str, given: str | None) -> str | None:
        ran = run.get(name) if isinstance(run, dict) else None  # the run's data section, as its spec.yaml has it
        return ran if isinstance(ran, str) and given is not None and _absolute(ran) == given else given

    return _with_data_paths(spec, spelt)


def _absolute_data_paths(spec: Spec) -> Spec:
    """The spec with its relative data paths (data.path, data.eval_path, data.spm_model) made absolute from the
    directory switchc runs in: the run's spec.yaml then names the corpus the run trained on, and a
    --resume from another directory reads the same files (or, where the spec names other ones, is
    refused as a changed setting) rather than whatever lies at that relative path there."""
    return _with_data_paths(spec, lambda _, path: None if path is None else _absolute(path))


def _absolute(path: str) -> str:
    """`path` as an absolute path from the directory switchc runs in (~ left for the program to expand)."""
    return path if os.path.isabs(os.path.expanduser(path)) else os.path.abspath(path)


DATA_PATHS = ("path", "eval_path", "spm_model")  # the data settings that name files


def _with_data_paths(spec: Spec, new: Callable[[str, str | None], str | None]) -> Spec:
    """`spec` with each of its DATA_PATHS replaced by `new(name, value)`; `spec` itself if none changes."""
    data = spec.data
    path, eval_path, spm_model = (new(name, getattr(data, name)) for name in DATA_PATHS)
    if (path, eval_path, spm_model) == (data.path, data.eval_path, data.spm_model):
        return spec
    return dataclasses.replace(
        spec, data=dataclasses.replace(data, path=path, eval_path=eval_path, spm_model=spm_model)
    )


def _hold_run_directory(out: Path) -> None:
    """Take OUT's run lock before anything in OUT changes, and keep it until the program ends (the
    program runs under it, `_run_program`): another run started meanwhile is refused before it
    rewrites OUT/program or removes this run's files. (The check near the start, before compiling,
    only saves a wait when OUT is already in use.)"""
    out.mkdir(parents=True, exist_ok=True)
    refusal = lock_run_directory(out, " (switchc train)")
    if refusal is not None:
        raise PlainUserError(*_runtime_error(refusal), status=REFUSED)


def _run_program(command: list[str], lock_env: dict[str, str], lock_fds: tuple[int, ...]) -> int:
    """Run the training program and return its exit status, staying out of its way when it stops.

    The program runs in its own process group, and switchc passes on the signals that stop it, so
    each reaches it once whoever sent it (a terminal's Ctrl-C, a scheduler signalling only the
    process it started, `timeout -s INT`): SIGTERM (the program checkpoints the step in progress
    and exits 143) and SIGINT (it stops at once, 130). switchc waits for it to finish and exits
    with its status: under torchrun, whose own status after a signal is 1, 128 + the signal's
    number, as for a program the signal killed before it could handle it.

    The program runs under switchc's run lock (`flags.lock_for_child`: `lock_env` names it, and
    `lock_fds` keep it held while the program lives).
    """
    child = subprocess.Popen(command, process_group=0, env={**os.environ, **lock_env}, pass_fds=lock_fds)
    passed: list[int] = []

    def pass_on(signum: int, frame: object) -> None:
        passed.append(signum)
        child.send_signal(signum)

    previous = {number: signal.signal(number, pass_on) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if status < 0:  # killed by a signal it did not handle: the shell's status for that, not 256 - n
        return 128 - status
    if status and passed and TORCHRUN in command:
        return 128 + passed[0]  # the workers stopped as the signal asks; torchrun reports a failure (1)
    return status


COMMANDS = (train,)
