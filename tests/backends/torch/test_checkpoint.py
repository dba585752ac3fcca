"""The PyTorch program's checkpoints (runtime/checkpoint.py) beyond what a training run shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from switchc.backends.common import flags
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


def test_a_truncated_checkpoint_read_back_is_one_line(tmp_path: Path) -> None:
    """DCP's CheckpointException is a BaseException: unwrapped, flags.reading_checkpoint turns the
    rank's own error into the one-line damaged-checkpoint error, as for JAX's checkpoints."""
    checkpoints = Checkpoints(tmp_path, keep=3, primary=True)
    for step in (1, 2):
        checkpoints.save(step, {"model/x": torch.arange(4096.0)}, {"step": step})
    (data,) = (tmp_path / "2").glob("*.distcp")
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(SystemExit) as stopped, flags.reading_checkpoint(checkpoints, 2):
        checkpoints.restore(2, {"model/x": torch.zeros(4096)})
    message = str(stopped.value.code)
    assert message.startswith(f"error: --resume: cannot read checkpoint {tmp_path / '2'}: ")
    assert message.endswith("hint: the checkpoint is damaged; delete it to continue from step 1")
    assert "CheckpointException" not in message and len(message.splitlines()) == 2
