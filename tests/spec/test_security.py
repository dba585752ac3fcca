"""Specs are data. Nothing in one constructs objects, runs code, or smuggles text into programs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.errors import Source, UserError
from switchc.spec import load_spec, parse_spec
from tests.conftest import SPECS_DIR

HOSTILE = [
    "model: !!python/object/apply:os.system ['touch /tmp/switchc-pwned']\n",
    "model: !!python/name:os.system\n",
    "model:\n  d_model: !!int 8\n",
    "base: &base {d_model: 8}\nmodel: *base\n",
    # billion laughs: aliases are refused before anything is expanded
    "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_tags_anchors_and_aliases_are_refused(text: str, tmp_path) -> None:
    with pytest.raises(UserError):
        parse_spec(Source("evil.yaml", text))


def test_no_object_was_constructed(tmp_path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UserError):
        parse_spec(Source("evil.yaml", f"model: !!python/object/apply:os.system ['touch {marker}']\n"))
    assert not marker.exists()


IDENTIFIER_ATTACKS = ["x; import os", "__import__('os')", "a b", "é", "a" * 33, "None", "lambda", ""]


@pytest.mark.parametrize("name", IDENTIFIER_ATTACKS)
def test_mesh_axis_names_must_be_plain_identifiers(name: str) -> None:
    with pytest.raises(UserError, match="not a valid mesh axis name"):
        parse_spec(Source("s.yaml", f"mesh:\n  axes: {{{name!r}: 1}}\n"))


@pytest.mark.parametrize("value", ['"a\\u0000b"', '"line\\nbreak"', '"bell\\a"', '"del\\x7f"'])
def test_free_text_has_no_control_characters(value: str) -> None:
    with pytest.raises(UserError, match="control characters"):
        parse_spec(Source("s.yaml", f"data:\n  source: text\n  path: {value}\n"))


@pytest.mark.parametrize("key", ["content-text", "from", "1st", "meta.text", "texte français"])
def test_jsonl_field_is_any_json_key(key: str) -> None:
    """A JSON key is free text (programs quote it; tests/backends/jax/test_program.py tries to break out)."""
    assert parse_spec(Source("s.yaml", f"data:\n  jsonl_field: {key!r}\n")).data.jsonl_field == key


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('""', "data.jsonl_field is empty"),
        ('"a\\nb"', "control characters"),
        ('"a\\x9bb"', "control characters"),  # C1: a terminal's escape-sequence introducer
        ('"a\\x85b"', "control characters"),  # C1's next line, where str.splitlines breaks
        ('"a\\u2028b"', "control characters"),  # the Unicode line separator
    ],
)
def test_jsonl_field_is_one_printable_line(value: str, said: str) -> None:
    with pytest.raises(UserError, match=said):
        parse_spec(Source("s.yaml", f"data:\n  jsonl_field: {value}\n"))


def test_a_mesh_rule_naming_no_identifier_says_so() -> None:
    """Not 'contains control characters', as it said before: the message of free text."""
    with pytest.raises(UserError, match="'da-ta' is not a valid mesh axis name"):
        parse_spec(Source("s.yaml", "mesh:\n  rules: {batch: da-ta}\n"))


def test_every_string_in_the_format_is_a_choice_or_a_pattern() -> None:
    """A new free-text field must be a choice, an identifier or SafeText; the schema shows which."""
    from switchc.spec.schema import json_schema

    unconstrained: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and not ({"enum", "pattern", "const"} & node.keys()):
                unconstrained.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(json_schema(), "#")
    assert unconstrained == []


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_spec_files_name_and_the_set_overrides_stay_text_in_the_program(backend: str, tmp_path: Path) -> None:
    """The header docstrings quote the spec file's name and the --set overrides: a name or a path
    that closes the docstring, or starts an escape sequence, must neither run nor break the program."""
    name = 'a"""; open("pwned", "w"); """ \\x1\nb'
    spec = tmp_path / f"{name}.yaml"
    spec.write_text((SPECS_DIR / "switch-tiny.yaml").read_text())
    out = tmp_path / "program"
    path = 'a"""\\x\\N{b}"'
    args = ["compile", str(spec), "--backend", backend, "-o", str(out), "--set", f"data.path={path}"]
    result = CliRunner().invoke(main, [*args, "--set", "data.source=text"])
    assert result.exit_code == 0, result.output
    for module in ("train.py", "model.py"):
        docstring = ast.get_docstring(ast.parse((out / module).read_text()), clean=False)
        assert docstring is not None and docstring.startswith(f"{name}: "), module
    made = " ".join(ast.get_docstring(ast.parse((out / "train.py").read_text())).split())
    assert f"from {' '.join(name.split())}.yaml with --set 'data.path={path}' --set data.source=text;" in made
    shown = subprocess.run([sys.executable, "train.py", "--help"], cwd=out, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage: train.py") and f"\n{name}: train " in shown.stdout
    assert not (out / "pwned").exists()
    assert load_spec(str(out / "spec.yaml")) == load_spec(str(spec), [f"data.path={path}", "data.source=text"])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_bidi_override_in_a_path_is_an_escape_in_the_program(backend: str, tmp_path: Path) -> None:
    """Format characters pass the spec's control-character check, and a raw U+202E in a string
    literal would make its line display other than it runs: every generated file holds it escaped,
    and the string still reads back as the spec's."""
    path = "runs/\u202etxt.corpus"
    out = tmp_path / "program"
    args = ["compile", "switch-tiny", "--backend", backend, "-o", str(out), "--set", "data.source=text"]
    result = CliRunner().invoke(main, [*args, "--set", f'data.path="{path.encode("unicode_escape").decode()}"'])
    assert result.exit_code == 0, result.output
    for file in out.rglob("*"):
        if file.is_file():
            assert "\u202e" not in file.read_text(encoding="utf-8"), file
    assert '"runs/\\u202etxt.corpus"' in (out / "model.py").read_text(encoding="utf-8")
    assert load_spec(str(out / "spec.yaml")).data.path == path
