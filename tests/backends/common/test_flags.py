"""backends/common/flags.py's checks of a run: --resume against a checkpoint's record (spec digest,
seed, parameter shapes) and --steps against a cosine schedule's end."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from switchc.backends.common import flags

from switchc.spec import Spec, load_spec
from switchc.spec.emit import extendable, spec_digest, to_yaml
from tests.backends.programs import another_run_holding, fake_checkpoint

# A stack of 48 blocks whose layout yaml wraps onto a second line, a mesh whose rules are a block.
WIDE = (
    "model.encoder_layers=48",
    f"layout.encoder={{switch: {list(range(0, 48, 2))}}}",
    "mesh.axes={data: 2, expert: 2, model: 2}",
    "mesh.rules={batch: [data, expert], experts: [expert], heads: [model], mlp: [model], vocab: [model]}",
)


def _at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _leaves(data: Any, key: str = "") -> list[str]:
    if isinstance(data, dict) and data:
        return [leaf for name, value in data.items() for leaf in _leaves(value, f"{key}.{name}" if key else name)]
    return [key]


@pytest.mark.parametrize(("name", "sets"), [("switch-tiny", ()), ("switch-c", ()), ("switch-tiny", WIDE)])
def test_spec_settings_reads_every_setting_of_a_written_spec(name: str, sets: tuple[str, ...]) -> None:
    text = to_yaml(load_spec(name, sets))
    loaded = yaml.safe_load(text)
    settings = flags.spec_settings(text)
    for key, value in settings.items():  # each value as written reads back as the spec's
        assert yaml.safe_load(value) == _at(loaded, key), key
    for leaf in _leaves(loaded):  # and every setting is under one of the keys
        assert any(leaf == key or leaf.startswith(key + ".") for key in settings), leaf


def test_changed_settings_names_each_key_with_both_values() -> None:
    old = to_yaml(load_spec("switch-tiny"))
    new = to_yaml(load_spec("switch-tiny", ("moe.num_experts=4", "train.optimizer.learning_rate=0.002")))
    assert flags.changed_settings(old, new) == [
        "moe.num_experts: 8 in the checkpoint, 4 in this program",
        "train.optimizer.learning_rate: 0.001 in the checkpoint, 0.002 in this program",
    ]
    assert flags.changed_settings(old, old) == []


def test_rules_written_in_either_style_are_one_setting() -> None:
    """spec.yaml writes four rules in flow style and five in block style: the listing gave one line
    per block entry, each "(absent) in this program", plus "mesh.rules: (absent) ... {...}"."""
    mesh = "mesh.axes={data: 2, expert: 2, model: 2}"
    rules = "mesh.rules={batch: [data, expert], experts: [expert], heads: [model], mlp: [model]%s}"
    five, four = (to_yaml(load_spec("switch-tiny", (mesh, rules % more))) for more in (", vocab: [model]", ""))
    from switchc.spec import emit

    assert flags.WHOLE_MAPPINGS == emit.WHOLE_MAPPINGS  # the programs' listing and switchc train's agree
    assert "  rules:\n    batch: [data, expert]\n" in five and "  rules: {batch: [data, expert], " in four
    assert flags.changed_settings(five, four) == [
        "mesh.rules: {batch: [data, expert], experts: [expert], heads: [model], mlp: [model], vocab: [model]} in the "
        "checkpoint, {batch: [data, expert], experts: [expert], heads: [model], mlp: [model]} in this program"
    ]


def _program(tmp_path: Path, spec: Spec, params: dict[str, tuple[int, ...]] | None = None) -> Any:
    """A stand-in for a generated program's model module: the names check_resume reads."""
    folder = tmp_path / f"program{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "spec.yaml").write_text(to_yaml(spec))
    shapes = params or {"encoder/0/experts/wi": (spec.moe.num_experts if spec.moe else 1, 4, 8)}
    return SimpleNamespace(
        __file__=str(folder / "model.py"),
        SPEC_DIGEST=spec_digest(spec),
        EXTENDABLE=extendable(spec),
        CONFIG=SimpleNamespace(schedule=spec.train.optimizer.schedule, steps=spec.train.steps),
        PARAMS={name: (shape, (), 1.0) for name, shape in shapes.items()},
    )


def _args(seed: int = 0, allow_changes: bool = False) -> argparse.Namespace:
    return argparse.Namespace(seed=seed, allow_changes=allow_changes)


def _record(model: Any, **meta: Any) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """What a checkpoint written by `model` holds: its meta record and its parameters' shapes."""
    record = {"step": 4, "seed": 0, "examples_seen": 16, **flags.run_identity(model), **meta}
    return record, {name: shape for name, (shape, _, _) in model.PARAMS.items()}


def test_a_checkpoint_of_the_same_spec_resumes_with_more_steps(tmp_path: Path) -> None:
    run = _program(tmp_path, load_spec("switch-tiny"))
    longer = _program(tmp_path, load_spec("switch-tiny", ("train.steps=2000",)))
    assert longer.SPEC_DIGEST == run.SPEC_DIGEST
    flags.check_resume(*_record(run), _args(), longer, "checkpoint 4")


def test_a_checkpoint_of_another_spec_is_refused_with_what_changed(tmp_path: Path) -> None:
    run = _program(tmp_path, load_spec("switch-tiny"))
    other = _program(tmp_path, load_spec("switch-tiny", ("train.optimizer.learning_rate=0.002", "train.steps=50")))
    with pytest.raises(SystemExit) as refused:
        flags.check_resume(*_record(run), _args(), other, "checkpoint 4")
    message = str(refused.value)
    assert message.startswith("error: --resume: checkpoint 4 was written by a program built from another spec")
    assert "\n  train.optimizer.learning_rate: 0.001 in the checkpoint, 0.002 in this program\n" in message
    assert "train.steps" not in message  # more (or fewer) steps are the same run under rsqrt
    assert "hint: " in message and "--allow-changes" in message


def test_allow_changes_goes_on_and_says_what_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _program(tmp_path, load_spec("switch-tiny"))
    other = _program(tmp_path, load_spec("switch-tiny", ("train.optimizer.learning_rate=0.002",)))
    flags.check_resume(*_record(run), _args(allow_changes=True), other, "checkpoint 4")
    assert "note: --allow-changes: checkpoint 4 continues with other settings:" in capsys.readouterr().err
    flags.check_resume(*_record(run), _args(allow_changes=True), other, "checkpoint 4", announce=False)
    assert capsys.readouterr().err == ""  # the other processes of a job stay quiet


def test_an_export_reads_a_checkpoint_of_any_seed_and_settings_whose_shapes_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--export-init with --resume reads weights only: the seed, the mesh or the learning rate of
    the program that exports need not be the run's (it needed --allow-changes and --seed before);
    what changed is said, and other shapes are still refused."""
    run = _program(tmp_path, load_spec("switch-tiny"))
    other = _program(tmp_path, load_spec("switch-tiny", ("mesh.axes={expert: 2}",)))
    exporting = argparse.Namespace(seed=5, allow_changes=False, export_init=tmp_path / "w.safetensors")
    flags.check_resume(*_record(run), exporting, other, "checkpoint 4")
    said = capsys.readouterr().err
    assert "note: checkpoint 4 was written by a program of other settings (its weights fit):" in said
    assert "mesh.axes" in said
    fewer = _program(tmp_path, load_spec("switch-tiny", ("moe.num_experts=4",)))
    with pytest.raises(SystemExit, match="does not fit this program's model"):
        flags.check_resume(*_record(run), exporting, fewer, "checkpoint 4")


def test_allow_changes_refuses_parameters_of_other_shapes(tmp_path: Path) -> None:
    run = _program(tmp_path, load_spec("switch-tiny"))
    fewer = _program(tmp_path, load_spec("switch-tiny", ("moe.num_experts=4",)))
    with pytest.raises(SystemExit) as refused:
        flags.check_resume(*_record(run), _args(allow_changes=True), fewer, "checkpoint 4")
    message = str(refused.value)
    wi = "encoder/0/experts/wi: (8, 4, 8) in the checkpoint, (4, 4, 8) in this program"
    assert f"does not fit this program's model:\n  {wi}\n" in message
    assert "moe.num_experts: 8 in the checkpoint, 4 in this program" in message


def test_same_spec_with_missing_or_extra_parameters_is_refused(tmp_path: Path) -> None:
    """A checkpoint from before SPEC_DIGEST (no digest recorded) is checked by its shapes alone."""
    run = _program(tmp_path, load_spec("switch-tiny"), {"a": (2,), "b": (3,)})
    meta, _ = _record(run)
    del meta["spec_digest"]
    flags.check_resume(meta, {"a": (2,), "b": (3,)}, _args(), run, "checkpoint 4")
    with pytest.raises(SystemExit, match=r"\n  b: absent in the checkpoint, \(3,\) in this program\n  c: \(1,\) in"):
        flags.check_resume(meta, {"a": (2,), "c": (1,)}, _args(), run, "checkpoint 4")


def test_another_seed_is_refused(tmp_path: Path) -> None:
    run = _program(tmp_path, load_spec("switch-tiny"))
    with pytest.raises(SystemExit, match=r"trained with --seed 0, not 1: a resumed run keeps .*\nhint: add --seed 0"):
        flags.check_resume(*_record(run), _args(seed=1), run, "checkpoint 4")


def test_a_run_given_another_seed_resumes_with_a_program_of_that_train_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train.py --seed 5` trains a spec of train.seed 0 with seed 5, which its checkpoints record;
    `switchc train --resume` continues it with `--set train.seed=5`, a program whose spec.yaml (and
    SPEC_DIGEST, which hashes the seed) differs from the run's in train.seed alone. That program
    refused the checkpoint as another spec's ("train.seed: 0 in the checkpoint, 5 in this
    program"): the seed is the one setting a checkpoint records apart, and is compared with it."""
    run = _program(tmp_path, load_spec("switch-tiny"))
    seeded = _program(tmp_path, load_spec("switch-tiny", ("train.seed=5", "train.steps=2000", "train.remat=full")))
    assert seeded.SPEC_DIGEST != run.SPEC_DIGEST
    flags.check_resume(*_record(run, seed=5), _args(seed=5), seeded, "checkpoint 4")
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit, match=r"\nhint: add --seed 5 \(with switchc train --resume: --set train.seed=5\)$"):
        flags.check_resume(*_record(run, seed=5), _args(seed=0), run, "checkpoint 4")
    # another setting besides is listed, the seed is not: the run's is 5, as this program's
    other = _program(tmp_path, load_spec("switch-tiny", ("train.seed=5", "train.optimizer.learning_rate=0.002")))
    with pytest.raises(SystemExit) as refused:
        flags.check_resume(*_record(run, seed=5), _args(seed=5), other, "checkpoint 4")
    assert "train.optimizer.learning_rate: 0.001 in the checkpoint" in str(refused.value)
    assert "train.seed" not in str(refused.value)
    flags.check_resume(*_record(run, seed=5), _args(seed=5, allow_changes=True), other, "checkpoint 4")
    said = capsys.readouterr().err
    assert "learning_rate" in said and "train.seed" not in said
    # a digest that differs with no setting but the remat (another switchc's digest) is still refused
    remat = _program(tmp_path, load_spec("switch-tiny", ("train.remat=full",)))
    remat.SPEC_DIGEST = "0123456789abcdef"
    with pytest.raises(SystemExit, match=r"no setting of spec\.yaml differs"):
        flags.check_resume(*_record(run), _args(), remat, "checkpoint 4")


def test_another_tokenizer_is_refused_even_with_allow_changes(tmp_path: Path) -> None:
    """A SentencePiece model trained on data.path's text changes when the text does: the run's ids
    would mean other text. Checkpoints of earlier programs, which record none, resume as before."""
    run = _program(tmp_path, load_spec("switch-tiny"))
    record = _record(run, tokenizer="sentencepiece 0123456789abcdef")
    for allow_changes in (False, True):
        with pytest.raises(SystemExit) as info:
            flags.check_resume(
                *record,
                _args(allow_changes=allow_changes),
                run,
                "checkpoint 4",
                tokenizer="sentencepiece fedcba9876543210",
            )
        said = str(info.value.code)
        assert said.startswith("error: --resume: checkpoint 4 was trained on the ids of another tokenizer ")
        assert "(sentencepiece 0123456789abcdef; these settings and text make sentencepiece fedcba9876543210)" in said
    flags.check_resume(*record, _args(), run, "checkpoint 4", tokenizer="sentencepiece 0123456789abcdef")
    flags.check_resume(*_record(run), _args(), run, "checkpoint 4", tokenizer="byte")  # recorded none
    exporting = argparse.Namespace(seed=0, allow_changes=False, export_init=Path("w.safetensors"))
    flags.check_resume(*record, exporting, run, "checkpoint 4", tokenizer="byte")  # weights only: any data


def test_a_cosine_schedule_ends_at_train_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--steps past the end of a cosine schedule is a usage error at parse time (it was status 1,
    after the data had loaded); an export trains no step, and rsqrt has no end."""
    parser = flags.parser("test", 100, 0, held_out=True, resume_help="", init_from_help="", cosine=True)
    flags.check(parser, parser.parse_args(["--steps", "100"]))
    flags.check(parser, parser.parse_args(["--steps", "101", "--export-init", str(tmp_path / "w.safetensors")]))
    with pytest.raises(SystemExit) as refused:
        flags.check(parser, parser.parse_args(["--steps", "101"]))
    said = capsys.readouterr().err
    assert refused.value.code == 2 and "error: --steps 101 runs past the end of the cosine schedule" in said
    assert "which decays the learning rate to zero at train.steps = 100" in said
    assert "hint: compile the spec with train.steps = 101 (switchc compile SPEC --set train.steps=101" in said
    with pytest.raises(SystemExit) as refused:  # a resumed run: the longer schedule needs --allow-changes
        flags.check(parser, parser.parse_args(["--steps", "101", "--out", str(tmp_path / "run"), "--resume"]))
    assert refused.value.code == 2
    assert "switchc train SPEC --steps 101 --out RUN --resume --allow-changes" in capsys.readouterr().err
    rsqrt = flags.parser("test", 100, 0, held_out=True, resume_help="", init_from_help="")
    flags.check(rsqrt, rsqrt.parse_args(["--steps", str(10**6)]))
    # under a cosine schedule train.steps is part of the run's identity: more steps are another run
    settings = ("train.optimizer.schedule=cosine", "train.optimizer.warmup_steps=10")
    longer = load_spec("switch-tiny", (*settings, "train.steps=200"))
    assert spec_digest(longer) != spec_digest(load_spec("switch-tiny", (*settings, "train.steps=100")))


@pytest.mark.parametrize(("backend", "other"), [("jax", "torch"), ("torch", "jax")])
def test_another_backends_checkpoints_are_refused_not_overwritten(tmp_path: Path, backend: str, other: str) -> None:
    fake_checkpoint(tmp_path, 3, flags.CHECKPOINT_MARKERS[backend])
    flags.check_checkpoint_directory(tmp_path, backend)  # its own: fine
    (tmp_path / "7.orbax-checkpoint-tmp").mkdir()  # a save in flight: not looked at
    flags.check_checkpoint_directory(tmp_path, backend)
    foreign = fake_checkpoint(tmp_path, 6, flags.CHECKPOINT_MARKERS[other])
    with pytest.raises(SystemExit) as info:
        flags.check_checkpoint_directory(tmp_path, backend)
    message = str(info.value.code)
    assert message.startswith(f"error: {foreign} is a {flags.BACKEND_NAMES[other]} checkpoint")
    assert "give this one another --out" in message
    program = "JAX" if other == "jax" else "PyTorch"
    assert f"made by the {program} program: resume it, or export its weights (--export-init FILE --resume)" in message


def test_an_empty_or_partial_step_directory_is_refused_with_the_step_to_go_back_to(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 2, flags.CHECKPOINT_MARKERS["torch"])
    empty = fake_checkpoint(tmp_path, 4, ())
    with pytest.raises(SystemExit) as info:
        flags.check_checkpoint_directory(tmp_path, "torch")
    assert str(info.value.code) == (
        f"error: {empty} is empty (no meta.json or .metadata)\nhint: delete it (rm -r {empty}) to continue from step 2"
    )
    empty.rmdir()
    partial = fake_checkpoint(tmp_path, 1, ("meta.json",))
    partial_message = r"(?s)is not a complete checkpoint \(no \.metadata\).*to start the run afresh"
    with pytest.raises(SystemExit, match=partial_message):
        flags.check_checkpoint_directory(tmp_path, "torch")
    assert partial.is_dir()  # nothing is deleted for the user


def test_a_jax_step_directory_without_its_arrays_metadata_is_incomplete(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 2, flags.CHECKPOINT_MARKERS["jax"])
    partial = fake_checkpoint(tmp_path, 4, ("state/", "meta/"))  # orbax cannot restore it without
    with pytest.raises(SystemExit) as info:
        flags.check_checkpoint_directory(tmp_path, "jax")
    assert str(info.value.code) == (
        f"error: {partial} is not a complete checkpoint (no state/_METADATA)\n"
        f"hint: delete it (rm -r {partial}) to continue from step 2"
    )


def test_a_damaged_checkpoint_is_named_with_the_root_cause_of_its_error() -> None:
    try:
        try:
            raise ValueError('OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT database\nmore')
        except ValueError as cause:
            raise Exception(
                "Encountered error while reading array index. See full TensorStore details: {...}"
            ) from cause
    except Exception as wrapped:
        error = flags.unreadable_checkpoint("checkpoint run/checkpoints/6", wrapped, None)
    assert error.code == (
        "error: --resume: cannot read checkpoint run/checkpoints/6: ValueError: "
        'OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT database\n'
        "hint: the checkpoint is damaged; delete it to start the run afresh"
    )


def test_a_damaged_checkpoint_names_itself_and_the_step_before() -> None:
    error = flags.unreadable_checkpoint("checkpoint run/checkpoints/6", ValueError("bad json\nmore"), 3)
    assert error.code == (
        "error: --resume: cannot read checkpoint run/checkpoints/6: ValueError: bad json\n"
        "hint: the checkpoint is damaged; delete it to continue from step 3"
    )


def test_a_checkpoint_of_another_state_layout_is_not_called_damaged() -> None:
    """orbax's refusal of a target tree that differs from the saved one (another optimizer
    configuration than any check foresaw): the files are whole, so no hint to delete them."""
    mismatch = ValueError("User-provided restore item and on-disk value metadata tree structures do not match:\n...")
    error = flags.unreadable_checkpoint("checkpoint run/checkpoints/6", mismatch, 3)
    assert isinstance(error.code, str) and "holds training state of another layout than this program's" in error.code
    assert "not damaged (keep it)" in error.code and "delete" not in error.code


def test_an_out_path_the_system_refuses_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    parser = flags.parser("test", 10, 0, held_out=True, resume_help="", init_from_help="")
    with pytest.raises(SystemExit) as info:
        flags.make_folders(parser, parser.parse_args(["--out", str(blocker / "run")]))
    assert info.value.code == 2
    assert f"--out {blocker / 'run'}: Not a directory" in capsys.readouterr().err
    args = parser.parse_args(["--out", str(tmp_path / "new" / "run")])
    flags.check(parser, args)
    assert not (tmp_path / "new").exists()  # made last, once the backend's own flags are accepted too
    flags.make_folders(parser, args)
    assert (tmp_path / "new" / "run").is_dir()


@pytest.mark.parametrize(("rank", "printed"), [(None, True), ("0", True), ("1", False)])
def test_a_usage_error_is_printed_by_the_first_process_only(
    rank: str | None, printed: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under torchrun every rank parses the same flags: each exits with status 2, one says why."""
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    parser = flags.parser("test", 10, 0, held_out=True, resume_help="", init_from_help="")
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--steps", "many"])
    assert info.value.code == 2
    assert ("argument --steps: invalid int value: 'many'" in capsys.readouterr().err) == printed


def _checked(*argv: str, held_out: bool = True) -> argparse.Namespace:
    parser = flags.parser("test", 100, 0, held_out=held_out, resume_help="", init_from_help="")
    args = parser.parse_args(list(argv))
    flags.check(parser, args)
    flags.make_folders(parser, args)
    return args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--checkpoint-every", "5"), "--checkpoint-every applies only with --out"),
        (("--keep", "2"), "--keep applies only with --out"),
        (("--keep", "0"), "--keep must be >= 1"),  # the value first: --out would not make it valid
        (("--checkpoint-every", "-1"), "--checkpoint-every must be >= 0"),
        (("--log-every", "0", "--keep", "2"), "--log-every must be >= 1"),
        (("--seed", "-1"), "--seed must be in 0..16777216"),  # train.seed's range; torch refused it mid-start
        (("--seed", "99999999999999999999"), "--seed must be in 0..16777216"),
        (
            ("--eval-every", "0", "--eval-batches", "3"),
            "--eval-batches applies only to a run that evaluates (this one does not: --eval-every is 0)",
        ),
        (("--out", ""), "argument --out: an empty path; name the run directory (--out . for this one)"),
        (("--init-from", "missing.safetensors"), "--init-from: no weights file at missing.safetensors"),
        (("--init-from", ""), "argument --init-from: an empty path; name the weights file"),
        (("--export-init", ""), "--export-init: an empty path; name the file to write, e.g. init.safetensors"),
        (("--export-init", "w.safetensors", "--out", "no-run", "--resume"), "no-run/checkpoints does not exist"),
        (("--export-init", "."), "--export-init . is a directory; name the file to write, e.g. init.safetensors"),
    ],
)
def test_flags_that_would_be_ignored_or_fail_later_are_usage_errors(
    argv: tuple[str, ...],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        _checked(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # a refused command creates no folder


def test_eval_batches_without_a_held_out_split_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _checked("--eval-batches", "3", held_out=False)
    assert info.value.code == 2
    assert "--eval-batches applies only to a run that evaluates (this program's spec holds out no text)" in (
        capsys.readouterr().err
    )
    assert _checked().eval_batches == 10 and _checked(held_out=False).eval_batches == 10


def test_eval_every_defaults_to_a_tenth_of_the_steps_and_to_never_without_a_held_out_split(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _checked().eval_every == 10
    assert _checked(held_out=False).eval_every == 0
    assert _checked("--eval-every", "0", held_out=False).eval_every == 0
    with pytest.raises(SystemExit) as info:  # asked for, it would silently evaluate nothing
        _checked("--eval-every", "5", held_out=False)
    assert info.value.code == 2
    said = "--eval-every 5: this program's spec holds out no text to evaluate on (data.eval_fraction is 0 and no "
    assert said + "data.eval_path)" in capsys.readouterr().err


def test_an_out_whose_checkpoints_cannot_be_written_is_a_usage_error_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("")  # no folder can be made there
    with pytest.raises(SystemExit) as info:
        _checked("--out", str(run))
    assert info.value.code == 2
    said = f"--out {run}: {run / 'checkpoints'} is a file, where a run writes its checkpoints folder"
    assert said in capsys.readouterr().err
    (run / "metrics.jsonl").mkdir()  # and a folder where it writes a file: a traceback at the first record
    with pytest.raises(SystemExit):
        _checked("--out", str(run), "--checkpoint-every", "0")
    said = f"--out {run}: {run / 'metrics.jsonl'} is a folder, where a run writes its metrics.jsonl file"
    assert said in capsys.readouterr().err
    (run / "metrics.jsonl").rmdir()
    assert _checked("--out", str(run), "--checkpoint-every", "0").out == run  # nothing to save there
    assert [path.name for path in run.iterdir()] == ["checkpoints"]  # the probes are gone


def test_an_out_that_is_a_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes").write_text("")
    with pytest.raises(SystemExit):
        _checked("--out", str(tmp_path / "notes"))
    assert f"--out {tmp_path / 'notes'} is a file; --out names the run directory" in capsys.readouterr().err


def test_checkpoint_defaults_apply_with_out_and_no_checkpoints_is_fine_without(tmp_path: Path) -> None:
    args = _checked("--out", str(tmp_path / "run"))
    assert (args.checkpoint_every, args.keep) == (10, 3)  # a tenth of the default steps; the newest three
    assert _checked("--checkpoint-every", "0").checkpoint_every == 0
    exported = _checked("--export-init", str(tmp_path / "new" / "w.safetensors")).export_init
    assert exported.parent.is_dir()  # created, as --out is


def test_a_run_directory_is_held_by_one_run_at_a_time(tmp_path: Path) -> None:
    """A second run is refused, naming the first; once the first has ended the directory is free,
    with no stale lock left to remove."""
    with another_run_holding(tmp_path) as pid:
        assert flags.run_directory_user(tmp_path) == (tmp_path / ".lock").read_text().strip()
        assert f"pid {pid} on " in (tmp_path / ".lock").read_text()
        refusal = flags.lock_run_directory(tmp_path)
        assert refusal is not None and refusal.startswith(f"error: another run is using {tmp_path} (pid {pid} on ")
        assert "kill -TERM PID checkpoints it first" in refusal
    assert flags.run_directory_user(tmp_path) is None
    assert flags.lock_run_directory(tmp_path) is None  # this process holds it now
    assert f"pid {os.getpid()} on " in (tmp_path / ".lock").read_text()


def test_a_lock_file_removed_while_a_run_takes_it_is_taken_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that stops before training removes its lock file while it holds it (remove_made). A
    run that opened the file just before must not hold a lock on the removed file, which would
    leave the directory free for a third run: it takes the lock of the file there now."""
    taking = flags._holder
    removed = []

    def removed_first(handle: Any) -> str | None:
        if not removed:  # the first run's remove_made, between this run's open and its flock
            (tmp_path / ".lock").unlink()
            removed.append(True)
        return taking(handle)

    (tmp_path / ".lock").write_text("pid 1 on host, since then\n")
    monkeypatch.setattr(flags, "_holder", removed_first)
    assert flags.lock_run_directory(tmp_path) is None
    monkeypatch.setattr(flags, "_holder", taking)
    assert removed and (tmp_path / ".lock").is_file()
    assert flags.run_directory_user(tmp_path) == (tmp_path / ".lock").read_text().strip()  # held, and by us
    assert f"pid {os.getpid()} on " in (tmp_path / ".lock").read_text()


def test_a_launcher_hands_its_lock_to_the_program_it_starts(tmp_path: Path) -> None:
    """switchc train holds OUT's lock for its program: the program goes on under it, any other run
    is refused naming the launcher, and the lock stays held while the program lives, even once the
    launcher has let go (or died)."""
    take = "import sys; from pathlib import Path; from switchc.backends.common import flags; "
    take += "print(flags.lock_run_directory(Path(sys.argv[1])))"
    assert flags.lock_run_directory(tmp_path, " (switchc train)") is None
    try:
        env, fds = flags.lock_for_child(tmp_path)
        run = [sys.executable, "-c", take, str(tmp_path)]
        under = subprocess.run(run, env={**os.environ, **env}, pass_fds=fds, capture_output=True, text=True)
        assert under.stdout == "None\n", under.stderr
        other = subprocess.run(run, capture_output=True, text=True)
        assert f"another run is using {tmp_path} (pid {os.getpid()} on " in other.stdout
        assert "(switchc train); its program: pid " in other.stdout  # the pid to stop should the launcher die
        stale = {flags.LOCK_ENV: env[flags.LOCK_ENV].replace(f"pid {os.getpid()} ", "pid 1 ")}
        assert (
            "another run is using"
            in subprocess.run(run, env={**os.environ, **stale}, capture_output=True, text=True).stdout
        )
        waits = [sys.executable, "-c", "import sys; sys.stdin.read()"]
        with subprocess.Popen(waits, stdin=subprocess.PIPE, pass_fds=fds) as program:
            flags.release_run_directory(tmp_path)
            assert flags.run_directory_user(tmp_path) is not None  # the program's inherited descriptor holds it
            assert program.stdin is not None
            program.stdin.close()
        assert flags.run_directory_user(tmp_path) is None
    finally:
        flags.release_run_directory(tmp_path)


def test_a_run_directory_where_no_lock_can_be_made_is_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)  # a directory this user may not write (tests run as root here)
    refusal = flags.lock_run_directory(tmp_path)
    assert refusal == (
        f"error: --out {tmp_path}: cannot write .lock there: Permission denied\n"
        "hint: a run takes its directory's lock, also to resume or to --export-init from it: a run on read-only "
        "storage is copied to a writable place first"
    )


def test_a_lock_file_that_cannot_be_written_is_one_error_and_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: the holder's line not written was a traceback; the empty lock file made for it
    then kept the run directory from being removed, and passed it for a run's."""
    opened = Path.open

    def full(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = opened(self, *args, **kwargs)

        def no_room(text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        handle.write = no_room
        return handle

    monkeypatch.setattr(Path, "open", full)
    refusal = flags.lock_run_directory(tmp_path)
    assert refusal == (
        f"error: --out {tmp_path}: cannot write .lock there: No space left on device\n"
        "hint: free some space there, or choose another --out"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ending", [os.sep, os.sep + "."])
def test_an_export_init_path_that_names_a_directory_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ending: str
) -> None:
    """`--export-init w/newdir/` (no such directory yet) would be written as a FILE named w/newdir:
    a Path drops the trailing separator. Refused, naming a file inside it."""
    given = str(tmp_path / "w" / "newdir") + ending
    with pytest.raises(SystemExit) as info:
        _checked("--export-init", given)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--export-init {given} names a directory; name the file to write, e.g. " in err
    assert str(tmp_path / "w" / "newdir" / "init.safetensors") in err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("run/checkpoints/3/meta.json", "is inside the run directory --out run; write it elsewhere"),
        ("run/metrics.jsonl", "is inside the run directory --out run; write it elsewhere"),
        ("run/../run/checkpoints/w.safetensors", "is inside the run directory --out run"),
        ("model.py", "exists and is not a weights file; name a new file"),
    ],
)
def test_an_export_never_replaces_the_runs_files_or_any_but_an_earlier_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], target: str, said: str
) -> None:
    """`--export-init RUN/checkpoints/3/meta.json --resume --out RUN` wrote the weights over that
    checkpoint's record (and metrics.jsonl, model.py, ... likewise): the run was lost."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "3" / "meta.json").write_text("{}")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    (tmp_path / "model.py").write_text("# the program\n")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(SystemExit) as info:
        _checked("--export-init", target, "--resume", "--out", "run")
    assert info.value.code == 2 and f"--export-init {target} {said}" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_an_earlier_export_is_replaced(tmp_path: Path) -> None:
    from switchc.backends.common import weights

    path = tmp_path / "w.safetensors"
    weights.save(path, {"a": np.zeros(2)}, metadata={"seed": "1"})
    assert _checked("--export-init", str(path)).export_init == path


def test_export_init_makes_nothing_in_out(tmp_path: Path) -> None:
    """Nothing trains: --out is not created (nor its checkpoints/)."""
    args = _checked("--export-init", str(tmp_path / "new" / "w.safetensors"), "--out", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    # the folder made for FILE stays: in a job, a process with nothing to write would remove it
    # while the first one still reads the weights it will write there
    assert (tmp_path / "new").is_dir() and args.made == []


def test_a_run_that_stops_before_training_removes_what_it_made_and_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused --init-from (any error before the first step) leaves no run directory, no .lock and
    no checkpoints/; in a directory that was there before, only what this run made goes."""
    monkeypatch.setattr(flags, "_training", [False])
    args = _checked("--out", str(tmp_path / "a" / "run"))
    assert (tmp_path / "a" / "run" / "checkpoints").is_dir()
    with pytest.raises(SystemExit), flags.tidy_unless_trained(args):
        assert flags.lock_run_directory(args.out) is None
        raise SystemExit("error: --init-from: no weights file at w")
    assert list(tmp_path.iterdir()) == []
    assert flags.lock_run_directory(tmp_path) is None  # the lock was let go of: it can be taken again
    flags.release_run_directory(tmp_path)

    kept = tmp_path / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    (kept / flags.LOCK_NAME).write_text("")  # an earlier run's: not this run's to remove
    args = _checked("--out", str(kept))
    with flags.tidy_unless_trained(args):
        assert flags.lock_run_directory(args.out) is None
    assert sorted(path.name for path in kept.iterdir()) == [flags.LOCK_NAME, "checkpoints", "notes.txt"]
    flags.release_run_directory(kept)

    args = _checked("--out", str(tmp_path / "trained"))
    with flags.tidy_unless_trained(args):
        flags.training_began()  # a run that trained keeps its directory, even should it fail later
    assert (tmp_path / "trained" / "checkpoints").is_dir()


def test_sigterm_before_training_unwinds_and_removes_what_the_run_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the program starts (it reads data, compiles) raises Terminated, so the run
    directory and lock it made are removed as for any stop before the first step, and train.py's
    top level ends with one line and status 143. The handler is in place only around the run. One
    that lands in a callback (JAX has a garbage-collector hook), where Python reports and drops the
    exception, is delivered again a moment later: it was lost, and further SIGTERMs ignored."""
    monkeypatch.setattr(flags, "_training", [False])
    monkeypatch.setattr(sys, "unraisablehook", flags._unraisable)  # as catch_ctrl_c installs it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # taken inside __del__: Python drops what it raises

    args = _checked("--out", str(tmp_path / "run"))
    began = time.monotonic()
    with pytest.raises(flags.Terminated) as caught, flags.tidy_unless_trained(args):
        assert flags.lock_run_directory(args.out) is None
        with flags.tidy_unless_trained(args):  # the loop's own, inside train.py's: installs nothing more
            Finalized()
            time.sleep(30)  # the dropped SIGTERM comes again 0.01 s later and cuts it short
    assert time.monotonic() - began < 20
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def exit_now(status: int) -> None:
        raise SystemExit(status)

    monkeypatch.setattr(flags, "exit_now", exit_now)
    monkeypatch.setattr(flags._Parser, "_first_process", staticmethod(lambda: True))
    with pytest.raises(SystemExit) as status:
        flags.stop_if_interrupted(caught.value)
    assert status.value.code == 128 + signal.SIGTERM


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_init_from_a_checkpoint_says_checkpoints_are_not_weights_files(backend: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    step = fake_checkpoint(run / "checkpoints", 8, flags.CHECKPOINT_MARKERS[backend])
    for given in (step, run / "checkpoints", run):
        message = str(flags.init_from_error(given, IsADirectoryError(f"{given} is a directory")).code)
        error, hint = message.split("\n")
        assert error.startswith(f"error: --init-from {given} is ") and error.endswith(
            ": checkpoints are not weights files"
        )
        assert flags.BACKEND_NAMES[backend] in error
        assert hint == (
            "hint: --init-from takes a weights file that --export-init FILE wrote; --resume continues a run from "
            f"its checkpoints (--out {run} --resume, with the program that wrote them)"
        )
    other = tmp_path / "other"
    other.mkdir()
    plain = str(flags.init_from_error(other, IsADirectoryError(f"{other} is a directory")).code)
    assert plain == f"error: --init-from: {other} is a directory"


def test_full_remat_is_the_same_run() -> None:
    """train.remat changes how a step is computed, not what: a run that ran out of memory resumes
    with full remat, and the digest of a spec without it is the one it always had."""
    plain = spec_digest(load_spec("switch-tiny"))
    assert spec_digest(load_spec("switch-tiny", ["train.remat=full"])) == plain == "bdcfbe0614a25c6d"
    assert spec_digest(load_spec("switch-tiny", ["train.seed=1"])) != plain


def test_a_setting_added_later_leaves_the_digest_of_a_spec_that_does_not_set_it() -> None:
    """Every checkpoint records SPEC_DIGEST and --resume compares it: data.eval_path (session 14)
    changed every spec's digest, so every earlier run was refused on resume. Unset, it is left out;
    set, it is a setting like any other. (switch-tiny's digest as of session 13.)"""
    assert spec_digest(load_spec("switch-tiny")) == "bdcfbe0614a25c6d"
    other = load_spec("switch-tiny", ("data.source=text", "data.path=a", "data.eval_path=b"))
    assert spec_digest(other) != spec_digest(load_spec("switch-tiny", ("data.source=text", "data.path=a")))


CTRL_C = {
    "swallowed": """
class Broken:
    def __del__(self):
        raise ValueError("a finalizer's own error")

def collecting(phase, info):  # as JAX's gc callback: Python reports an exception raised here and goes on
    if phase == "start":
        signal.raise_signal(signal.SIGINT)

gc.callbacks.append(collecting)
began = time.monotonic()
try:
    gc.collect()
    time.sleep(30)  # it comes a moment after the callback, from another thread, and ends the wait
    print("went on", flush=True)
except KeyboardInterrupt:
    print("interrupted after the callback", "at once" if time.monotonic() - began < 20 else "late", flush=True)
gc.callbacks.remove(collecting)
Broken()
""",
    "slow hook": """
start = threading.Timer.start
def slow_start(self):  # the main thread still in the hook when the timer fires: a busy machine
    start(self)
    time.sleep(0.5)
threading.Timer.start = slow_start
def collecting(phase, info):
    if phase == "start":
        signal.raise_signal(signal.SIGINT)
gc.callbacks.append(collecting)
try:
    gc.collect()
    time.sleep(30)
    print("went on", flush=True)
except KeyboardInterrupt:
    print("interrupted after the callback", flush=True)
gc.callbacks.remove(collecting)
""",
    "held": """
with flags.ctrl_c_held():
    signal.raise_signal(signal.SIGINT)
    print("held", flush=True)
""",
    "forced": """
with flags.ctrl_c_held():
    for press in range(5):
        signal.raise_signal(signal.SIGINT)
        print("press", press + 1, flush=True)
""",
    "ignored": """
signal.raise_signal(signal.SIGINT)
print("ignored", flush=True)
""",
    "caught": """
try:
    signal.raise_signal(signal.SIGINT)
except BaseException:  # code that catches everything, as an interrupted import can
    pass
flags.training_began()
try:
    flags.raise_if_interrupted()
    print("lost", flush=True)
except KeyboardInterrupt:
    print("raised before the first step", flush=True)
""",
}


def _ctrl_c(case: str, ignored: bool = False) -> subprocess.CompletedProcess[str]:
    script = (
        "import gc, signal, sys, threading, time\nfrom switchc.backends.common import flags\nflags.catch_ctrl_c()\n"
    )
    if ignored:  # as `cmd &` in a script starts it
        script = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + script
    return subprocess.run([sys.executable, "-c", script + CTRL_C[case]], capture_output=True, text=True, timeout=60)


def test_a_ctrl_c_a_callback_swallowed_is_delivered_again_and_other_swallowed_errors_still_show() -> None:
    """Ctrl-C while XLA compiled was lost when it landed in JAX's gc callback: the run went on and
    ended with status 0. catch_ctrl_c delivers it again once the callback is done, and says nothing
    of it; a finalizer's error is still reported. Delivered as a signal, it also ends a wait the
    main thread is in (noted with _thread.interrupt_main, it came only when a sleep ended)."""
    done = _ctrl_c("swallowed")
    assert done.stdout == "interrupted after the callback at once\n" and done.returncode == 0, done.stderr
    assert "Exception ignored" in done.stderr and "a finalizer's own error" in done.stderr
    assert "collecting" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


def test_a_ctrl_c_delivered_again_waits_for_the_main_thread_to_leave_the_hook() -> None:
    """Seen in CI, two workers: the timer fired while the main thread was still starting it, inside
    the hook; the handler's KeyboardInterrupt was swallowed there ("Exception ignored in
    sys.unraisablehook"), and the program stopped only at its first step."""
    done = _ctrl_c("slow hook")
    assert done.stdout == "interrupted after the callback\n" and done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


def test_a_ctrl_c_caught_before_training_is_raised_before_the_first_step() -> None:
    """A KeyboardInterrupt that code caught and dropped, out of sight of the unraisable hook (seen
    with a Ctrl-C while the JAX program imported jax), stayed marked as on its way, and the loop
    never raised it: the run trained to its end."""
    done = _ctrl_c("caught")
    assert done.stdout == "raised before the first step\n" and done.returncode == 0, done.stderr


def test_ctrl_c_waits_for_a_held_block_and_three_end_the_run_at_once() -> None:
    """Within ctrl_c_held (a checkpoint save) a Ctrl-C is raised when the block ends; the third
    ends the run there and then, for a save that would never end (a hung file system)."""
    held = _ctrl_c("held")
    assert held.stdout == "held\n" and held.returncode == -signal.SIGINT, held.stderr
    assert "ctrl_c_held" in held.stderr and held.stderr.rstrip().endswith("KeyboardInterrupt")
    forced = _ctrl_c("forced")
    assert forced.stdout == "press 1\npress 2\n" and forced.returncode == 128 + signal.SIGINT, forced.stderr
    assert forced.stderr.strip().startswith("SIGINT 3 times: leaving now, without waiting"), forced.stderr
    ignored = _ctrl_c("ignored", ignored=True)  # a program started with Ctrl-C ignored keeps ignoring it
    assert ignored.stdout == "ignored\n" and ignored.returncode == 0, ignored.stderr


def test_stdout_whose_reader_went_away_takes_what_follows_without_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`train.py | head -3`: head exits, the next progress line would raise BrokenPipeError mid-run."""
    read, write = os.pipe()
    stream = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", stream)
    flags.outlive_stdout()
    print("step 1")
    os.close(read)  # the reader is gone
    with pytest.raises(BrokenPipeError):
        stream.write("step 2\n")  # the stream alone fails ...
        stream.flush()
    print("step 2", flush=True)  # ... through outlive_stdout the run goes on
    print("step 3", flush=True)
    stream.close()


@pytest.mark.parametrize(
    ("environment", "first"),
    [
        ({}, True),  # a process started alone
        ({"RANK": "3", "LOCAL_RANK": "0"}, True),  # torchrun: the first rank of the second host
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),
        ({"RANK": "1"}, False),  # a launcher that sets no LOCAL_RANK: rank 0 alone says it
        ({"RANK": "0"}, True),
    ],
)
def test_the_first_process_of_each_host_says_what_all_would(
    environment: dict[str, str], first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job of several hosts has a log per host: a refusal every process makes alike (a flag, a
    damaged checkpoint) is said by each host's first process, so that no host's log is silent."""
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert flags.first_on_host() is first
    assert flags._Parser._first_process() is first


def test_a_checkpoint_as_export_init_is_told_how_to_export_the_runs_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The directory hint ("name the file to write, e.g. RUN/checkpoints/3/init.safetensors") led to
    the step-0 weights written into a checkpoint, which --keep deletes later."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r" / "checkpoints" / "3").mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        _checked("--export-init", "r/checkpoints/3")
    assert info.value.code == 2
    said = capsys.readouterr().err
    assert (
        "--export-init r/checkpoints/3 is a checkpoint of the run r, not a file to write; to write the weights of "
        in said
    )
    assert "--export-init FILE --resume --out r (FILE outside the run)" in said
    assert "init.safetensors" not in said
    monkeypatch.chdir(tmp_path / "r" / "checkpoints")  # the run from the checkpoint's own path, resolved
    with pytest.raises(SystemExit):
        _checked("--export-init", "3")
    assert "--export-init 3 is a checkpoint of the run .., not a file" in capsys.readouterr().err
