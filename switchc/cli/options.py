"""Options shared by every command that reads a spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def overrides(func: F) -> F:
    """`--set KEY=VALUE`, repeatable; validated like the spec file."""
    option = click.option(
        "--set",
        "overrides",
        metavar="KEY=VALUE",
        multiple=True,
        help="Override a spec value, e.g. --set moe.num_experts=64 (VALUE is YAML).",
    )
    return option(func)


def example(*lines: str) -> str:
    """An epilog that click prints verbatim at the end of --help."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
