"""switchc installs as designed: backends/ and specs/ live inside switchc, never top-level."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from switchc.errors import PlainUserError
from tests.conftest import REPO

SUBPACKAGES = ["switchc.backends", "switchc.backends.jax", "switchc.backends.torch", "switchc.specs"]


def test_no_top_level_backends_package(tmp_path: Path) -> None:
    # In a fresh interpreter outside the repo, so only what is installed can be found.
    probe = "import importlib.util; print(importlib.util.find_spec('backends'))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "None", result.stdout + result.stderr


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_mapped_packages_import_from_their_folders(name: str) -> None:
    module = importlib.import_module(name)
    folder = name.split(".")[1]
    assert Path(module.__file__).resolve().parent.name in (folder, name.split(".")[-1])


def test_backend_targets_describe_themselves() -> None:
    from switchc.backends import BACKEND_NAMES, target

    for name in BACKEND_NAMES:
        assert target(name).name == name
    with pytest.raises(PlainUserError, match="unknown backend 'jaxx'") as info:
        target("jaxx")
    assert info.value.hint == "did you mean 'jax'?"


def test_regular_install_ships_backends_and_specs(tmp_path: Path) -> None:
    """`pip install .` (not editable): the installed tree holds switchc/backends and the specs."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(REPO)],
        check=True,
        capture_output=True,
    )
    assert not (target / "backends").exists()
    assert (target / "switchc" / "backends" / "jax" / "__init__.py").is_file()
    probe = (
        "import switchc, switchc.backends.jax, switchc.backends.torch\n"
        "from switchc.spec import builtin_spec_names, load_spec\n"
        f"assert switchc.__file__.startswith({str(target)!r}), switchc.__file__\n"
        "assert 'switch-c' in builtin_spec_names()\n"
        "print(load_spec('switch-tiny').moe.num_experts)\n"
        "from switchc.backends.jax.program import generate\n"
        "assert 'runtime/moe.py' in generate(load_spec('switch-tiny'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "8"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A package folder missing from pyproject works in the editable install and breaks in a wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    roots = {"switchc": REPO / "switchc", "switchc.backends": REPO / "backends", "switchc.specs": REPO / "specs"}
    found = set()
    for package, root in roots.items():
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found.add(".".join((package, *parts)))
    assert found == listed
