"""What both backends share. Runtime modules that every program carries in its runtime/ (program.py's
COMMON_MODULES), and the code that assembles programs (program.py, codegen.py, lowering.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import ModuleType


def as_runtime_siblings(package: str, modules: Iterable[ModuleType]) -> None:
    """Give backends/common's `modules` to a backend's runtime `package` as its own (sys.modules),
    as a generated program's runtime/ holds copies of them beside its modules: the runtime imports
    them the same way in switchc and in a program (`from . import flags`)."""
    for module in modules:
        sys.modules[f"{package}.{module.__name__.rpartition('.')[2]}"] = module
