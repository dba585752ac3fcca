"""Shared fixtures: paths into the repo and the spec library."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPECS_DIR = REPO / "specs"
SPEC_FILES = sorted(SPECS_DIR.glob("*.yaml"))


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write YAML text to a file and return its path (as a string, as the CLI gets it)."""

    def write(text: str, name: str = "spec.yaml") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
