"""A generated PyTorch program's training run: metrics (JSONL, TensorBoard, progress lines) with the
JAX program's schema, held-out evaluation, torch.distributed.checkpoint checkpoints that survive a
process killed mid-save, bit-identical resume on 1 and 2 gloo processes, a clean stop on NaN on
every rank, and --init-from. Each test runs the real program in a subprocess (torchrun for two
processes), on a model shrunk to step in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.backends.programs import (
    RUN_TIMEOUT,
    SMALL_SWITCH,
    TIMING,
    check_reexport_records_its_source,
    checkpoint_dirs,
    compile_program,
    independent_ranks,
    records,
    run_program,
    set_args,
    signal_at,
    tensorboard_values,
    train_losses,
    without_timing,
)

# dropout on, so that its random streams are part of what resume must reproduce (router jitter is
# on by default)
SMALL = {**SMALL_SWITCH, "model.dropout_rate": "0.1"}
# Checkpoints at 2, 4, 6 (the newest two kept); evaluations at 3 and 6; a train record every step.
FLAGS = ("--log-every", "1", "--eval-every", "3", "--eval-batches", "2", "--checkpoint-every", "2", "--keep", "2")


def compile_small(tmp_path: Path, name: str, **settings: str) -> Path:
    return compile_program(tmp_path / name, *set_args({**SMALL, **settings}), backend="torch")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 6 steps in one uninterrupted run; returns the program directory (run in ./run)."""
    program = compile_small(tmp_path_factory.mktemp("straight"), "prog")
    result = run_program(program, "--steps", "6", *FLAGS, "--out", "run")
    assert result.returncode == 0, result.stderr[-3000:]
    (program / "stdout.txt").write_text(result.stdout)
    return program


def test_metrics_follow_the_schema(straight: Path) -> None:
    run = straight / "run"
    train, evals = records(run, "train"), records(run, "eval")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in evals] == [3, 6]
    layers = ("encoder/0", "decoder/0")
    for entry in train + evals:
        assert list(entry)[:5] == ["step", "split", "loss", "cross_entropy", "neg_log_perplexity"]
        assert entry["neg_log_perplexity"] == -entry["cross_entropy"]
        for key in ("aux_loss", "z_loss", "dropped_fraction", "top1_gate"):
            assert isinstance(entry[key], float), key
        for layer in layers:
            assert 0 <= entry[f"dropped_fraction/{layer}"] <= 1
            counts = entry[f"tokens_per_expert/{layer}"]
            assert len(counts) == 8 and all(isinstance(c, int) for c in counts)
    for entry in train:
        # every token is routed to one expert: encoder 4 x 32 tokens, decoder 4 x 8 per step
        assert sum(entry["tokens_per_expert/encoder/0"]) == 4 * 32
        assert sum(entry["tokens_per_expert/decoder/0"]) == 4 * 8
        assert entry["tokens_per_second"] == pytest.approx(4 * 40 / entry["step_seconds"])
        assert 0 < entry["mfu"] < 1 and entry["grad_norm"] > 0 and entry["learning_rate"] == pytest.approx(1e-3)
        assert list(entry)[-5:] == ["grad_norm", "learning_rate", "step_seconds", "tokens_per_second", "mfu"]
    for entry in evals:
        assert not {*TIMING, "grad_norm", "learning_rate"} & set(entry)
        assert sum(entry["tokens_per_expert/encoder/0"]) == 2 * 4 * 32  # summed over the 2 eval batches
    # eval mode: the eval capacity factor (2.0 vs 1.25) drops fewer tokens than training does
    assert evals[-1]["dropped_fraction"] < max(r["dropped_fraction"] for r in train)
    # a pipe is not a terminal: one plain line per record, no progress-bar control characters
    stdout = (straight / "stdout.txt").read_text()
    assert "train step 1/6  loss " in stdout and "eval  step 6/6  loss " in stdout
    assert "\r" not in stdout and "MFU against cpu" in stdout


def test_tensorboard_events_hold_the_records(straight: Path) -> None:
    pytest.importorskip("tensorboardX")
    scalars, histograms = tensorboard_values(straight / "run" / "tensorboard")
    for entry in records(straight / "run"):
        step, split = entry["step"], entry["split"]
        assert scalars[(step, f"{split}/loss")] == pytest.approx(entry["loss"], rel=1e-6)
        assert scalars[(step, f"{split}/dropped_fraction/encoder/0")] == pytest.approx(
            entry["dropped_fraction/encoder/0"], rel=1e-6
        )
        histogram = histograms[(step, f"{split}/tokens_per_expert/encoder/0")]
        assert list(histogram.bucket) == entry["tokens_per_expert/encoder/0"]


KILL_BEFORE_COMMIT = """\
import os, signal
_rename = os.rename
def _rename_or_die(src, dst, *args, **kwargs):
    # rank 0 commits a checkpoint by renaming <step>.tmp to <step>: die just before step 4's
    if os.path.basename(os.fspath(dst)) == "4" and os.fspath(src).endswith("4.tmp"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _rename(src, dst, *args, **kwargs)
os.rename = _rename_or_die
"""


def test_killed_mid_save_resumes_bit_identical(straight: Path, tmp_path: Path) -> None:
    """SIGKILL in the middle of saving step 4 (every file written, not yet committed): the step-2
    checkpoint stays the latest, and resuming from it reproduces the uninterrupted run exactly."""
    program = compile_small(tmp_path, "prog")
    killed = run_program(program, "--steps", "6", *FLAGS, "--out", "run", prelude=KILL_BEFORE_COMMIT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = program / "run"
    assert checkpoint_dirs(run) == ["2", "4.tmp"]
    assert (run / "checkpoints" / "4.tmp" / ".metadata").is_file()  # DCP had finished writing

    resumed = run_program(program, "--steps", "6", *FLAGS, "--out", "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 2" in resumed.stdout
    # train and eval records of steps 1-2 come from the first process, 3-6 from the resumed one
    assert without_timing(records(run)) == without_timing(records(straight / "run"))
    assert checkpoint_dirs(run) == ["4", "6"]  # --keep 2; the unfinished save was cleaned up


def test_two_processes_save_their_shards_and_resume_bit_identical(tmp_path: Path) -> None:
    """Two gloo processes, experts split over them: each rank writes its own experts, and resuming
    from step 2 (a copy of the run as it stood then) gives the uninterrupted run's records exactly."""
    import torch.distributed.checkpoint as dcp

    program = compile_small(tmp_path, "prog", **{"mesh.axes": "{expert: 2}"})
    flags = ("--log-every", "1", "--eval-every", "2", "--eval-batches", "2", "--checkpoint-every", "2")
    result = run_program(program, "--steps", "4", *flags, "--out", "straight", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    step2 = program / "straight" / "checkpoints" / "2"
    assert sorted(p.name for p in step2.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.json"]
    index = dcp.FileSystemReader(str(step2)).read_metadata().state_dict_metadata
    for key in ("model/encoder/0/experts/wi", "optimizer/encoder/0/experts/wi/exp_avg"):
        chunks = sorted((tuple(c.offsets), tuple(c.sizes)) for c in index[key].chunks)  # type: ignore[union-attr]
        assert chunks == [((0, 0, 0), (4, 32, 64)), ((4, 0, 0), (4, 32, 64))], key  # 4 experts per rank
    meta = json.loads((step2 / "meta.json").read_text())
    assert meta == {
        "step": 2,
        "seed": 0,
        "examples_seen": 8,
        "tokenizer": "byte",
        "mesh": {"expert": 2},
        "spec_digest": meta["spec_digest"],
        "spec": (program / "spec.yaml").read_text(),
    }
    assert f'SPEC_DIGEST = "{meta["spec_digest"]}"' in (program / "model.py").read_text()

    # the run as a crash after step 3 would have left it: records to step 3, checkpoints to step 2
    shutil.copytree(program / "straight", program / "resumed")
    shutil.rmtree(program / "resumed" / "checkpoints" / "4")
    kept = (program / "straight" / "metrics.jsonl").read_text().splitlines()[:4]
    (program / "resumed" / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    result = run_program(program, "--steps", "4", *flags, "--out", "resumed", "--resume", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed at step 2" in result.stdout
    straight_records = without_timing(records(program / "straight"))
    assert [(r["step"], r["split"]) for r in straight_records] == [
        (1, "train"),
        (2, "train"),
        (2, "eval"),
        (3, "train"),
        (4, "train"),
        (4, "eval"),
    ]
    assert without_timing(records(program / "resumed")) == straight_records

    # rank 1's shard of step 4 cut short: DCP's load fails on both ranks, and the error is said once
    shard = program / "resumed" / "checkpoints" / "4" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:64])
    resume = ["--steps", "5", *flags, "--out", "resumed", "--resume"]
    result = run_program(program, *resume, processes=2)
    error = f"error: --resume: cannot read checkpoint {program / 'resumed' / 'checkpoints' / '4'}: "
    hint = "hint: the checkpoint is damaged; delete it to continue from step 2"
    assert result.returncode != 0 and result.stderr.count(error) == 1, result.stderr[-3000:]
    assert result.stderr.count(hint) == 1
    # the ranks as two hosts' (each LOCAL_RANK 0, each with its own log): each log says it once
    statuses, errors, _ = independent_ranks(program, [resume, resume])
    assert statuses == [1, 1], errors
    assert [(text.count(error), text.count(hint)) for text in errors] == [(1, 1), (1, 1)], errors


def test_nan_stops_every_rank_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """A learning rate of 1e30 makes step 1's update overflow the weights: step 2's loss is NaN.
    Step 1, the last finite step, gets its train record though --log-every would not log it."""
    settings = {"train.optimizer.learning_rate": "1e30", "mesh.axes": "{expert: 2}"}
    program = compile_small(tmp_path, "prog", **settings)
    flags = ("--steps", "5", "--log-every", "4", "--checkpoint-every", "1", "--eval-every", "0")
    result = run_program(program, *flags, "--out", "run", processes=2)
    assert result.returncode != 0
    for rank in (0, 1):
        message = f"error: rank {rank}: step 2: the loss is nan; training stopped (the latest checkpoint is step 1"
        assert message in result.stderr, result.stderr[-3000:]
    assert "exitcode  : 3" in result.stderr  # torchrun's report: both ranks exited with status 3
    assert "loop.py" not in result.stderr  # no worker traceback (torchrun prints its own)
    assert checkpoint_dirs(program / "run") == ["1"]
    [kept] = records(program / "run")
    assert (kept["step"], kept["split"]) == (1, "train") and math.isfinite(kept["loss"]), kept
    assert kept["step_seconds"] > 0 and kept["learning_rate"] == pytest.approx(1e30)


@pytest.mark.slow
def test_nan_on_one_process_exits_3_and_the_kept_checkpoint_loads(tmp_path: Path) -> None:
    program = compile_small(tmp_path, "prog", **{"train.optimizer.learning_rate": "1e30"})
    flags = ("--steps", "5", "--log-every", "1", "--eval-every", "0")
    result = run_program(program, *flags, "--checkpoint-every", "1", "--out", "run")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "error: step 2: the loss is nan; training stopped (the latest checkpoint is step 1" in result.stderr
    assert "Traceback" not in result.stderr
    # the kept checkpoint loads: resuming replays step 2 and stops there again
    again = run_program(program, *flags, "--out", "run", "--resume")
    assert again.returncode == 3 and "step 2: the loss is nan" in again.stderr, again.stderr[-3000:]


@pytest.mark.slow
def test_resume_after_a_finished_run_is_bit_identical(straight: Path, tmp_path: Path) -> None:
    """3 steps (the last one checkpointed), then --resume to 6: the same records as 6 steps straight."""
    program = compile_small(tmp_path, "prog")
    first = run_program(program, "--steps", "3", *FLAGS, "--out", "run")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_program(program, "--steps", "6", *FLAGS, "--out", "run", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert without_timing(records(program / "run")) == without_timing(records(straight / "run"))


def test_fresh_run_refuses_a_directory_with_checkpoints(straight: Path) -> None:
    result = run_program(straight, "--steps", "1", "--out", "run")
    assert result.returncode == 1
    assert "has checkpoints already (the latest: step 6)" in result.stderr and "--resume" in result.stderr


def test_init_from_a_weights_file(tmp_path: Path) -> None:
    """Weights written by --export-init --seed 7 train exactly as seed 7's own init does (both runs
    take --seed 7's data order); a file that does not fit is a one-line error."""
    pytest.importorskip("safetensors")
    quiet = {"moe.jitter_eps": "0.0", "model.dropout_rate": "0.0"}  # no noise: the init and the data alone
    program = compile_small(tmp_path, "prog", **quiet)
    exported = run_program(program, "--export-init", "seven.safetensors", "--seed", "7")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "wrote the step-0 weights (seed 7) to seven.safetensors" in exported.stdout
    assert not (program / "checkpoints").exists() and not (program / "metrics.jsonl").exists()
    bad = "from runtime import weights; import numpy as np; weights.save('bad.safetensors', {'x': np.zeros(2)})"
    written = subprocess.run([sys.executable, "-c", bad], cwd=program, capture_output=True, timeout=RUN_TIMEOUT)
    assert written.returncode == 0, written.stderr[-3000:]
    flags = ("--steps", "2", "--log-every", "1", "--eval-every", "0")
    loaded = run_program(program, *flags, "--out", "loaded", "--init-from", "seven.safetensors", "--seed", "7")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "initialised from seven.safetensors" in loaded.stdout
    seeded = run_program(program, *flags, "--out", "seeded", "--seed", "7")
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    losses = [r["loss"] for r in records(program / "loaded")]
    assert losses == [r["loss"] for r in records(program / "seeded")]
    bad = run_program(program, *flags, "--init-from", "bad.safetensors")
    assert bad.returncode == 1
    assert "error: --init-from: the weights in bad.safetensors do not fit this model" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_an_init_from_file_every_rank_refuses_is_said_once(tmp_path: Path) -> None:
    """Each rank reads the file: the refusal was printed once per rank (8 copies on 8 ranks)."""
    pytest.importorskip("safetensors")
    program = compile_small(tmp_path, "prog", **{"mesh.axes": "{data: 2}"})
    bad = "from runtime import weights; import numpy as np; weights.save('bad.safetensors', {'x': np.zeros(2)})"
    written = subprocess.run([sys.executable, "-c", bad], cwd=program, capture_output=True, timeout=RUN_TIMEOUT)
    assert written.returncode == 0, written.stderr[-3000:]
    refused = "error: --init-from: the weights in bad.safetensors do not fit this model"
    result = run_program(program, "--steps", "1", "--init-from", "bad.safetensors", processes=2)
    assert result.returncode == 1 and result.stderr.count(refused) == 1, result.stderr[-3000:]
    result = run_program(program, "--export-init", "w.safetensors", "--init-from", "bad.safetensors", processes=2)
    assert result.returncode == 1 and result.stderr.count(refused) == 1, result.stderr[-3000:]
    assert not (program / "w.safetensors").exists()


def test_only_the_first_rank_builds_checks_and_writes_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--export-init needs no process group: a later rank that read an --init-from file rank 0 did not
    (a file on node 0 only) refused it with nothing said, or said it again where all refuse."""
    from switchc.backends.torch.runtime import loop

    def refuse(*args: object) -> None:
        raise AssertionError("a rank other than the first built or read the weights")

    model = SimpleNamespace(build=refuse)
    monkeypatch.setattr(loop, "_initial_weights", refuse)
    monkeypatch.setenv("RANK", "1")
    loop.export_weights(model, tmp_path / "w.safetensors", 0, tmp_path / "missing.safetensors")  # type: ignore[arg-type]
    assert not (tmp_path / "w.safetensors").exists()


def test_weights_provenance_and_refused_init_from_files_leave_no_run_directory(tmp_path: Path) -> None:
    """--export-init --init-from FILE records and prints FILE (and the seed that made its weights),
    not --seed; neither it nor a refused --init-from (a truncated file, a checkpoint) makes anything
    in --out; the refusals say what the file is, with a hint."""
    pytest.importorskip("safetensors")
    from switchc.backends.common import flags

    from tests.backends.programs import fake_checkpoint

    program = compile_small(tmp_path, "prog")
    check_reexport_records_its_source(program, "torch")

    whole = (program / "seven.safetensors").read_bytes()
    (program / "cut.safetensors").write_bytes(whole[:-100])
    cut = run_program(program, "--steps", "1", "--init-from", "cut.safetensors", "--out", "r/bad1")
    assert cut.returncode == 1
    assert f"error: --init-from: cut.safetensors is truncated or damaged ({len(whole) - 100} bytes" in cut.stderr
    assert "hint: export the weights again" in cut.stderr and "Traceback" not in cut.stderr
    assert not (program / "r").exists()

    fake_checkpoint(program / "old" / "checkpoints", 8, flags.CHECKPOINT_MARKERS["torch"])
    checkpoint = run_program(program, "--steps", "1", "--init-from", str(Path("old", "checkpoints", "8")))
    assert checkpoint.returncode == 1
    assert "checkpoints are not weights files" in checkpoint.stderr and "--out old --resume" in checkpoint.stderr

    # weights of a ReLU model fit a GELU model's shapes: they load, with a note (model.ARCHITECTURE)
    gelu = compile_small(tmp_path, "gelu", **{"model.ffn_activation": "gelu"})
    other = run_program(gelu, "--steps", "1", "--init-from", str(program / "seven.safetensors"))
    assert other.returncode == 0, other.stderr[-3000:]
    assert 'was exported by a program of another model (model.ffn_activation "relu" there, "gelu" here)' in other.stdout


def test_switchc_train_passes_the_training_flags(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "switchc", "train", "switch-tiny", "--backend", "torch", *settings]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [*command, "--steps", "2", "--out", str(out), "--eval-every", "2"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert [(r["step"], r["split"]) for r in records(out)] == [(2, "train"), (2, "eval")]
    assert (out / "checkpoints" / "2" / ".metadata").is_file() and list((out / "tensorboard").glob("events.*"))
    resumed = subprocess.run(
        [*command, "--steps", "3", "--out", str(out), "--resume", "--eval-every", "0"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [(r["step"], r["split"]) for r in records(out)] == [(2, "train"), (2, "eval"), (3, "train")]
    assert checkpoint_dirs(out) == ["1", "2", "3"]  # --steps 3 is train.steps: a checkpoint every tenth (1) step


def test_switchc_train_resumes_a_run_a_program_wrote(tmp_path: Path) -> None:
    """A run started with the generated program itself (--out RUN, no RUN/program) is a run
    directory switchc train can --resume, not a foreign one."""
    program = compile_small(tmp_path, "prog")
    first = run_program(program, "--steps", "2", "--eval-every", "0", "--out", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr[-3000:]
    settings = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "switchc", "train", "switch-tiny", "--backend", "torch", *settings]
    command += ["--steps", "3", "--out", str(tmp_path / "run"), "--resume", "--eval-every", "0"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=environment)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 2" in resumed.stdout
    assert [r["step"] for r in records(tmp_path / "run")][-1] == 3


def test_switchc_train_reads_a_relative_data_path_from_where_it_runs(tmp_path: Path) -> None:
    """data.path=corpus.txt means ./corpus.txt of the user's shell, not of RUN/program. Training
    again into the same --out without --resume starts afresh and says what it removes."""
    (tmp_path / "corpus.txt").write_text("To be, or not to be, that is the question.\n" * 400, encoding="utf-8")
    settings = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    data = ["--set", "data.source=text", "--set", "data.path=corpus.txt"]
    command = [sys.executable, "-m", "switchc", "train", "switch-tiny", "--backend", "torch", *settings, *data]
    command += ["--steps", "1", "--out", "run", "--eval-every", "0"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for run in range(2):  # the second run starts afresh in the same --out, and says what it removes
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=environment
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert [r["step"] for r in records(tmp_path / "run")] == [1]
        assert ("note: starting afresh in run: removing the earlier run's metrics.jsonl" in result.stderr) == bool(run)


@pytest.mark.parametrize(
    ("number", "processes"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2), (signal.SIGINT, 2)],
    ids=["term", "int", "term-2", "int-2"],
)
def test_switchc_train_passes_stop_signals_on_to_the_program(number: int, processes: int, tmp_path: Path) -> None:
    """A signal to `switchc train` alone (a container's PID 1, `timeout -s INT`): the program gets it
    once and stops as it says (SIGTERM: the step checkpointed, 143; SIGINT: at once, 130), and
    switchc exits with that status, also over torchrun (whose own status is then 1)."""
    out = tmp_path / "run"
    settings = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    if processes > 1:
        settings += ["--set", "mesh.axes={expert: 2}"]
    command = [sys.executable, "-m", "switchc", "train", "switch-tiny", "--backend", "torch", *settings]
    command += ["--steps", "100000", "--out", str(out), "--eval-every", "0"]
    status, err = signal_at(command, 10, number, env={"OMP_NUM_THREADS": "1"})  # the first record (--log-every 10)
    assert status == 128 + number, err[-3000:]
    if number == signal.SIGINT:
        assert "SIGINT: training stopped after step " in err, err[-3000:]
        return
    stopped = re.search(r"SIGTERM: training stopped after step (\d+) \(checkpoint (\d+) saved", err)
    assert stopped is not None and stopped.group(1) == stopped.group(2), err[-3000:]
    assert checkpoint_dirs(out) == [stopped.group(1)]


def test_a_program_error_on_every_rank_is_its_own_lines_and_status(tmp_path: Path) -> None:
    """A mistake every rank finds (a data path that is not there): each rank's one-line error,
    torchrun's line naming the failed rank, and the program's status; not torchrun's traceback
    of its ChildFailedError (47 lines)."""
    settings = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    settings += ["--set", "mesh.axes={expert: 2}", "--set", "data.source=text", "--set", f"data.path={tmp_path / 'x'}"]
    command = [sys.executable, "-m", "switchc", "train", "switch-tiny", "--backend", "torch", *settings]
    result = subprocess.run(
        [*command, "--steps", "2", "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.count(f"error: data path {tmp_path / 'x'} does not exist") == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr[-3000:]
    assert "failed (exitcode: 1) local_rank: " in result.stderr  # torchrun's word on which rank
    assert not (tmp_path / "run").exists()


def test_help_lists_the_training_flags(straight: Path) -> None:
    result = run_program(straight, "--help")
    assert result.returncode == 0
    for flag in ("--eval-every", "--eval-batches", "--checkpoint-every", "--keep", "--resume", "--hardware"):
        assert flag in result.stdout
    assert "--init-from" in result.stdout
    for module in ("metrics.py", "checkpoint.py", "weights.py"):
        assert (straight / "runtime" / module).is_file()


def test_device_cuda_without_cuda_is_a_usage_error(straight: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_program(straight, "--steps", "1", "--device", "cuda")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: --device cuda: " in result.stderr and "use --device cpu" in result.stderr


def _close(compiled: list[dict], eager: list[dict], keys: tuple[str, ...]) -> None:
    """The records of a --compile run against the eager run's: the same steps, the same values to
    float32 rounding (fused kernels round differently; every random draw is the eager program's)."""
    assert [entry["step"] for entry in compiled] == [entry["step"] for entry in eager]
    for ours, theirs in zip(compiled, eager, strict=True):
        for key in keys:
            assert math.isclose(ours[key], theirs[key], rel_tol=1e-4, abs_tol=1e-6), (ours["step"], key)


def test_compile_trains_and_evaluates_as_the_eager_program_does(straight: Path) -> None:
    """--compile (torch.compile) with dropout and router jitter on: the same losses, router losses,
    dropped fractions and evaluations as the eager run, and checkpoints a resume continues from."""
    result = run_program(straight, "--steps", "6", *FLAGS, "--out", "compiled", "--compile")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--compile: the first step and the first evaluation compile the model" in result.stdout
    keys = ("loss", "cross_entropy", "aux_loss", "dropped_fraction")
    _close(records(straight / "compiled", "train"), records(straight / "run", "train"), (*keys, "grad_norm"))
    _close(records(straight / "compiled", "eval"), records(straight / "run", "eval"), keys)
    assert checkpoint_dirs(straight / "compiled") == checkpoint_dirs(straight / "run")


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["{data: 2}", "{expert: 2}", "{model: 2}"])
def test_compile_on_two_processes_trains_as_the_eager_program_does(mesh: str, tmp_path: Path) -> None:
    """--compile on two gloo processes, with DDP (data), the experts' all-to-alls (expert) and
    Megatron's f and g (model) between the compiled graphs: the eager program's losses."""
    program = compile_small(tmp_path, "prog", **{"mesh.axes": mesh})
    eager = train_losses(program, "--steps", "4", "--log-every", "1", processes=2)
    shutil.rmtree(program / "run")
    compiled = train_losses(program, "--steps", "4", "--log-every", "1", "--compile", processes=2)
    assert len(compiled) == len(eager) == 4
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(compiled, eager, strict=True)), (compiled, eager)
