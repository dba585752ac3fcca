"""`switchc train`: compile and run in one command, on the built-in default spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")


def test_train_runs_the_default_spec_and_logs_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "switchc", "train"]
    result = subprocess.run(
        [*command, "--steps", "4", "--out", str(out), "--set", "train.batch_size=8"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XLA_FLAGS": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "program" / "train.py").is_file() and (out / "program" / "spec.yaml").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(4, "train"), (4, "eval")]  # eval at the end
    assert 0 < records[0]["cross_entropy"] < 10
    assert (out / "checkpoints" / "4").is_dir() and list((out / "tensorboard").glob("events.out.tfevents.*"))

    resumed = subprocess.run(
        [*command, "--steps", "6", "--out", str(out), "--set", "train.batch_size=8", "--resume", "--eval-every", "0"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XLA_FLAGS": ""},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(4, "train"), (4, "eval"), (6, "train")]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["4", "6"]


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
