"""The PyTorch program's checkpoints (runtime/checkpoint.py) beyond what a training run shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from switchc.backends.torch.runtime.checkpoint import Checkpoints


class _Interrupting:
    """A value whose pickling is interrupted, as Ctrl-C interrupts DCP in the middle of a save."""

    def __reduce__(self) -> tuple[object, ...]:
        raise KeyboardInterrupt


def test_ctrl_c_during_a_save_stops_as_ctrl_c_and_commits_nothing(tmp_path: Path) -> None:
    """DCP wraps what a rank raises in a CheckpointException; the loop stops on KeyboardInterrupt
    (the stop message, status 130), so the save hands it on as that, and nothing is committed."""
    checkpoints = Checkpoints(tmp_path, keep=2, primary=True)
    checkpoints.save(2, {"model/x": torch.ones(2)}, {"step": 2})
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(3, {"model/x": torch.zeros(2), "optimizer/x/step": _Interrupting()}, {"step": 3})
    assert checkpoints.latest_step() == 2
    assert (tmp_path / "3.tmp").is_dir()  # deleted by the next run's clean()
    checkpoints.clean()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["2"]
