"""A generated JAX program's training run: metrics (JSONL, TensorBoard, progress lines), held-out
evaluation, orbax checkpoints that survive a process killed mid-save, bit-identical resume, and a
clean stop on NaN. Each test runs the real program in a subprocess, on a model shrunk to compile
and step quickly.

The runs share a persistent XLA compilation cache (one per test module): the first run of each
program compiles, later runs of the same program load the same executable, which computes the
same bits. Resume's bit-identity with a fresh compile is the same claim: XLA on CPU is
deterministic for a given program.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from switchc.backends.jax.runtime.checkpoint import _FailedWrites

from tests.backends.programs import (
    SMALL_SWITCH,
    TIMING,
    check_reexport_records_its_source,
    checkpoint_dirs,
    compile_program,
    records,
    run_program,
    set_args,
    tensorboard_values,
    without_timing,
)

pytest.importorskip("jax")
pytest.importorskip("orbax.checkpoint")

# Checkpoints at 2, 4, 6 (the newest two kept); evaluations at 3 and 6; a train record every step.
FLAGS = ("--log-every", "1", "--eval-every", "3", "--eval-batches", "2", "--checkpoint-every", "2", "--keep", "2")


def compile_small(tmp_path: Path, name: str, **settings: str) -> Path:
    return compile_program(tmp_path / name, *set_args({**SMALL_SWITCH, **settings}), backend="jax")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every program run of this module shares one persistent XLA compilation cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, compilation_cache: None) -> Path:
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
    for entry in evals:
        assert not {*TIMING, "grad_norm", "learning_rate"} & set(entry)
        assert sum(entry["tokens_per_expert/encoder/0"]) == 2 * 4 * 32  # summed over the 2 eval batches
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
    # orbax commits a checkpoint by renaming <step>.orbax-checkpoint-tmp to <step>: die just before
    if os.path.basename(os.fspath(dst)) == "4" and "orbax-checkpoint-tmp" in os.fspath(src):
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
    left = checkpoint_dirs(run)
    assert left[0] == "2" and len(left) == 2 and left[1].startswith("4.orbax-checkpoint-tmp"), left

    resumed = run_program(program, "--steps", "6", *FLAGS, "--out", "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 2" in resumed.stdout
    # train and eval records of steps 1-2 come from the first process, 3-6 from the resumed one
    assert without_timing(records(run)) == without_timing(records(straight / "run"))
    assert checkpoint_dirs(run) == ["4", "6"]  # --keep 2; the unfinished save was cleaned up


@pytest.mark.slow
def test_resume_after_a_finished_run_is_bit_identical(straight: Path, tmp_path: Path) -> None:
    """3 steps (the last one checkpointed), then --resume to 6: the same records as 6 steps straight."""
    program = compile_small(tmp_path, "prog")
    first = run_program(program, "--steps", "3", *FLAGS, "--out", "run")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_program(program, "--steps", "6", *FLAGS, "--out", "run", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    train = without_timing(records(program / "run", "train"))
    assert train == without_timing(records(straight / "run", "train"))


def test_resuming_at_the_last_step_trains_nothing_and_says_so(straight: Path) -> None:
    records_before = (straight / "run" / "metrics.jsonl").read_text()
    result = run_program(straight, "--steps", "6", *FLAGS, "--out", "run", "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: the run is already at --steps 6; nothing to train (a larger --steps goes on)" in result.stdout
    assert (straight / "run" / "metrics.jsonl").read_text() == records_before


def test_fresh_run_refuses_a_directory_with_checkpoints(straight: Path) -> None:
    result = run_program(straight, "--steps", "1", "--out", "run")
    assert result.returncode == 1
    assert "has checkpoints already (the latest: step 6)" in result.stderr and "--resume" in result.stderr


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """A learning rate of 1e30 makes step 1's update overflow the weights: step 2's loss is NaN.
    Step 1, the last finite step, gets its train record though --log-every would not log it."""
    program = compile_small(tmp_path, "prog", **{"train.optimizer.learning_rate": "1e30"})
    result = run_program(program, "--steps", "5", "--log-every", "4", "--checkpoint-every", "1", "--out", "run")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "error: step 2: the loss is nan; training stopped (the latest checkpoint is step 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert checkpoint_dirs(program / "run") == ["1"]
    [kept] = records(program / "run")
    assert (kept["step"], kept["split"]) == (1, "train") and math.isfinite(kept["loss"]), kept
    assert kept["step_seconds"] > 0 and kept["learning_rate"] == pytest.approx(1e30)
    # the kept checkpoint loads: resuming replays step 2 and stops there again
    again = run_program(program, "--steps", "5", "--log-every", "1", "--out", "run", "--resume")
    assert again.returncode == 3 and "step 2: the loss is nan" in again.stderr, again.stderr[-3000:]


def test_weights_provenance_and_a_refused_init_from_leave_no_run_directory(tmp_path: Path) -> None:
    """--export-init --init-from FILE records and prints FILE (and the seed that made its weights),
    not --seed, and makes nothing in --out; a file holding NaN is refused (naming the tensor) before
    the run's first step, and leaves no run directory (.lock, checkpoints/) behind."""
    pytest.importorskip("safetensors")
    import numpy as np
    from safetensors.numpy import load_file
    from switchc.backends.common import weights

    program = compile_small(tmp_path, "prog")
    check_reexport_records_its_source(program, "jax")

    params = load_file(str(program / "seven.safetensors"))
    name = next(iter(params))
    params[name] = np.full_like(params[name], np.nan)
    weights.save(program / "nan.safetensors", params, metadata={"backend": "jax", "seed": "7"})
    refused = run_program(program, "--steps", "1", "--init-from", "nan.safetensors", "--out", "r/bad1")
    assert refused.returncode == 1
    assert (
        f"error: --init-from: nan.safetensors holds NaN or Inf: 1 tensor(s) are not finite: {name} (" in refused.stderr
    )
    assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
    assert not (program / "r").exists()


def test_help_lists_the_training_flags(straight: Path) -> None:
    result = run_program(straight, "--help")
    assert result.returncode == 0
    for flag in ("--eval-every", "--eval-batches", "--checkpoint-every", "--keep", "--resume", "--hardware"):
        assert flag in result.stdout
    assert os.path.exists(straight / "runtime" / "metrics.py")


@pytest.mark.parametrize(
    ("loss", "grads", "finite", "named"),
    [
        (1.0, {"a": [1.0, 2.0], "b": [3.0]}, True, {}),
        (1.0, {"a": [1.0, float("nan")], "b": [float("inf"), float("-inf")]}, False, {"a": 1, "b": 2}),
        (float("nan"), {"a": [1.0, 2.0], "b": [3.0]}, False, {}),
        (1.0, {"a": [3e38, 3e38], "b": [0.0]}, True, {}),  # finite, but the global norm overflows to Inf
    ],
    ids=["healthy", "nan-gradient-finite-loss", "nan-loss", "norm-overflows"],
)
def test_step_health_names_each_gradient_with_nan_or_inf(
    loss: float, grads: dict[str, list[float]], finite: bool, named: dict[str, int]
) -> None:
    """The train step's check, jitted as in the step: `finite`, and per parameter how many of its
    gradient elements are NaN or Inf (counted only when the loss or the global norm says so)."""
    import jax
    import jax.numpy as jnp
    import optax
    from switchc.backends.common import metrics
    from switchc.backends.jax.runtime.loop import health

    arrays = {name: jnp.asarray(values, jnp.float32) for name, values in grads.items()}
    out = jax.jit(lambda total, g: health(total, optax.tree.norm(g), g))(jnp.float32(loss), arrays)
    assert bool(out["finite"]) is finite
    counts = {name: int(count) for name, count in out["gradient_non_finite"].items()}
    assert {name: count for name, count in counts.items() if count} == named
    if not finite and named:
        with pytest.raises(metrics.NonFiniteError, match=r"^step 7: the gradient of a \(and of 1 more parameters\)"):
            metrics.check_finite(7, out["loss"], out["gradient_non_finite"])


def test_a_checkpoint_whose_optimizer_chained_clipping_restores(tmp_path: Path) -> None:
    """Programs of an earlier switchc clipped inside an optax chain when clip_grad_norm > 0, and
    saved chain's state, (clipping's empty state, the optimizer's); clipping is now outside the
    optimizer, and such a checkpoint restores into the optimizer's state as it was."""
    import jax
    import jax.numpy as jnp
    import optax
    from switchc.backends.jax.runtime.checkpoint import Checkpoints
    from switchc.backends.jax.runtime.optim import clip_by_global_norm

    params = {"w": jnp.arange(12.0).reshape(4, 3), "b": jnp.ones(3)}
    adam = optax.adamw(1e-3)
    chained = optax.chain(optax.clip_by_global_norm(1.0), adam)
    _, saved = chained.update(params, chained.init(params), params)  # a step with gradients of norm > 1
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep=2)
    checkpoints.save(1, params, saved, {"step": 1})
    checkpoints.wait()
    restored_params, restored = checkpoints.restore(1, params, adam.init(params))
    checkpoints.close()
    assert jax.tree.structure(restored) == jax.tree.structure(adam.init(params))
    for got, want in zip(
        jax.tree.leaves((restored_params, restored)), jax.tree.leaves((params, saved[1])), strict=True
    ):
        assert jnp.array_equal(got, want)
    # ... and the clipping now outside it is optax's, bit for bit
    norm = optax.tree.norm(params)
    want = optax.clip_by_global_norm(1.0).update(params, optax.EmptyState())[0]
    for got, expected in zip(
        jax.tree.leaves(clip_by_global_norm(params, norm, 1.0)), jax.tree.leaves(want), strict=True
    ):
        assert jnp.array_equal(got, expected)


def test_orbax_logs_of_a_file_it_could_not_write_are_left_to_the_loops_one_line() -> None:
    """orbax logs a failed save's OSError with its traceback from each thread it passes through;
    the loop stops on it with one line (metrics.stop_writing), so those records are dropped."""

    def record(error: BaseException | None) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error is not None else None
        return logging.LogRecord("absl", logging.ERROR, "orbax", 1, "save failed", None, exc_info)

    unwritable = OSError(errno.EROFS, "Read-only file system", "run/checkpoints/2.orbax-checkpoint-tmp")
    assert not _FailedWrites().filter(record(unwritable))
    assert _FailedWrites().filter(record(ConnectionResetError(errno.ECONNRESET, "reset")))  # no file: kept
    assert _FailedWrites().filter(record(ValueError("another failure")))
    assert _FailedWrites().filter(record(None))


def test_an_export_of_another_optimizers_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    """orbax restores the optimizer state with the parameters: Adam's into Adafactor's tree failed,
    and reading_checkpoint then called the checkpoint damaged ('delete it'). Another learning rate
    is no obstacle."""
    program = compile_small(tmp_path, "adam")
    run = run_program(program, "--steps", "1", "--checkpoint-every", "1", "--eval-every", "0", "--out", "run")
    assert run.returncode == 0, run.stderr[-3000:]
    other = compile_small(tmp_path, "adafactor", **{"train.optimizer.name": "adafactor"})
    refused = run_program(other, "--export-init", "w.safetensors", "--resume", "--out", str(program / "run"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "holds the optimizer state of adam, which this program's optimizer (adafactor without momentum, " in (
        refused.stderr
    )
    assert "damaged" not in refused.stderr and not (other / "w.safetensors").exists()
