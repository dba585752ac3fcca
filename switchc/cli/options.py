"""Options and checks shared by the commands."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from shlex import quote
from typing import Any, TypeVar

import click
from rich.console import Console

from switchc.errors import PlainUserError

F = TypeVar("F", bound=Callable[..., Any])


class Directory(click.Path):
    """A directory option that refuses an empty path, which would name the current directory (an
    unset shell variable in `--out "$RUN"`): `what` it names, for the message."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        super().__init__(file_okay=False, path_type=Path, **kwargs)
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value:
            flag = param.opts[0] if param is not None and param.opts else "the option"
            self.fail(f"an empty path; name the {self.what} ({flag} . for this one)", param, ctx)
        return super().convert(value, param, ctx)


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


class Number(click.FloatRange):
    """A float option in a range, finite: click's FloatRange lets nan through every bound (a
    comparison with nan is false) and inf through an open upper one."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def say(text: str, *, nl: bool = True, err: bool = True) -> None:
    """A line for stderr (or stdout: `err` False) of a command whose status says what it found
    (check, fmt): a reader that went away (`2>&1 | head -1`) does not change that status, which
    click would make 1 for a broken pipe."""
    with contextlib.suppress(BrokenPipeError):
        click.echo(text, err=err, nl=nl)


def example(*lines: str) -> str:
    """An epilog that click prints verbatim at the end of --help."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def check_output_parent(path: Path) -> None:
    """The directory an output file goes into must exist (nothing creates it behind the user's back)."""
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists():
        raise PlainUserError(f"{parent} is not a directory", "choose a path inside a directory")
    raise PlainUserError(
        f"{parent} does not exist", f"create it first (mkdir -p {quote(str(parent))}), or choose another path"
    )


def table_console(piped_width: int = 200) -> Console:
    """rich's Console for a table on stdout; when stdout is not a terminal (piped, redirected),
    `piped_width` columns instead of rich's 80, so numbers and names are not cut or folded."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=piped_width)
