"""Reading the files switchc's commands are given, and writing those they produce: whole or not at all.

`write_output` replaces a regular file atomically (a temporary file beside it, then a rename), so a
full disk or an interrupt never leaves half a spec, schema or drawing where the old one was. It
writes through a symbolic link to the file it names, keeps an existing file's permissions, refuses
a read-only file (which a rename would replace in spite of its mode), and writes straight into what
is not a regular file (a FIFO, /dev/stdout), which a rename would replace rather than feed. Its
errors name the path the user gave, never the temporary file.

`read_text` makes a file that cannot be read a user error with an input's hint: the command line's
catch-all for system errors cannot tell an input from an output, and would hint at the latter.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from switchc.errors import PlainUserError, Source, Span, UserError

# The system's refusals that the file's permissions explain.
_DENIED = (errno.EACCES, errno.EPERM)


def read_error(path: Path, err: OSError) -> PlainUserError:
    """The user error for input `path`, which the system refused to read (or to look at)."""
    hint = "check the file's permissions" if err.errno in _DENIED else None
    return PlainUserError(f"cannot read {path}: {err.strerror or err}", hint)


def read_text(path: Path) -> str:
    """The UTF-8 text of an input file (an editor's byte-order mark dropped); a file that is not
    UTF-8, or that cannot be read, is the user's error: located at the first byte that does not
    decode (its line shown with U+FFFD for the bytes that do not), or with the system's reason."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise read_error(path, err) from None
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        source = Source(str(path), raw[bom:].decode("utf-8", errors="replace"))
        before = (raw[bom : bom + err.start].decode("utf-8") + "x").splitlines()  # "x": where the byte is
        line, column = len(before), len(before[-1])
        raise UserError.at(
            Span(source, line, column, line, column + 1),
            f"not UTF-8 text ({err.reason} at byte {bom + err.start})",
            "save the file as UTF-8 (iconv -f LATIN1 -t UTF-8 converts Latin-1 text)",
        ) from None


def write_output(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path`: all of it, or, on any failure, nothing changed."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    try:
        _write(path, content)
    except OSError as err:
        if err.filename is None:  # a write with no room (a full disk): no path in it to rename
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def _write(path: Path, content: bytes) -> None:
    """write_output's work, whose system errors may name the temporary file rather than `path`."""
    try:
        # the path as given, followed through symlinks: /dev/stdout resolves to a pipe's name,
        # `pipe:[N]`, which is no path at all, so only a regular file is looked up by its real path
        mode: int | None = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "wb") as stream:
            stream.write(content)
        return
    if mode is not None and not mode & 0o222:  # its mode bits, not access(): root, who may write anything, too
        raise PlainUserError(f"{path} is read-only", "make it writable (chmod u+w), or write elsewhere")
    target = Path(os.path.realpath(path))  # a symlink is written through, not replaced
    staging = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        staging.write_bytes(content)
        if mode is not None:
            shutil.copymode(target, staging)
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def figure_formats() -> list[str]:
    """The file suffixes (without the dot) matplotlib can save a figure as: png, pdf, svg, ..."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def save_figure(figure: Any, path: Path, dpi: int = 120) -> None:
    """A matplotlib figure to `path`, in the format its suffix names (see figure_formats), whole or not at all."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=path.suffix.lower().removeprefix("."), dpi=dpi)
    except (RuntimeError, OSError) as err:  # a format drawn by a program this host lacks: .pgf's LaTeX
        said = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PlainUserError(
            f"cannot draw {path.name}: {said}", "choose a format matplotlib draws itself, e.g. .png, .svg or .pdf"
        ) from None
    write_output(path, buffer.getvalue())
