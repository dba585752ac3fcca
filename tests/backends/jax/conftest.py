"""JAX backend tests need jax (`pip install -e '.[jax]'`); without it they are not collected."""

import importlib.util

if importlib.util.find_spec("jax") is None:
    collect_ignore_glob = ["test_*.py"]
