"""switchc.files: an output file is written whole or not at all, and file errors are the user's, named."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from switchc import files
from switchc.errors import PlainUserError
from tests.conftest import refuse_reading


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "spec.yaml"
    out.write_text("old\n")

    def refuse(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError):
        files.write_output(out, "new\n")
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_fed_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    files.write_output(fifo, "text\n")
    reader.join(timeout=30)
    assert got == [b"text\n"] and fifo.is_fifo()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc/self/fd")
def test_a_pipe_named_by_its_proc_link_is_fed() -> None:
    """/dev/stdout into a pipe is /proc/self/fd/1, whose real path is no path (`pipe:[N]`): the
    path as given is written into."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader:
        try:
            files.write_output(Path(f"/proc/self/fd/{write_end}"), "text\n")
        finally:
            os.close(write_end)
        assert reader.read() == b"text\n"


def test_errors_name_the_path_given_never_the_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-dir" / "spec.yaml"
    with pytest.raises(FileNotFoundError) as raised:
        files.write_output(missing, "new\n")
    assert raised.value.filename == str(missing)
    out = tmp_path / "spec.yaml"

    def refuse(source: object, destination: object) -> None:
        raise PermissionError(13, "Permission denied", str(source), str(destination))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(PermissionError) as raised:
        files.write_output(out, "new\n")
    assert (raised.value.filename, raised.value.filename2) == (str(out), None)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_is_refused_not_replaced(tmp_path: Path) -> None:
    """A rename would replace a file whatever its mode; its write bits are asked instead (root too)."""
    out = tmp_path / "spec.yaml"
    out.write_text("old\n")
    out.chmod(0o444)
    with pytest.raises(PlainUserError, match=f"{out} is read-only"):
        files.write_output(out, "new\n")
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


def test_an_input_that_cannot_be_read_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an input's hint (the command line's catch-all for system errors hints at outputs)."""
    spec = tmp_path / "unreadable.yaml"
    spec.write_text("model: {}\n")
    refuse_reading(monkeypatch, spec)
    with pytest.raises(PlainUserError) as raised:
        files.read_text(spec)
    assert raised.value.render() == f"error: cannot read {spec}: Permission denied\nhint: check the file's permissions"


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="no /proc/self/mem")
def test_a_failed_read_is_a_user_error(tmp_path: Path) -> None:
    """/proc/self/mem looks like a regular file, but reading it from the start fails with EIO."""
    link = tmp_path / "mem.yaml"
    link.symlink_to("/proc/self/mem")
    with pytest.raises(PlainUserError, match=f"cannot read {link}: Input/output error"):
        files.read_text(link)
