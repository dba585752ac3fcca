"""`switchc train`: compile and run in one command, on the built-in default spec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from switchc.backends.common import weights
from switchc.backends.common.flags import CHECKPOINT_MARKERS, META_FILES

from switchc.cli import main
from switchc.cli.train_commands import _parameter_shapes, changed_settings
from switchc.spec import load_spec
from switchc.spec.emit import spec_digest, to_yaml
from tests.backends.programs import another_run_holding, compile_program, fake_checkpoint, run_program, xla_cache

pytest.importorskip("jax")


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`switchc train ARGS` as a user runs it (the program optimized, as by default: no test
    XLA_FLAGS). Runs of one test share a persistent XLA compilation cache: a resume whose spec
    differs only in train.steps compiles the same train step, which it then loads."""
    env = {**os.environ, "XLA_FLAGS": "", **xla_cache(tmp_path)}
    command = [sys.executable, "-m", "switchc", "train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_train_runs_the_default_spec_and_logs_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _train(tmp_path, "--steps", "4", "--out", str(out), "--set", "train.batch_size=8", "--eval-every", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "program" / "train.py").is_file() and (out / "program" / "spec.yaml").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(4, "train"), (4, "eval")]  # eval at the end
    assert 0 < records[0]["cross_entropy"] < 10
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # --steps is the spec's train.steps: the schedule and the default intervals (a tenth: every step) follow it
    assert "  steps: 4\n" in (out / "program" / "spec.yaml").read_text()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3", "4"]  # the newest 3 kept

    # the program's own flags pass through: a record and a checkpoint every step, the newest 2 kept
    passed = ["--eval-every", "0", "--log-every", "1", "--checkpoint-every", "1", "--keep", "2", "--hardware", "CPU"]
    resumed = _train(tmp_path, "--steps", "6", "--out", str(out), "--set", "train.batch_size=8", "--resume", *passed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--log-every 1 --checkpoint-every 1 --keep 2 --hardware cpu" in resumed.stderr  # the command it runs
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(4, "train"), (4, "eval"), (5, "train"), (6, "train")]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["5", "6"]

    # --resume with other settings would mix two runs: refused before anything in OUT changes
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    new_rate = ["--set", "train.batch_size=8", "--set", "train.optimizer.learning_rate=0.0001"]
    changed = _train(tmp_path, "--steps", "8", "--out", str(out), *new_rate, "--resume")
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "train.optimizer.learning_rate: " in changed.stderr and ", 0.0001 now" in changed.stderr
    assert f"switchc train {out / 'program' / 'spec.yaml'} --out {out} --resume" in changed.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


@pytest.mark.slow
def test_train_resumes_with_the_runs_own_spec_or_allowed_changes(tmp_path: Path) -> None:
    """The ways on that a refused --resume names: the run's own spec.yaml, or --allow-changes."""
    out = tmp_path / "run"
    first = _train(tmp_path, "--steps", "6", "--out", str(out), "--set", "train.batch_size=8", "--eval-every", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    new_rate = ["--set", "train.batch_size=8", "--set", "train.optimizer.learning_rate=0.0001"]

    # the hint's way on: the run's own resolved spec, with more steps
    own = _train(
        tmp_path, str(out / "program" / "spec.yaml"), "--steps", "7", "--out", str(out), "--resume", "--eval-every", "0"
    )
    assert own.returncode == 0, own.stderr[-3000:]
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 7

    # ... or the new settings, said out loud (a lower learning rate after a NaN stop)
    allowed = _train(
        tmp_path, "--steps", "8", "--out", str(out), *new_rate, "--eval-every", "0", "--resume", "--allow-changes"
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "continues with other settings" in allowed.stderr and ", 0.0001 now" in allowed.stderr
    assert "learning_rate: 0.0001" in (out / "program" / "spec.yaml").read_text()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 8


def _fake_run(out: Path, checkpoint: int) -> Path:
    """A run directory switchc train wrote for switch-tiny (train.steps 6, Adam), at `checkpoint`,
    whose program fails if it is ever run."""
    program = out / "program"
    program.mkdir(parents=True)
    (program / "train.py").write_text("raise SystemExit('not run')\n")
    (program / "spec.yaml").write_text(to_yaml(load_spec("switch-tiny", ["train.steps=6"])))
    fake_checkpoint(out / "checkpoints", checkpoint, CHECKPOINT_MARKERS["jax"])
    return out


def test_allow_changes_refuses_another_optimizer_state_before_the_program_is_rewritten(tmp_path: Path) -> None:
    """The way on (export the weights with the run's own program) needs that program: switchc train
    refuses before it replaces it, where the program would refuse only once replaced."""
    out = _fake_run(tmp_path / "run", checkpoint=2)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    changed = ["--set", "train.optimizer.name=adafactor", "--set", "train.optimizer.beta1=0.9"]
    result = CliRunner().invoke(
        main, ["train", "--steps", "6", "--out", str(out), "--resume", "--allow-changes", *changed]
    )
    assert result.exit_code == 2, result.output
    said = f"{out}'s checkpoints hold the optimizer state of adam; the optimizer of these settings (adafactor with "
    assert said in result.stderr and "momentum, without weight decay) keeps other state" in result.stderr
    assert f"--export-init {out}-weights.safetensors --resume --out {out}, then switchc train" in result.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_a_resume_with_no_steps_left_leaves_the_run_and_its_program_alone(tmp_path: Path) -> None:
    """Before, the program was rewritten with the smaller train.steps, so that a later `train.py
    --resume` (its default --steps) trained nothing either."""
    out = _fake_run(tmp_path / "run", checkpoint=6)
    program = out / "program"
    before = {path: path.read_bytes() for path in program.iterdir()}
    result = CliRunner().invoke(main, ["train", "--steps", "3", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"note: {out} is at step 6 already (its latest checkpoint) and train.steps is 3: nothing to train" in (
        result.stderr
    )
    assert {path: path.read_bytes() for path in program.iterdir()} == before


def test_train_refuses_a_foreign_run_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "switchc", "train", "--steps", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "is not a switchc run directory" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_fresh_start_never_clears_what_no_run_wrote(tmp_path: Path) -> None:
    """A folder named checkpoints/ of another tool (its files, not numbered steps) made the
    directory look like a run's, and a fresh start deleted it whole. Refused now, naming what it
    holds; nothing is left behind (the lock file this command made)."""
    out = tmp_path / "run"
    (out / "checkpoints" / "best").mkdir(parents=True)
    (out / "checkpoints" / "epoch=3.ckpt").write_text("precious")
    (out / "checkpoints" / "7").mkdir()  # a step's name is a run's
    (out / "checkpoints" / "7.tmp").mkdir()  # and so is a save in flight, PyTorch's
    (out / "checkpoints" / "8.orbax-checkpoint-tmp").mkdir()  # or orbax's (0.12; 0.11 added -<n>)
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--steps", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert (
        f"error: cannot start afresh in {out}: it holds what no run wrote (checkpoints/best/, "
        "checkpoints/epoch=3.ckpt), which clearing the earlier run would lose"
    ) in result.stderr
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before


def test_resume_refuses_a_run_of_the_other_backend(tmp_path: Path) -> None:
    """Forgetting --backend torch when resuming a PyTorch run: refused, naming the flag, nothing changed."""
    out = tmp_path / "run"
    compiled = CliRunner().invoke(main, ["compile", "switch-tiny", "--backend", "torch", "-o", str(out / "program")])
    assert compiled.exit_code == 0, compiled.output
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(out), "--resume", "--steps", "2"])
    assert result.exit_code == 2
    assert "is a run of the torch program; this command would continue it with jax" in result.stderr
    assert "hint: add --backend torch" in result.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_a_fresh_start_that_could_not_clear_the_earlier_run_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoints/ switchc may not delete in (read-only, or another user's): before, the metrics
    went and the checkpoints stayed, and the hint then pointed at resuming that run."""
    out = tmp_path / "run"
    compiled = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(out / "program")])
    assert compiled.exit_code == 0, compiled.output
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "checkpoints" / "1").mkdir(parents=True)
    (out / "checkpoints" / "1" / "meta.json").write_text("{}")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    access = os.access  # as a read-only mount answers (root passes a chmod, so the test cannot use one)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != out / "checkpoints" and access(path, mode))
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--set", "moe.num_experts=4", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"cannot start afresh in {out}: the earlier run's checkpoints cannot be removed" in result.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.name != ".lock"} == before


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (["--set", "data.source=text", "--set", "data.path=corpsu"], "corpsu does not exist"),  # a misspelt folder
        (["--set", "data.source=jsonl", "--set", "data.path=broken.jsonl"], "broken.jsonl:2: not valid JSON"),
    ],
    ids=["missing-path", "broken-jsonl"],
)
def test_a_fresh_start_with_bad_data_keeps_the_earlier_run(tmp_path: Path, settings: list[str], said: str) -> None:
    """The data settings are checked before the earlier run in OUT is removed: a typo in data.path
    used to delete that run's checkpoints and metrics, and only then did the program fail on it."""
    out = tmp_path / "run"
    compiled = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(out / "program")])
    assert compiled.exit_code == 0, compiled.output
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    fake_checkpoint(out / "checkpoints", 1, CHECKPOINT_MARKERS["jax"])
    (tmp_path / "broken.jsonl").write_text('{"text": "a line"}\n{"text": "no end\n')
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    command = ["train", "switch-tiny", *settings, "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = CliRunner().invoke(main, command)
    assert result.exit_code == 1, result.output  # the program refuses it with 1
    assert said in result.stderr and f"nothing was removed: the earlier run in {out} is as it was" in result.stderr
    assert "Traceback" not in result.stderr and "starting afresh" not in result.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.name != ".lock"} == before


def test_init_from_weights_of_another_model_is_refused_before_anything(tmp_path: Path) -> None:
    """--init-from is read and checked against the model before OUT changes: the program used to
    refuse such a file only after the earlier run there had been removed."""
    out = tmp_path / "run"
    compiled = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(out / "program")])
    assert compiled.exit_code == 0, compiled.output
    fake_checkpoint(out / "checkpoints", 1, CHECKPOINT_MARKERS["jax"])
    four = _parameter_shapes(load_spec("switch-tiny", ["moe.num_experts=4"]))
    weights.save(tmp_path / "four.safetensors", {name: np.zeros(shape) for name, shape in four.items()}, four)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "four.safetensors").read_bytes()[:5000])
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    for name, said in (
        ("four", "shape mismatch(es): encoder/1/router/w is [128, 4], the model wants [128, 8]"),
        ("cut", "not a safetensors"),
    ):
        result = CliRunner().invoke(
            main, ["train", "--out", str(out), "--init-from", str(tmp_path / f"{name}.safetensors")]
        )
        assert result.exit_code == 2, result.output
        assert "error: --init-from: " in result.stderr and said in result.stderr, result.stderr
        assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.name != ".lock"} == before


def test_a_run_directory_in_use_is_left_alone(tmp_path: Path) -> None:
    """Another run holds OUT's lock (a program started by hand, or another switchc train): a fresh
    start would delete its metrics and checkpoints, so nothing is touched and the holder is named."""
    out = tmp_path / "run"
    compiled = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(out / "program")])
    assert compiled.exit_code == 0, compiled.output
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    with another_run_holding(out) as pid:
        before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
        result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(out), "--steps", "2"])
        assert result.exit_code == 1  # as the program refuses a run directory in use
        assert f"error: another run is using {out} (pid {pid} on " in result.stderr
        assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_a_second_train_is_refused_while_the_first_writes_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `switchc train` on one OUT started together: the first holds OUT's lock from before it
    rewrites the program and clears the earlier run until its program ends, and the program runs
    under it, so the second is refused before it deletes anything of the first's."""
    from switchc.backends.common import flags

    from switchc.cli import train_commands

    out = tmp_path / "run"
    second: list[subprocess.CompletedProcess[str]] = []
    holders: list[str | None] = []
    write_program = train_commands.write_program

    def write_while_another_starts(files: dict[str, str], where: Path, **options: str) -> None:
        command = [sys.executable, "-m", "switchc", "train", "--steps", "1", "--out", str(out)]
        second.append(subprocess.run(command, capture_output=True, text=True, timeout=120))
        write_program(files, where, **options)

    def run_as_the_program_would(command: list[str], env: dict[str, str], fds: tuple[int, ...]) -> int:
        take = "import os, sys; from pathlib import Path; from switchc.backends.common import flags; "
        take += "print(flags.lock_run_directory(Path(sys.argv[1])), os.getpid())"
        program = subprocess.run(
            [sys.executable, "-c", take, str(out)],
            env={**os.environ, **env},
            pass_fds=fds,
            capture_output=True,
            text=True,
        )
        holders.extend([flags.run_directory_user(out), program.stdout.strip()])
        return 0

    monkeypatch.setattr(train_commands, "write_program", write_while_another_starts)
    monkeypatch.setattr(train_commands, "_run_program", run_as_the_program_would)
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(out), "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert second[0].returncode == 1, second[0].stderr
    assert f"error: another run is using {out} (pid {os.getpid()} on " in second[0].stderr
    assert "(switchc train))" in second[0].stderr
    held_by_switchc, program_said = holders
    program_refusal, program_pid = program_said.split()
    assert held_by_switchc is not None and held_by_switchc.startswith(f"pid {os.getpid()} on ")
    assert program_refusal == "None"  # the program goes on under switchc's lock
    # and says so in the lock file: killed, switchc's pid would name no process, while its program trains on
    assert held_by_switchc.endswith(f" (switchc train); its program: pid {program_pid}")
    assert flags.run_directory_user(out) is None  # let go once the program has ended


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            "model.d_model=64",
            "checkpoints do not fit the model these settings make:\n  shared/embedding: (512, 128) in",
        ),
        ("train.seed=7", "was trained with train.seed 0, not 7"),
    ],
)
def test_allow_changes_refuses_what_cannot_continue_before_touching_the_run(
    tmp_path: Path, change: str, said: str
) -> None:
    """Other shapes or another seed: the program would refuse to resume too, but only after the
    run's own program and spec.yaml had been replaced, leaving the right command refused as well."""
    out = tmp_path / "run"
    compiled = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(out / "program")])
    assert compiled.exit_code == 0, compiled.output
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    command = ["train", "switch-tiny", "--out", str(out), "--resume", "--allow-changes", "--set", change]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and said in result.stderr, result.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(("backend", "said"), [("jax", "needs 2 devices"), ("torch", "needs 2 processes")])
def test_devices_the_mesh_cannot_run_on_are_refused_before_anything(tmp_path: Path, backend: str, said: str) -> None:
    out = tmp_path / "run"
    command = ["train", "--backend", backend, "--devices", "1", "--set", "mesh.axes={expert: 2}", "--out", str(out)]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and f"--devices 1: the mesh expert=2 {said}" in result.stderr
    if backend == "torch":  # a mesh of no axes is one process
        command[command.index("mesh.axes={expert: 2}")] = "mesh.axes={}"
        command[command.index("--devices") + 1] = "2"
        result = CliRunner().invoke(main, command)
        assert "--devices 2: the mesh of no axes needs 1 process, one per device" in result.stderr
    assert "drop --devices" in result.stderr and not out.exists()


def test_ctrl_c_over_torchrun_stops_with_130_and_no_launcher_traceback(tmp_path: Path) -> None:
    """switchc train --backend torch on 2 processes, Ctrl-C: the workers say where they stopped,
    and torchrun's SignalException traceback no longer follows (nor its OMP_NUM_THREADS banner)."""
    pytest.importorskip("torch")
    from tests.backends.programs import signal_at

    out = tmp_path / "run"
    command = [sys.executable, "-m", "switchc", "train", "--backend", "torch", "--set", "mesh.axes={expert: 2}"]
    command += ["--steps", "100000", "--log-every", "1", "--eval-every", "0", "--out", str(out)]
    status, err = signal_at(command, 2, signal.SIGINT)
    assert status == 128 + signal.SIGINT, err[-3000:]
    assert f"running torchrun --standalone --nproc-per-node 2 {out / 'program' / 'train.py'} --out {out}" in err
    assert "SIGINT: training stopped after step" in err, err[-3000:]
    assert "Traceback" not in err and "OMP_NUM_THREADS" not in err, err[-3000:]


def test_a_program_a_signal_killed_exits_with_the_shells_status() -> None:
    """A program that had not installed its handler yet (the JAX program while it compiles) dies of
    the signal: switchc exits 128 + its number, as a shell would, not 256 - number."""
    from switchc.cli.train_commands import _run_program

    killed = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert _run_program([sys.executable, "-c", killed], {}, ()) == 128 + signal.SIGTERM


def test_a_relative_data_path_is_recorded_from_where_switchc_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.path relative to the working directory: the run's spec.yaml names the absolute corpus,
    so a --resume from another directory cannot read another corpus at the same relative path."""
    from switchc.cli import train_commands

    started: list[list[str]] = []
    monkeypatch.setattr(train_commands, "_run_program", lambda command, env, fds: started.append(command) or 0)
    for where in ("a", "b"):
        (tmp_path / where / "corpus").mkdir(parents=True)
        (tmp_path / where / "corpus" / "play.txt").write_text("To be, or not to be.\n")
    out = tmp_path / "run"
    text = ["--set", "data.source=text", "--set", "data.path=corpus", "--set", "data.tokenizer=byte"]
    monkeypatch.chdir(tmp_path / "a")
    result = CliRunner().invoke(
        main, ["train", "switch-tiny", "--out", str(out), *text, "--set", "data.eval_path=corpus"]
    )
    assert result.exit_code == 0, result.stderr
    written = (out / "program" / "spec.yaml").read_text()
    assert (
        f"  path: {tmp_path / 'a' / 'corpus'}\n" in written and f"  eval_path: {tmp_path / 'a' / 'corpus'}\n" in written
    )
    assert "  eval_fraction: 0.0\n" in written  # the eval text is eval_path's: nothing of data.path held out
    text += ["--set", "data.eval_path=corpus"]

    monkeypatch.chdir(tmp_path / "b")
    resumed = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(out), "--resume", *text])
    assert resumed.exit_code == 2 and len(started) == 1
    assert f"data.path: {tmp_path / 'a' / 'corpus'} in the run, {tmp_path / 'b' / 'corpus'} now" in resumed.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--hardware", "h1000"], "error: unknown hardware profile 'h1000'\nhint: did you mean 'h100'?"),
        (["--hardware", "zzz"], "hint: profiles: a100, cpu, h100, h200, tpuv3\n"),  # no --hardware-file here
        (["--init-from", "missing.safetensors"], "File 'missing.safetensors' does not exist"),
        (["--keep", "0"], "Invalid value for '--keep': 0 is not in the range x>=1"),
        (
            ["--set", "data.eval_fraction=0", "--eval-every", "5"],
            "--eval-every 5: the spec has no text to evaluate on (data.eval_fraction is 0 and no data.eval_path)",
        ),
    ],
)
def test_program_flags_are_checked_before_anything(tmp_path: Path, flags: list[str], said: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(out), *flags])
    assert result.exit_code == 2 and said in result.stderr, result.stderr
    assert not out.exists()


def test_a_spec_the_backend_cannot_compile_leaves_no_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = ["train", "--backend", "torch", "--set", "mesh.rules={embed: data}", "--out", str(out)]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and "the PyTorch backend cannot split the embed axis" in result.stderr
    assert not out.exists()


def test_a_fresh_run_that_fails_before_its_first_step_leaves_no_run_directory(tmp_path: Path) -> None:
    """A data path that is not there, on a new OUT: the program fails as it starts (switchc reads
    the data first only when OUT holds a run to keep), and switchc removes the program/ and the
    lock file it wrote there, and OUT and its parent, which it made."""
    out = tmp_path / "runs" / "run"
    result = _train(
        tmp_path, "switch-tiny", "--set", "data.source=text", "--set", "data.path=/not/there", "--out", str(out)
    )
    assert result.returncode == 1 and "data path /not/there does not exist" in result.stderr, result.stderr[-3000:]
    assert "note: nothing was trained; removed what this command wrote in" in result.stderr
    assert not out.parent.exists()


def test_turning_full_remat_on_or_off_continues_the_run(tmp_path: Path) -> None:
    """A run that ran out of memory resumes with train.remat=full, no --allow-changes needed: it
    computes the same steps (the generated programs agree: their SPEC_DIGEST leaves remat out)."""
    run_spec = tmp_path / "spec.yaml"
    run_spec.write_text(to_yaml(load_spec("switch-tiny")))
    assert changed_settings(run_spec.read_text(), load_spec("switch-tiny", ["train.remat=full"])) == []
    assert [
        key
        for key, _, _ in changed_settings(
            run_spec.read_text(), load_spec("switch-tiny", ["train.remat=full", "train.seed=3"])
        )
    ] == ["train.seed"]


def test_another_mesh_is_one_changed_setting_with_both_meshes() -> None:
    """It was one entry per axis name: "mesh.axes.data: 2 in the run, null now"."""
    run = to_yaml(load_spec("switch-tiny", ["mesh.axes={data: 2, expert: 2}"]))
    changed = changed_settings(run, load_spec("switch-tiny", ["mesh.axes={expert: 2}"]))
    assert changed == [("mesh.axes", {"data": 2, "expert": 2}, {"expert": 2})]


def test_allow_changes_needs_resume(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchc", "train", "--allow-changes", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--allow-changes applies only with --resume" in result.stderr
    assert not (tmp_path / "run").exists()


def test_more_steps_of_a_cosine_run_are_another_schedule(tmp_path: Path) -> None:
    """Under a cosine schedule train.steps sets where the learning rate reaches zero: --resume with
    more steps is refused like any other changed setting, before anything in OUT changes."""
    cosine = ["--set", "train.optimizer.schedule=cosine"]
    program = tmp_path / "run" / "program"
    program.mkdir(parents=True)
    (program / "train.py").write_text("raise SystemExit('not run')\n")
    (program / "spec.yaml").write_text(to_yaml(load_spec("switch-tiny", [cosine[1]])))
    before = {path: path.read_bytes() for path in program.iterdir()}
    result = CliRunner().invoke(main, ["train", *cosine, "--steps", "2000", "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 2, result.output
    assert "(the cosine schedule decays to zero over train.steps: more steps are another schedule)" in result.stderr
    assert "train.steps: 1000 in the run, 2000 now" in result.stderr and "adding --steps" not in result.stderr
    assert "hint: add --allow-changes to go on under the new schedule" in result.stderr
    assert "NaN" not in result.stderr  # the run's own spec ends at 1000 steps: no use suggesting it
    assert {path: path.read_bytes() for path in program.iterdir()} == before


def test_an_empty_out_is_refused_not_read_as_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out "$RUN"` with RUN unset: starting afresh in the current directory would clear its runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # someone's run, here
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", "", "--steps", "1"])
    assert result.exit_code == 2 and "an empty path; name the run directory (--out . for this one)" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_resuming_a_run_a_program_wrote_compares_with_its_checkpoints_spec(tmp_path: Path, backend: str) -> None:
    """A run `python train.py --out RUN` wrote has no RUN/program: its checkpoint's record holds the
    spec. Another learning rate is refused before RUN/program is written (it was written first, and
    then the refused spec passed for the run's own), and the hint names the program, not a spec file."""
    out = tmp_path / "run"
    step = fake_checkpoint(out / "checkpoints", 4, CHECKPOINT_MARKERS[backend])
    meta = step / META_FILES[backend]
    meta.parent.mkdir(exist_ok=True)
    meta.write_text(json.dumps({"step": 4, "seed": 0, "spec": to_yaml(load_spec("switch-tiny"))}))
    command = ["train", "switch-tiny", "--backend", backend, "--out", str(out), "--resume", "--steps", "6"]
    result = CliRunner().invoke(main, [*command, "--set", "train.optimizer.learning_rate=0.005"])
    assert result.exit_code == 2, result.output
    assert "train.optimizer.learning_rate: 0.001 in the run, 0.005 now" in result.stderr
    assert f"hint: resume with the program that wrote the run (python PROGRAM/train.py --out {out} --resume)" in (
        result.stderr
    )
    assert not (out / "program").exists()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_program_written_run_with_a_relative_data_path_resumes_with_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """`python train.py --out RUN` keeps data.path as the spec gives it, relative, and its checkpoints
    record the digest of that spelling. switchc train makes paths absolute: resuming such a run listed
    the same file as a changed setting, and the program it compiled with --allow-changes had another
    digest. Where the run's relative path names the file given, the run's spelling is kept."""
    from switchc.cli import train_commands

    started: list[list[str]] = []
    monkeypatch.setattr(train_commands, "_run_program", lambda command, env, fds: started.append(command) or 0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("To be, or not to be.\n")
    text = ["data.source=text", "data.path=corpus.txt"]
    ran = load_spec("switch-tiny", text)
    out = tmp_path / "run"
    step = fake_checkpoint(out / "checkpoints", 4, CHECKPOINT_MARKERS[backend])
    (step / META_FILES[backend]).parent.mkdir(exist_ok=True)
    (step / META_FILES[backend]).write_text(json.dumps({"step": 4, "seed": 0, "spec": to_yaml(ran)}))
    given = [f"--set={setting}" for setting in (text[0], f"data.path={tmp_path / 'corpus.txt'}")]
    command = ["train", "switch-tiny", *given, "--backend", backend, "--out", str(out), "--resume", "--steps", "6"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0 and "data.path" not in result.stderr, result.output
    assert len(started) == 1 and f'SPEC_DIGEST = "{spec_digest(ran)}"' in (out / "program" / "model.py").read_text()
    assert "  path: corpus.txt\n" in (out / "program" / "spec.yaml").read_text()
    monkeypatch.chdir(out)  # the run's corpus.txt names another file from here: the file given is another setting
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and f"data.path: corpus.txt in the run, {tmp_path / 'corpus.txt'} now" in result.stderr


def test_a_run_whose_spec_this_switchc_would_refuse_lists_the_difference(tmp_path: Path) -> None:
    """A plain --resume compares settings; it does not validate the run's own spec (a key an older or
    newer switchc wrote), which named RUN/program/spec.yaml, absent in a run a program wrote."""
    out = tmp_path / "run"
    step = fake_checkpoint(out / "checkpoints", 4, CHECKPOINT_MARKERS["torch"])
    spec = to_yaml(load_spec("switch-tiny")).replace("train:\n", "train:\n  old_knob: 3\n", 1)
    (step / META_FILES["torch"]).write_text(json.dumps({"step": 4, "seed": 0, "spec": spec}))
    command = ["train", "switch-tiny", "--backend", "torch", "--out", str(out), "--resume"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and "train.old_knob: 3 in the run, null now" in result.stderr, result.output
    assert "unknown key" not in result.stderr and not (out / "program").exists()
    result = CliRunner().invoke(main, [*command, "--allow-changes"])  # that needs the run's spec read as one
    assert result.exit_code == 2 and "unknown key 'old_knob'" in result.stderr, result.output
    assert f"{out / 'checkpoints'} (the spec its latest checkpoint records):" in result.stderr  # not program/


def test_a_damaged_run_spec_is_a_located_error(tmp_path: Path) -> None:
    program = tmp_path / "run" / "program"
    program.mkdir(parents=True)
    (program / "train.py").write_text("")
    for damaged in (b"- a\n", b"model: [\n", b"model: {d_model: !!int abc}\n", b"\xff\xfe\x00bin"):
        (program / "spec.yaml").write_bytes(damaged)
        result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(tmp_path / "run"), "--resume"])
        assert result.exit_code == 2 and f"{program / 'spec.yaml'}:" in result.stderr, (damaged, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), damaged


def test_rules_that_differ_in_one_entry_show_that_entry() -> None:
    """Shortened to 60 characters, two rule mappings read the same."""
    from switchc.cli.train_commands import _shown

    mesh = "mesh.axes={data: 2, expert: 2, model: 2}"
    rules = "mesh.rules={batch: [data, expert], experts: [expert], heads: [model], mlp: [model], vocab: %s}"
    run = to_yaml(load_spec("switch-tiny", [mesh, rules % "[model]"]))
    changed = changed_settings(run, load_spec("switch-tiny", [mesh, rules % "[]"]))
    assert _shown(changed) == [("mesh.rules", "{vocab: [model], ...}", "{vocab: [], ...}")]
    without = changed_settings(run, load_spec("switch-tiny", [mesh, (rules % "[]").replace(", vocab: []", "")]))
    assert _shown(without) == [("mesh.rules", "{vocab: [model], ...}", "{...}")]  # not {}: no rules at all
    axes = changed_settings(run, load_spec("switch-tiny", ["mesh.axes={data: 8}"]))
    assert ("mesh.axes", "{data: 2, expert: 2, model: 2}", "{data: 8}") in _shown(axes)


def test_resuming_a_program_written_run_with_the_other_backend_is_refused_before_anything(tmp_path: Path) -> None:
    """Its checkpoints say which program wrote it: switchc train wrote RUN/program for the other backend,
    whose program then refused the checkpoints, and the run was left in a loop of refusals."""
    out = tmp_path / "run"
    fake_checkpoint(out / "checkpoints", 3, CHECKPOINT_MARKERS["jax"])
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--backend", "torch", "--out", str(out), "--resume"])
    assert result.exit_code == 2 and f"--resume: {out} is a run of the jax program" in result.stderr
    assert "hint: add --backend jax" in result.stderr and not (out / "program").exists()


def test_allow_changes_that_make_another_tokenizer_are_refused_before_the_program_is_written(
    tmp_path: Path,
) -> None:
    """The programs refuse a checkpoint of another tokenizer even with --allow-changes; switchc train
    says so first, or RUN/program would hold the refused settings and the next resume loop on them."""
    out = tmp_path / "run"
    step = fake_checkpoint(out / "checkpoints", 3, CHECKPOINT_MARKERS["torch"])
    record = {"step": 3, "seed": 0, "spec": to_yaml(load_spec("switch-tiny")), "tokenizer": "sentencepiece 0123"}
    (step / META_FILES["torch"]).write_text(json.dumps(record))
    command = ["train", "switch-tiny", "--backend", "torch", "--out", str(out), "--resume", "--allow-changes"]
    result = CliRunner().invoke(main, [*command, "--set", "data.eval_fraction=0.1"])
    assert result.exit_code == 2, result.output
    assert "another tokenizer (sentencepiece 0123; these settings and text make byte)" in result.stderr
    assert "data.eval_fraction: 0.05 in the run, 0.1 now" in result.stderr and not (out / "program").exists()


def test_eval_batches_for_a_run_that_never_evaluates_is_refused_before_compiling(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["train", "switch-tiny", "--out", str(tmp_path / "run"), "--eval-every", "0", "--eval-batches", "3"]
    )
    assert (
        result.exit_code == 2
        and "--eval-batches applies only to a run that evaluates (this one does not: --eval-every is 0)"
        in result.stderr
    )
    assert not (tmp_path / "run").exists()


def test_a_resume_over_checkpoints_of_both_backends_is_refused_before_anything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fake_checkpoint(out / "checkpoints", 3, CHECKPOINT_MARKERS["torch"])
    fake_checkpoint(out / "checkpoints", 9, CHECKPOINT_MARKERS["jax"])
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--backend", "torch", "--out", str(out), "--resume"])
    assert result.exit_code == 1 and f"{out / 'checkpoints' / '9'} is a JAX (orbax) checkpoint" in result.stderr
    assert not (out / "program").exists()


def test_torchrun_names_a_rank_killed_by_a_signal_and_ends_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rank the kernel's OOM killer (or a kill -9) ends says nothing; the others fail on its closed
    connection, and torchrun ends the rest with SIGTERM. switchc's torchrun named no rank, and its
    status was whichever failure torchrun listed first (137 when it was the killed one's). The
    ranks torchrun itself stops are neither named nor the status."""
    pytest.importorskip("torch")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from switchc.cli.torchrun import _failed

    def job(*statuses: int, seconds: tuple[int, ...] = ()) -> ChildFailedError:
        failures = {
            rank: ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=status, error_file=str(tmp_path / "none"))
            for rank, status in enumerate(statuses)
        }
        for rank, second in enumerate(seconds):  # when torchrun saw each fail
            failures[rank].timestamp = second
        return ChildFailedError("train.py", failures)

    term, stopped = -signal.SIGTERM, 128 + signal.SIGTERM  # torchrun's SIGTERM: before and after the handler
    assert _failed(job(term, -signal.SIGKILL, 1, stopped)) == 1
    said = capsys.readouterr().err
    assert said.startswith("error: rank 1 (pid 101) was ended by SIGKILL: out of memory") and said.count("\n") == 1
    assert _failed(job(term, 2)) == 2  # a usage error on rank 1: rank 0, still starting, was stopped
    assert _failed(job(3, 3)) == 3  # a NaN: every rank's 3
    assert _failed(job(term, term)) == 128 + signal.SIGTERM  # stopped from outside, not through the launcher
    # rank 1, in a collective, outlasted torchrun's grace after the NaN on rank 0: torchrun's SIGKILL
    assert _failed(job(3, -signal.SIGKILL, seconds=(100, 131))) == 3
    assert capsys.readouterr().err == ""  # none of these names a rank
    kill = -signal.SIGKILL
    for statuses, seconds in (
        ((kill, 1), (100, 100)),
        ((kill, kill), (100, 131)),
        ((term, kill, kill), (100, 100, 131)),
    ):
        assert _failed(job(*statuses, seconds=seconds)) == 1  # an OOM kill; its peer's error, or torchrun's kill
        said = capsys.readouterr().err
        assert said.count("\n") == 1 and " was ended by SIGKILL: out of memory" in said, said
        assert said.startswith(f"error: rank {statuses.index(kill)} "), said


@pytest.mark.parametrize(
    ("saves", "raises"),
    [(False, False), (True, False), (False, True)],
    ids=["stopped before a save", "saved a step", "switchc interrupted"],
)
def test_allow_changes_stopped_before_a_save_puts_the_runs_program_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saves: bool, raises: bool
) -> None:
    """A --resume --allow-changes stopped before it saved a checkpoint left the run's program
    rewritten with the changes: the run's own command (without them) was then refused, and its
    hint led to the changed settings. The run is still the old one, and so is its program now;
    once a checkpoint of the changes is saved, the program stays the new one."""
    from switchc.cli import train_commands

    out = tmp_path / "run"
    compile_result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(out / "program")])
    assert compile_result.exit_code == 0, compile_result.output
    fake_checkpoint(out / "checkpoints", 4, CHECKPOINT_MARKERS["jax"])
    before = {path: path.read_bytes() for path in (out / "program").rglob("*") if path.is_file()}

    def stopped(command: list[str], env: dict[str, str], fds: tuple[int, ...]) -> int:
        if saves:
            fake_checkpoint(out / "checkpoints", 5, CHECKPOINT_MARKERS["jax"])
        if raises:  # switchc itself interrupted while the program ran
            raise KeyboardInterrupt
        return 128 + signal.SIGINT

    monkeypatch.setattr(train_commands, "_run_program", stopped)
    changed = ["--set", "train.optimizer.learning_rate=0.005", "--steps", "8", "--resume", "--allow-changes"]
    result = CliRunner().invoke(main, ["train", "switch-tiny", "--out", str(out), *changed])
    assert result.exit_code == 128 + signal.SIGINT, result.output
    after = {path: path.read_bytes() for path in (out / "program").rglob("*") if path.is_file()}
    note = "note: no checkpoint of the changed settings was saved: "
    if saves:
        assert after != before and "learning_rate: 0.005" in (out / "program" / "spec.yaml").read_text()
        assert note not in result.stderr
    else:
        assert after == before, result.stderr
        assert f"{note}{out / 'program'} is the run's own again" in result.stderr


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_program_written_run_of_another_seed_resumes_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """`python train.py --seed 7 --out RUN` records seed 7 in its checkpoints; its spec says 0. The
    run's seed is 7: resuming with the spec's 0 is refused with the way on (before, no way on
    worked: --set train.seed=7 was "0 in the run, 7 now"), and --set train.seed=7 resumes it, its
    RUN/program compiled with that seed. A resume whose program fails before a checkpoint of its own
    leaves the run as it was: the RUN/program it wrote goes again."""
    from switchc.cli import train_commands

    started: list[list[str]] = []
    status = [1]
    monkeypatch.setattr(train_commands, "_run_program", lambda command, env, fds: started.append(command) or status[0])
    out = tmp_path / "run"
    step = fake_checkpoint(out / "checkpoints", 4, CHECKPOINT_MARKERS[backend])
    (step / META_FILES[backend]).parent.mkdir(exist_ok=True)
    (step / META_FILES[backend]).write_text(
        json.dumps({"step": 4, "seed": 7, "spec": to_yaml(load_spec("switch-tiny"))})
    )
    command = ["train", "switch-tiny", "--backend", backend, "--out", str(out), "--resume", "--steps", "6"]
    refused = CliRunner().invoke(main, command)
    assert refused.exit_code == 2 and not started and "  train.seed: 7 in the run, 0 now" in refused.stderr
    assert "hint: keep the run's seed: --set train.seed=7; " in refused.stderr
    also = CliRunner().invoke(main, [*command, "--allow-changes"])
    assert also.exit_code == 2 and "keep the run's seed (--set train.seed=7)" in also.stderr and not started
    seeded = [*command, "--set", "train.seed=7"]
    assert CliRunner().invoke(main, seeded).exit_code == 1 and len(started) == 1 and "--seed" not in started[0]
    assert not (out / "program").exists()  # the program failed: the run is the program-written one still
    status[0] = 0
    assert CliRunner().invoke(main, seeded).exit_code == 0
    assert "  seed: 7\n" in (out / "program" / "spec.yaml").read_text()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_run_a_program_trained_with_another_seed_resumes_through_switchc_train(tmp_path: Path, backend: str) -> None:
    """docs/training.md: `train.py --seed N` gives a run seed N, which `switchc train --resume` then
    needs as --set train.seed=N. switchc took that, and its program refused the checkpoint as
    another spec's ("train.seed: 0 in the checkpoint, 5 in this program"), though it records seed 5."""
    if backend == "torch":
        pytest.importorskip("torch")
    program = compile_program(tmp_path / "program", backend=backend)
    run = tmp_path / "run"
    env = {"XLA_FLAGS": "", **xla_cache(tmp_path)}  # as _train's: the resume loads the step compiled here
    first = run_program(program, "--steps", "1", "--seed", "5", "--eval-every", "0", "--out", str(run), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    again = ["switch-tiny", "--backend", backend, "--steps", "2", "--eval-every", "0", "--out", str(run), "--resume"]
    refused = _train(tmp_path, *again)
    assert refused.returncode == 2 and "hint: keep the run's seed: --set train.seed=5; " in refused.stderr
    assert f"(python PROGRAM/train.py --seed 5 --out {run} --resume)" in refused.stderr
    resumed = _train(tmp_path, *again, "--set", "train.seed=5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at step 1 from {run / 'checkpoints'}" in resumed.stdout + resumed.stderr
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_the_way_on_with_a_torch_programs_run_is_its_torchrun_command(tmp_path: Path) -> None:
    """A run of a PyTorch program of several processes resumes under torchrun, with the --seed it
    was given: the hint said `python PROGRAM/train.py --out RUN --resume`, which neither is."""
    out = tmp_path / "run"
    mesh = "mesh.axes={expert: 2}"
    step = fake_checkpoint(out / "checkpoints", 4, CHECKPOINT_MARKERS["torch"])
    (step / META_FILES["torch"]).write_text(
        json.dumps({"step": 4, "seed": 5, "spec": to_yaml(load_spec("switch-tiny", [mesh]))})
    )
    command = ["train", "switch-tiny", "--backend", "torch", "--set", mesh, "--out", str(out), "--resume"]
    result = CliRunner().invoke(main, [*command, "--set", "train.optimizer.learning_rate=0.005"])
    assert result.exit_code == 2, result.output
    assert "  train.seed: 5 in the run, 0 now\n" in result.stderr
    way = f"torchrun --standalone --nproc-per-node 2 PROGRAM/train.py --seed 5 --out {out} --resume"
    assert f"hint: keep the run's seed: --set train.seed=5; resume with the program that wrote the run ({way}); " in (
        result.stderr
    )


def test_steps_and_a_set_of_train_steps_that_disagree_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--steps is train.steps: with another --set train.steps the error named a `--set train.steps=2`
    the user never typed, at a made-up command line."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--set", "train.steps=5", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.startswith(
        "error: --steps 2 and --set train.steps=5 disagree (--steps sets train.steps)\nhint: keep one of the two"
    )
    assert not out.exists()
    from switchc.cli import train_commands

    monkeypatch.setattr(train_commands, "_run_program", lambda command, env, fds: 0)
    for same in ("2", "02", "+2", "2  # two"):  # compared as YAML reads them, not as text
        result = CliRunner().invoke(main, ["train", "--set", f"train.steps={same}", "--steps", "2", "--out", str(out)])
        assert result.exit_code == 0, (same, result.output)
