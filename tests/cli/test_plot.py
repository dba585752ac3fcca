"""`switchc plot RUN_DIR...`: metrics.jsonl -> loss.png and experts.png, and its user errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.errors import PlainUserError
from switchc.runs import dropped_curves, expert_load, layer_order, loss_curves, read_run

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = ("encoder/1", "encoder/3", "decoder/1")


def switch_records(steps: int = 4) -> list[dict[str, object]]:
    """A Switch run: train records every step, eval every other; 4 experts per Switch layer."""
    records: list[dict[str, object]] = []
    for step in range(1, steps + 1):
        train: dict[str, object] = {
            "step": step,
            "split": "train",
            "loss": 6.0 - step,
            "cross_entropy": 5.9 - step,
            "neg_log_perplexity": step - 5.9,
            "aux_loss": 1.0 + 0.1 * step,
            "z_loss": 0.01,
            "dropped_fraction": 0.1,
            "top1_gate": 0.5,
            "grad_norm": 1.0,
            "learning_rate": 1e-3,
            "tokens_per_second": 1000.0,
            "mfu": 0.1,
            "step_seconds": 0.5,
        }
        for layer in sorted(LAYERS):  # written alphabetically; read back in model order
            index = LAYERS.index(layer)
            train[f"dropped_fraction/{layer}"] = 0.05 * index + 0.01 * step
            # the layer's last expert gets `step` more tokens than the others
            train[f"tokens_per_expert/{layer}"] = [10, 10, 10, 10 + step * (index + 1)]
        records.append(train)
        if step % 2 == 0:
            records.append({"step": step, "split": "eval", "loss": 6.5 - step, "cross_entropy": 6.4 - step})
    return records


def write_run(directory: Path, records: list[dict[str, object]]) -> Path:
    directory.mkdir(parents=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


def invoke(*args: str):
    return CliRunner().invoke(main, ["plot", *args])


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000, path


# ---- the figures' data ---------------------------------------------------------------------------


def test_loss_curves_hold_train_and_eval(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "switch", switch_records()))
    panels = loss_curves([run])
    assert list(panels) == ["loss", "load-balancing loss", "router z-loss"]
    by_label = {c.label: c for c in panels["loss"]}
    name = str(tmp_path / "switch")
    assert set(by_label) == {f"{name} {s} {k}" for s in ("train", "eval") for k in ("loss", "cross_entropy")}
    assert by_label[f"{name} train loss"].steps == (1, 2, 3, 4)
    assert by_label[f"{name} train loss"].values == (5.0, 4.0, 3.0, 2.0)
    assert by_label[f"{name} eval loss"].steps == (2, 4)
    assert by_label[f"{name} eval loss"].values == (4.5, 2.5)
    assert [c.key for c in panels["load-balancing loss"]] == ["aux_loss"]
    assert [c.key for c in panels["router z-loss"]] == ["z_loss"]


def test_expert_load_is_fractions_averaged_over_the_last_records(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "switch", switch_records()))
    last = expert_load(run, last=1)
    assert last is not None
    assert last.layers == LAYERS and last.steps == (4,)
    assert last.fractions[0] == pytest.approx((10 / 44, 10 / 44, 10 / 44, 14 / 44))
    assert "train step 4" in last.label
    mean = expert_load(run, last=2)
    assert mean is not None and mean.steps == (3, 4)
    assert mean.fractions[2][3] == pytest.approx((19 / 49 + 22 / 52) / 2)
    assert "mean of the last 2 train records (steps 3-4)" in mean.label
    for row in mean.fractions:
        assert sum(row) == pytest.approx(1.0)


def test_dropped_fraction_per_layer(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "switch", switch_records()))
    curves = dropped_curves(run)
    assert [c.key for c in curves] == [f"dropped_fraction/{layer}" for layer in LAYERS]
    assert curves[2].values == pytest.approx((0.11, 0.12, 0.13, 0.14))


def test_layers_are_in_model_order() -> None:
    names = ["decoder/10", "encoder/11", "decoder/2", "encoder/3", "router"]
    assert sorted(names, key=layer_order) == ["encoder/3", "encoder/11", "decoder/2", "decoder/10", "router"]


def test_old_runs_without_split_are_train(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "old", [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]))
    assert [r.split for r in run.records] == ["train", "train"]
    assert expert_load(run, 10) is None and dropped_curves(run) == []
    assert [c.label for c in loss_curves([run])["loss"]] == [f"{tmp_path / 'old'} train loss"]


def test_a_layer_with_no_tokens_is_blank_not_an_error(tmp_path: Path) -> None:
    records = [{"step": 1, "loss": 1.0, "tokens_per_expert/encoder/1": [0, 0]}]
    load = expert_load(read_run(write_run(tmp_path / "r", records)), 1)
    assert load is not None and all(math.isnan(f) for f in load.fractions[0])


# ---- the command ---------------------------------------------------------------------------------


def test_plot_writes_both_pngs_beside_the_run(tmp_path: Path) -> None:
    run = write_run(tmp_path / "switch", switch_records())
    result = invoke(str(run))
    assert result.exit_code == 0, result.output
    assert_png(run / "loss.png")
    assert_png(run / "experts.png")
    assert f"wrote {run / 'experts.png'}" in result.stderr


def test_a_dense_run_gets_no_expert_figure(tmp_path: Path) -> None:
    records = [{"step": s, "split": "train", "loss": 3.0 / s, "cross_entropy": 3.0 / s} for s in range(1, 5)]
    run = write_run(tmp_path / "dense", records)
    result = invoke(str(run))
    assert result.exit_code == 0, result.output
    assert_png(run / "loss.png")
    assert not (run / "experts.png").exists()
    # into a folder where a Switch run's plot was drawn: its experts.png would pass for this run's
    switch = write_run(tmp_path / "switch", switch_records())
    assert invoke(str(switch), "-o", str(tmp_path / "figures")).exit_code == 0
    result = invoke(str(run), "-o", str(tmp_path / "figures"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "figures" / "experts.png").exists()
    assert "removed " in result.stderr and "an earlier plot's: these runs have no Switch layers" in result.stderr


def test_several_runs_are_overlaid(tmp_path: Path) -> None:
    dense = write_run(tmp_path / "dense", [{"step": s, "loss": 4.0 - s, "cross_entropy": 4.0 - s} for s in (1, 2, 3)])
    switch = write_run(tmp_path / "switch", switch_records())
    out = tmp_path / "compare"
    result = invoke(str(dense), str(switch), "-o", str(out), "--last", "3")
    assert result.exit_code == 0, result.output
    assert_png(out / "loss.png")
    assert_png(out / "experts.png")
    runs = {c.run for c in loss_curves([read_run(dense), read_run(switch)])["loss"]}
    assert runs == {str(dense), str(switch)}


def test_a_last_line_still_being_written_is_left_out(tmp_path: Path) -> None:
    """A program appends a line per record: while it runs, the last one may lack its end."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    found = read_run(run)
    assert [record.step for record in found.records] == [1] and found.partial_line
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}')  # complete JSON
    assert [record.step for record in read_run(run).records] == [1, 2] and not read_run(run).partial_line


def test_blank_lines_at_the_end_of_the_metrics_are_no_records(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n\n  \n')
    assert [record.step for record in read_run(run).records] == [1]
    (run / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1.0}\n\n  ')  # no final newline
    found = read_run(run)
    assert [record.step for record in found.records] == [1] and not found.partial_line


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        ('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": \n', "metrics.jsonl:2: not valid JSON (Expecting value"),
        ('{"step": 1, "loss": 2.0}\n\n{"step": 2}\n', "metrics.jsonl:2: empty line"),
        ("[1, 2]\n", "metrics.jsonl:1: expected a JSON object, got list"),
        ('{"loss": 2.0}\n', "metrics.jsonl:1: no 'step' key"),
        ('{"step": "2"}\n', "metrics.jsonl:1: 'step' must be an integer, got '2'"),
        ('{"step": 1, "split": "test"}\n', "metrics.jsonl:1: 'split' must be 'train' or 'eval', got 'test'"),
        ('{"step": 1, "tokens_per_expert/encoder/1": 4}\n', "metrics.jsonl:1: 'tokens_per_expert/encoder/1' must be"),
        ("", "metrics.jsonl is empty"),
        ('{"step": 1, "mfu": 0.1}\n', "no run has a 'loss' to plot"),
        ('{"step": 1, "loss": "x"}\n', "metrics.jsonl:1: 'loss' must be a number, got 'x'"),
        (
            '{"step": 1, "loss": 1, "dropped_fraction/encoder/1": [0]}\n',
            "'dropped_fraction/encoder/1' must be a number",
        ),
    ],
)
def test_bad_metrics_are_one_line_errors(tmp_path: Path, contents: str, message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(contents)
    result = invoke(str(run))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2  # the message, and at most a hint


def test_missing_run_directory_and_file(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: run directory {tmp_path / 'nowhere'} does not")
    (tmp_path / "empty").mkdir()
    result = invoke(str(tmp_path / "empty"))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {tmp_path / 'empty'} has no metrics.jsonl")
    assert "hint: a generated program writes it" in result.stderr


def test_several_runs_need_an_output_directory(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a", [{"step": 1, "loss": 1.0}])
    second = write_run(tmp_path / "b", [{"step": 1, "loss": 1.0}])
    result = invoke(str(first), str(second))
    assert result.exit_code == 2 and result.stderr.startswith("error: plotting several runs needs -o DIR")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke(str(first), "-o", str(blocker / "such"))  # -o is created if missing, but not through a file
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {blocker / 'such'}: ")


def test_read_run_is_usable_as_a_library(tmp_path: Path) -> None:
    with pytest.raises(PlainUserError, match="does not exist"):
        read_run(tmp_path / "missing")


def test_a_png_that_cannot_be_written_beside_the_run_hints_at_o(tmp_path: Path) -> None:
    """A run on read-only storage (here: a folder in loss.png's place, which fails alike, as root
    too): the hint named no way on ('choose a path you can write to'); -o writes elsewhere."""
    run = write_run(tmp_path / "switch", switch_records())
    (run / "loss.png").mkdir()
    result = invoke(str(run))
    assert result.exit_code == 2, result.output
    said = f"error: {run / 'loss.png'}: Is a directory\nhint: write the PNGs elsewhere: -o DIR\n"
    assert result.stderr == said, result.stderr
    assert invoke(str(run), "-o", str(tmp_path / "plots")).exit_code == 0
