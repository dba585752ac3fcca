"""backends/common/program.py's check of what the data pipeline needs of a spec's shapes: a located
error from `switchc compile`, for either backend, and no program written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.spec import load_spec
from switchc.spec.emit import to_yaml


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["train.targets_length=8"],
            "<command line>:1:28: error: span corruption of the 141 tokens that inputs_length 128 holds makes 29 "
            "target tokens, more than targets_length 8",
        ),
        (
            ["model.vocab_size=262"],  # switch-tiny's byte tokenizer: ids above 258 are sentinels
            "switch-tiny.yaml:29:18: error: span corruption of 141 tokens makes up to 7 spans, but the byte "
            "tokenizer has 3 sentinels",
        ),
        (
            ["data.objective=prefix_lm", "train.targets_length=1"],
            "<command line>:2:28: error: prefix_lm needs targets_length >= 2",
        ),
        (
            ["model.vocab_size=200"],
            "<command line>:1:24: error: the byte tokenizer needs vocab_size >= 260",
        ),
    ],
    ids=["targets-too-short", "too-few-sentinels", "prefix-lm-lengths", "byte-vocabulary"],
)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_data_shapes_are_checked_when_the_program_is_made(
    tmp_path: Path, backend: str, settings: list[str], message: str
) -> None:
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    out = tmp_path / "program"
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "--backend", backend, "-o", str(out), *overrides])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "\nhint: " in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("settings", "error", "note"),
    [
        (  # the built-in file's targets_length is too short for the inputs_length given on the command line
            ["train.inputs_length=512"],
            "switch-tiny.yaml:30:19: error: span corruption of the 568 tokens that inputs_length 512 holds",
            "<command line>:1:27: note: train.inputs_length is set here\n    1 | --set train.inputs_length=512",
        ),
        (  # the file's inputs_length makes more spans than the vocabulary given on the command line has sentinels
            ["model.vocab_size=262"],
            "switch-tiny.yaml:29:18: error: span corruption of 141 tokens makes up to 7 spans",
            "<command line>:1:24: note: model.vocab_size is set here",
        ),
    ],
    ids=["inputs-length-set", "vocab-size-set"],
)
def test_a_shape_error_notes_the_setting_given_elsewhere_that_caused_it(
    settings: list[str], error: str, note: str
) -> None:
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    result = CliRunner().invoke(main, ["check", "switch-tiny", *overrides])
    assert result.exit_code == 2, result.output
    assert error in result.stderr
    assert note in result.stderr
    assert result.stderr.index(note) < result.stderr.index("\nhint: ")  # the note belongs to the error


def test_a_shape_error_notes_only_the_settings_it_follows_from(tmp_path: Path) -> None:
    """inputs_length too short for span corruption does not depend on the vocabulary (too few
    sentinels does); a byte vocabulary too small does depend on the tokenizer."""
    spec = tmp_path / "short.yaml"
    spec.write_text(to_yaml(load_spec("switch-tiny", ["train.inputs_length=2"])))
    sets = ["--set", "model.vocab_size=600", "--set", "data.noise_density=0.2"]
    result = CliRunner().invoke(main, ["check", str(spec), *sets])
    assert result.exit_code == 2, result.output
    assert "error: span corruption needs inputs_length >= 3" in result.stderr
    assert "note: data.noise_density is set here" in result.stderr
    assert "model.vocab_size" not in result.stderr
    result = CliRunner().invoke(
        main, ["check", "switch-tiny", "--set", "model.vocab_size=200", "--set", "data.tokenizer=byte"]
    )
    assert "error: the byte tokenizer needs vocab_size >= 260" in result.stderr
    assert "note: data.tokenizer is set here" not in result.stderr  # the same place: no note
    small = tmp_path / "small.yaml"
    small.write_text(to_yaml(load_spec("switch-tiny", ["model.vocab_size=200", "data.tokenizer=sentencepiece"])))
    result = CliRunner().invoke(main, ["check", str(small), "--set", "data.tokenizer=byte"])
    assert result.exit_code == 2, result.output
    assert "small.yaml:3:15: error: the byte tokenizer needs vocab_size >= 260" in result.stderr
    assert "<command line>:1:22: note: data.tokenizer is set here" in result.stderr


@pytest.mark.parametrize(
    ("lengths", "hint", "fixes"),
    [
        ((1, 1), "set train.inputs_length to 3 or more\n", ["train.inputs_length=3", "train.targets_length=3"]),
        (
            (2, 8),
            "set train.inputs_length to 3 or more, or use data.objective: prefix_lm\n",
            ["data.objective=prefix_lm"],
        ),
        ((3, 1), "set train.targets_length to at least 3\n", ["train.targets_length=3"]),
        (
            (3, 2),
            "set train.targets_length to at least 3, or use data.objective: prefix_lm\n",
            ["data.objective=prefix_lm"],
        ),
        (
            (128, 8),
            "set train.targets_length to at least 29, or lower data.noise_density (or raise",
            ["data.noise_density=0.03"],
        ),
    ],
)
def test_a_span_corruption_hint_offers_only_what_passes(lengths: tuple[int, int], hint: str, fixes: list[str]) -> None:
    """prefix_lm needs both lengths >= 2, and under 3 target tokens no noise density fits a span."""
    inputs, targets = lengths
    settings = {"train.inputs_length": str(inputs), "train.targets_length": str(targets)}
    result = CliRunner().invoke(
        main, ["check", "switch-tiny", *(a for k, v in settings.items() for a in ("--set", f"{k}={v}"))]
    )
    assert result.exit_code == 2 and f"hint: {hint}" in result.stderr + "\n", result.stderr
    settings |= dict(fix.split("=") for fix in fixes)
    fixed = CliRunner().invoke(
        main, ["check", "switch-tiny", *(a for k, v in settings.items() for a in ("--set", f"{k}={v}"))]
    )
    assert fixed.exit_code == 0, fixed.stderr


def test_a_shape_error_at_a_setting_given_on_the_command_line_notes_nothing_from_the_same_place() -> None:
    result = CliRunner().invoke(
        main, ["check", "switch-tiny", "--set", "train.inputs_length=512", "--set", "train.targets_length=16"]
    )
    assert result.exit_code == 2, result.output
    assert "<command line>:2:28: error: span corruption" in result.stderr
    assert "note:" not in result.stderr


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_header_names_sentencepiece_for_a_spec_that_tokenizes_with_it(tmp_path: Path, backend: str) -> None:
    """runtime/data.py imports sentencepiece to train or load the spec's tokenizer (the default, and
    the paper specs'); a byte-tokenizer program does not need it."""
    needs = "This spec's SentencePiece tokenizer also needs sentencepiece."
    for tokenizer, said in (("sentencepiece", True), ("byte", False)):
        out = tmp_path / tokenizer
        args = ["compile", "switch-tiny", "--backend", backend, "-o", str(out), "--set", f"data.tokenizer={tokenizer}"]
        result = CliRunner().invoke(main, [*args, "--set", "model.vocab_size=1024"])
        assert result.exit_code == 0, result.output
        assert (needs in (out / "train.py").read_text()) is said, tokenizer


def test_the_pytorch_header_shows_the_launch_lines_of_its_mesh(tmp_path: Path) -> None:
    """A one-device mesh runs with python alone; a larger one needs torchrun, and `python train.py`
    fails there ("needs 2 processes, this job has 1"): it was shown for every mesh."""
    for axes, shown, hidden in (
        ("{data: 1}", "    python train.py                           # one process", "torchrun --"),
        ("{expert: 2}", "    torchrun --standalone --nproc-per-node 2 train.py    ", "    python train.py   "),
    ):
        out = tmp_path / axes.strip("{}").replace(": ", "")
        args = ["compile", "switch-tiny", "--backend", "torch", "-o", str(out), "--set", f"mesh.axes={axes}"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        header = (out / "train.py").read_text().split('"""')[1]
        assert shown in header and hidden not in header, header


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_switchcs_runtime_has_as_siblings_the_common_modules_a_program_carries(backend: str) -> None:
    """The runtime imports backends/common's modules as siblings (`from . import flags`), as a
    program's runtime/ holds them: each runtime package gives exactly COMMON_MODULES as its own."""
    import importlib
    import sys

    from switchc.backends.common.program import COMMON_MODULES

    package = importlib.import_module(f"switchc.backends.{backend}.runtime").__name__
    for name in COMMON_MODULES:
        common = importlib.import_module(f"switchc.backends.common.{name.removesuffix('.py')}")
        assert sys.modules[f"{package}.{name.removesuffix('.py')}"] is common, name
    program = importlib.import_module(f"switchc.backends.{backend}.program")
    assert not set(program.RUNTIME_MODULES) & set(COMMON_MODULES)
