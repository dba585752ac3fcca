"""The studies in examples/ keep working (they are examples, run here at their default size)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_expert_scaling_prints_the_study(tmp_path) -> None:
    out = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "expert_scaling.py"), "--markdown", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| Switch-Base")]
    assert len(rows) == 5
    flops = {line.split("|")[4].strip() for line in rows}
    assert len(flops) == 1  # more experts, same FLOPs per sequence
    assert out.read_text() in (REPO / "examples" / "README.md").read_text()  # the README shows today's output


@pytest.mark.slow  # 85 s: it trains and resumes real runs through study.py; its pieces have their own tests
def test_headline_study_trains_resumes_and_reports(tmp_path) -> None:
    """The headline study at a toy size: every stage runs, a rerun keeps finished runs, --steps extends."""
    study = [sys.executable, str(REPO / "examples" / "headline" / "study.py"), "--out", str(tmp_path / "study")]
    tiny = ["--set", "data.tokenizer=byte", "--set", "model.vocab_size=512", "--set", "train.batch_size=4"]

    def run(*args: str) -> str:
        result = subprocess.run([*study, *tiny, *args], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    first = run("--steps", "2", "--eval-every", "1", "--only", "dense", "switch-2", "switch-4")
    table = (tmp_path / "study" / "results.md").read_text()
    assert "| dense (T5) | 0 |" in table and "| Switch, 2 experts | 0 |" in table
    # the paired table: Switch-2 against dense of seed 0, its gate against uniform routing's 0.5 ...
    assert table.count("| Switch, 2 experts | 0 |") == 2 and "(0.500) |" in table
    # ... and the expert-count sweep's two runs pooled (the label names the counts that ran), their mean gap beside
    pooled = next(line for line in table.splitlines() if line.startswith("| Switch, 2 and 4 experts, every run pooled"))
    assert "| 2 runs, " in pooled and pooled.count(" ± ") == 4
    assert (tmp_path / "study" / "headline.png").stat().st_size > 0
    assert "training to step 2" in first
    again = run("--steps", "2", "--eval-every", "1", "--only", "dense")
    assert "kept" in again and "training" not in again
    # a finished run trained with other settings is not passed off as this study's
    other = [*study, *tiny, "--steps", "2", "--only", "dense", "--set", "train.optimizer.learning_rate=0.01"]
    refused = subprocess.run(other, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "train.optimizer.learning_rate: 0.001 there, 0.01 here" in refused.stderr
    longer = run("--steps", "3", "--eval-every", "1", "--only", "dense")
    assert "training to step 3" in longer
    log = (tmp_path / "study" / "dense-seed0.log").read_text()
    assert "resumed at step 2" in log
    report = run("--steps", "2", "--report")  # every finished run, paired with dense by seed; trains nothing
    assert "training" not in report and "| Switch, 2 experts | 0 |" in report and "(1) |" in report
    # dense has gone on to step 3; the report at step 2 reads it as it stood at 2: the same rows as the first table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows == [
        line for line in (tmp_path / "study" / "results.md").read_text().splitlines() if line.startswith("| ")
    ]
    run("--steps", "2", "--report", "--only", "dense", "switch-2")  # one sparse variant: no pooled row
    assert "pooled" not in (tmp_path / "study" / "results.md").read_text()


def test_the_headline_studys_paired_table_without_sparse_runs_says_why(tmp_path, monkeypatch) -> None:
    """`study.py --only dense` at steps no sparse run had reached wrote a table header with no rows."""
    import importlib.util
    import json

    from switchc.runs import read_run

    loaded = importlib.util.spec_from_file_location("study", REPO / "examples" / "headline" / "study.py")
    assert loaded is not None and loaded.loader is not None
    study = importlib.util.module_from_spec(loaded)
    monkeypatch.setitem(sys.modules, "study", study)  # its dataclasses look their module up
    loaded.loader.exec_module(study)
    run = tmp_path / "dense-seed0"
    run.mkdir()
    records = [{"step": step, "split": "eval", "loss": 3.0, "cross_entropy": 3.0} for step in (2, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    text = study.paired({study.VARIANTS[0]: [read_run(run)]}, 4)
    assert text.startswith("No sparse model against dense: no sparse run in the table above has a dense run")
    assert "|" not in text
