"""`switchc check`, `explain`, `schema` as a user runs them (click's runner, real files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from switchc.cli import main
from tests.conftest import SPEC_FILES
from tests.spec.test_errors import MISTAKES

runner = CliRunner()


def run(*args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("check", "explain", "schema"):
        assert command in result.output


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_help_ends_with_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    tail = result.output.rstrip().splitlines()
    assert "Examples:" in result.output
    assert tail[-1].strip().startswith("switchc ")


def test_check_accepts_the_library() -> None:
    result = run("check", *map(str, SPEC_FILES))
    assert result.exit_code == 0, result.output
    assert result.output.count("ok  ") == len(SPEC_FILES)


def test_check_and_report_say_one_head_one_expert_and_one_block_in_the_singular() -> None:
    one = ["--set", "model.num_heads=1", "--set", "model.d_kv=64"]
    assert ", 1 head, " in run("check", "switch-tiny", *one).output
    assert ", 1 head, " in run("report", "switch-tiny", *one).output
    assert "Switch (top-1), 1 expert in " in run("check", "switch-tiny", "--set", "moe.num_experts=1").output
    shallow = run("check", "switch-tiny", "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1")
    assert "expert_every 2 exceeds the deepest stack (1 block): " in shallow.stderr


@pytest.mark.parametrize("case", MISTAKES, ids=lambda case: case.name)
def test_check_reports_mistakes_with_status_2_and_no_traceback(case, write_spec) -> None:
    path = write_spec(case.text)
    result = run("check", path)
    assert result.exit_code == 2
    assert f"{path}:{case.line}:{case.column}: error: " in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_a_mesh_of_no_axes_is_said_so(write_spec) -> None:
    """`axes: {}` is one device; the summaries said 'mesh  (1 device)', an empty name."""
    path = write_spec("mesh: {axes: {}}\n")
    assert run("check", path).stdout.endswith("; no mesh axes (1 device)\n")
    assert "; mesh of no axes (1 device)" in run("report", path, "--format", "json").stdout


def test_check_goes_on_after_an_invalid_spec(write_spec) -> None:
    bad = write_spec("model:\n  d_model: x\n", "bad.yaml")
    result = run("check", bad, str(SPEC_FILES[0]))
    assert result.exit_code == 2
    assert "ok  " in result.stdout and "1 of 2 spec(s) invalid" in result.stderr


def test_check_override_error_points_at_the_command_line() -> None:
    result = run("check", "switch-tiny", "--set", "moe.top_k=3.5")
    assert result.exit_code == 2
    assert result.stderr.startswith("<command line>:1:17: error: moe.top_k: expected an integer, got 3.5")


def test_missing_file_is_a_user_error() -> None:
    result = run("explain", "no/such/spec.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no such spec file or built-in spec: no/such/spec.yaml")


def test_explain_marks_defaults_and_sources() -> None:
    result = run("explain", "switch-tiny", "--set", "moe.top_k=2", "--format", "json")
    assert result.exit_code == 0
    rows = {row["key"]: row for row in json.loads(result.output)["keys"]}
    assert rows["model.d_model"]["value"] == 128 and rows["model.d_model"]["from"] == "line 8"
    assert rows["model.tie_embeddings"]["default"] is True and rows["model.tie_embeddings"]["from"] == "default"
    assert rows["moe.top_k"]["value"] == 2 and rows["moe.top_k"]["from"] == "--set"
    assert "Sec. 2.4" in rows["model.init_scale"]["description"]


def test_explain_says_data_eval_path_set_the_held_out_share_to_0() -> None:
    settings = ["--set", "data.source=text", "--set", "data.path=train", "--set", "data.eval_path=valid"]
    result = run("explain", "switch-tiny", *settings, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row for row in json.loads(result.output)["keys"]}
    assert rows["data.eval_fraction"]["value"] == 0.0 and rows["data.eval_fraction"]["from"] == "data.eval_path"


def test_explain_table_names_every_key() -> None:
    result = run("explain", "switch-tiny")
    assert result.exit_code == 0
    for key in ("model.d_model", "moe.capacity_factor.train", "train.optimizer.name", "mesh.axes"):
        assert key in result.output
    assert "default" in result.output


def test_schema_validates_every_spec_in_the_library(tmp_path) -> None:
    out = tmp_path / "schema.json"
    result = run("schema", "-o", str(out))
    assert result.exit_code == 0
    schema = json.loads(out.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SPEC_FILES:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], (path, errors)


@pytest.mark.parametrize(
    "text",
    [
        "model: {num_head: 4}\n",
        "model: {ffn_activation: gelux}\n",
        "mesh: {axes: {2nd: 1}}\n",
        "mesh: {axes: {class: 1}}\n",  # a Python keyword: the schema accepted it
        "mesh: {axes: {data: 2}, rules: {batch: [data, def]}}\n",
        "mesh: {rules: {expertz: data}}\n",
        "train: {optimizer: {name: sgd}}\n",
        "model: {d_model: 0}\n",
        "moe: {}\nlayout: {encoder: {switch: [1, 1]}}\n",  # a block listed twice
        "model: {encoder_layers: 2000}\n",
    ],
)
def test_schema_rejects_what_the_validator_rejects(text: str) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(run("schema").output))
    assert list(validator.iter_errors(yaml.safe_load(text)))


@pytest.mark.parametrize(
    "args",
    [
        ("schema", "-o", "{blocker}/schema.json"),
        ("graph", "switch-tiny", "-o", "{blocker}/graph.dot"),
        ("compile", "switch-tiny", "-o", "{blocker}/program"),
    ],
    ids=["schema", "graph", "compile"],
)
def test_an_output_path_that_cannot_be_written_is_a_user_error(tmp_path, args: tuple[str, ...]) -> None:
    """A file where a directory should be: the system's refusal, with the path, and status 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = runner.invoke(main, [arg.format(blocker=blocker) for arg in args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {blocker}" in result.output and "Traceback" not in result.output
    assert blocker.read_text() == "not a directory\n"


def test_schema_writes_through_a_symlink(tmp_path) -> None:
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    (tmp_path / "target.json").write_text("old\n")
    assert runner.invoke(main, ["schema", "-o", str(tmp_path / "link.json")]).exit_code == 0
    assert (tmp_path / "link.json").is_symlink()
    assert "$schema" in json.loads((tmp_path / "target.json").read_text())


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full to fill")
@pytest.mark.parametrize("args", [("schema", "-o", "/dev/full"), ("report", "switch-c", "--format", "json")])
def test_a_full_disk_is_a_user_error(args: tuple[str, ...]) -> None:
    """/dev/full refuses every write with ENOSPC, as a full disk does: written into (it is no
    regular file, so not replaced), it fails with a message, not a traceback; so does stdout."""
    command = [sys.executable, "-m", "switchc", *args]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: cannot write the output: No space left on device" in result.stderr
    assert not os.path.isfile("/dev/full")


def test_check_refuses_what_compile_refuses_of_the_data_shapes() -> None:
    """A spec the programs' data pipeline cannot feed is not valid: `check` says so, as `compile` does."""
    result = runner.invoke(main, ["check", "switch-tiny", "--set", "model.vocab_size=100"])
    assert result.exit_code == 2
    assert "<command line>:1:24: error: the byte tokenizer needs vocab_size >= 260" in result.output
    assert "1 of 1 spec(s) invalid" in result.output


def test_tables_print_values_as_text_not_rich_markup() -> None:
    """A list value prints with its brackets (rich would take `[data, expert]` for a style tag)."""
    result = run("explain", "switch-tiny", "--set", "mesh.axes={data: 2, expert: 4}")
    assert result.exit_code == 0
    assert "{batch: [data, expert], experts: [expert]}" in result.output


def test_a_dsl_file_with_a_bom_or_an_upper_case_suffix_is_read_as_dsl(tmp_path) -> None:
    text = "model {\n  d_model = 256\n}\n"
    (tmp_path / "bom.switch").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "UPPER.SWITCH").write_text(text)
    result = run("check", str(tmp_path / "bom.switch"), str(tmp_path / "UPPER.SWITCH"))
    assert result.exit_code == 0, result.output
    assert result.output.count("d_model 256") == 2


def test_yaml_in_a_dsl_file_gets_a_hint_that_works(tmp_path) -> None:
    (tmp_path / "spec.switch").write_text("model:\n  d_model: 128\n")
    result = runner.invoke(main, ["check", str(tmp_path / "spec.switch")])
    assert result.exit_code == 2
    assert "give the file a .yaml name; then `switchc fmt FILE.yaml --to dsl -o FILE.switch`" in result.output


def test_explain_warns_of_what_compile_would_refuse() -> None:
    """The settings of a spec the programs refuse are still explained, after the located warning."""
    result = CliRunner().invoke(
        main, ["explain", "switch-tiny", "--set", "train.inputs_length=256", "--format", "json"]
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["name"] == "switch-tiny"
    assert result.stderr.startswith("<builtin>/switch-tiny.yaml:30:19: warning: span corruption"), result.stderr
    assert "compile and check refuse this spec; its settings follow" in result.stderr


def test_a_user_error_keeps_its_status_when_the_reader_of_stderr_went_away() -> None:
    """`switchc check ... 2>&1 | head -1`: click's handling of the broken pipe made it status 1."""
    command = [sys.executable, "-m", "switchc", "check", "switch-tiny", "--set", "mesh.axes={data: 2, expert: 3}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    process.stderr.close()  # gone before switchc writes its error
    assert process.wait(timeout=120) == 2


def test_ctrl_c_during_a_command_is_one_line_and_status_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """click said "Aborted!" and exited 1, where README's table (and a shell) has 130 for Ctrl-C."""
    from switchc.cli import report_commands

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report_commands, "report_for", interrupted)
    result = CliRunner().invoke(main, ["report", "switch-tiny"])
    assert result.exit_code == 128 + signal.SIGINT, result.output
    assert result.stderr == "\nSIGINT: switchc report stopped.\n"


def test_ctrl_c_while_switchc_starts_is_one_line_and_status_130() -> None:
    """switchc's imports take about a second: a Ctrl-C among them printed Python's traceback."""
    starting = (
        "import importlib.abc, os, signal, sys\n"
        "class CtrlC(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'click':  # the first import of switchc.cli\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['switchc', 'check', 'switch-tiny']\n"
        "from switchc.command import run\n"
        "run()\n"
    )
    result = subprocess.run([sys.executable, "-c", starting], capture_output=True, text=True, timeout=60)
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert result.stderr == "\nSIGINT: switchc stopped as it started.\n" and result.stdout == ""


def test_compile_to_an_empty_output_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o "$DIR"` with DIR unset named the current directory: "error: . exists and was not written
    by switchc compile" said nothing of the empty path (train's --out already refused one)."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", ""])
    assert result.exit_code == 2
    assert "an empty path; name the program directory (-o . for this one)" in result.stderr
    assert list(tmp_path.iterdir()) == []
