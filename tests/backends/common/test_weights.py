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


def test_a_mismatch_says_how_many_parameters_the_model_has_and_hints_at_the_spec(tmp_path: Path) -> None:
    weights.save(tmp_path / "w", {"x": np.zeros(2, np.float32)})
    with pytest.raises(weights.WeightsError) as error:
        weights.load(tmp_path / "w", TABLE)
    assert f"do not fit this model (the model has {len(TABLE)} parameters): " in str(error.value)
    assert "PARAMS" not in str(error.value)  # the program's internal table is no user's word
    assert error.value.hint == "export the weights from a program compiled from the same spec: the same model shapes"


@pytest.mark.parametrize("cut", [0, 20, 200, -4])
def test_a_truncated_file_is_said_to_be_truncated_with_its_size(tmp_path: Path, cut: int) -> None:
    """Cut at its header's length, inside its header, inside its data: not "not a safetensors file"
    (safetensors' "incomplete metadata, file not fully covered"), but its size, and to export again."""
    weights.save(tmp_path / "w", _params(), TABLE)
    data = (tmp_path / "w").read_bytes()
    (tmp_path / "cut").write_bytes(data[:cut])
    with pytest.raises(weights.WeightsError) as error:
        weights.load(tmp_path / "cut", TABLE)
    size = len(data[:cut])
    assert str(error.value).startswith(f"{tmp_path / 'cut'} is ")
    assert f"is truncated or damaged ({size} bytes" in str(error.value)
    assert error.value.hint is not None and "export the weights again" in error.value.hint
    if cut == -4:
        assert f"where its header describes {len(data)} bytes" in str(error.value)


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path: Path) -> None:
    params = _params()
    params["encoder/0/attention/q"][0, 0, 0] = np.nan
    params["encoder/final_norm/scale"][:2] = np.inf
    weights.save(tmp_path / "w", params, TABLE)
    with pytest.raises(weights.WeightsError) as error:
        weights.load(tmp_path / "w", TABLE)
    message = str(error.value)
    assert "holds NaN or Inf: 2 tensor(s) are not finite" in message
    assert "encoder/0/attention/q (1 of 16 values), encoder/final_norm/scale (2 of 4 values)" in message
    assert "shared/embedding" not in message
    assert error.value.hint is not None


def test_provenance_names_the_seed_or_the_file_the_weights_came_from(tmp_path: Path) -> None:
    assert weights.provenance("jax", 3) == ({"backend": "jax", "seed": "3"}, "seed 3")
    weights.save(tmp_path / "jax_init.safetensors", _params(), TABLE, {"backend": "jax", "seed": "0"})
    meta, words = weights.provenance("torch", 5, tmp_path / "jax_init.safetensors")
    assert meta == {
        "backend": "torch",
        "init_from": "jax_init.safetensors",
        "init_from_backend": "jax",
        "init_from_seed": "0",
    }
    assert words == "from jax_init.safetensors: written by the jax program, seed 0"  # not --seed 5: it made none
    weights.save(tmp_path / "again", _params(), TABLE, meta)  # a file exported from a file: the first one's seed
    assert weights.provenance("jax", 9, tmp_path / "again")[0] == {
        "backend": "jax",
        "init_from": "again",
        "init_from_backend": "torch",
        "init_from_seed": "0",
    }
    weights.save(tmp_path / "bare", _params(), TABLE)
    assert weights.provenance("jax", 9, tmp_path / "bare") == ({"backend": "jax", "init_from": "bare"}, "from bare")


def test_weights_of_another_architecture_load_with_a_note(tmp_path: Path) -> None:
    """Weights of a ReLU model fit a GELU model's shapes: they load (fine-tuning another variant is
    a choice), with a note naming each setting that differs. A file that records none, or the same
    settings, loads without one."""
    relu = {"model.ffn_activation": "relu", "model.dtype": "float32", "moe.top_k": 1}
    meta, _ = weights.provenance("jax", 0, architecture=relu)
    path = tmp_path / "relu.safetensors"
    weights.save(path, _params(), TABLE, meta)
    assert weights.architecture_note(path, relu) is None
    gelu = {**relu, "model.ffn_activation": "gelu", "moe.top_k": 2}
    assert weights.architecture_note(path, gelu) == (
        f'note: {path} was exported by a program of another model (model.ffn_activation "relu" there, "gelu" '
        "here; moe.top_k 1 there, 2 here); its weights fit this model's shapes, so they load"
    )
    plain = tmp_path / "plain.safetensors"
    weights.save(plain, _params(), TABLE)
    assert weights.architecture_note(plain, gelu) is None


def test_a_re_export_passes_on_the_checkpoint_its_source_was_trained_to(tmp_path: Path) -> None:
    """Weights exported from checkpoint 3, read with --init-from and exported again, were said to
    be 'seed 0' weights: the checkpoint and step are passed on instead."""
    first, _ = weights.provenance("jax", 0, checkpoint=("runs/a/checkpoints/3", 3))
    path = tmp_path / "step3.safetensors"
    weights.save(path, _params(), TABLE, first)
    meta, words = weights.provenance("torch", 0, init_from=path)
    assert meta == {
        "backend": "torch",
        "init_from": "step3.safetensors",
        "init_from_backend": "jax",
        "init_from_checkpoint": "runs/a/checkpoints/3",
        "init_from_step": "3",
    }
    assert words == "from step3.safetensors: written by the jax program, from checkpoint runs/a/checkpoints/3"
    again = tmp_path / "again.safetensors"
    weights.save(again, _params(), TABLE, meta)
    assert weights.provenance("jax", 0, init_from=again)[0]["init_from_checkpoint"] == "runs/a/checkpoints/3"
