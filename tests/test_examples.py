"""The studies in examples/ keep working (they are examples, run here at their default size)."""

from __future__ import annotations

import subprocess
import sys

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
