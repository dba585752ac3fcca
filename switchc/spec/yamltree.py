"""YAML text -> a tree of located nodes, and that tree -> plain Python data.

PyYAML's loaders are not used: they keep the last of two equal keys without a word, construct
Python objects from tags, expand aliases, and resolve scalars by YAML 1.1 rules (`no` is false,
`1e-2` is a string). Instead this module reads PyYAML's event stream and builds its own tree in
which every node keeps its span. Specs are data: explicit tags, anchors and aliases are errors.
Scalars are resolved with the YAML 1.2 core schema.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml

from switchc.errors import Diagnostic, Source, Span, UserError


@dataclass(frozen=True)
class Scalar:
    text: str
    plain: bool  # False when quoted or a block scalar: then it is always a string
    span: Span


@dataclass(frozen=True)
class Entry:
    key: Scalar
    value: Node


@dataclass(frozen=True)
class Mapping:
    entries: tuple[Entry, ...]
    span: Span

    def get(self, key: str) -> Entry | None:
        return next((e for e in self.entries if e.key.text == key), None)

    def keys(self) -> list[str]:
        return [e.key.text for e in self.entries]

    def with_entry(self, entry: Entry) -> Mapping:
        """A copy with `entry` replacing the entry of the same key, or appended."""
        if self.get(entry.key.text) is None:
            return Mapping((*self.entries, entry), self.span)
        entries = tuple(entry if e.key.text == entry.key.text else e for e in self.entries)
        return Mapping(entries, self.span)


@dataclass(frozen=True)
class Sequence:
    items: tuple[Node, ...]
    span: Span


Node = Scalar | Mapping | Sequence


def _span(source: Source, event: yaml.Event, end_event: yaml.Event | None = None) -> Span:
    """The span from `event`'s start to `end_event`'s end (default: `event`'s own end)."""
    start, end = event.start_mark, (end_event or event).end_mark
    assert start is not None and end is not None  # the parser marks every event
    return Span(source, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def parse(source: Source, text: str | None = None, what: str = "spec") -> Node | None:
    """Parse `text` (default: the whole source) into a located tree; None for an empty document.

    `text` lets a caller parse a fragment that was padded to sit at its place in `source`
    (how command-line override values get columns that point into the command line). `what` the
    file is ("spec", "hardware file") is how errors name it.
    """
    events = _events(source, source.text if text is None else text, what)
    builder = _Builder(source, events, what)
    return builder.document()


def _events(source: Source, text: str, what: str = "spec") -> Iterator[yaml.Event]:
    try:
        yield from yaml.parse(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = err.problem or err.context or "invalid YAML"
        span = Span(source, line, column, line, column + 1)
        notes: tuple[tuple[str, Span], ...] = ()
        hint = _syntax_hint(problem)
        opened, found = err.context_mark, err.problem_mark
        if opened and found and err.context and (opened.line, opened.column) != (found.line, found.column):
            # "while parsing a flow mapping": where the bracket that is not closed was opened
            at = Span(source, opened.line + 1, opened.column + 1, opened.line + 1, opened.column + 2)
            notes = ((f"{err.context.removeprefix('while ')} that started here", at),)
            brackets = {"flow mapping": ("{", "}"), "flow sequence": ("[", "]")}
            pair = brackets.get(err.context.removeprefix("while parsing a "))
            if pair is not None:
                opener, closer = pair
                hint = f"close the '{opener}' the note points at with '{closer}', and separate its entries with ','"
        diagnostic = Diagnostic(f"YAML syntax error: {problem}", span, hint, notes=notes)
        raise UserError([diagnostic]) from None
    except yaml.reader.ReaderError as err:  # a character YAML allows nowhere: a control character
        line = text.count("\n", 0, err.position) + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        character = chr(err.character) if isinstance(err.character, int) else str(err.character)[:1] or "\0"
        kind = "control character" if unicodedata.category(character) == "Cc" else "character"
        raise UserError.at(
            Span(source, line, column, line, column + 1),
            f"{kind} {character!r} (U+{ord(character):04X}): YAML allows none",
            f"delete it: a {what} holds printable text",
        ) from None
    except yaml.YAMLError as err:
        raise UserError.at(source.start(), f"cannot read YAML: {err}") from None


def _syntax_hint(problem: str) -> str:
    if "mapping values are not allowed" in problem:
        return "a value that contains ': ' must be quoted, or a nested key is mis-indented"
    if "found character '\\t'" in problem:
        return "YAML indents with spaces, never tabs"
    if "could not find expected ':'" in problem:
        return "every line in a section is 'key: value'"
    return "check the indentation and the brackets around this place"


class _Builder:
    def __init__(self, source: Source, events: Iterator[yaml.Event], what: str) -> None:
        self.source = source
        self.events = events
        self.what = what
        self.errors: list[Diagnostic] = []

    def _next(self) -> yaml.Event:
        return next(self.events)

    def document(self) -> Node | None:
        assert isinstance(self._next(), yaml.StreamStartEvent)
        event = self._next()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        assert isinstance(event, yaml.DocumentStartEvent)
        root = self._node(self._next())
        assert isinstance(self._next(), yaml.DocumentEndEvent)
        extra = self._next()
        if not isinstance(extra, yaml.StreamEndEvent):
            span = _span(self.source, extra)
            self.errors.append(
                Diagnostic(
                    f"a {self.what} is one YAML document, this file holds more",
                    span,
                    "remove the '---' separator and everything after it",
                )
            )
        if self.errors:
            raise UserError(self.errors)
        return root

    def _reject_tag_and_anchor(self, event: yaml.NodeEvent) -> None:
        span = _span(self.source, event)
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            self.errors.append(
                Diagnostic(
                    f"YAML tag '{tag}' is not allowed in a {self.what}",
                    span,
                    f"a {self.what} is plain data: remove the tag and write the value itself",
                )
            )
        if event.anchor is not None:
            self.errors.append(
                Diagnostic(
                    f"YAML anchor '&{event.anchor}' is not allowed in a {self.what}",
                    span,
                    "write each value out where it is used",
                )
            )

    def _node(self, event: yaml.Event, depth: int = 0) -> Node:
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)) and depth == MAX_NESTING:
            return self._too_deep(event)
        if isinstance(event, yaml.AliasEvent):
            span = _span(self.source, event)
            self.errors.append(
                Diagnostic(
                    f"YAML alias '*{event.anchor}' is not allowed in a {self.what}",
                    span,
                    "write the value out in full",
                )
            )
            return Scalar("", True, span)
        assert isinstance(event, yaml.NodeEvent)
        self._reject_tag_and_anchor(event)
        if isinstance(event, yaml.ScalarEvent):
            plain = event.style is None
            return Scalar(event.value, plain, _span(self.source, event))
        if isinstance(event, yaml.SequenceStartEvent):
            items = []
            while not isinstance(nxt := self._next(), yaml.SequenceEndEvent):
                items.append(self._node(nxt, depth + 1))
            return Sequence(tuple(items), _span(self.source, event, nxt))
        assert isinstance(event, yaml.MappingStartEvent)
        entries: list[Entry] = []
        seen: dict[str, Scalar] = {}
        while not isinstance(nxt := self._next(), yaml.MappingEndEvent):
            key_node = self._node(nxt, depth + 1)
            value = self._node(self._next(), depth + 1)
            if not isinstance(key_node, Scalar):
                self.errors.append(Diagnostic("a key must be a plain name", key_node.span, "write 'name: value'"))
                continue
            first = seen.get(key_node.text)
            if first is not None:
                self.errors.append(
                    Diagnostic(
                        f"duplicate key '{key_node.text}'",
                        key_node.span,
                        "a key may appear once in a section: delete one of the two",
                        notes=(("first set here", first.span),),
                    )
                )
                continue
            seen[key_node.text] = key_node
            entries.append(Entry(key_node, value))
        return Mapping(tuple(entries), _span(self.source, event, nxt))

    def _too_deep(self, start: yaml.Event) -> NoReturn:
        """A list or mapping nested deeper than MAX_NESTING: the errors so far and this one, at once
        (PyYAML takes time quadratic in the depth to read the rest of such a text)."""
        self.errors.append(
            Diagnostic(
                f"this value is nested more than {MAX_NESTING} lists or mappings deep",
                _span(self.source, start),
                f"no setting of a {self.what} nests more than a few levels: check the brackets",
            )
        )
        raise UserError(self.errors)


# Deeper lists and mappings than any spec or hardware file needs; far deeper ones would exhaust
# Python's recursion limit in the code that walks the tree (a traceback, not an error).
MAX_NESTING = 64


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_NULL = re.compile(r"~|null|Null|NULL|")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+")
_INT_OCT = re.compile(r"0o[0-7]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


# No setting needs an integer this long (the largest, byte counts, have 13 digits); Python refuses
# to convert one of over 4,300 decimal digits, and repr() of a long hex literal the same.
MAX_INTEGER_DIGITS = 40


def resolve_scalar(node: Scalar) -> Any:
    """A scalar's value: None, bool, int, float or str, by the YAML 1.2 core schema."""
    text = node.text
    if not node.plain:
        return text
    digits = text.lstrip("+-").removeprefix("0x").removeprefix("0o")
    if len(digits) > MAX_INTEGER_DIGITS and (
        _INT.fullmatch(text) or _INT_HEX.fullmatch(text) or _INT_OCT.fullmatch(text)
    ):
        raise UserError.at(
            node.span,
            f"an integer of {len(digits)} digits is out of range",
            f"no setting takes an integer of more than {MAX_INTEGER_DIGITS} digits",
        )
    if _NULL.fullmatch(text):
        return None
    if _TRUE.fullmatch(text):
        return True
    if _FALSE.fullmatch(text):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _INT_HEX.fullmatch(text):
        return int(text, 16)
    if _INT_OCT.fullmatch(text):
        return int(text[2:], 8)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def to_python(node: Node) -> Any:
    """Plain Python data (dict, list, scalars) with the located tree's values."""
    if isinstance(node, Scalar):
        return resolve_scalar(node)
    if isinstance(node, Sequence):
        return [to_python(item) for item in node.items]
    return {entry.key.text: to_python(entry.value) for entry in node.entries}


def find(node: Node, path: tuple[str | int, ...]) -> tuple[Node | None, Scalar | None]:
    """The node at `path` and the key that names it; (None, key) where the path ends early."""
    current: Node | None = node
    key: Scalar | None = None
    for part in path:
        if isinstance(current, Mapping) and isinstance(part, str):
            entry = current.get(part)
            if entry is None:
                return None, key
            key, current = entry.key, entry.value
        elif isinstance(current, Sequence) and isinstance(part, int) and part < len(current.items):
            current = current.items[part]
        else:
            return None, key
    return current, key


def nearest(node: Node, path: tuple[str | int, ...]) -> Span:
    """The span of the deepest node along `path` that exists (for errors about absent keys)."""
    best = node.span
    for depth in range(1, len(path) + 1):
        found, _ = find(node, path[:depth])
        if found is None:
            break
        best = found.span
    return best


def leaf_spans(node: Node, prefix: str = "") -> Iterator[tuple[str, Span, Span | None]]:
    """(dotted path, value span, key span) for every mapping entry and list item in the tree.

    List items are numbered from 0 (`layout.encoder.switch.2`) and have no key span.
    """
    if isinstance(node, Sequence):
        for index, item in enumerate(node.items):
            path = f"{prefix}{index}"
            yield path, item.span, None
            yield from leaf_spans(item, path + ".")
        return
    if not isinstance(node, Mapping):
        return
    for entry in node.entries:
        path = f"{prefix}{entry.key.text}"
        yield path, entry.value.span, entry.key.span
        yield from leaf_spans(entry.value, path + ".")
