"""Shared fixtures: paths into the repo and the spec library."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

# JAX tests run meshes of up to 8 devices; on a CPU host XLA fakes them. This must be set before
# anything imports jax, and collection imports test modules after this file. The tests, and the
# programs they start (which inherit XLA_FLAGS), compile without LLVM's optimizations: the same
# HLO, so the same results and the same counts for verify, in a fifth less time per test
# (tests/backends/jax/test_program.py's real-text and mesh tests: 80 s -> 64 s). README's main
# command runs as users run it, optimized (tests/cli/test_train_command.py clears XLA_FLAGS).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")

import atexit
import shutil
import tempfile

import pytest

# Every JAX program the tests run shares one persistent compilation cache, made for this session
# (pytest-xdist's workers inherit it from the process that starts them) and removed at its end:
# many of them run the same small specs, and a step loaded from the cache starts in a third of the
# time a compile takes (tests/backends/programs.py's SMALL_SWITCH, 4 steps with an evaluation:
# 13.3 s compiled, 4.5 s loaded). A maximum size turns on JAX's file lock around each entry's read
# and write, so no program reads an entry half written by another. A test that needs a real compile
# (a signal sent while XLA compiles) sets JAX_ENABLE_COMPILATION_CACHE=false for its program.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="switchc-tests-xla-cache-")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(8 << 30)

REPO = Path(__file__).resolve().parent.parent
SPECS_DIR = REPO / "specs"
SPEC_FILES = sorted(SPECS_DIR.glob("*.yaml"))


def refuse_reading(monkeypatch: pytest.MonkeyPatch, refused: Path) -> None:
    """Make reading `refused` fail with EACCES, as chmod 000 would, but for root too."""
    for method in ("read_text", "read_bytes"):
        read = getattr(Path, method)

        def refuse(path: Path, *args: Any, read: Any = read, **kwargs: Any) -> Any:
            if path == refused:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return read(path, *args, **kwargs)

        monkeypatch.setattr(Path, method, refuse)


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the tests that type-check generated programs (programs.type_findings)."""
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write YAML text to a file and return its path (as a string, as the CLI gets it)."""

    def write(text: str, name: str = "spec.yaml") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
