"""Spec -> spec text, YAML or DSL, for `switchc fmt`: what the source wrote, in its order, with its comments.

    text = format_spec(load_spec("specs/switch-base.yaml"), "dsl")

Only the keys the source wrote are printed (a spec with no source, or `all_keys=True`, prints
every key), in the order they were written, so a formatted file says what its author said.
A comment is kept when it sits on the line of a key or on the lines just above it (and not deeper
indented than that key: such a comment ends the block above); comments elsewhere (at the end of
a block or of the file, inside a DSL stack) are dropped, and format_with_comments says which.
Both printers are exact: reading the text back gives an equal Spec (`switchc fmt` checks this
every time).

The DSL has no `layout` block: a layout is printed as stacks. `switch = every K` and
`switch = [1, 3]` (YAML's `layout.<stack>.switch`) stay compact; a stack the source wrote as
its blocks is printed as the blocks themselves (`repeat` where a pattern repeats), and those
blocks then say model.<stack>_layers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, is_dataclass
from functools import cache
from typing import Any, Literal, get_type_hints

from switchc.errors import Source, Span
from switchc.spec.dsl import BLOCK_PATTERN, KEYWORD_VALUES
from switchc.spec.emit import consistent_dict
from switchc.spec.load import is_dsl
from switchc.spec.schema import STACKS, SpecBody, section_type
from switchc.spec.spec import Spec
from switchc.spec.yamltree import Scalar, resolve_scalar

Format = Literal["yaml", "dsl"]
FORMATS: tuple[Format, ...] = ("yaml", "dsl")
SUFFIX: dict[Format, str] = {"yaml": ".yaml", "dsl": ".switch"}
FLOW_ITEMS = 4  # a mapping of at most this many plain values is printed on one line
WIDTH = 100

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EVERY = re.compile(r"every [1-9][0-9]*")
_PLAIN_YAML = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*( [A-Za-z0-9_./-]+)*")


def format_of(source: Source) -> Format:
    return "dsl" if is_dsl(source) else "yaml"


def format_spec(spec: Spec, to: Format, all_keys: bool | None = None) -> str:
    """`spec` as YAML or DSL text. `all_keys` None: every key if the spec has no source text.

    A source that sets nothing (`{}`, `model {}`) prints as the least text that says so: every
    default, as it said."""
    return format_with_comments(spec, to, all_keys)[0]


def format_with_comments(spec: Spec, to: Format, all_keys: bool | None = None) -> tuple[str, list[int]]:
    """format_spec's text, and the lines of the source whose comments it dropped (a comment at the
    end of a block or of the file belongs to no setting)."""
    if all_keys is None:
        all_keys = not spec.origin.source.text
    items = _items(spec, all_keys)
    comments = _Comments.of(spec)
    if not items:
        return ("{}\n" if to == "yaml" else "model {}\n"), sorted(comments.lines)
    lines = _yaml_lines(items, comments) if to == "yaml" else _DslPrinter(spec, comments).lines(items)
    text = "\n".join(_aligned(lines)).rstrip("\n")
    if not text.strip():  # only what the DSL does not write (an empty layout): the least text that loads
        text = "model {}"
    return text + "\n", sorted(comments.lines - comments.printed)


# ---- what to print -------------------------------------------------------------------------------


@dataclass
class _Item:
    key: str
    path: str
    value: Any  # a leaf's value (scalar or list); unused for a mapping
    children: list[_Item] | None  # None for a leaf
    order: tuple[int, int, int]
    one_line: bool | None = None  # a mapping the source wrote on its key's line; None: not written


def _order(spec: Spec, path: str, index: int) -> tuple[int, int, int]:
    """Sort key: where the key was written in the source, else its place in the schema."""
    span = spec.origin.key_spans.get(path)
    if span is not None and span.source is spec.origin.source:
        return (0, span.line, span.column)
    return (1, index, 0)


def _one_line(spec: Spec, path: str) -> bool | None:
    """Whether the source wrote the value of `path` on one line, starting on its key's line."""
    key, value = spec.origin.key_spans.get(path), spec.origin.value_spans.get(path)
    if key is None or value is None or value.source is not spec.origin.source:
        return None
    return value.line == key.line == value.end_line


@cache
def _field_class(cls: Any, name: str) -> Any:
    """The section class of field `name`, None for a free-form mapping (mesh.axes, mesh.rules)."""
    if cls is None or not is_dataclass(cls):
        return None
    hints = get_type_hints(cls, include_extras=True)
    return section_type(hints[name]) if name in hints else None


def _items(spec: Spec, all_keys: bool) -> list[_Item]:
    written: set[str] = set()
    for path in spec.origin.value_spans:
        parts = path.split(".")
        written.update(".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    data = consistent_dict(spec) if all_keys else spec.to_dict()

    def walk(mapping: dict[str, Any], cls: Any, prefix: str) -> list[_Item]:
        found: list[_Item] = []
        for index, (key, value) in enumerate(mapping.items()):
            path = f"{prefix}{key}"
            if not all_keys and path not in written:
                continue
            section = _field_class(cls, key)
            if isinstance(value, dict) and section is not None:
                children = walk(value, section, path + ".")
            elif isinstance(value, dict):  # a free-form mapping is written whole, in its own order
                children = [
                    _Item(k, f"{path}.{k}", _as_written(spec, f"{path}.{k}", v), None, (1, i, 0))
                    for i, (k, v) in enumerate(value.items())
                ]
            else:
                children = None
            found.append(_Item(key, path, value, children, _order(spec, path, index), _one_line(spec, path)))
        found.sort(key=lambda item: item.order)
        return found

    return walk(data, SpecBody, "")


def _as_written(spec: Spec, path: str, value: Any) -> Any:
    """A mesh rule as the source wrote it: `null` (not split) or one bare axis name, which the spec
    holds as a list ([] and [axis]), so that the printed text says what its author said."""
    span = spec.origin.value_spans.get(path)
    if not isinstance(value, (list, tuple)) or span is None or span.source is not spec.origin.source:
        return value
    text = span.source.line(span.line)[span.column - 1 : span.end_column - 1] if span.line == span.end_line else ""
    if not value and text in ("null", "~", "Null", "NULL"):
        return None
    if len(value) == 1 and text == value[0]:
        return value[0]
    return value


# ---- comments ------------------------------------------------------------------------------------


@dataclass
class _Comments:
    """The source's comments, by the line of the key they belong to; each line's comments print once."""

    source: Source | None
    leading: dict[int, list[str]] = field(default_factory=dict)
    trailing: dict[int, _Trailing] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)  # line -> the path whose key starts it
    taken: set[int] = field(default_factory=set)
    key_spans: dict[str, Span] = field(default_factory=dict)
    lines: set[int] = field(default_factory=set)  # every line with a comment
    leading_lines: dict[int, list[int]] = field(default_factory=dict)  # line -> the lines of its leading comments
    printed: set[int] = field(default_factory=set)  # the lines whose comments were printed

    @staticmethod
    def of(spec: Spec) -> _Comments:
        source = spec.origin.source
        found = _Comments(source)
        if not source.text:
            return found
        dsl = is_dsl(source)
        codes: list[str] = []
        group = 0
        for number, line in enumerate(source.lines, start=1):
            code, comment = _split_comment(line, dsl)
            codes.append(code)
            if comment is not None:
                found.lines.add(number)
            if comment is None or not code.strip():
                continue
            # Comments on consecutive lines at one column stay aligned (and keep that column while
            # their code fits); a lone comment keeps its column only if it was padded to it.
            prior = found.trailing.get(number - 1)
            if prior is None or prior.column != len(code):
                group += 1
            padded = len(code) - len(code.rstrip()) > 2
            found.trailing[number] = _Trailing(group, len(code), comment, padded)
            if prior is not None and prior.group == group:
                found.trailing[number - 1] = _Trailing(group, prior.column, prior.text, True)
                found.trailing[number] = _Trailing(group, len(code), comment, True)
        for number in range(1, len(source.lines) + 1):
            indent = _indent(source.lines[number - 1])
            above: list[tuple[int, str]] = []
            for previous in range(number - 1, 0, -1):
                code, text = codes[previous - 1], source.lines[previous - 1]
                if code.strip() and code.strip().strip("}").strip():
                    break
                if code.strip():  # a line of closing braces: keep looking above it
                    continue
                if text.strip() and _indent(text) > indent:  # the end of the block above: not this key's
                    break
                above.append((previous, text.strip()))
            above.reverse()
            while above and not above[0][1]:
                above.pop(0)
            while above and not above[-1][1]:
                above.pop()
            if above:
                found.leading[number] = [text for _, text in above]
                found.leading_lines[number] = [line for line, text in above if text]
        ranked: dict[int, tuple[int, bool, int, str]] = {}
        for path, span in spec.origin.key_spans.items():
            if span.source is not source:
                continue
            rank = (span.column, not path.startswith("layout"), len(path), path)
            if span.line not in ranked or rank < ranked[span.line]:
                ranked[span.line] = rank
            found.key_spans[path] = span
        found.owner = {line: rank[3] for line, rank in ranked.items()}
        return found

    def owns(self, path: str) -> bool:
        span = self.key_spans.get(path)
        return span is not None and self.owner.get(span.line) == path and span.line not in self.taken

    def has_own(self, path: str) -> bool:
        span = self.key_spans.get(path)
        return self.owns(path) and span is not None and (span.line in self.leading or span.line in self.trailing)

    def take(self, *paths: str) -> tuple[list[str], _Trailing | None]:
        """Comments above and after the lines that `paths` own (each line's comments print once).
        Where several of those lines are printed as one (`encoder {` and its `switch = every 2`),
        the first trailing comment stays after it and the others go above it."""
        lines = sorted({self.key_spans[path].line for path in paths if self.owns(path)})
        self.taken.update(lines)
        after = [line for line in lines if line in self.trailing]
        self.printed.update(after)
        self.printed.update(above for line in lines for above in self.leading_lines.get(line, []))
        leading = [comment for line in lines for comment in self.leading.get(line, [])]
        leading += [self.trailing[line].text for line in after[1:]]
        return leading, self.trailing[after[0]] if after else None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _split_comment(line: str, dsl: bool) -> tuple[str, str | None]:
    """(code, '# comment') of one line. YAML needs a space before '#'; quotes protect it in both."""
    quote: str | None = None
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif quote is not None:
            if char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = None
        elif char == '"' or (char == "'" and not dsl and (index == 0 or line[index - 1] in " \t:[{,")):
            quote = char
        elif char == "#" and (dsl or index == 0 or line[index - 1] in " \t"):
            return line[:index], line[index:].rstrip()
    return line, None


@dataclass(frozen=True)
class _Trailing:
    """A comment after code: its alignment group, its column in the source, whether to keep that."""

    group: int
    column: int
    text: str
    keep_column: bool


@dataclass(frozen=True)
class _Line:
    """A printed line with a trailing comment, aligned with its group once every line is printed."""

    text: str
    comment: _Trailing


Lines = list[str | _Line]


def _with_comments(pad: str, lead: list[str], text: str, trail: _Trailing | None) -> Lines:
    out: Lines = [f"{pad}{comment}" if comment else "" for comment in lead]
    out.append(text if trail is None else _Line(text, trail))
    return out


def _aligned(lines: Lines) -> list[str]:
    """Trailing comments of one group at one column: their old one, or two past the longest code."""
    columns: dict[int, int] = {}
    for line in lines:
        if isinstance(line, _Line):
            group, least = line.comment.group, line.comment.column if line.comment.keep_column else 0
            columns[group] = max(columns.get(group, 0), least, len(line.text) + 2)
    return [
        line if isinstance(line, str) else line.text.ljust(columns[line.comment.group]) + line.comment.text
        for line in lines
    ]


# ---- values --------------------------------------------------------------------------------------


def _number(value: int | float, yaml: bool) -> str:
    """`value` as written in a spec. In YAML a float with an exponent keeps a '.' in its mantissa
    and a sign in its exponent (1.0e-6, 1.0e+20): YAML 1.1 readers (PyYAML's safe_load) read 1e-6
    as text."""
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return "-.inf" if value < 0 else ".inf"
        mantissa, e, exponent = repr(value).partition("e")  # Python pads the exponent: 1e-06
        if not e:
            return mantissa
        if yaml:
            return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{int(exponent):+d}"
        return f"{mantissa}e{int(exponent)}"
    return str(value)


def _quote(text: str, yaml: bool) -> str:
    """A double-quoted string that both readers decode to `text`; unprintable characters escaped."""
    out = []
    for char in json.dumps(text, ensure_ascii=False)[1:-1]:
        if char.isprintable():
            out.append(char)
        elif ord(char) > 0xFFFF:
            out.append(f"\\U{ord(char):08x}" if yaml else json.dumps(char)[1:-1])
        else:
            out.append(f"\\u{ord(char):04x}")
    return '"' + "".join(out) + '"'


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value, yaml=True)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN_YAML.fullmatch(text) and resolve_scalar(Scalar(text, True, _NOWHERE)) == text:
        return text
    return _quote(text, yaml=True)


def _dsl_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value, yaml=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_dsl_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_dsl_value(v)}" for k, v in value.items()) + " }"
    text = str(value)
    if (_NAME.fullmatch(text) and text not in KEYWORD_VALUES) or _EVERY.fullmatch(text):
        return text
    return _quote(text, yaml=False)


_NOWHERE = Source("<printer>", "").start()


def _flows(item: _Item, comments: _Comments, width: int, depth: int) -> bool:
    """One line for a mapping of plain values: as the source wrote it, else when short and nested."""
    children = item.children or []
    if not children or width > WIDTH or any(comments.has_own(c.path) for c in children):
        return False
    if any(c.children is not None or isinstance(c.value, dict) for c in children):
        return False
    if item.one_line is not None:
        return item.one_line
    return depth > 0 and len(children) <= FLOW_ITEMS


# ---- YAML ----------------------------------------------------------------------------------------


def _yaml_lines(items: Iterable[_Item], comments: _Comments, depth: int = 0) -> Lines:
    pad = "  " * depth
    out: Lines = []
    for item in items:
        if depth == 0 and out:
            out.append("")
        lead, trail = comments.take(item.path)
        head = f"{pad}{item.key}:"
        if item.children is None:
            out += _with_comments(pad, lead, f"{head} {_yaml_value(item.value)}", trail)
            continue
        flow = "{" + ", ".join(f"{c.key}: {_yaml_value(c.value)}" for c in item.children) + "}"
        if not item.children or _flows(item, comments, len(head) + 1 + len(flow), depth):
            out += _with_comments(pad, lead, f"{head} {flow}", trail)
            continue
        out += _with_comments(pad, lead, head, trail)
        out += _yaml_lines(item.children, comments, depth + 1)
    return out


# ---- DSL -----------------------------------------------------------------------------------------


class _DslPrinter:
    def __init__(self, spec: Spec, comments: _Comments) -> None:
        self.spec = spec
        self.comments = comments
        self.block_form = {
            stack for stack in STACKS if _written_as_blocks(spec, stack)
        }  # these stacks print their blocks, which say model.<stack>_layers

    def lines(self, items: list[_Item]) -> Lines:
        entries: list[tuple[tuple[int, int, int], Lines]] = []
        for index, item in enumerate(items):
            if item.key == "layout":
                for number, stack in enumerate(item.children or []):
                    if self.spec.layout.placement(stack.key) is None:
                        continue
                    order = stack.order if stack.order[0] == 0 else (item.order[0], item.order[1], number + 1)
                    entries.append((order, self.stack(stack.key, stack.path)))
                continue
            if item.key == "model" and item.children is not None:
                moved = {f"{stack}_layers" for stack in self.block_form}
                kept = [c for c in item.children if c.key not in moved]
                if not kept and len(kept) < len(item.children):
                    continue  # everything it said is said by the blocks
                item = _Item(item.key, item.path, item.value, kept, item.order, item.one_line)
            entries.append((item.order if item.order[0] == 0 else (1, index, 0), self.item(item, 0)))
        out: Lines = []
        for _, text in sorted(entries, key=lambda entry: entry[0]):
            if out:
                out.append("")
            out += text
        return out

    def item(self, item: _Item, depth: int) -> Lines:
        pad = "  " * depth
        lead, trail = self.comments.take(item.path)
        if item.children is None:
            return _with_comments(pad, lead, f"{pad}{item.key} = {_dsl_value(item.value)}", trail)
        if not item.children:
            return _with_comments(pad, lead, f"{pad}{item.key} {{}}", trail)
        flow = f"{pad}{item.key} {{ " + ", ".join(f"{c.key} = {_dsl_value(c.value)}" for c in item.children) + " }"
        if _flows(item, self.comments, len(flow), depth):
            return _with_comments(pad, lead, flow, trail)
        out = _with_comments(pad, lead, f"{pad}{item.key} {{", trail)
        for child in item.children:
            out += self.item(child, depth + 1)
        out.append(f"{pad}}}")
        return out

    def stack(self, stack: str, path: str) -> Lines:
        lead, trail = self.comments.take(path, "layout", f"{path}.switch", f"model.{stack}_layers")
        placement = self.spec.layout.placement(stack)
        assert placement is not None
        if isinstance(placement, str):
            return _with_comments("", lead, f"{stack} {{ switch = {placement} }}", trail)
        if stack not in self.block_form:
            return _with_comments("", lead, f"{stack} {{ switch = {_dsl_value(list(placement))} }}", trail)
        out = _with_comments("", lead, f"{stack} {{", trail)
        depth = self.spec.stack_depth(stack)
        switch = set(placement)
        kinds = [index in switch for index in range(depth)]
        for count, unit in _runs(kinds):
            blocks = [_block(stack, is_switch) for is_switch in unit]
            if count == 1:
                out += [f"  {block}" for block in blocks]
            elif len(blocks) == 1:
                out.append(f"  repeat {count} {{ {blocks[0]} }}")
            else:
                out.append(f"  repeat {count} {{")
                out += [f"    {block}" for block in blocks]
                out.append("  }")
        out.append("}")
        return out


def _written_as_blocks(spec: Spec, stack: str) -> bool:
    """Whether the source listed the stack's blocks: a DSL stack of blocks gives its Switch layers
    at the stack's name, where `switch = [...]` (or YAML's layout) gives them at a `switch` key.
    fmt prints each stack in the form its source chose; a spec without a source, compactly."""
    if not isinstance(spec.layout.placement(stack), tuple):
        return False
    span = spec.origin.key_spans.get(f"layout.{stack}.switch")
    if span is None or span.source is not spec.origin.source:
        return False
    return span.source.line(span.line)[span.column - 1 : span.end_column - 1] != "switch"


def _block(stack: str, is_switch: bool) -> str:
    sublayers = [choices[0] for choices in BLOCK_PATTERN[stack][:-1]]
    sublayers.append("switch" if is_switch else "ffn")
    return "block { " + ", ".join(sublayers) + " }"


def _runs(kinds: list[bool], longest_unit: int = 8) -> list[tuple[int, list[bool]]]:
    """The blocks as (count, unit) runs: the unit that covers most blocks by repeating, greedily."""
    runs: list[tuple[int, list[bool]]] = []
    start = 0
    while start < len(kinds):
        best_count, best_unit = 1, kinds[start : start + 1]
        for size in range(1, longest_unit + 1):
            unit = kinds[start : start + size]
            if len(unit) < size:
                break
            count = 1
            while kinds[start + count * size : start + (count + 1) * size] == unit:
                count += 1
            if count >= 2 and count * size > best_count * len(best_unit):
                best_count, best_unit = count, unit
        runs.append((best_count, best_unit))
        start += best_count * len(best_unit)
    return runs
