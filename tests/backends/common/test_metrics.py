"""backends/common/metrics.py: the records both backends write, their files, MFU and NaN checks."""

from __future__ import annotations

import ast
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from switchc.backends.common import metrics

from tests.backends.programs import tensorboard_events

STEP = {
    "loss": np.float32(2.5),
    "cross_entropy": np.array(2.25, np.float32),
    "z_loss": np.float32(4.0),
    "aux_loss": np.float32(1.0),
    "top1_gate": np.float32(0.5),
    "dropped_fraction": np.float32(0.25),
    "dropped_fraction/encoder/1": np.float32(0.5),
    "dropped_fraction/decoder/1": np.float32(0.0),
    "tokens_per_expert/encoder/1": np.array([3, 0, 1], np.int32),
    "tokens_per_expert/decoder/1": np.array([1, 1, 2], np.int32),
    "grad_norm": np.float32(1.5),
}


def test_a_record_is_flat_json_in_schema_order() -> None:
    entry = metrics.record(7, "train", STEP, learning_rate=1e-3, step_seconds=0.5, tokens_per_second=10.0, mfu=0.1)
    assert list(entry) == [
        "step",
        "split",
        "loss",
        "cross_entropy",
        "neg_log_perplexity",
        "aux_loss",
        "z_loss",
        "dropped_fraction",
        "top1_gate",
        "dropped_fraction/decoder/1",
        "dropped_fraction/encoder/1",
        "tokens_per_expert/decoder/1",
        "tokens_per_expert/encoder/1",
        "grad_norm",
        "learning_rate",
        "step_seconds",
        "tokens_per_second",
        "mfu",
    ]
    assert entry["step"] == 7 and entry["split"] == "train" and entry["neg_log_perplexity"] == -2.25
    assert entry["tokens_per_expert/encoder/1"] == [3, 0, 1]
    assert json.loads(json.dumps(entry)) == entry  # plain JSON types only
    assert all(type(value) in (int, str, float, list) for value in entry.values())


def test_a_dense_model_has_no_router_keys() -> None:
    entry = metrics.record(1, "eval", {"loss": 3.0, "cross_entropy": 3.0})
    assert entry == {"step": 1, "split": "eval", "loss": 3.0, "cross_entropy": 3.0, "neg_log_perplexity": -3.0}


def test_record_rejects_what_the_schema_cannot_hold() -> None:
    with pytest.raises(ValueError, match="split"):
        metrics.record(1, "test", {"loss": 1.0, "cross_entropy": 1.0})
    with pytest.raises(ValueError, match="only tokens_per_expert"):
        metrics.record(1, "train", {"loss": 1.0, "cross_entropy": 1.0, "grad_norm": np.ones(3)})
    with pytest.raises(ValueError, match="cross_entropy"):
        metrics.record(1, "train", {"loss": 1.0})


def test_average_means_values_and_sums_expert_counts() -> None:
    other = {**STEP, "loss": np.float32(3.5), "tokens_per_expert/encoder/1": np.array([1, 1, 1], np.int32)}
    mean = metrics.average([STEP, other])
    assert mean["loss"] == pytest.approx(3.0)
    assert list(mean["tokens_per_expert/encoder/1"]) == [4, 1, 2]


def test_mfu_is_model_flops_over_devices_times_peak() -> None:
    # 6e12 FLOPs in 0.5 s on 4 devices of 10 TFLOP/s each: 6e12 / (0.5 * 4 * 1e13) = 0.3
    assert metrics.model_flops_utilization(6e12, 0.5, 4, 1e13) == pytest.approx(0.3)
    assert math.isnan(metrics.model_flops_utilization(6e12, 0.0, 4, 1e13))


PROFILES = ("a100", "cpu", "h100", "h200", "tpuv3")


@pytest.mark.parametrize(
    ("requested", "platform", "kind", "chosen"),
    [
        (None, "cpu", "cpu", "cpu"),
        (None, "gpu", "NVIDIA H200", "h200"),
        (None, "gpu", "NVIDIA A100-SXM4-80GB", "a100"),
        (None, "tpu", "TPU v3", "tpuv3"),
        (None, "gpu", "NVIDIA GeForce RTX 4090", "tpuv3"),  # unknown: the default
        ("h100", "cpu", "cpu", "h100"),
    ],
)
def test_hardware_choice(requested: str | None, platform: str, kind: str, chosen: str) -> None:
    assert metrics.choose_hardware(requested, platform, kind, PROFILES, "tpuv3") == chosen


@pytest.mark.parametrize(
    ("requested", "kind", "fallback"),
    [
        (None, "NVIDIA GeForce RTX 4090", True),  # no profile named: the spec's, said as such
        (None, "TPU v3", False),
        (None, "NVIDIA H200", False),
        (None, "cpu", False),
        ("tpuv3", "NVIDIA GeForce RTX 4090", False),  # asked for
    ],
)
def test_the_start_line_says_when_no_profile_names_the_device(requested: str | None, kind: str, fallback: bool) -> None:
    """MFU on a GPU no profile names was measured against the spec's TPU v3 without a word."""
    platform = "cpu" if kind == "cpu" else "gpu"
    chosen = metrics.choose_hardware(requested, platform, kind, PROFILES, "tpuv3")
    said = metrics.mfu_against(chosen, 1.23e14, requested, kind, "tpuv3")
    assert said.startswith(f"MFU against {chosen} (1.23e+14 FLOP/s per device)")
    note = f": no profile is named in {kind!r}, so the spec's; --hardware NAME picks another"
    assert said.endswith(note) is fallback, said


def test_an_unknown_hardware_profile_is_an_error() -> None:
    with pytest.raises(SystemExit, match="unknown hardware profile 'v100'; profiles: a100, cpu"):
        metrics.choose_hardware("v100", "gpu", "Tesla V100", PROFILES, "tpuv3")


def test_check_finite_names_the_step_and_the_quantity() -> None:
    metrics.check_finite(3, np.float32(1.0), {"a": 0, "b": np.int32(0)})
    with pytest.raises(metrics.NonFiniteError, match=r"^step 3: the loss is nan$"):
        metrics.check_finite(3, np.float32("nan"), {"a": 5})
    with pytest.raises(metrics.NonFiniteError, match=r"^step 4: the loss is inf$"):
        metrics.check_finite(4, np.inf, {})
    with pytest.raises(metrics.NonFiniteError) as caught:
        metrics.check_finite(5, 1.0, {"a": 0, "encoder/0/ffn/wi": np.int32(7), "c": 1})
    assert str(caught.value) == (
        "step 5: the gradient of encoder/0/ffn/wi (and of 1 more parameters) is not finite (7 NaN/Inf elements)"
    )


def test_sigterm_asks_to_stop_and_more_sigterms_are_the_same_request() -> None:
    """SIGTERM only sets the request (the loop checkpoints the step and stops); a repeat, as when a
    job is signalled directly and through its launcher, changes nothing; restore() puts the old
    handler back."""
    before = signal.getsignal(signal.SIGTERM)
    stop = metrics.StopRequest().install()
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize(
    ("number", "step", "kept", "status", "says"),
    [
        (
            signal.SIGTERM,
            7,
            7,
            143,
            "SIGTERM: training stopped after step 7 (checkpoint 7 saved; the same command with",
        ),
        (signal.SIGINT, 9, 7, 130, "SIGINT: training stopped after step 9 (the latest checkpoint is step 7; the same"),
        (signal.SIGINT, 9, None, 130, "SIGINT: training stopped after step 9 (no checkpoint was saved)."),
        (
            signal.SIGINT,
            0,
            None,
            130,
            "SIGINT: training stopped before its first step ended (no checkpoint was saved).",
        ),
        (  # resumed at step 4 and stopped before step 5 ended: it said "after step 4 (checkpoint 4 saved"
            signal.SIGINT,
            (4, 4),
            4,
            130,
            "SIGINT: training stopped before its first step ended (the latest checkpoint is step 4; the same",
        ),
    ],
)
def test_a_stopped_run_says_where_it_stopped(
    number: int,
    step: int | tuple[int, int],
    kept: int | None,
    status: int,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reached, first = step if isinstance(step, tuple) else (step, 0)  # (the step reached, the run's first)
    with pytest.raises(SystemExit) as stopped:
        metrics.stop_interrupted(number, reached, kept, first=first)
    assert stopped.value.code == status
    assert says in capsys.readouterr().err


def test_metrics_module_needs_only_numpy() -> None:
    tree = ast.parse(Path(metrics.__file__).read_text())
    top = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert top <= {
        "__future__",
        "json",
        "logging",
        "math",
        "os",
        "signal",
        "sys",
        "time",
        "collections",
        "pathlib",
        "typing",
        "numpy",
    }


def test_metrics_log_writes_jsonl_and_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")
    with metrics.MetricsLog(tmp_path) as log:
        log.write(metrics.record(1, "train", STEP))
        log.write(metrics.record(1, "eval", STEP))
    assert [r["split"] for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")] == ["train", "eval"]
    values = [(e.step, v) for e in tensorboard_events(tmp_path / "tensorboard") for v in e.summary.value]
    tags = {v.tag for _, v in values}
    assert {"train/loss", "eval/loss", "train/neg_log_perplexity", "train/dropped_fraction/encoder/1"} <= tags
    histogram = next(v.histo for _, v in values if v.tag == "train/tokens_per_expert/encoder/1")
    assert list(histogram.bucket) == [3, 0, 1] and histogram.num == 4 and histogram.sum == 2  # experts 0,0,0,2


def test_resuming_drops_records_after_the_checkpoint(tmp_path: Path) -> None:
    with metrics.MetricsLog(tmp_path, tensorboard=False) as log:
        for step in (1, 2, 3):
            log.write(metrics.record(step, "train", STEP))
        log.write(metrics.record(2, "eval", STEP))
    with (tmp_path / "metrics.jsonl").open("a") as file:
        file.write('{"step": 4, "split": "tr')  # a line cut short by a killed process
    with metrics.MetricsLog(tmp_path, resume_step=2, tensorboard=False) as log:
        log.write(metrics.record(3, "train", STEP))
    found = [(r["step"], r["split"]) for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")]
    assert found == [(1, "train"), (2, "train"), (2, "eval"), (3, "train")]


def test_a_fresh_run_replaces_an_earlier_runs_records_and_events(tmp_path: Path) -> None:
    """A run that saved no checkpoint leaves metrics and TensorBoard events; a fresh run into its
    directory says it removes them, so that TensorBoard does not draw two runs on one time axis."""
    pytest.importorskip("tensorboardX")
    with metrics.MetricsLog(tmp_path) as log:
        assert log.note is None
        log.write(metrics.record(5, "train", STEP))
    with metrics.MetricsLog(tmp_path) as log:
        assert log.note == (
            f"note: starting afresh in {tmp_path}: removing an earlier run's metrics.jsonl and its TensorBoard events"
        )
        log.write(metrics.record(1, "train", STEP))
    assert [r["step"] for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")] == [1]
    assert {e.step for e in tensorboard_events(tmp_path / "tensorboard") if e.summary.value} == {1}
    (tmp_path / "metrics.jsonl").write_text("")  # events alone: not "an earlier run's its ..."
    with metrics.MetricsLog(tmp_path) as log:
        assert log.note == f"note: starting afresh in {tmp_path}: removing an earlier run's TensorBoard events"


def test_nothing_is_written_before_the_log_starts(tmp_path: Path) -> None:
    """A run stopped while its step compiles (after the log was set up) leaves the directory as it
    was: an earlier run's records are neither cleared (afresh) nor trimmed (resumed) until the log
    starts (the loops start it as their steps begin) or takes its first record, and a fresh
    directory gets no files. Once started, the earlier records are gone, record or not: a run
    stopped after a checkpoint but before its first record left them beside its checkpoints."""
    earlier = '{"step": 3, "split": "train"}\n{"step": 5, "split": "train"}\n'
    (tmp_path / "metrics.jsonl").write_text(earlier)
    for resume_step in (None, 3):
        with metrics.MetricsLog(tmp_path, resume_step=resume_step):
            pass
        assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.jsonl"]
        assert (tmp_path / "metrics.jsonl").read_text() == earlier
    with metrics.MetricsLog(tmp_path, resume_step=3, tensorboard=False) as log:
        log.write(metrics.record(4, "train", STEP))
    assert [r["step"] for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")] == [3, 4]
    with metrics.MetricsLog(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()
    with metrics.MetricsLog(tmp_path, tensorboard=False) as log:
        log.start()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_progress_prints_plain_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = metrics.Progress(total=20, stream=stream)
    progress.advance()
    entry = metrics.record(10, "train", STEP, tokens_per_second=12345.0, mfu=0.0123)
    progress.show(entry)
    progress.show(metrics.record(20, "eval", STEP))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "train step 10/20  loss 2.5  ce 2.25  aux 1  z 4  dropped 0.25  gnorm 1.5  tok/s 12.3k  mfu 1.23%",
        "eval  step 20/20  loss 2.5  ce 2.25  aux 1  z 4  dropped 0.25  gnorm 1.5",
    ]


def test_a_router_loss_with_coefficient_0_is_left_out_of_the_progress_line() -> None:
    """z at coefficient 0 read as part of the loss (two testers asked); the record keeps it."""
    assert metrics.unweighted(SimpleNamespace(aux_loss_coef=0.01, z_loss_coef=0.0)) == ("z_loss",)
    assert metrics.unweighted(SimpleNamespace(aux_loss_coef=0.01, z_loss_coef=0.001)) == ()
    assert metrics.unweighted(SimpleNamespace()) == ()  # a dense model's CONFIG has neither
    stream = io.StringIO()
    progress = metrics.Progress(total=20, stream=stream, hidden=("z_loss",))
    entry = metrics.record(10, "train", STEP)
    progress.show(entry)
    assert stream.getvalue() == "train step 10/20  loss 2.5  ce 2.25  aux 1  dropped 0.25  gnorm 1.5\n"
    assert entry["z_loss"] == 4


def test_progress_draws_a_bar_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    progress = metrics.Progress(total=4, initial=2, stream=stream, bar=True)
    progress.advance()
    progress.show(metrics.record(3, "train", STEP))
    progress.show(metrics.record(3, "eval", STEP))
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "3/4" in text and "loss 2.5" in text
    assert "eval  step 3/4  loss 2.5" in text


@pytest.mark.parametrize(
    ("kept", "says"),
    [
        (4, "(the latest checkpoint is step 4, the weights this step started from)."),
        (2, "(the latest checkpoint is step 2, from before it)."),
        (None, "(no checkpoint was saved)."),
    ],
)
def test_a_nan_stop_says_what_the_latest_checkpoint_holds(
    kept: int | None, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        metrics.stop_training(metrics.NonFiniteError(5, "the loss", "nan"), kept)
    assert stopped.value.code == metrics.NON_FINITE_EXIT
    assert capsys.readouterr().err == f"error: step 5: the loss is nan; training stopped {says}\n"


def test_a_stop_line_is_one_write_so_ranks_lines_cannot_run_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank says why it stops on the stderr they share; with PYTHONUNBUFFERED each write is
    a system call of its own, and print()'s separate newline let two ranks' lines run together."""
    writes: list[str] = []
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(write=writes.append, flush=lambda: None))
    with pytest.raises(SystemExit):
        metrics.stop_training(metrics.NonFiniteError(2, "the loss", "nan"), None, "rank 1: ")
    with pytest.raises(SystemExit):
        metrics.stop_interrupted(signal.SIGTERM, 3, 3, who="rank 1: ")
    assert writes == [
        "error: rank 1: step 2: the loss is nan; training stopped (no checkpoint was saved).\n",
        "\nrank 1: SIGTERM: training stopped after step 3 (checkpoint 3 saved; the same command with --resume "
        "continues from it).\n",
    ]


@pytest.mark.parametrize(
    ("kept", "who", "said"),
    [
        (4, "", "the latest checkpoint is step 4; once there is room, the same command with --resume continues"),
        (None, "rank 1: ", "no checkpoint was saved"),
    ],
)
def test_a_file_the_run_cannot_write_stops_it_in_one_line(kept: int | None, who: str, said: str) -> None:
    """A save that fails mid-run (a full disk): before, the JAX program printed orbax's traceback
    and never exited, its save threads failed; now one line and status 1, at once."""
    code = (
        "import errno, sys\n"
        "from switchc.backends.common import metrics\n"
        "error = OSError(errno.EROFS, 'Read-only file system', 'run/checkpoints/6.tmp')\n"
        f"metrics.stop_writing(error, {kept!r}, {who!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {who}cannot write run/checkpoints/6.tmp: Read-only file system; training stopped ({said}).\n"
    )


def test_a_nan_metric_goes_to_tensorboard_without_tensorboardx_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A NaN stop's record holds NaN: tensorboardX warned "NaN or Inf found in input tensor." for
    each such value, lines the run's own error does not explain (a user-test)."""
    pytest.importorskip("tensorboardX")
    with caplog.at_level(logging.WARNING), metrics.MetricsLog(tmp_path) as log:
        log.write({"step": 2, "split": "train", "loss": float("nan"), "grad_norm": float("inf")})
    assert "NaN or Inf" not in caplog.text
    assert math.isnan(metrics.read_jsonl(tmp_path / "metrics.jsonl")[0]["loss"])
