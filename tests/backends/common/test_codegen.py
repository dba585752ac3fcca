"""backends/common/codegen.py's literals: what a spec's text becomes in a generated program."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from switchc.backends.common.codegen import literal

from tests.backends.programs import ruff_findings

STRINGS = ['a"b', "a'b", 'a"b\'c"', "x\\y", "tab\there", "bidi \u202e", "line\nbreak", "é and 𝄞", ""]


@pytest.mark.parametrize("text", STRINGS)
def test_a_string_literal_reads_back_as_the_text(text: str) -> None:
    written = literal(text)
    assert ast.literal_eval(written) == text
    assert written.isprintable()  # nothing raw that a terminal or an editor would show otherwise


def test_string_literals_are_as_the_formatter_writes_them(tmp_path: Path) -> None:
    """Running ruff format over a program leaves its literals alone (a recompile then finds no edit)."""
    (tmp_path / "literals.py").write_text("".join(f"x{i} = {literal(text)}\n" for i, text in enumerate(STRINGS)))
    assert ruff_findings(tmp_path) == []
