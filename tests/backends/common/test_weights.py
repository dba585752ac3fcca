"""backends/common/weights.py: the weights file both programs read and write (safetensors)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from switchc.backends.common import weights

TABLE = {
    "shared/embedding": ((6, 4), ("vocab", "embed"), 1.0),
    "encoder/0/attention/q": ((4, 2, 2), ("embed", "heads", "kv"), 0.1),
    "encoder/final_norm/scale": ((4,), ("embed",), 0.0),
}


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, (shape, _, _) in TABLE.items()}


def test_round_trip_in_table_order_with_metadata(tmp_path: Path) -> None:
    params = _params()
    path = tmp_path / "w.safetensors"
    weights.save(path, dict(reversed(params.items())), TABLE, {"seed": "3"})
    loaded = weights.load(path, TABLE)
    assert list(loaded) == list(TABLE)
    for name, value in params.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], value)
    assert weights.metadata(path) == {"format": "switchc-weights", "version": "1", "seed": "3"}


def test_a_saved_file_has_a_new_files_mode_and_a_failed_save_leaves_nothing(tmp_path: Path) -> None:
    """Written as any new file (umask 022: 0644; safetensors alone makes it 0600, unreadable to
    the group that shares a run); a save that fails (here: the path is a folder) leaves no file."""
    previous = os.umask(0o022)
    try:
        weights.save(tmp_path / "w.safetensors", _params(), TABLE)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        weights.save(tmp_path / "folder", _params(), TABLE)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder", "w.safetensors"]


def test_a_folder_is_not_a_weights_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory, not a weights file"):
        weights.load(tmp_path, TABLE)


def test_float64_and_bfloat16_like_inputs_are_stored_as_float32(tmp_path: Path) -> None:
    params = {name: value.astype(np.float64) for name, value in _params().items()}
    weights.save(tmp_path / "w", params, TABLE)
    assert all(value.dtype == np.float32 for value in weights.load(tmp_path / "w", TABLE).values())


def test_mismatches_are_named(tmp_path: Path) -> None:
    params = _params()
    weights.save(tmp_path / "w", params)
    table = dict(TABLE)
    table["encoder/0/attention/q"] = ((4, 4, 1), ("embed", "heads", "kv"), 0.1)
    del table["shared/embedding"]
    table["decoder/logits/lm_head"] = ((4, 6), ("embed", "vocab"), 0.1)
    with pytest.raises(weights.WeightsError) as error:
        weights.load(tmp_path / "w", table)
    message = str(error.value)
    assert "missing 1 parameter(s): decoder/logits/lm_head" in message
    assert "1 unexpected name(s): shared/embedding" in message
    assert "encoder/0/attention/q is [4, 2, 2], the model wants [4, 4, 1]" in message
    with pytest.raises(weights.WeightsError, match="missing"):
        weights.save(tmp_path / "v", {k: v for k, v in params.items() if k != "shared/embedding"}, TABLE)


def test_other_files_are_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    (tmp_path / "junk").write_bytes(b"\x00" * 64)
    with pytest.raises(weights.WeightsError, match="not a safetensors file"):
        weights.load(tmp_path / "junk", TABLE)
    save_file(_params(), str(tmp_path / "plain"))
    with pytest.raises(weights.WeightsError, match="not switchc weights"):
        weights.load(tmp_path / "plain", TABLE)
    with pytest.raises(FileNotFoundError):
        weights.load(tmp_path / "absent", TABLE)
