"""Writing the files switchc's commands produce: whole or not at all.

`write_output` replaces a regular file atomically (a temporary file beside it, then a rename), so a
full disk or an interrupt never leaves half a spec, schema or drawing where the old one was. It
writes through a symbolic link to the file it names, keeps an existing file's permissions, and
writes straight into what is not a regular file (a FIFO, /dev/stdout), which a rename would
replace rather than feed.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

from switchc.errors import PlainUserError


def read_text(path: Path) -> str:
    """The UTF-8 text of an input file (an editor's byte-order mark dropped); a file that is not
    UTF-8 is the user's error, named with the byte where decoding failed."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise PlainUserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def write_output(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path`: all of it, or, on any failure, nothing changed."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    target = Path(os.path.realpath(path))  # a symlink is written through, not replaced
    if target.exists() and not target.is_file():
        with target.open("wb") as stream:
            stream.write(content)
        return
    staging = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        staging.write_bytes(content)
        if target.exists():
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
    figure.savefig(buffer, format=path.suffix.lower().removeprefix("."), dpi=dpi)
    write_output(path, buffer.getvalue())
