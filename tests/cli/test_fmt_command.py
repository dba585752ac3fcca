"""`switchc fmt` as a user runs it, and every spec command taking a `.switch` file."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.spec import load_spec
from tests.conftest import SPECS_DIR, refuse_reading

runner = CliRunner()

MESSY = """\
# a small Switch model
model {d_model=64;d_ff=128
  num_heads = 4    # four heads
encoder_layers=2}
moe{num_experts=4}
decoder {  # Switch layers in the decoder only
  block{attention,cross_attention,switch} block { attention, cross_attention, switch }
}
encoder { switch = [] }
train{batch_size=8}
"""

# Each stack keeps its form (blocks, or `switch = ...` with the depth in model); a padded comment
# keeps its column.
TIDY = """\
# a small Switch model
model {
  d_model = 64
  d_ff = 128
  num_heads = 4    # four heads
  encoder_layers = 2
}

moe { num_experts = 4 }

decoder {  # Switch layers in the decoder only
  repeat 2 { block { attention, cross_attention, switch } }
}

encoder { switch = [] }

train { batch_size = 8 }
"""

# YAML has only the compact form of a layout, so converted back it stays compact.
FROM_YAML = """\
# a small Switch model
model {
  d_model = 64
  d_ff = 128
  num_heads = 4    # four heads
  encoder_layers = 2
  decoder_layers = 2
}

moe { num_experts = 4 }

decoder { switch = [0, 1] }  # Switch layers in the decoder only

encoder { switch = [] }

train { batch_size = 8 }
"""

AS_YAML = """\
# a small Switch model
model:
  d_model: 64
  d_ff: 128
  num_heads: 4     # four heads
  encoder_layers: 2
  decoder_layers: 2

moe: {num_experts: 4}

layout:  # Switch layers in the decoder only
  decoder:
    switch: [0, 1]
  encoder: {switch: []}

train: {batch_size: 8}
"""


def run(*args: str):
    return runner.invoke(main, ["fmt", *args], catch_exceptions=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_pretty_prints_to_stdout(tmp_path: Path) -> None:
    path = write(tmp_path, "m.switch", MESSY)
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == TIDY
    assert path.read_text() == MESSY  # printing never writes


def test_converts_both_ways_and_keeps_comments(tmp_path: Path) -> None:
    dsl = write(tmp_path, "m.switch", MESSY)
    to_yaml = run(str(dsl), "--to", "yaml")
    assert to_yaml.exit_code == 0 and to_yaml.stdout == AS_YAML
    yml = write(tmp_path, "m.yaml", to_yaml.stdout)
    back = run(str(yml), "--to", "dsl")
    assert back.exit_code == 0 and back.stdout == FROM_YAML
    assert load_spec(str(yml)) == load_spec(str(dsl))


def test_write_in_place_and_to_a_sibling(tmp_path: Path) -> None:
    dsl = write(tmp_path, "m.switch", MESSY)
    result = run("--write", str(dsl))
    assert result.exit_code == 0 and f"wrote {dsl}" in result.stderr
    assert dsl.read_text() == TIDY
    assert "unchanged" in run("--write", str(dsl)).stderr
    result = run("--write", "--to", "yaml", str(dsl))
    assert result.exit_code == 0
    assert dsl.read_text() == TIDY  # the original stays
    assert (tmp_path / "m.yaml").read_text() == run(str(dsl), "--to", "yaml").stdout
    assert load_spec(str(tmp_path / "m.yaml")) == load_spec(str(dsl))


def test_write_replaces_a_sibling_only_when_it_is_the_same_spec(tmp_path: Path) -> None:
    """Converting with --write keeps a pair in sync (a reformatted sibling is replaced) but never
    replaces a sibling that holds another spec, or no spec: that file is refused, untouched."""
    dsl = write(tmp_path, "m.switch", MESSY)
    sibling = write(tmp_path, "m.yaml", "# my notes\n" + AS_YAML)  # the same spec, written otherwise
    assert run("--write", "--to", "yaml", str(dsl)).exit_code == 0
    assert "# my notes" not in sibling.read_text()
    for other in (AS_YAML.replace("num_experts: 4}", "num_experts: 8}"), "model: [\n"):
        sibling.write_text(other)
        refused = run("--write", "--to", "yaml", str(dsl))
        assert refused.exit_code == 2 and "Traceback" not in refused.output
        assert f"error: {sibling} " in refused.stderr and f"remove {sibling} to replace it" in refused.stderr
        assert sibling.read_text() == other
        checked = run("--check", "--to", "yaml", str(dsl))  # says the same, not 'would reformat'
        assert checked.exit_code == 2 and f"remove {sibling} to replace it" in checked.stderr
    sibling.write_text(AS_YAML.replace("num_experts: 4}", "num_experts: 8}"))
    assert "differs in moe.num_experts" in run("--write", "--to", "yaml", str(dsl)).stderr
    assert run("--to", "yaml", str(dsl), "-o", str(sibling)).exit_code == 0  # -o names it: replaced


def test_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out" / "base.switch"
    out.parent.mkdir()
    result = run(str(SPECS_DIR / "switch-base.yaml"), "--to", "dsl", "-o", str(out))
    assert result.exit_code == 0
    assert load_spec(str(out)) == load_spec("switch-base")


def test_output_format_follows_the_output_name(tmp_path: Path) -> None:
    """A spec is read by its suffix, so -o NAME.switch writes the DSL (and NAME.yaml YAML) unless
    --to says otherwise, and a --to that contradicts the name is refused: it would not load."""
    yml = write(tmp_path, "m.yaml", AS_YAML)
    assert run(str(yml), "-o", str(tmp_path / "out.switch")).exit_code == 0
    assert (tmp_path / "out.switch").read_text() == FROM_YAML
    assert run(str(tmp_path / "out.switch"), "-o", str(tmp_path / "back.yml")).exit_code == 0
    assert load_spec(str(tmp_path / "back.yml")) == load_spec(str(yml))
    refused = run(str(yml), "--to", "yaml", "-o", str(tmp_path / "x.switch"))
    assert refused.exit_code == 2 and not (tmp_path / "x.switch").exists()
    assert f"-o {tmp_path / 'x.switch'} names a DSL file, but --to yaml writes YAML" in refused.stderr
    assert f"hint: name it {tmp_path / 'x.yaml'}, or give --to dsl" in refused.stderr


def test_every_file_is_done_though_one_is_invalid(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "model:\n  d_model: 8\n  d_model: 9\n")
    messy = write(tmp_path, "m.switch", MESSY)
    result = run("--write", str(bad), str(messy))
    assert result.exit_code == 2
    assert f"{bad}:3:3: error: duplicate key 'd_model'" in result.stderr
    assert f"wrote {messy}" in result.stderr and messy.read_text() == TIDY
    assert result.stderr.rstrip().endswith("1 of 2 file(s) invalid")


def test_a_written_file_is_whole_and_a_symlink_is_written_through(tmp_path: Path) -> None:
    target = write(tmp_path, "target.switch", MESSY)
    (tmp_path / "link.switch").symlink_to(target)
    target.chmod(0o640)
    assert run("--write", str(tmp_path / "link.switch")).exit_code == 0
    assert (tmp_path / "link.switch").is_symlink() and target.read_text() == TIDY
    assert target.stat().st_mode & 0o777 == 0o640  # the file's own permissions are kept
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.switch", "target.switch"]  # no temporary


def test_check_passes_on_formatted_files_and_fails_with_a_diff(tmp_path: Path) -> None:
    assert run("--check", *map(str, sorted(SPECS_DIR.glob("*.switch")))).exit_code == 0
    assert run("--check", *map(str, sorted(SPECS_DIR.glob("*.yaml")))).exit_code == 0
    messy = write(tmp_path, "m.switch", MESSY)
    result = run("--check", str(messy))
    assert result.exit_code == 1
    assert f"would reformat {messy}" in result.stderr and "+  d_model = 64" in result.stderr
    assert "1 of 1 file(s) would change" in result.stderr
    assert messy.read_text() == MESSY


def test_check_says_when_only_the_line_endings_differ(tmp_path: Path) -> None:
    """A CRLF file's diff showed lines that look the same."""
    crlf = tmp_path / "crlf.yaml"
    crlf.write_bytes(b"model:\r\n  d_model: 64\r\n")
    result = run("--check", str(crlf))
    assert result.exit_code == 1
    assert f"would reformat {crlf}: only its line endings, CRLF to LF" in result.stderr and "@@" not in result.stderr
    crlf.write_bytes(b"model:\r\n  d_model:   64\r\n  d_ff: 128\r\n")
    result = run("--check", str(crlf))
    assert f"would reformat {crlf} (and its line endings, CRLF to LF)" in result.stderr
    assert "-  d_model:   64\n+  d_model: 64\n   d_ff: 128\n" in result.stderr  # d_ff: a context line, unchanged
    bom = tmp_path / "bom.yaml"  # an editor's byte-order mark: the diff's first lines looked the same
    bom.write_bytes(b"\xef\xbb\xbfmodel:\n  d_model: 64\n")
    result = run("--check", str(bom))
    assert f"would reformat {bom}: only its byte-order mark" in result.stderr and "@@" not in result.stderr
    bom.write_bytes(b"\xef\xbb\xbfmodel:\r\n  d_model:   64\r\n")
    result = run("--check", str(bom))
    assert f"would reformat {bom} (and its byte-order mark and its line endings, CRLF to LF)" in result.stderr
    assert "\n-model:\n" not in result.stderr and "-  d_model:   64\n+  d_model: 64\n" in result.stderr


def test_check_marks_a_missing_final_newline_as_diff_does(tmp_path: Path) -> None:
    """The last line, without its newline, ran into the next line of the diff."""
    spec = write(tmp_path, "m.yaml", "model:\n  d_model:   64")
    result = run("--check", str(spec))
    assert "-  d_model:   64\n\\ No newline at end of file\n+  d_model: 64\n" in result.stderr, result.stderr


def test_check_of_a_conversion_compares_with_the_sibling(tmp_path: Path) -> None:
    yml = write(tmp_path, "m.yaml", AS_YAML)
    missing = run("--check", "--to", "dsl", str(yml))
    assert missing.exit_code == 1 and f"{tmp_path / 'm.switch'} is missing" in missing.stderr
    write(tmp_path, "m.switch", FROM_YAML)
    assert run("--check", "--to", "dsl", str(yml)).exit_code == 0


def test_builtin_specs_print_but_are_not_rewritten() -> None:
    result = run("switch-tiny", "--to", "dsl")
    assert result.exit_code == 0 and "num_experts = 8" in result.stdout
    refused = run("--write", "switch-tiny")
    assert refused.exit_code == 2 and "is a built-in spec" in refused.stderr


def test_an_invalid_spec_exits_2_with_a_located_error(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.switch", "model {\n  d_model = 8\n\nmoe {\n  num_experts = 4\n}\n")
    result = run(str(bad), "--to", "yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{bad}:4:1: error: missing '}}'")
    assert "Traceback" not in result.output + result.stderr


def test_usage_mistakes_exit_2(tmp_path: Path) -> None:
    a, b = write(tmp_path, "a.switch", TIDY), write(tmp_path, "b.switch", TIDY)
    assert run(str(a), str(b)).exit_code == 2
    assert run(str(a), str(b), "-o", str(tmp_path / "c.switch")).exit_code == 2
    assert run("--write", "-o", str(tmp_path / "c.switch"), str(a)).exit_code == 2


# ---- every command that takes a SPEC takes either format -----------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["check"],
        ["explain", "--format", "json"],
        ["report", "--format", "json"],
        ["graph", "-o", "TMP/graph.dot"],
    ],
    ids=lambda c: c[0],
)
def test_spec_commands_accept_the_dsl(command: list[str], tmp_path: Path) -> None:
    command = [part.replace("TMP", str(tmp_path)) for part in command]
    for spec in (str(SPECS_DIR / "switch-tiny.switch"), "switch-tiny.switch"):
        result = runner.invoke(main, [*command, spec, "--set", "moe.num_experts=16"], catch_exceptions=False)
        assert result.exit_code == 0, result.output + result.stderr


def test_explain_points_at_lines_of_the_switch_file() -> None:
    result = runner.invoke(main, ["explain", str(SPECS_DIR / "switch-tiny.switch"), "--format", "json"])
    rows = {row["key"]: row for row in json.loads(result.stdout)["keys"]}
    assert rows["model.d_model"]["from"] == "line 8"
    assert rows["layout.encoder.switch"]["value"] == [1] and rows["model.encoder_layers"]["from"] == "line 25"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the JAX backend needs jax")
def test_compile_accepts_the_dsl(tmp_path: Path) -> None:
    result = runner.invoke(main, ["compile", str(SPECS_DIR / "switch-tiny.switch"), "-o", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output + result.stderr
    resolved = load_spec(str(tmp_path / "p" / "spec.yaml"))
    assert resolved == load_spec("switch-tiny.switch")


def test_dash_is_stdout_and_check_write_conflict(tmp_path: Path) -> None:
    printed = runner.invoke(main, ["fmt", "switch-tiny", "-o", "-"])
    assert printed.exit_code == 0 and printed.output.startswith("# switch-tiny:")
    schema = runner.invoke(main, ["schema", "-o", "-"])
    assert schema.exit_code == 0 and '"$schema"' in schema.output
    both = runner.invoke(main, ["fmt", "--check", "--write", str(tmp_path / "x.yaml")])
    assert both.exit_code == 2 and "give --check or --write, not both" in both.output


# ---- the files fmt reads and writes ---------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="no /dev/stdout")
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_to_dev_stdout_into_a_pipe(tmp_path: Path, stream: str) -> None:
    """`-o /dev/stdout | cat`: a pipe, written into (its real path, `pipe:[N]`, is no path)."""
    messy = write(tmp_path, "m.switch", MESSY)
    command = [sys.executable, "-m", "switchc", "fmt", str(messy), "-o", f"/dev/{stream}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert getattr(result, stream).startswith(TIDY)


@pytest.mark.skipif(not os.path.exists("/dev/stdout"), reason="no /dev/stdout")
def test_schema_to_dev_stdout_into_a_pipe() -> None:
    command = [sys.executable, "-m", "switchc", "schema", "-o", "/dev/stdout"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and '"$schema"' in result.stdout, result.stderr[-2000:]


def test_an_output_error_names_the_output_not_a_temporary(tmp_path: Path) -> None:
    out = tmp_path / "no-dir" / "x.switch"
    result = run(str(write(tmp_path, "m.switch", MESSY)), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr == f"error: {out}: No such file or directory\nhint: check that its directory exists\n"


def test_write_refuses_a_read_only_file(tmp_path: Path) -> None:
    """As `gofmt -w` fails on it: a rename would replace it, whatever its mode (and root may write anything)."""
    messy = write(tmp_path, "m.switch", MESSY)
    messy.chmod(0o444)
    result = run("--write", str(messy))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {messy} is read-only\n")
    assert messy.read_text() == MESSY and [p.name for p in tmp_path.iterdir()] == ["m.switch"]


def test_output_replaces_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    out = tmp_path / "out.switch"
    out.write_bytes(b"\xff\xfe")
    spec = write(tmp_path, "m.switch", MESSY)
    checked = run("--check", str(spec), "-o", str(out))
    assert checked.exit_code == 1 and f"would reformat {out}" in checked.stderr
    assert run(str(spec), "-o", str(out)).exit_code == 0 and out.read_text() == TIDY


def test_a_spec_that_cannot_be_read_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its hint is an input's, not the output's "choose a path you can write to"."""
    spec = write(tmp_path, "unreadable.switch", MESSY)
    refuse_reading(monkeypatch, spec)
    result = run(str(spec))
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot read {spec}: Permission denied\nhint: check the file's permissions\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_spec_that_is_no_regular_file_is_called_that(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.switch"
    os.mkfifo(fifo)
    result = run(str(fifo))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {fifo} is not a regular file\n")


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="no /proc/self/mem")
def test_a_spec_whose_read_fails_is_a_user_error(tmp_path: Path) -> None:
    """/proc/self/mem is a regular file whose read from the start fails (EIO): one line, not a traceback."""
    link = tmp_path / "mem.switch"
    link.symlink_to("/proc/self/mem")
    result = runner.invoke(main, ["fmt", str(link)])
    assert result.exit_code == 2 and result.stderr == f"error: cannot read {link}: Input/output error\n"


@pytest.mark.parametrize(("name", "text"), [("e.yaml", "{}\n"), ("e.switch", "model {}\n")])
def test_a_spec_that_sets_nothing_stays_as_short(tmp_path: Path, name: str, text: str) -> None:
    """`{}` (what the empty-spec hint suggests) used to print every default, 54 lines, freezing them."""
    spec = write(tmp_path, name, text)
    assert run(str(spec)).stdout == text
    assert run("--check", str(spec)).exit_code == 0
    other = "model {}\n" if name.endswith(".yaml") else "model: {}\n"
    converted = run(str(spec), "--to", "dsl" if name.endswith(".yaml") else "yaml")
    assert converted.exit_code == 0 and converted.stdout == other


def test_dsl_to_a_name_that_loads_as_yaml_is_refused(tmp_path: Path) -> None:
    """Any name but *.switch is read as YAML: DSL written there would not load."""
    dsl = write(tmp_path, "m.switch", TIDY)
    refused = run(str(dsl), "-o", str(tmp_path / "out.txt"))
    assert refused.exit_code == 2 and not (tmp_path / "out.txt").exists()
    assert f"-o {tmp_path / 'out.txt'} would hold DSL text" in refused.stderr
    assert f"hint: name it {tmp_path / 'out.switch'}, or give --to yaml" in refused.stderr
    assert run(str(dsl), "--to", "yaml", "-o", str(tmp_path / "out.txt")).exit_code == 0
    assert load_spec(str(tmp_path / "out.txt")) == load_spec(str(dsl))


def test_mesh_rules_print_as_written(tmp_path: Path) -> None:
    """A rule of null (not split) or one bare axis stays so; the spec holds both as lists."""
    text = "mesh {\n  axes { data = 2, model = 2 }\n  rules { vocab = model, heads = null, mlp = [model] }\n}\n"
    dsl = write(tmp_path, "m.switch", text)
    assert run(str(dsl)).stdout == text
    assert "rules: {vocab: model, heads: null, mlp: [model]}" in run(str(dsl), "--to", "yaml").stdout


def test_a_small_number_keeps_its_short_exponent(tmp_path: Path) -> None:
    """Python's repr pads an exponent (1e-06); fmt writes what the author wrote, 1e-6."""
    dsl = write(tmp_path, "m.switch", "train { optimizer { learning_rate = 1e-6 } }\n")
    assert run(str(dsl)).stdout == "train {\n  optimizer { learning_rate = 1e-6 }\n}\n"


def test_a_comment_that_ends_a_block_is_not_moved_and_its_loss_is_said(tmp_path: Path) -> None:
    """A comment after a block's last key (deeper than the next key) used to move above the next
    section; one at the end of the file vanished unsaid. Both are dropped, and fmt says so."""
    text = "model {\n  d_model = 64\n  # after the last key\n}\n# about moe\nmoe { num_experts = 4 }\n# the end\n"
    result = run(str(write(tmp_path, "m.switch", text)))
    assert result.stdout == "model {\n  d_model = 64\n}\n\n# about moe\nmoe { num_experts = 4 }\n"
    assert "the comments on lines 3, 7 are not kept: fmt keeps a comment on a setting's line" in result.stderr
    yml = write(tmp_path, "m.yaml", "model:\n  d_model: 64\n  # under model, at its end\nmoe: {num_experts: 4}\n")
    result = run(str(yml))
    assert result.stdout == "model:\n  d_model: 64\n\nmoe: {num_experts: 4}\n"
    assert f"note: {yml}: the comment on line 3 is not kept" in result.stderr


def test_comments_on_a_stack_printed_as_one_line_are_all_kept(tmp_path: Path) -> None:
    """`encoder {  # a` and `switch = every 2  # b` print as one line, which takes one trailing
    comment: the others were dropped, unsaid. They now go above it."""
    text = "moe { num_experts = 4 }\nencoder {  # on encoder\n  switch = every 2  # on switch\n}\n"
    result = run(str(write(tmp_path, "s.switch", text)))
    assert result.stdout == "moe { num_experts = 4 }\n\n# on switch\nencoder { switch = every 2 }  # on encoder\n"
    assert result.stderr == ""
    yml = "moe:\n  num_experts: 4\nlayout:  # on layout\n  encoder:  # on encoder\n    switch: every 2  # on switch\n"
    result = run(str(write(tmp_path, "s.yaml", yml)), "--to", "dsl")
    assert result.stdout.endswith("# on encoder\n# on switch\nencoder { switch = every 2 }  # on layout\n")
    assert result.stderr == ""


def test_a_spec_of_only_an_empty_layout_converts_to_a_dsl_file_that_loads(tmp_path: Path) -> None:
    """The DSL writes stacks only, so `layout: {}` printed nothing: an empty file, which no command
    loads ("the spec is empty"). It prints the least text that loads, as a spec of defaults does."""
    result = run(str(write(tmp_path, "m.yaml", "layout: {}\n")), "--to", "dsl")
    assert result.stdout == "model {}\n"
    assert run(str(write(tmp_path, "m.switch", result.stdout)), "--check").exit_code == 0
