"""Located diagnostics: every user mistake points at the text that caused it.

A `Source` is a named piece of text (a spec file, or the command-line overrides). A `Span` is a
range inside one source, 1-based and end-exclusive. A `Diagnostic` is one message about one span;
`UserError` carries one or more of them and is the only exception the CLI turns into an exit
status of 2 without a traceback.

Rendering follows compilers users already read every day::

    specs/switch-base.yaml:12:3: error: unknown key 'num_expert' in section 'moe'
       12 |   num_expert: 64
          |   ^^^^^^^^^^
    hint: did you mean 'num_experts'?
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)
class Source:
    """Text a spec came from; `name` is what diagnostics print (a path or '<command line>')."""

    name: str
    text: str
    lines: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.text.splitlines()))

    def line(self, number: int) -> str:
        """The 1-based line `number`, or '' past the end (an error at end of file)."""
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""

    def start(self) -> Span:
        """A one-character span at the very start of the text."""
        return Span(self, 1, 1, 1, 2)


@dataclass(frozen=True)
class Span:
    """A 1-based, end-exclusive range of a source: where a value or key was written."""

    source: Source
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.column}"

    def caret_width(self) -> int:
        """How many carets to draw: the span's width on its first line, at least one."""
        if self.end_line != self.line:
            return max(1, len(self.source.line(self.line)) - self.column + 1)
        return max(1, self.end_column - self.column)


@dataclass(frozen=True)
class Diagnostic:
    """One located message. `hint` says how to fix it; `notes` point at related places."""

    message: str
    span: Span
    hint: str | None = None
    notes: tuple[tuple[str, Span], ...] = ()
    severity: str = "error"

    def render(self) -> str:
        out = [f"{self.span}: {self.severity}: {self.message}"]
        out += _excerpt(self.span)
        for text, span in self.notes:
            out.append(f"{span}: note: {text}")
            out += _excerpt(span)
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


EXCERPT_WIDTH = 120  # a line longer than this is shown around the span only
EXCERPT_CONTEXT = 40  # characters shown on each side of a span then
EXCERPT_CARETS = 60  # the most carets drawn under one span


def _under(text: str) -> str:
    """Blanks as wide on a terminal as `text`: a tab stays a tab, a wide (CJK) character takes two
    columns, a combining mark none, so a caret below lines up with what it points at."""
    widths = {"W": "  ", "F": "  "}
    return "".join(
        "\t" if c == "\t" else "" if unicodedata.combining(c) else widths.get(unicodedata.east_asian_width(c), " ")
        for c in text
    )


# Shown as U+FFFD in an excerpt: control, format (a bidi override), private-use and unassigned
# characters, which a terminal would act on or draw unlike the file; a tab stays (carets keep it)
_HIDDEN = frozenset(("Cc", "Cf", "Co", "Cs", "Cn"))


def _shown(text: str) -> str:
    return "".join(c if c == "\t" or unicodedata.category(c) not in _HIDDEN else "\ufffd" for c in text)


def _excerpt(span: Span) -> list[str]:
    text = span.source.line(span.line).rstrip("\n")
    gutter = str(span.line).rjust(5)
    pad = " " * len(gutter)
    start, width = span.column - 1, min(span.caret_width(), EXCERPT_CARETS)
    # A long line (a minified file, a number of thousands of digits) is shown around the span only.
    first, last = 0, len(text)
    if len(text) > EXCERPT_WIDTH:
        first, last = max(0, start - EXCERPT_CONTEXT), min(len(text), start + width + EXCERPT_CONTEXT)
    before, after = ("..." if first else ""), ("..." if last < len(text) else "")
    # a control character is shown as U+FFFD, one column as it was: never sent raw to the terminal
    shown = f"{before}{_shown(text[first:last])}{after}"
    carets = "^" * len(_under(text[start : start + width])) if start < len(text) else "^"
    return [f"{gutter} | {shown}", f"{pad} | {_under(before + text[first:start])}{carets}"]


class UserError(Exception):
    """A mistake in what the user gave us. The CLI prints it and exits with status 2."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        if not diagnostics:
            raise ValueError("UserError needs at least one diagnostic")
        self.diagnostics = tuple(diagnostics)
        super().__init__(self.render())

    @classmethod
    def at(cls, span: Span, message: str, hint: str | None = None) -> UserError:
        return cls([Diagnostic(message, span, hint)])

    def render(self) -> str:
        body = "\n".join(d.render() for d in self.diagnostics)
        count = len(self.diagnostics)
        if count > 1:
            body += f"\n{count} errors"
        return body


class PlainUserError(Exception):
    """A user mistake with no text to point at (a missing file, a bad command-line flag). `status`:
    the exit status (2; `switchc train` ends with 1 where it refuses what its program would, as the
    program does)."""

    def __init__(self, message: str, hint: str | None = None, *, status: int = 2) -> None:
        self.message = message
        self.hint = hint
        self.status = status
        super().__init__(message)

    def render(self) -> str:
        return f"error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """'did you mean X?' for the closest candidate, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
