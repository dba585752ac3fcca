"""`switchc fmt`: pretty-print a spec, or convert it between YAML and the DSL."""

from __future__ import annotations

import codecs
import difflib
from pathlib import Path

import click

from switchc.cli.options import example, say
from switchc.errors import PlainUserError, UserError
from switchc.files import write_output
from switchc.spec import parse_spec, read_source
from switchc.spec.emit import differences, to_yaml
from switchc.spec.printer import FORMATS, SUFFIX, Format, format_of, format_with_comments
from switchc.spec.spec import Spec

EXIT_CHECK_FAILED = 1
EXIT_INVALID = 2  # as every command's user error
_SUFFIXES: dict[Format, tuple[str, ...]] = {"yaml": (".yaml", ".yml"), "dsl": (SUFFIX["dsl"],)}
_NAMES: dict[Format, str] = {"yaml": "YAML", "dsl": "DSL"}


def formatted(name: str, to: Format | None) -> tuple[str, Format, Spec]:
    """The text `switchc fmt` makes of spec `name`, and the format it is in; checked to be lossless."""
    source = read_source(name)
    spec = parse_spec(source)
    target = to or format_of(source)
    text, dropped = format_with_comments(spec, target)
    if dropped:  # at the end of a block or of the file: said, so that --write loses nothing unseen
        said = (
            f"comments on lines {', '.join(map(str, dropped))} are"
            if len(dropped) > 1
            else f"comment on line {dropped[0]} is"
        )
        say(f"note: {source.name}: the {said} not kept: fmt keeps a comment on a setting's line or just above it")
    again = parse_spec(type(source)(f"formatted{SUFFIX[target]}", text))
    if again != spec:  # a printer bug, never a user mistake: keep the traceback
        raise AssertionError(f"switchc fmt would change the meaning of {source.name}")
    return text, target, spec


def _destination(name: str, target: Format, output: Path | None) -> Path | None:
    """Where --write or --check puts the text: -o, else the file itself, else its sibling in the new format."""
    if output is not None:
        return output
    path = Path(name)
    if not path.is_file():
        return None  # a built-in spec
    if format_of(read_source(name)) == target:
        return path
    return path.with_suffix(SUFFIX[target])


def _check_sibling(name: str, spec: Spec, sibling: Path) -> None:
    """--write converting FILE replaces its sibling in the other format only when the sibling is
    the same spec (a pair kept in sync, as in specs/): another spec there is a file to keep."""
    try:
        theirs = parse_spec(read_source(str(sibling)))
    except UserError:
        theirs = None
    changed = [] if theirs is None else differences(to_yaml(theirs), spec)
    if theirs is not None and not changed:  # the same model (its layout written either way)
        return
    if theirs is None:
        what = "is not a valid spec"
    else:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        shown = ", ".join(key for key, _, _ in changed[:3]) + more
        what = f"holds another spec (it differs in {shown})"
    raise PlainUserError(
        f"{sibling} {what}; --write would replace it with {name} converted",
        f"remove {sibling} to replace it, or write the conversion elsewhere with -o PATH",
    )


@click.command(
    epilog=example(
        "switchc fmt specs/switch-tiny.switch",
        "switchc fmt specs/switch-base.yaml --to dsl -o switch-base.switch",
        "switchc fmt --write specs/*.switch",
        "switchc fmt --check specs/*.yaml specs/*.switch",
    )
)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--to",
    "to",
    type=click.Choice(FORMATS),
    help="Convert to this format (default: -o's, by its suffix; else the file's own).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a file differs from its formatted text.")
@click.option("-w", "--write", is_flag=True, help="Rewrite the file (or write its sibling, FILE.switch / FILE.yaml).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (one FILE).")
def fmt(files: tuple[str, ...], to: Format | None, check: bool, write: bool, output: Path | None) -> None:
    """Pretty-print spec files, or convert them between YAML (.yaml) and the DSL (.switch).

    Prints the formatted text unless told to write it. Only what the file wrote is kept (no
    defaults added), in its order, with the comments on or above its keys; converting is
    lossless: the result always loads into the same spec. --check compares with the file that
    --write would write (the file itself, or its sibling when converting) and exits 1 on a
    difference; an invalid spec is reported and the other files are still done, then it exits 2.
    """
    if output is not None and str(output) == "-":  # `-o -`: stdout, as is the custom
        output = None
        if check or write:
            raise PlainUserError("-o - prints the text; --check and --write take no -o")
    if output is not None and len(files) > 1:
        raise PlainUserError("-o/--output takes one FILE", "use --write to format several files in place")
    if check and write:
        raise PlainUserError("give --check or --write, not both", "--check writes nothing; --write rewrites")
    if write and output is not None:
        raise PlainUserError("give --write or -o/--output, not both")
    if not (check or write or output) and len(files) > 1:
        raise PlainUserError("give one FILE to print, or --write / --check for several")
    if output is not None:  # specs are read by their suffix: the text must be what -o's name says
        named = next((f for f in FORMATS if output.suffix.lower() in _SUFFIXES[f]), None)
        if to is None:
            to = named
        elif named is not None and named != to:
            raise PlainUserError(
                f"-o {output} names a {_NAMES[named]} file, but --to {to} writes {_NAMES[to]}, which would not load "
                "from there",
                f"name it {output.with_suffix(SUFFIX[to])}, or give --to {named}",
            )
        writes = to or ("dsl" if files[0].lower().endswith(SUFFIX["dsl"]) else "yaml")
        stream = output.exists() and not output.is_file()  # /dev/stdout, a FIFO: no file to load later
        if named is None and writes == "dsl" and not stream:  # any other name is read as YAML
            raise PlainUserError(
                f"-o {output} would hold DSL text, which loads only from a file named *{SUFFIX['dsl']} "
                "(any other name is read as YAML)",
                f"name it {output.with_suffix(SUFFIX['dsl'])}, or give --to yaml",
            )
    differ = invalid = 0
    for name in files:  # every file is looked at: an invalid one is reported, and the rest go on
        try:
            differ += _format_file(name, to, check, write, output)
        except (UserError, PlainUserError) as err:
            say(err.render())
            invalid += 1
    if differ:
        say(f"{differ} of {len(files)} file(s) would change")
    if invalid:
        if len(files) > 1:
            say(f"{invalid} of {len(files)} file(s) invalid")
        raise SystemExit(EXIT_INVALID)
    if differ:
        raise SystemExit(EXIT_CHECK_FAILED)


def _format_file(name: str, to: Format | None, check: bool, write: bool, output: Path | None) -> bool:
    """Print, check or write one file (see fmt); whether --check found it differs."""
    text, target, spec = formatted(name, to)
    if not (check or write or output):
        say(text, nl=False, err=False)
        return False
    destination = _destination(name, target, output)
    if destination is None:
        raise PlainUserError(f"{name} is a built-in spec, not a file", "print it, or write it with -o PATH")
    # compared as bytes: what -o replaces may be any file, not UTF-8 text (it differs, then)
    current = destination.read_bytes() if destination.is_file() else None
    if current == text.encode("utf-8"):
        if not check:
            say(f"unchanged {destination}")
        return False
    if output is None and current is not None and destination != Path(name):
        _check_sibling(name, spec, destination)  # --check too: it must not ask for a --write that refuses
    if check:
        if current is None:
            say(f"{destination} is missing")
            return True
        # diffed without a byte-order mark and as LF: either makes lines that look the same differ
        lf = current.removeprefix(codecs.BOM_UTF8)
        besides = ["its byte-order mark"] if lf != current else []
        if b"\r\n" in lf:
            lf = lf.replace(b"\r\n", b"\n")
            besides.append("its line endings, CRLF to LF")
        if besides and lf == text.encode("utf-8"):
            say(f"would reformat {destination}: only {' and '.join(besides)}")
            return True
        say(f"would reformat {destination}" + (f" (and {' and '.join(besides)})" if besides else ""))
        lines = lf.decode("utf-8", errors="replace").splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):  # as diff(1) marks it: joined, two lines would read as one
            lines[-1] += "\n\\ No newline at end of file\n"
        diff = difflib.unified_diff(lines, text.splitlines(keepends=True), str(destination), "formatted")
        say("".join(diff), nl=False)
        return True
    write_output(destination, text)
    say(f"wrote {destination}")
    return False


COMMANDS = (fmt,)
