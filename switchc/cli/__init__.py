"""The `switchc` command line. Commands only parse arguments and call the library.

A user mistake (a bad spec, a missing file, an output path that cannot be written) prints a
located message and exits with status 2, never a traceback. Anything else that escapes is a bug
in switchc and keeps its traceback.
"""

from __future__ import annotations

import errno
import signal
import sys
from typing import Any

import click

from switchc import __version__
from switchc.cli.options import say
from switchc.errors import PlainUserError, UserError

EXIT_USER_ERROR = 2
# A write failed for want of room: the disk, the user's quota, the largest file allowed.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (UserError, PlainUserError) as err:
            say(err.render())
            ctx.exit(err.status if isinstance(err, PlainUserError) else EXIT_USER_ERROR)
        except KeyboardInterrupt:  # click would say "Aborted!" and exit 1; a shell's status is 130
            say(f"\nSIGINT: switchc {ctx.invoked_subcommand} stopped.")
            ctx.exit(128 + signal.SIGINT)
        except OSError as err:
            if err.filename is None and err.errno in _FULL:  # a write to an output (a file, stdout) that had no room
                message = f"cannot write the output: {err.strerror or err}"
                say(PlainUserError(message, "free some space, or write it elsewhere").render())
                ctx.exit(EXIT_USER_ERROR)
            if err.filename is None:  # not about a path the user chose: a bug, keep the traceback
                raise
            # an output path the system refuses: unwritable, a file in the way (an input that cannot
            # be read is a PlainUserError with an input's hint, raised by switchc.files.read_text)
            where = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
            hint = "check that its directory exists" if err.errno == errno.ENOENT else "choose a path you can write to"
            say(PlainUserError(f"{where}: {err.strerror or err}", hint).render())
            ctx.exit(EXIT_USER_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="switchc")
def main() -> None:
    """switchc compiles Switch Transformer specs into cost reports and training programs.

    A SPEC is a YAML (.yaml) or DSL (.switch) file, see specs/ and docs/dsl.md, or the name of a
    built-in spec such as switch-tiny.
    Any value can be overridden with --set KEY=VALUE, validated like the file itself.
    """


def _register() -> None:
    from switchc.cli import (
        compile_commands,
        fmt_commands,
        plot_commands,
        report_commands,
        spec_commands,
        train_commands,
        verify_commands,
    )

    commands = (
        spec_commands,
        fmt_commands,
        report_commands,
        compile_commands,
        verify_commands,
        train_commands,
        plot_commands,
    )
    for command in (c for module in commands for c in module.COMMANDS):
        main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
