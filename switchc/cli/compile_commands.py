"""`switchc compile`: write a standalone training program for a spec."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from shlex import quote

import click

from switchc.analysis import DEFAULT_HARDWARE, hardware, report_for
from switchc.backends import BACKEND_NAMES, target
from switchc.cli.options import Directory, example, overrides
from switchc.errors import PlainUserError
from switchc.spec import Spec, load_spec

# Marks a directory switchc wrote, which compile may replace; it lists the SHA-256 of each file
# written, so that a file edited since is never replaced unseen.
MARKER = ".switchc-program"
MARKER_HEADER = "written by switchc compile; the directory may be replaced"
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def program_files(spec: Spec, backend: str = "jax") -> dict[str, str]:
    """The generated program's files plus report.json, the cost report it was compiled with. What
    the report notes of the spec (routing groups far smaller than moe.group_size) goes to stderr."""
    target(backend)  # the package exists; the program itself needs the framework only to run
    if backend == "torch":
        from switchc.backends.torch.program import generate
    else:
        from switchc.backends.jax.program import generate

    files = generate(spec)
    report = report_for(spec, hardware(DEFAULT_HARDWARE))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    files["report.json"] = json.dumps(report.to_json(), indent=2) + "\n"
    return dict(sorted(files.items()))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _marker(files: dict[str, str]) -> str:
    """MARKER's text: its header, then `digest  path` per file written (sha256sum's format)."""
    lines = [f"{_digest(text.encode('utf-8'))}  {relative}" for relative, text in files.items()]
    return "\n".join([MARKER_HEADER, *lines]) + "\n"


def _written(output: Path) -> dict[str, str] | None:
    """The files MARKER says compile wrote into `output`, with their digests; None for the marker
    of an older switchc, which lists none. An entry that names a place outside `output` (an
    absolute path, a ..) is no file compile wrote: a tampered marker makes nothing else read."""
    lines = (output / MARKER).read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    if not lines:
        return None
    written = {}
    for line in lines:
        digest, _, relative = line.partition("  ")
        path = Path(relative)
        if relative and not path.is_absolute() and ".." not in path.parts:
            written[path.as_posix()] = digest
    return written


def program_as_written(output: Path) -> dict[str, str] | None:
    """The files compile wrote into `output` (MARKER's list) with their text, as `write_program`
    takes them to write them again; None where there is no such program, or one of them was edited
    or is gone."""
    if not (output / MARKER).is_file():
        return None
    written = _written(output)
    files = {}
    for relative, digest in (written or {}).items():
        try:
            data = (output / relative).read_bytes()
        except OSError:
            return None
        if _digest(data) != digest:
            return None
        files[relative] = data.decode("utf-8")
    return files or None


# What running and linting a program leave in it, anywhere: the program's own, never a user's
_LEFT_BY_TOOLS = ("__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache")


def _not_as_written(output: Path, folders: set[str]) -> tuple[list[str], list[str]]:
    """(files in the program's own `folders` that compile did not write, files edited since it
    wrote them), by MARKER's list; both empty for an older marker, which lists nothing."""
    written = _written(output)
    if written is None:
        return [], []
    added = []
    for folder in sorted(folders):
        for path in sorted((output / folder).rglob("*")) if (output / folder).is_dir() else []:
            inside = path.relative_to(output)
            if path.is_file() and inside.as_posix() not in written and not set(inside.parts) & set(_LEFT_BY_TOOLS):
                added.append(inside.as_posix())
    added += [f"{name}/" for name in written if (output / name).is_dir() and not (output / name).is_symlink()]
    edited = []
    for name, digest in written.items():
        if (output / name).is_file() and not (output / name).is_symlink():
            with (output / name).open("rb") as file:
                if hashlib.file_digest(file, "sha256").hexdigest() != digest:
                    edited.append(name)
    return added, edited


def write_program(files: dict[str, str], output: Path, *, elsewhere: str = "compile into another directory") -> None:
    """Write all files into `output` atomically: the directory appears complete or not at all.

    An existing directory is replaced only if it is empty, or if switchc wrote it, holds nothing
    else (a run's outputs, an HLO dump, a file added to runtime/) and none of its files was edited
    since: anything else is left alone. `elsewhere`: the hints' other way out (switchc train's is
    another --out).
    """
    empty = output.is_dir() and not any(output.iterdir())  # made for the program beforehand: nothing to keep
    if output.exists() and not empty and not (output / MARKER).is_file():
        raise PlainUserError(
            f"{output} exists and was not written by switchc compile",
            "choose a new directory, or remove this one yourself",
        )
    if output.exists() and not empty:
        # what running and linting the program leave behind is the program's too
        own = {Path(relative).parts[0] for relative in files if len(Path(relative).parts) > 1}
        foreign = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in output.iterdir())
        known = own | {Path(relative).parts[0] for relative in files} | {MARKER, *_LEFT_BY_TOOLS}
        foreign = [name for name in foreign if name.rstrip("/") not in known]
        foreign += sorted(name for name in own if (output / name).exists() and not (output / name).is_dir())
        added, edited = _not_as_written(output, own)
        kept = []  # what replacing it would lose, all of it in one message
        if foreign or added:
            kept.append(f"files switchc did not write ({', '.join(foreign + added)})")
        if edited:
            kept.append(f"files edited since switchc wrote them ({', '.join(edited)})")
        if kept:
            raise PlainUserError(
                f"{output} holds {' and '.join(kept)}, which replacing it would lose",
                f"move them out of the program directory (delete an edited file to have it written afresh), or "
                f"{elsewhere}",
            )
    try:
        _replace(output, files)
    except OSError as err:  # name the user's path: the system's names the staging directory beside it
        failed = Path(err.filename) if isinstance(err.filename, str) else None
        if failed is not None and output.is_relative_to(failed):  # a folder above it: one in the way, say
            what = f"{failed}: {err.strerror or err}"
        else:
            what = f"cannot write {output}: {err.strerror or err}"
        hint = f"choose a directory you can write to, not {output.parent}" if err.errno in _DENIED else None
        raise PlainUserError(what, hint) from None


def _replace(output: Path, files: dict[str, str]) -> None:
    """`output` becomes a directory of `files` and MARKER in one rename (a staging directory beside it).
    Through a symbolic link, the directory it names is replaced (and the link kept)."""
    if output.is_symlink() and output.is_dir():
        output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # as mkdir would make it (mkdtemp's is 0700)
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="")  # the bytes the marker's digests are of
        (staging / MARKER).write_text(_marker(files), encoding="utf-8", newline="")
        if output.exists():
            # a fresh name, made empty for the old program to be renamed onto: never one of the user's
            retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            try:
                output.rename(retired)
            except OSError:
                retired.rmdir()
                raise
            try:
                staging.rename(output)
            except OSError:
                retired.rename(output)  # the old program back where it was
                raise
            shutil.rmtree(retired, ignore_errors=True)  # the new program is in place: what is left is no error
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@click.command(
    "compile",
    epilog=example(
        "switchc compile switch-tiny --backend jax -o out/switch-tiny   # then: python out/switch-tiny/train.py",
        "switchc compile switch-tiny --backend torch -o out/pt --set 'mesh.axes={data: 2}'",
        "    # then: torchrun --standalone --nproc-per-node 2 out/pt/train.py",
        "switchc compile switch-tiny -o out/ep --set 'mesh.axes={data: 2, expert: 4}'",
    ),
)
@click.argument("spec", metavar="SPEC")
@overrides
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="jax", show_default=True)
@click.option("-o", "--output", type=Directory("program directory"), required=True, help="Program dir.")
def compile_(spec: str, overrides: tuple[str, ...], backend: str, output: Path) -> None:
    """Generate a standalone training program (model, launcher, runtime, resolved spec, cost report).

    A JAX program needs jax, optax and numpy (orbax-checkpoint to save checkpoints; its header
    lists the rest): run it with `python DIR/train.py` (add `--devices N` on a CPU host to fake the
    mesh's N devices). A PyTorch program (--backend torch) needs torch and numpy: run it with
    `torchrun --standalone --nproc-per-node N DIR/train.py`, one process per mesh device. `--help`
    lists every flag. DIR/ruff.toml holds the style the code keeps.

    Compiling again into DIR replaces it, if switchc wrote it and it holds nothing else: a run's
    outputs or an HLO dump inside it, and files edited since they were written, are never lost
    (compile refuses and names them).
    """
    files = program_files(load_spec(spec, overrides), backend)
    write_program(files, output)
    click.echo(f"wrote {len(files)} files to {output}; run: python {quote(str(output / 'train.py'))} --help")


COMMANDS = (compile_,)
