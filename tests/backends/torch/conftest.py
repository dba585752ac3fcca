"""PyTorch backend tests need torch (`pip install -e '.[torch]'`); without it they are not collected."""

import importlib.util

if importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["test_*.py"]
