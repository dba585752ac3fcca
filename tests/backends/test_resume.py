"""A checkpoint belongs to the spec it was trained from, in both backends' programs: --resume from a
program compiled from another spec is refused (nothing written) unless --allow-changes, and a
model whose parameters changed shape is refused even then, from the checkpoint's metadata, before
any array is read; --steps past a cosine schedule's end is refused. runtime/flags.py holds the
checks (tests/backends/common/test_flags.py); each backend reads its checkpoint's record and shapes.
A flag both programs refuse alike (--init-from with no file, an unknown --hardware) is tested here too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from switchc.backends.common import flags

from switchc.analysis import builtin_profiles
from tests.backends.programs import (
    SMALL_SWITCH,
    compile_program,
    fake_checkpoint,
    launch,
    records,
    run_program,
    set_args,
    signal_at,
    snapshot,
    xla_cache,
)

FLAGS = ("--eval-every", "0", "--checkpoint-every", "2")


def _needs(backend: str) -> None:
    for module in ("jax", "orbax.checkpoint") if backend == "jax" else ("torch",):
        pytest.importorskip(module)


def _program(tmp_path: Path, backend: str, name: str, **settings: str) -> Path:
    return compile_program(tmp_path / name, *set_args({**SMALL_SWITCH, **settings}), backend=backend)


# @slow (17-20 s each): common/test_flags.py's checkpoint-of-another-spec tests hold check_resume's
# refusals by default, and torch/test_checkpoint.py its damaged-checkpoint error
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_resume_refuses_a_checkpoint_of_another_spec(backend: str, tmp_path: Path) -> None:
    _needs(backend)
    run = tmp_path / "run"
    # The JAX runs share a compilation cache: the second program's spec differs from the first's in
    # its data only, so it loads the same train step instead of compiling it.
    cache = xla_cache(tmp_path)
    # --resume before the run has a checkpoint (it stopped before its first) starts at step 0
    first = run_program(
        _program(tmp_path, backend, "first"), "--steps", "2", *FLAGS, "--out", str(run), "--resume", env=cache
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"--resume: no checkpoint in {run / 'checkpoints'} yet; starting at step 0" in first.stdout

    # another held-out share (and train.steps, which is no part of the run's identity under rsqrt)
    other = _program(tmp_path, backend, "other", **{"data.eval_fraction": "0.1", "train.steps": "50"})
    before = snapshot(run)
    refused = run_program(other, "--steps", "3", *FLAGS, "--out", str(run), "--resume")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert f"checkpoint {run / 'checkpoints' / '2'} was written by a program built from another spec" in refused.stderr
    assert "\n  data.eval_fraction: 0.05 in the checkpoint, 0.1 in this program\n" in refused.stderr
    assert "train.steps" not in refused.stderr
    assert snapshot(run) == before

    resume = ("--steps", "3", *FLAGS, "--out", str(run), "--resume", "--allow-changes")
    allowed = run_program(other, *resume, env=cache)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "note: --allow-changes: checkpoint" in allowed.stderr and "resumed at step 2" in allowed.stdout
    assert [record["step"] for record in records(run)] == [2, 3]

    # other shapes: refused from the newest checkpoint's (step 3's) metadata even with --allow-changes
    fewer = _program(tmp_path, backend, "fewer", **{"moe.num_experts": "4"})
    before = snapshot(run)
    unfit = run_program(fewer, "--steps", "4", *FLAGS, "--out", str(run), "--resume", "--allow-changes")
    assert unfit.returncode == 1 and "Traceback" not in unfit.stderr, unfit.stderr[-3000:]
    router = "encoder/0/router/w: (32, 8) in the checkpoint, (32, 4) in this program"
    assert f"does not fit this program's model:\n  {router}\n" in unfit.stderr
    assert "moe.num_experts: 8 in the checkpoint, 4 in this program" in unfit.stderr
    assert "data.eval_fraction: 0.1 in the checkpoint, 0.05 in this program" in unfit.stderr
    assert snapshot(run) == before

    # a checkpoint damaged after it was committed: one line naming it, and the step to go back to
    meta = run / "checkpoints" / "3" / ("meta/metadata" if backend == "jax" else "meta.json")
    record = meta.read_text()
    meta.write_text("{not json")
    damaged = run_program(other, "--steps", "4", *FLAGS, "--out", str(run), "--resume")
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr, damaged.stderr[-3000:]
    assert f"error: --resume: cannot read checkpoint {run / 'checkpoints' / '3'}: " in damaged.stderr
    assert "hint: the checkpoint is damaged; delete it to continue from step 2" in damaged.stderr
    # ... and so are its arrays, cut short: the record reads, the restore fails, and the error says
    # which array (JAX: tensorstore's cause, not orbax's wrapper; nor its threads' "Event loop is
    # closed" tracebacks)
    meta.write_text(record)
    arrays = (run / "checkpoints" / "3").glob("state/**/d/*" if backend == "jax" else "*.distcp")
    for path in [path for path in arrays if path.is_file()]:
        path.write_bytes(path.read_bytes()[:16])
    cut = run_program(other, "--steps", "4", *FLAGS, "--out", str(run), "--resume")
    assert cut.returncode == 1 and "Traceback" not in cut.stderr, cut.stderr[-3000:]
    error = f"error: --resume: cannot read checkpoint {run / 'checkpoints' / '3'}: "
    assert cut.stderr.count("\n") == 2 and cut.stderr.startswith(error), cut.stderr
    if backend == "jax":
        assert 'Error reading "' in cut.stderr and "TensorStore" not in cut.stderr, cut.stderr
    assert cut.stderr.endswith("hint: the checkpoint is damaged; delete it to continue from step 2\n")


# jax @slow (20 s): the JAX optimizer state no longer depends on clipping at all (optim.py), and
# test_training.py's chained-clipping test restores the earlier layout in-process
@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_allow_changes_turns_clipping_on_and_refuses_another_optimizers_state(backend: str, tmp_path: Path) -> None:
    """--allow-changes continues a run with other training settings: clipping turned on restores the
    same optimizer state (JAX's optax chain kept no slot for it, and orbax refused the checkpoint,
    which the error then called damaged: 'delete it'). Another optimizer's state cannot be
    restored: refused from the checkpoint's record, before anything is read, with the way on."""
    _needs(backend)
    run = tmp_path / "run"
    first = run_program(_program(tmp_path, backend, "adam"), "--steps", "2", *FLAGS, "--out", str(run))
    assert first.returncode == 0, first.stderr[-3000:]
    clipped = _program(tmp_path, backend, "clipped", **{"train.optimizer.clip_grad_norm": "1.0"})
    resumed = run_program(clipped, "--steps", "3", *FLAGS, "--out", str(run), "--resume", "--allow-changes")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train.optimizer.clip_grad_norm: 0.0 in the checkpoint, 1.0 in this program" in resumed.stderr
    assert [record["step"] for record in records(run)] == [2, 3]

    adafactor = _program(tmp_path, backend, "adafactor", **{"train.optimizer.name": "adafactor"})
    before = snapshot(run)
    refused = run_program(adafactor, "--steps", "4", *FLAGS, "--out", str(run), "--resume", "--allow-changes")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    said = f"error: --resume --allow-changes: checkpoint {run / 'checkpoints' / '3'} holds the optimizer state of adam"
    assert said in refused.stderr and "train.optimizer.name: adam in the checkpoint, adafactor in" in refused.stderr
    assert "--export-init FILE --resume --out RUN" in refused.stderr and "damaged" not in refused.stderr
    assert snapshot(run) == before


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_steps_past_the_end_of_a_cosine_schedule_are_refused(backend: str, tmp_path: Path) -> None:
    _needs(backend)
    cosine_settings = {"train.optimizer.schedule": "cosine", "train.steps": "5", "train.optimizer.warmup_steps": "1"}
    cosine = _program(tmp_path, backend, "cosine", **cosine_settings)
    result = run_program(cosine, "--steps", "6")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: --steps 6 runs past the end of the cosine schedule" in result.stderr


# torch is @slow (9 s): its loop makes the same choice in one line (init_from only while no checkpoint)
@pytest.mark.parametrize("backend", ["jax", pytest.param("torch", marks=pytest.mark.slow)])
def test_init_from_starts_a_run_that_resume_then_continues(backend: str, tmp_path: Path) -> None:
    """`--resume --init-from FILE` is one command for a preemptible job: with no checkpoint yet it
    starts from FILE's weights, and once there is one it continues from the checkpoint instead."""
    _needs(backend)
    pytest.importorskip("safetensors")
    program, run, weights = _program(tmp_path, backend, "program"), tmp_path / "run", tmp_path / "init.safetensors"
    exported = run_program(program, "--export-init", str(weights), "--seed", "7")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert f"wrote the step-0 weights (seed 7) to {weights}" in exported.stdout

    cache = xla_cache(tmp_path)
    command = (*FLAGS, "--out", str(run), "--resume", "--init-from", str(weights))
    started = run_program(program, "--steps", "2", *command, env=cache)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "starting at step 0" in started.stdout and f"initialised from {weights}" in started.stdout

    continued = run_program(program, "--steps", "3", *command, env=cache)
    assert continued.returncode == 0, continued.stderr[-3000:]
    ignored = f"resumed at step 2 from {run / 'checkpoints'} (not from --init-from {weights}: the checkpoint has"
    assert ignored in continued.stdout
    assert [record["step"] for record in records(run)] == [2, 3]


# torch on one process is @slow (7 s): on two it takes the same path, and says the refusal once
@pytest.mark.parametrize(
    ("backend", "processes"), [("jax", 1), pytest.param("torch", 1, marks=pytest.mark.slow), ("torch", 2)]
)
def test_another_backends_run_directory_is_left_alone(backend: str, processes: int, tmp_path: Path) -> None:
    """The other program's checkpoints are neither skipped nor overwritten, with or without --resume.
    Under torchrun every rank finds the same and stops; rank 0 says it once."""
    _needs(backend)
    mesh = {"mesh.axes": "{expert: 2}"} if processes > 1 else {}
    program, run = _program(tmp_path, backend, "program", **mesh), tmp_path / "run"
    other = "torch" if backend == "jax" else "jax"
    step = fake_checkpoint(run / "checkpoints", 3, flags.CHECKPOINT_MARKERS[other])
    (run / "metrics.jsonl").write_text('{"step": 3}\n')
    before = snapshot(run)
    for resume in ((), ("--resume",)):
        refused = run_program(program, "--steps", "4", *FLAGS, "--out", str(run), *resume, processes=processes)
        assert refused.returncode == 1 and "loop.py" not in refused.stderr, refused.stderr[-3000:]
        assert refused.stderr.count(f"error: {step} is a {flags.BACKEND_NAMES[other]} checkpoint") == 1
        assert "error: rank" not in refused.stderr, refused.stderr[-3000:]
        assert snapshot(run) == before


# torch on one process is @slow (10 s): torch/test_training.py's stop-signal tests run it by default
@pytest.mark.parametrize(
    ("backend", "processes"), [("jax", 1), pytest.param("torch", 1, marks=pytest.mark.slow), ("torch", 2)]
)
def test_sigterm_checkpoints_the_step_and_stops(backend: str, processes: int, tmp_path: Path) -> None:
    """A scheduler's SIGTERM: the step in progress is finished and checkpointed (no scheduled save
    here), the program says so and exits with 143, and --resume continues from that step. Under
    torchrun (SIGTERM to torchrun, which passes it on to its workers) the ranks agree on the step.

    While it runs, a second run into its directory is refused, naming the first (its lock)."""
    _needs(backend)
    mesh = {"mesh.axes": "{expert: 2}"} if processes > 1 else {}
    program, run = _program(tmp_path, backend, "program", **mesh), tmp_path / "run"
    flags = ("--steps", "100000", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "1000")
    command = launch(program, *flags, "--out", str(run), processes=processes)
    cache = xla_cache(tmp_path)  # the resumed run loads the compiled step

    def second_run() -> None:
        refused = run_program(program, "--steps", "3", "--out", str(run), "--resume", processes=processes)
        assert refused.returncode != 0, refused.stdout[-2000:]
        assert f"error: another run is using {run} (pid " in refused.stderr, refused.stderr[-3000:]
        assert refused.stderr.count("another run is using") == 1, refused.stderr[-3000:]  # said once
        assert "loop.py" not in refused.stderr, refused.stderr[-3000:]  # no worker traceback (torchrun has its own)
        assert "error: rank" not in refused.stderr, refused.stderr[-3000:]  # no rank left waiting on rank 0

    status, err = signal_at(command, 2, signal.SIGTERM, cwd=program, env=cache, meanwhile=second_run)
    stopped = re.search(r"SIGTERM: training stopped after step (\d+) \(checkpoint (\d+) saved; the same command", err)
    assert stopped is not None, err[-3000:]
    step = int(stopped.group(1))
    assert step >= 2 and stopped.group(2) == str(step)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [str(step)]
    assert records(run)[-1]["step"] == step  # the stop step's record was written
    if processes > 1:  # torchrun's own exit status and message (its SignalException) follow
        return
    assert status == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    resumed = run_program(program, "--steps", str(step + 1), *FLAGS, "--out", str(run), "--resume", env=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at step {step}" in resumed.stdout


EVALUATING = ("--eval-every", "1", "--eval-batches", "2", "--checkpoint-every", "1000")


def _signal_when_called(module: str, name: str, number: int) -> str:
    """A launcher prelude: the first call of `name` (a function, or Class.method) of the program's
    `module` sends this process signal `number`, then goes on as it would."""
    return f"""import importlib.abc, importlib.machinery, os
class _SignalWhenCalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != {module!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            *owners, attribute = {name!r}.split(".")
            owner = module
            for part in owners:
                owner = getattr(owner, part)
            called = getattr(owner, attribute)
            def signalled(*args, **kwargs):
                setattr(owner, attribute, called)
                os.kill(os.getpid(), {int(number)})
                return called(*args, **kwargs)
            setattr(owner, attribute, signalled)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _SignalWhenCalled())
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize(
    ("module", "name", "every", "said"),
    [
        ("runtime.metrics", "Progress.advance", EVALUATING, "not evaluated; checkpoint 1 saved"),
        ("runtime.loop", "_evaluate", EVALUATING, "checkpoint 1 saved"),
        (
            "runtime.checkpoint",
            "Checkpoints.save",
            ("--eval-every", "0", "--checkpoint-every", "1"),
            "checkpoint 1 saved",
        ),
    ],
    ids=["at-the-step", "in-its-eval", "in-its-save"],
)
def test_sigterm_during_a_steps_evaluation_or_save_stops_after_that_step(
    backend: str, module: str, name: str, every: tuple[str, ...], said: str, tmp_path: Path
) -> None:
    """SIGTERM finishes the step in progress, logs and checkpoints it, and stops. One that came
    during the step's evaluation or save was seen only after the next step, which was trained and
    evaluated in full; and a step that a SIGTERM stops is not evaluated (its evaluation, 150
    batches, came between the signal and the stop)."""
    _needs(backend)
    program, run = _program(tmp_path, backend, "program"), tmp_path / "run"
    prelude = _signal_when_called(module, name, signal.SIGTERM)
    result = run_program(program, "--steps", "3", "--log-every", "1", *every, "--out", str(run), prelude=prelude)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert f"SIGTERM: training stopped after step 1 ({said}; the same command with --resume" in result.stderr
    evaluated = [(1, "train"), (1, "eval")] if name == "_evaluate" else [(1, "train")]
    assert [(entry["step"], entry["split"]) for entry in records(run)] == evaluated
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["1"]


# torch is @slow (10 s): torch/test_checkpoint.py covers a save that Ctrl-C cuts by default
@pytest.mark.parametrize("backend", ["jax", pytest.param("torch", marks=pytest.mark.slow)])
def test_ctrl_c_names_the_checkpoint_on_disk(backend: str, tmp_path: Path) -> None:
    """Ctrl-C while a save is in flight (one every step): the save is committed, the message names
    it (orbax's in-memory list of steps missed it; --resume then went on from a later step than it
    said), and that is all it prints. A Ctrl-C in orbax's wait for a save logged a traceback from
    the thread it was joining; one in DCP's writer failed the save with a traceback and status 1."""
    _needs(backend)
    program, run = _program(tmp_path, backend, "program"), tmp_path / "run"
    flags = ("--steps", "100000", "--log-every", "1", "--eval-every", "0", "--checkpoint-every", "1", "--keep", "50")
    status, err = signal_at(launch(program, *flags, "--out", str(run)), 6, signal.SIGINT, cwd=program)
    assert status == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err and "ERROR:" not in err, err[-3000:]
    stopped = re.search(
        r"SIGINT: training stopped after step \d+ \((?:checkpoint (\d+) saved|the latest checkpoint is step (\d+))", err
    )
    assert stopped is not None, err[-3000:]
    on_disk = max(int(path.name) for path in (run / "checkpoints").iterdir() if path.name.isdigit())
    assert int(stopped.group(1) or stopped.group(2)) == on_disk


def _signal_in_an_import(module: str, number: int, times: int = 1) -> str:
    """A launcher prelude: the first lookup of `module` sends this process signal `number` (`times`
    times), then says whether Python went on with the import (an unheld Ctrl-C raises at once)."""
    return f"""import importlib.abc, os
class _SignalInAnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            for _ in range({times}):
                os.kill(os.getpid(), {int(number)})
            print("the import went on", file=sys.stderr, flush=True)
        return None
sys.meta_path.insert(0, _SignalInAnImport())
"""


@pytest.mark.parametrize(
    ("backend", "stop", "module"),
    [
        ("torch", signal.SIGINT, "runtime.flags"),  # train.py's first import, before catch_ctrl_c
        ("jax", signal.SIGINT, "numpy"),  # runtime.loop's imports, before the flags are read
        ("torch", signal.SIGINT, "numpy"),
        ("jax", signal.SIGINT, "model"),  # model.py's, which imports the framework, in --out's tidy block
        ("jax", signal.SIGTERM, "model"),
    ],
)
def test_a_signal_while_the_program_imports_waits_for_the_import(
    backend: str, stop: signal.Signals, module: str, tmp_path: Path
) -> None:
    """Raised inside the import, Ctrl-C made jax's fail with two ImportError tracebacks (numpy's C
    extension cut short), or abort (134) or crash (139) in native code, or was swallowed and the
    run trained to its end. The imports now hold Ctrl-C and SIGTERM: one line, 130 or 143, and the
    run directory the program made is gone. A Ctrl-C while train.py imported runtime.flags, before
    catch_ctrl_c, was a KeyboardInterrupt traceback (from every rank of a job)."""
    _needs(backend)
    program = _program(tmp_path, backend, "program")
    run = tmp_path / "new" / "run"
    result = run_program(program, "--steps", "2", "--out", str(run), prelude=_signal_in_an_import(module, stop))
    assert result.returncode == 128 + stop, result.stderr[-3000:]
    said = f"the import went on\n\n{stop.name}: stopped before training began (no step was trained).\n"
    assert result.stderr == said, result.stderr[-3000:]
    assert not (tmp_path / "new").exists()


def test_three_ctrl_cs_while_the_program_imports_leave_at_once_and_tidy(tmp_path: Path) -> None:
    """The third Ctrl-C ends a program at once, an import too; before training began it removes
    what the run made (it left --out's folders) and says no step was trained (it spoke of a save)."""
    _needs("jax")
    thrice = _signal_in_an_import("model", signal.SIGINT, times=3)
    run = tmp_path / "new" / "run"
    result = run_program(_program(tmp_path, "jax", "program"), "--steps", "2", "--out", str(run), prelude=thrice)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    said = "\nSIGINT 3 times: leaving now, without waiting for the work in progress (no step was trained).\n"
    assert result.stderr == said, result.stderr[-3000:]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_the_jax_step_compiles_is_one_line_and_leaves_no_run_directory(
    stop: signal.Signals, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM during the first compile (seconds of XLA, before the loop handles signals):
    one line, status 130 or 143, and the run directory the program made is gone. Before, Ctrl-C gave
    a KeyboardInterrupt traceback out of compile_and_load, and then the interpreter crashed under
    XLA's still-running threads (status 139); SIGTERM killed the program where it stood, leaving
    the run directory with its .lock and an empty checkpoints/."""
    _needs("jax")
    program = compile_program(tmp_path / "program")  # switch-tiny: its optimized compile takes seconds
    command = launch(program, "--steps", "100", "--eval-every", "0", "--out", str(tmp_path / "run"))
    env = {**os.environ, "XLA_FLAGS": "", "JAX_ENABLE_COMPILATION_CACHE": "false"}  # a real compile to interrupt
    with subprocess.Popen(
        command, cwd=program, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as job:
        assert job.stdout is not None
        header = job.stdout.readline()  # printed just before the train step compiles
        assert header.startswith("mesh "), header
        time.sleep(1)
        job.send_signal(stop)
        out, err = job.communicate(timeout=120)
    assert job.returncode == 128 + stop, err[-3000:]
    assert err.strip() == f"{stop.name}: stopped before training began (no step was trained).", err[-3000:]
    assert "train step" not in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_an_unknown_hardware_profile_is_a_usage_error_naming_the_profiles(backend: str, tmp_path: Path) -> None:
    _needs(backend)
    result = run_program(_program(tmp_path, backend, "program"), "--steps", "1", "--hardware", "v100")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "argument --hardware: invalid choice: 'v100' (choose from " in result.stderr
    listed = result.stderr.split("(choose from ", 1)[1].split(")", 1)[0]  # quoted or not, by Python version
    assert [name.strip("' ") for name in listed.split(",")] == sorted(builtin_profiles())


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_an_init_from_file_that_is_not_there_is_one_line(backend: str, tmp_path: Path) -> None:
    _needs(backend)
    result = run_program(_program(tmp_path, backend, "program"), "--steps", "1", "--init-from", "missing.safetensors")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]  # found as flags parse
    assert "error: --init-from: no weights file at missing.safetensors" in result.stderr


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_backends_own_refused_flag_leaves_no_run_directory(backend: str, tmp_path: Path) -> None:
    """--timeout is the backend's flag, checked after the shared ones: the run directory the shared
    checks used to create at once was left behind by the refusal."""
    _needs(backend)
    program = _program(tmp_path, backend, "program")
    distributed = ["--distributed"] if backend == "jax" else []  # the JAX program's --timeout needs it
    result = run_program(program, "--steps", "1", "--out", "new/run", *distributed, "--timeout", "0")
    assert result.returncode == 2 and "--timeout must be > 0" in result.stderr, result.stderr[-3000:]
    assert not (program / "new").exists()


@pytest.mark.parametrize(
    ("backend", "flag", "said"),
    [
        ("jax", "--device=cpu", "--device is the PyTorch program's flag; this program runs on the devices jax finds"),
        ("torch", "--devices", "--devices is the JAX program's flag; this program runs one process per device"),
    ],
)
def test_the_other_programs_device_flag_says_what_this_one_takes(
    backend: str, flag: str, said: str, tmp_path: Path
) -> None:
    """It was argparse's "unrecognized arguments", with no word on how this program picks devices."""
    _needs(backend)
    result = run_program(_program(tmp_path, backend, "program"), "--steps", "1", flag, "4")
    assert result.returncode == 2 and said in result.stderr, result.stderr[-3000:]
