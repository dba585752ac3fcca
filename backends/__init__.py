"""Code generators, one package per target framework (installed as switchc.backends.<name>).

Each backend package describes itself with a `TARGET` (what the generated program needs and how
it is launched). The lowering rules and the runtime support copied into generated programs live
beside it as they are built (see DESIGN.md, "Backends", in the team's ../shared/).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from switchc.errors import PlainUserError, did_you_mean


@dataclass(frozen=True)
class Target:
    """What a generated program for one framework depends on and how a user starts it."""

    name: str
    requires: tuple[str, ...]  # importable modules the generated program needs
    extra: str  # `pip install 'switchc[<extra>]'` brings them
    launch: str  # the command, with {program} for the generated entry point

    def missing(self) -> list[str]:
        """The required modules this environment cannot import."""
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    def require(self) -> None:
        """Fail with an install hint when the framework is not installed."""
        missing = self.missing()
        if missing:
            raise PlainUserError(
                f"the {self.name} backend needs {', '.join(missing)}, which is not installed",
                f"pip install 'switchc[{self.extra}]'",
            )


BACKEND_NAMES = ("jax", "torch")


def target(name: str) -> Target:
    """The `Target` of backend `name`; a clear error for an unknown name."""
    if name not in BACKEND_NAMES:
        hint = did_you_mean(name, BACKEND_NAMES) or f"backends: {', '.join(BACKEND_NAMES)}"
        raise PlainUserError(f"unknown backend '{name}'", hint)
    module = importlib.import_module(f"switchc.backends.{name}")
    found: Target = module.TARGET
    return found
