"""The switchc DSL: `.switch` text -> the same located tree a YAML spec becomes (docs/dsl.md).

    model { d_model = 768, d_ff = 2048 }
    moe { num_experts = 128 }
    encoder { repeat 6 { block { attention, ffn }  block { attention, switch } } }
    decoder { switch = every 2 }

Three steps, all in this module, so that lark's parse trees never leave it:

1. lark parses the text with the generic grammar in switchc.lark (LALR(1)); a syntax error
   becomes a located diagnostic, with the missing brace or value found where it can be.
2. One transformer step turns the parse tree into frozen, located statements: `Setting`,
   `Group`, `Word`, whose values are already `yamltree.Scalar` / `yamltree.Sequence` nodes.
3. Lowering checks which names may appear where (unknown block, duplicate setting, bad
   structure of a block) and builds a `yamltree.Mapping`: sections become mappings, and the
   `encoder` / `decoder` stacks become `model.<stack>_layers` and `layout.<stack>.switch`.

From there a DSL spec takes exactly the path of a YAML one (load.py): overrides, pydantic
validation, cross-checks. Every span points into the `.switch` file, so one set of error
messages serves both formats.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken, v_args
from lark.tree import Meta

from switchc.errors import Diagnostic, Source, Span, UserError, did_you_mean
from switchc.spec import yamltree
from switchc.spec.schema import MAX_LAYERS, SECTIONS, STACKS
from switchc.spec.yamltree import Entry, Mapping, Scalar, Sequence

GRAMMAR = "switchc.lark"

# Top-level blocks: the spec's sections (the layout is written as the stacks) and the two stacks.
SECTION_BLOCKS: tuple[str, ...] = tuple(name for name in SECTIONS if name != "layout")
TOP_LEVEL_BLOCKS: tuple[str, ...] = SECTION_BLOCKS + STACKS
# Inside a stack: blocks, repeats, and the compact `switch = ...` placement.
STACK_WORDS: tuple[str, ...] = ("block", "repeat", "switch")
# Inside a block: its sublayers, in order. `switch_attention` parses but the IR has no such op.
SUBLAYERS: tuple[str, ...] = ("attention", "cross_attention", "ffn", "switch", "switch_attention")
BLOCK_PATTERN: dict[str, tuple[tuple[str, ...], ...]] = {
    "encoder": (("attention",), ("ffn", "switch")),
    "decoder": (("attention",), ("cross_attention",), ("ffn", "switch")),
}
KEYWORD_VALUES = ("true", "false", "null")
MAX_BLOCKS = MAX_LAYERS  # the schema's: a stack of more is refused here, at the count that made it

NUMBER_HINT = "numbers are written like 768, -5, 0.1 or 1e-2"


@cache
def _parser() -> Lark:
    grammar = (resources.files("switchc.spec") / GRAMMAR).read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


# ---- located statements: what the transformer makes of a parse tree ------------------------------


# One escape each, left to right (so `\\\\` is one): JSON's, or a backslash it does not take.
_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.?)", re.DOTALL)
_JSON_ESCAPES = ('\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t")


@dataclass(frozen=True)
class Name:
    text: str
    span: Span


@dataclass(frozen=True)
class Setting:
    """`name = value`."""

    name: Name
    value: yamltree.Node
    span: Span


@dataclass(frozen=True)
class Group:
    """`name [count] { statements }`: a section, a nested mapping, a stack, a block or a repeat."""

    name: Name
    count: Scalar | None
    body: tuple[Statement, ...]
    span: Span
    close: Span  # the closing brace


@dataclass(frozen=True)
class Word:
    """A bare name, optionally with settings in parentheses: a sublayer such as `switch(top_k = 2)`."""

    name: Name
    args: tuple[Setting, ...] | None
    span: Span


Statement = Setting | Group | Word


class _ToStatements(Transformer[Token, tuple[Statement, ...]]):
    """Parse tree -> located statements, in one pass. Bad numbers and strings are collected."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.errors: list[Diagnostic] = []

    def _token_span(self, token: Token) -> Span:
        assert token.line is not None and token.column is not None
        assert token.end_line is not None and token.end_column is not None
        return Span(self.source, token.line, token.column, token.end_line, token.end_column)

    def _meta_span(self, meta: Meta) -> Span:
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _name(self, token: Token) -> Name:
        return Name(str(token), self._token_span(token))

    def _number(self, token: Token) -> Scalar:
        text = str(token)
        node = Scalar(text, True, self._token_span(token))
        try:
            value = yamltree.resolve_scalar(node)
        except UserError as error:  # out of range: said with the other errors
            self.errors += error.diagnostics
            return Scalar(text, False, node.span)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = "write it without '_' separators" if "_" in text else NUMBER_HINT
            self.errors.append(Diagnostic(f"bad number '{text}'", node.span, hint))
            return Scalar(text, False, node.span)
        return node

    def _string(self, token: Token) -> Scalar:
        span = self._token_span(token)
        try:
            text = json.loads(str(token), strict=False)  # a tab written as it is stays a tab
            half = next((c for c in text if 0xD800 <= ord(c) <= 0xDFFF), None)
            if half is not None:  # \ud800 alone: no character, and no UTF-8 to write it in
                self.errors.append(
                    Diagnostic(
                        f"'\\u{ord(half):04x}' is half of a UTF-16 surrogate pair, not a character",
                        span,
                        "write the character itself, or both halves of its pair (\\ud83d\\ude00)",
                    )
                )
        except json.JSONDecodeError:
            escapes = _ESCAPE.finditer(str(token)[1:-1])
            bad = next((e for e in escapes if len(e.group()) < 6 and e.group() not in _JSON_ESCAPES), None)
            if bad is not None and span.line == span.end_line:
                column = span.column + 1 + bad.start()
                span = Span(self.source, span.line, column, span.line, column + len(bad.group()))
            escape = f" '{bad.group()}'" if bad is not None else ""
            self.errors.append(
                Diagnostic(
                    f"bad escape{escape} in a string",
                    span,
                    "the escapes are JSON's: \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX; "
                    "write other characters as they are",
                )
            )
            text = str(token)[1:-1]
        return Scalar(text, False, span)

    def start(self, children: list[Statement]) -> tuple[Statement, ...]:
        return tuple(children)

    @v_args(meta=True)
    def setting(self, meta: Meta, children: list[Token | yamltree.Node]) -> Setting:
        name, value = children
        assert isinstance(name, Token) and not isinstance(value, Token)
        return Setting(self._name(name), value, self._meta_span(meta))

    @v_args(meta=True)
    def group(self, meta: Meta, children: list[Token | Statement]) -> Group:
        name, *rest = children
        assert isinstance(name, Token)
        count = None
        first = rest[0] if rest else None
        if isinstance(first, Token):
            count = self._number(first)
            rest = rest[1:]
        body = tuple(item for item in rest if not isinstance(item, Token))
        close = Span(self.source, meta.end_line, meta.end_column - 1, meta.end_line, meta.end_column)
        return Group(self._name(name), count, body, self._meta_span(meta), close)

    @v_args(meta=True)
    def word(self, meta: Meta, children: list[Token | tuple[Setting, ...]]) -> Word:
        name = children[0]
        assert isinstance(name, Token)
        args = children[1] if len(children) > 1 else None
        assert args is None or isinstance(args, tuple)
        return Word(self._name(name), args, self._meta_span(meta))

    def args(self, children: list[Setting]) -> tuple[Setting, ...]:
        return tuple(children)

    def scalar(self, children: list[Token | Scalar]) -> Scalar:
        (item,) = children
        if isinstance(item, Scalar):  # a phrase
            return item
        if item.type == "NUMBER":
            return self._number(item)
        if item.type == "STRING":
            return self._string(item)
        # A bare word is text, except the three keywords; `True` or `NULL` stay text here.
        return Scalar(str(item), str(item) in KEYWORD_VALUES, self._token_span(item))

    @v_args(meta=True)
    def phrase(self, meta: Meta, children: list[Token]) -> Scalar:
        word, number = children
        self._number(number)  # reports a bad number; the phrase itself is text such as 'every 2'
        return Scalar(f"{word} {number}", False, self._meta_span(meta))

    @v_args(meta=True)
    def sequence(self, meta: Meta, children: list[yamltree.Node]) -> Sequence:
        return Sequence(tuple(children), self._meta_span(meta))


def depth_from_blocks(span: Span, stack: str) -> bool:
    """Whether model.<stack>_layers, written at `span` (its key's or its value's), is the depth a
    stack's list of blocks gives: `_Lowering.merge_stacks` points both at the stack's name."""
    return span.source.line(span.line)[span.column - 1 : span.end_column - 1] == stack


# ---- parse ---------------------------------------------------------------------------------------


def parse(source: Source) -> Mapping | None:
    """The located tree of a `.switch` source; None when it holds no statements (empty)."""
    try:
        tree = _parser().parse(source.text)
    except UnexpectedInput as err:
        raise UserError([_syntax_error(source, err)]) from None
    too_deep = _too_deep(source)
    if too_deep is not None:
        raise UserError([too_deep])
    to_statements = _ToStatements(source)
    statements = to_statements.transform(tree)
    if not statements and not to_statements.errors:
        return None
    lowering = _Lowering(source)
    root = lowering.spec(statements)
    errors = to_statements.errors + lowering.errors
    if errors:
        errors.sort(key=lambda d: (d.span.line, d.span.column))
        raise UserError(errors)
    return root


def _too_deep(source: Source) -> Diagnostic | None:
    """The first bracket that opens more than yamltree.MAX_NESTING blocks, lists or argument lists
    deep, if any: the tree of such a file is deeper than the transformer's recursion can walk."""
    depth = 0
    for token in _parser().lex(source.text):  # the text parsed: every token lexes
        if token.type in ("LBRACE", "LSQB", "LPAR"):
            depth += 1
            if depth > yamltree.MAX_NESTING:
                return Diagnostic(
                    f"this is nested more than {yamltree.MAX_NESTING} blocks or lists deep",
                    _token_span(source, token),
                    "no setting of a spec nests more than a few levels: check the braces and brackets",
                )
        elif token.type in ("RBRACE", "RSQB", "RPAR"):
            depth -= 1
    return None


# ---- statements -> located tree ------------------------------------------------------------------


def _key(name: Name) -> Scalar:
    return Scalar(name.text, True, name.span)


@dataclass(frozen=True)
class _Stack:
    """What one `encoder { ... }` or `decoder { ... }` says."""

    group: Group
    layers: Scalar | None  # from a list of blocks; None for `switch = ...`
    switch: yamltree.Node
    switch_key: Span


class _Lowering:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.errors: list[Diagnostic] = []

    def error(
        self, span: Span, message: str, hint: str | None = None, notes: tuple[tuple[str, Span], ...] = ()
    ) -> None:
        self.errors.append(Diagnostic(message, span, hint, notes))

    def whole(self) -> Span:
        lines = self.source.lines or ("",)
        return Span(self.source, 1, 1, len(lines), len(lines[-1]) + 1)

    def missing_brace(self, word: Word) -> None:
        end = Span(self.source, word.span.end_line, word.span.end_column, word.span.end_line, word.span.end_column + 1)
        self.error(end, f"missing '{{' after '{word.name.text}'", f"a block is written '{word.name.text} {{ ... }}'")

    def duplicate(self, name: Name, first: Name, what: str, where: str) -> None:
        self.error(
            name.span,
            f"duplicate {what} '{name.text}'{where}",
            f"a {what} may appear once{where}: delete one of the two",
            notes=(("first given here", first.span),),
        )

    # -- the top level --

    def spec(self, statements: tuple[Statement, ...]) -> Mapping:
        entries: list[Entry] = []
        seen: dict[str, Name] = {}
        stacks: list[_Stack] = []
        for statement in statements:
            name = statement.name
            if isinstance(statement, Word):
                self.top_level_word(statement)
                continue
            if (name.text in STACKS or name.text == "layout") and isinstance(statement, Setting):
                self.error(
                    name.span,
                    f"'{name.text}' is a block, not a setting",
                    f"write '{name.text} {{ switch = every 2 }}' or list its blocks inside '{{ ... }}'"
                    if name.text in STACKS
                    else "write the layout as 'encoder { ... }' and 'decoder { ... }' blocks",
                )
                continue
            if name.text in seen:
                self.duplicate(name, seen[name.text], "block" if isinstance(statement, Group) else "setting", "")
                continue
            seen[name.text] = name
            if isinstance(statement, Setting):
                entries.append(Entry(_key(name), statement.value))
            elif name.text in STACKS:
                stack = self.stack(statement)
                if stack is not None:
                    stacks.append(stack)
            elif name.text == "layout":
                self.error(
                    name.span,
                    "the DSL has no 'layout' block",
                    "say where Switch layers sit inside 'encoder { ... }' and 'decoder { ... }': "
                    "`switch = every 2`, `switch = [1, 3]`, or a list of blocks",
                )
            elif name.text in SECTION_BLOCKS:
                self.no_count(statement)
                entries.append(Entry(_key(name), self.mapping(statement, name.text)))
            else:
                self.error(
                    name.span,
                    f"unknown block '{name.text}'",
                    did_you_mean(name.text, TOP_LEVEL_BLOCKS)
                    or f"blocks at the top level: {', '.join(TOP_LEVEL_BLOCKS)}",
                )
        self.merge_stacks(entries, stacks)
        return Mapping(tuple(entries), self.whole())

    def top_level_word(self, word: Word) -> None:
        if word.name.text in TOP_LEVEL_BLOCKS:
            self.missing_brace(word)
            return
        close = did_you_mean(word.name.text, TOP_LEVEL_BLOCKS)
        self.error(
            word.name.span,
            f"unexpected word '{word.name.text}'",
            f"{close} A block is written 'name {{ ... }}'"
            if close
            else "a setting is 'name = value'; a block 'name { ... }'",
        )

    def no_count(self, group: Group) -> None:
        if group.count is not None:
            self.error(group.count.span, f"'{group.name.text}' takes no count", f"write '{group.name.text} {{ ... }}'")

    def mapping(self, group: Group, path: str) -> Mapping:
        """A section or a nested mapping (capacity_factor, optimizer, axes, rules): settings and blocks."""
        entries: list[Entry] = []
        seen: dict[str, Name] = {}
        where = f" in '{path}'"
        for statement in group.body:
            name = statement.name
            if isinstance(statement, Word):
                self.error(
                    name.span,
                    f"'{name.text}' needs a value",
                    f"write '{name.text} = value', or '{name.text} {{ ... }}' for a block of settings",
                )
                continue
            if name.text in seen:
                self.duplicate(name, seen[name.text], "setting" if isinstance(statement, Setting) else "block", where)
                continue
            seen[name.text] = name
            if isinstance(statement, Setting):
                entries.append(Entry(_key(name), statement.value))
            elif name.text in ("block", "repeat"):  # a stack's words: their bodies are no settings
                self.error(
                    name.span,
                    f"'{name.text}' is not a block of '{path}'",
                    f"blocks and repeats are listed in an encoder or decoder stack: encoder {{ {name.text} "
                    f"{'2 ' if name.text == 'repeat' else ''}{{ ... }} }}, at the top level",
                )
            else:
                self.no_count(statement)
                entries.append(Entry(_key(name), self.mapping(statement, f"{path}.{name.text}")))
        return Mapping(tuple(entries), group.span)

    # -- stacks --

    def stack(self, group: Group) -> _Stack | None:
        stack = group.name.text
        self.no_count(group)
        placement: Setting | None = None
        blocks: list[Group] = []
        for statement in group.body:
            name = statement.name
            if isinstance(statement, Setting) and name.text == "switch":
                if placement is not None:
                    self.duplicate(name, placement.name, "setting", f" in '{stack}'")
                placement = placement or statement
            elif isinstance(statement, Setting):
                hint = (
                    f"the depth is model.{stack}_layers, or the number of blocks listed here"
                    if name.text == "layers"
                    else did_you_mean(name.text, ("switch",)) or "a stack holds `switch = ...` or its blocks"
                )
                self.error(name.span, f"unknown setting '{name.text}' in '{stack}'", hint)
            elif isinstance(statement, Group) and name.text in ("block", "repeat"):
                blocks.append(statement)
            elif isinstance(statement, Group):
                self.unknown_in_stack(statement, stack)
            else:
                self.stack_word(statement, stack)
        if placement is not None and blocks:
            self.error(
                placement.name.span,
                f"'{stack}' gives both `switch = ...` and a list of blocks",
                f"keep one: the blocks, or `switch = ...` with model.{stack}_layers",
                notes=(("the first block", blocks[0].name.span),),
            )
            return None
        if placement is not None:
            return _Stack(group, None, placement.value, placement.name.span)
        if not blocks:
            if group.body:
                return None  # what it holds was reported above
            self.error(
                group.name.span,
                f"'{stack}' is empty",
                f"list its blocks (`block {{ {', '.join(p[0] for p in BLOCK_PATTERN[stack])} }}`) "
                "or say where Switch layers sit (`switch = every 2`)",
            )
            return None
        expanded = self.blocks(tuple(blocks), stack)
        if expanded is None:
            return None
        switch_items = tuple(
            Scalar(str(index), True, span) for index, (is_switch, span) in enumerate(expanded) if is_switch
        )
        layers = Scalar(str(len(expanded)), True, group.name.span)
        return _Stack(group, layers, Sequence(switch_items, group.name.span), group.name.span)

    def unknown_in_stack(self, group: Group, stack: str) -> None:
        name = group.name.text
        self.error(
            group.name.span,
            f"unknown block '{name}' in '{stack}'",
            did_you_mean(name, ("block", "repeat")) or "a stack holds `block { ... }` and `repeat N { ... }`",
        )

    def stack_word(self, word: Word, stack: str) -> None:
        name = word.name.text
        if name in ("block", "repeat"):
            self.missing_brace(word)
        elif name in SUBLAYERS:
            self.error(
                word.name.span,
                f"'{name}' is a sublayer: it goes inside a block",
                f"write `block {{ {', '.join(p[0] for p in BLOCK_PATTERN[stack][:-1])}, {name} }}`"
                if name in ("ffn", "switch")
                else "write `block { ... }` around the sublayers of one block",
            )
        else:
            self.error(
                word.name.span,
                f"unexpected word '{name}' in '{stack}'",
                did_you_mean(name, STACK_WORDS)
                or "a stack holds `block { ... }`, `repeat N { ... }` or `switch = ...`",
            )

    def blocks(self, statements: tuple[Statement, ...], stack: str) -> list[tuple[bool, Span]] | None:
        """The blocks of a stack or a repeat body, expanded: (is a Switch layer, span of its FFN word)."""
        out: list[tuple[bool, Span]] = []
        ok = True
        for statement in statements:
            if isinstance(statement, Group) and statement.name.text == "block":
                found = self.block(statement, stack)
                if found is None:
                    ok = False
                else:
                    out.append(found)
            elif isinstance(statement, Group) and statement.name.text == "repeat":
                repeated = self.repeat(statement, stack)
                if repeated is None:
                    ok = False
                else:
                    out.extend(repeated)
            elif isinstance(statement, Group):
                self.unknown_in_stack(statement, stack)
                ok = False
            elif isinstance(statement, Word):
                self.stack_word(statement, stack)
                ok = False
            else:
                self.error(
                    statement.name.span,
                    f"unexpected setting '{statement.name.text}' in a repeat",
                    "a repeat holds blocks; `switch = ...` belongs directly in the stack",
                )
                ok = False
            if len(out) > MAX_BLOCKS:
                self.error(
                    statement.span,
                    f"more than {MAX_BLOCKS} blocks in '{stack}'",
                    f"a stack holds at most {MAX_BLOCKS} blocks",
                )
                return None
        return out if ok else None

    def repeat(self, group: Group, stack: str) -> list[tuple[bool, Span]] | None:
        count = group.count
        if count is None:
            self.error(group.name.span, "'repeat' needs a count", "write `repeat 6 { ... }`")
            return None
        times = yamltree.resolve_scalar(count) if count.plain else None
        if isinstance(times, bool) or not isinstance(times, int):
            if count.plain:  # a bad number was reported already
                self.error(
                    count.span, f"a repeat count is a whole number, got {count.text}", "write `repeat 6 { ... }`"
                )
            return None
        if times < 1:
            self.error(count.span, f"repeat {times}: the count must be at least 1", "leave the blocks out instead")
            return None
        if not group.body:
            self.error(
                group.name.span, "the repeat is empty", "put the blocks it repeats inside: `repeat 6 { block { ... } }`"
            )
            return None
        once = self.blocks(group.body, stack)
        if once is None:
            return None
        if len(once) * times > MAX_BLOCKS:
            self.error(
                count.span,
                f"more than {MAX_BLOCKS} blocks in '{stack}'",
                f"a stack holds at most {MAX_BLOCKS} blocks",
            )
            return None
        return once * times

    def block(self, group: Group, stack: str) -> tuple[bool, Span] | None:
        """Check one block against the T5 block the IR builds; (is a Switch layer, span of its FFN)."""
        if group.count is not None:
            self.error(group.count.span, "'block' takes no count", "write `repeat N { block { ... } }`")
            return None
        words: list[Word] = []
        for statement in group.body:
            if not isinstance(statement, Word):
                self.error(
                    statement.name.span,
                    "a block lists its sublayers, not settings",
                    f"e.g. `block {{ {', '.join(p[0] for p in BLOCK_PATTERN[stack])} }}`",
                )
                return None
            words.append(statement)
        for word in words:
            if not self.sublayer(word):
                return None
        pattern = BLOCK_PATTERN[stack]
        shape = ", ".join("|".join(choices) for choices in pattern)
        article = "an" if stack == "encoder" else "a"
        for position, word in enumerate(words):
            name = word.name.text
            if position >= len(pattern):
                self.error(
                    word.name.span,
                    f"'{name}' after the FFN: {article} {stack} block is `{shape}`",
                    "other block structures are not supported yet by the IR",
                )
                return None
            if name not in pattern[position]:
                message = (
                    "an encoder block has no cross_attention: only decoder blocks attend to the encoder"
                    if name == "cross_attention" and stack == "encoder"
                    else f"expected {' or '.join(repr(c) for c in pattern[position])} here, "
                    f"not '{name}': {article} {stack} block is `{shape}`"
                )
                self.error(word.name.span, message, "other block structures are not supported yet by the IR")
                return None
        if len(words) < len(pattern):
            missing = " or ".join(repr(c) for c in pattern[len(words)])
            self.error(
                group.close,
                f"this {stack} block lacks {missing}: {article} {stack} block is `{shape}`",
                "other block structures are not supported yet by the IR",
            )
            return None
        last = words[-1].name
        return last.text == "switch", last.span

    def sublayer(self, word: Word) -> bool:
        name = word.name.text
        if name not in SUBLAYERS:
            self.error(
                word.name.span,
                f"unknown sublayer '{name}'",
                did_you_mean(name, SUBLAYERS) or f"sublayers: {', '.join(SUBLAYERS)}",
            )
            return False
        if name == "switch_attention":
            self.error(
                word.name.span,
                "Switch attention (the Switch Transformer paper, App. A) is not supported yet by the IR",
                "use `attention`; Switch layers replace the FFN: `switch`",
            )
            return False
        if word.args is not None and name == "switch":
            span = Span(
                self.source,
                word.name.span.end_line,
                word.name.span.end_column,
                word.span.end_line,
                word.span.end_column,
            )
            self.error(
                span,
                "per-layer Switch settings (experts, top_k, capacity) are not supported yet by the IR",
                "every Switch layer takes num_experts, top_k and capacity_factor from the moe section: write `switch`",
            )
            return False
        if word.args is not None:
            self.error(word.name.span, f"'{name}' takes no settings", f"write `{name}`")
            return False
        return True

    def merge_stacks(self, entries: list[Entry], stacks: list[_Stack]) -> None:
        """Blocks set model.<stack>_layers; every stack adds layout.<stack>.switch."""
        if not stacks:
            return
        for stack in stacks:
            if stack.layers is None:
                continue
            key = f"{stack.group.name.text}_layers"
            index = next((i for i, e in enumerate(entries) if e.key.text == "model"), None)
            if index is None:
                model = Entry(Scalar("model", True, stack.group.name.span), Mapping((), stack.group.span))
                entries.insert(0, model)
                index = 0
            model = entries[index]
            if not isinstance(model.value, Mapping):
                continue  # `model = ...` is not a mapping: validation says so
            written = model.value.get(key)
            if written is not None:
                self.error(
                    stack.group.name.span,
                    f"{key} is given twice: in 'model' and by the blocks of '{stack.group.name.text}'",
                    f"delete {key} from 'model': the blocks say how many there are",
                    notes=(("set here", written.key.span),),
                )
                continue
            layers = Entry(Scalar(key, True, stack.group.name.span), stack.layers)
            entries[index] = Entry(model.key, model.value.with_entry(layers))
        layout = tuple(
            Entry(
                _key(stack.group.name),
                Mapping((Entry(Scalar("switch", True, stack.switch_key), stack.switch),), stack.group.span),
            )
            for stack in stacks
        )
        first = stacks[0].group
        entries.append(Entry(Scalar("layout", True, first.name.span), Mapping(layout, first.span)))


# ---- syntax errors -------------------------------------------------------------------------------

_SHOWN = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "EQUAL": "'='",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "SEMICOLON": "';'",
    "$END": "the end of the file",
}
_HEADER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)(\s+[^\s={}#]+)?\s*(#.*)?")


def _token_span(source: Source, token: Token) -> Span:
    line, column = token.line or 1, token.column or 1
    return Span(source, line, column, token.end_line or line, token.end_column or column + 1)


def _describe(token: Token) -> str:
    if token.type == "NAME":
        return f"word '{token}'"
    if token.type == "NUMBER":
        return f"number '{token}'"
    if token.type == "STRING":
        return f"string {token}"
    return _SHOWN.get(token.type, repr(str(token)))


def _tokens_before(source: Source, line: int, column: int) -> list[Token]:
    """The tokens before (line, column), comments and whitespace left out."""
    found: list[Token] = []
    try:
        for token in _parser().lex(source.text):
            if (token.line, token.column) >= (line, column):
                break
            found.append(token)
    except UnexpectedCharacters:
        pass
    return found


def _end_of_file(source: Source) -> Span:
    """Just after the last character that is not whitespace or a comment."""
    for number in range(len(source.lines), 0, -1):
        code = _code(source.line(number))
        if code.strip():
            end = len(code.rstrip()) + 1
            return Span(source, number, end, number, end + 1)
    return source.start()


def _syntax_error(source: Source, err: UnexpectedInput) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        return _bad_character(source, err)
    assert isinstance(err, UnexpectedToken)
    token = err.token
    expected = set(err.expected)
    at_end = token.type == "$END"
    span = _end_of_file(source) if at_end else _token_span(source, token)
    before = _tokens_before(source, span.line, span.column) if not at_end else list(_parser().lex(source.text))
    last = before[-1] if before else None
    if token.type in ("RBRACE", "$END"):
        brace = _brace_problem(source, None if at_end else (span.line, span.column))
        if brace is not None:
            return brace
    if last is not None and last.type == "EQUAL" and token.type != "LBRACE":
        name = f"'{before[-2]} ='" if len(before) > 1 else "'='"
        return Diagnostic(
            f"{name} has no value", _token_span(source, last), "write the value after '=' on the same line"
        )
    if len(before) >= 3 and [t.type for t in before[-3:]] == ["NAME", "EQUAL", "NAME"] and token.type == "EQUAL":
        return Diagnostic(
            f"'{before[-3]} =' has no value",
            _token_span(source, before[-2]),
            f"write the value after '=': '{before[-3]} = ...'",
        )
    if token.type == "LBRACE" and last is not None and last.type == "EQUAL":
        name = before[-2] if len(before) > 1 else "name"
        return Diagnostic(
            "a block is written without '='",
            _token_span(source, last),
            f"write '{name} {{ ... }}'",
        )
    if len(before) >= 2 and [t.type for t in before[-2:]] == ["NAME", "NUMBER"] and "LBRACE" in expected:
        return Diagnostic(
            f"missing '=' between '{before[-2]}' and '{before[-1]}'",
            _token_span(source, before[-1]),
            f"a setting is written '{before[-2]} = {before[-1]}'",
        )
    bracket = _open_bracket(before)
    if bracket is not None and token.type not in ("COMMA", "RSQB"):
        if at_end or (token.line or 0) > (bracket.line or 0):
            return Diagnostic(
                "missing ']': the list is not closed",
                _token_span(source, bracket),
                "close the list with ']' after its last item",
            )
        return Diagnostic(f"expected ',' or ']' before {_describe(token)}", span, "separate list items with commas")
    if token.type == "RBRACE" and "RBRACE" not in expected and _depth(before) == 0:
        return Diagnostic("unmatched '}'", span, "delete it, or add the '{' it should close")
    if last is not None and last.type in ("NUMBER", "STRING") and token.type in ("NUMBER", "STRING", "NAME"):
        return Diagnostic(
            f"unexpected {_describe(token)} after a value",
            span,
            'one value per setting: a list is written [a, b]; a text with spaces is quoted: "a b"',
        )
    shown = sorted({_SHOWN[t] for t in expected if t in _SHOWN and t not in ("COMMA", "SEMICOLON")})
    hint = f"expected {' or '.join(shown)}" if shown else None
    return Diagnostic(f"unexpected {_describe(token)}", span, hint)


def _bad_character(source: Source, err: UnexpectedCharacters) -> Diagnostic:
    span = Span(source, err.line, err.column, err.line, err.column + 1)
    char = err.char
    if char == '"':
        return Diagnostic("unterminated string", span, "close the string with '\"' on the same line")
    if char == "'":
        return Diagnostic("strings are written in double quotes", span, 'write "..."')
    if char == ":":
        return Diagnostic(
            "unexpected ':'",
            span,
            "the DSL writes 'name = value' and 'name { ... }' (is this YAML? give the file a .yaml name; "
            "then `switchc fmt FILE.yaml --to dsl -o FILE.switch` converts it)",
        )
    if char.isspace() or unicodedata.category(char) == "Cf":  # a no-break or zero-width space: pasted text
        name = unicodedata.name(char, f"U+{ord(char):04X}").lower()
        return Diagnostic(
            f"unexpected {name} {char!r}", span, "retype it as a plain space (or delete it): editors paste these"
        )
    if not char.isprintable():
        return Diagnostic(f"unexpected control character {char!r}", span, "delete it")
    return Diagnostic(f"unexpected character {char!r}", span, "names are letters, digits and '_'; quote other text")


def _open_bracket(tokens: list[Token]) -> Token | None:
    """The '[' of the list the tokens end inside, if any."""
    stack: list[Token] = []
    for token in tokens:
        if token.type == "LSQB":
            stack.append(token)
        elif token.type == "RSQB" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _depth(tokens: list[Token]) -> int:
    return sum(1 if t.type == "LBRACE" else -1 if t.type == "RBRACE" else 0 for t in tokens)


# ---- braces: where the missing one belongs, read from the indentation ------------------------------


@dataclass(frozen=True)
class _Brace:
    line: int
    column: int
    indent: int
    label: str  # what the brace opens: 'model', 'repeat 6'


def _code(line: str) -> str:
    """The line without its comment (a '#' outside a string)."""
    quoted = False
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _braces(source: Source) -> Iterator[tuple[str, int, int]]:
    """('{' or '}', line, column) outside strings and comments."""
    for number, line in enumerate(source.lines, start=1):
        quoted = False
        escaped = False
        for index, char in enumerate(_code(line)):
            if escaped:
                escaped = False
            elif char == "\\" and quoted:
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char in "{}" and not quoted:
                yield char, number, index + 1


def _brace_problem(source: Source, stop: tuple[int, int] | None) -> Diagnostic | None:
    """A '{' or '}' that is missing, found by matching braces up to `stop` (or the end) and
    comparing each closing brace that starts a line with the indentation of the line it closes."""
    opened: list[_Brace] = []
    for char, line, column in _braces(source):
        if stop is not None and (line, column) > stop:
            break
        text = source.line(line)
        if char == "{":
            label = " ".join(_code(text)[: column - 1].split()) or "{"
            opened.append(_Brace(line, column, _indent(text), label))
            continue
        span = Span(source, line, column, line, column + 1)
        starts_line = not text[: column - 1].strip()
        if not opened:
            return _missing_open(source, line, span) or Diagnostic(
                "unmatched '}'", span, "delete it, or add the '{' it should close"
            )
        brace = opened.pop()
        if not starts_line or brace.line == line or _indent(text) == brace.indent:
            continue
        if _indent(text) < brace.indent:
            return _missing_close(source, brace, line, span)
        missing = _missing_open(source, line, span, after=brace.line)
        if missing is not None:
            return missing
    if stop is None and opened:
        return _missing_close(source, opened[0], len(source.lines) + 1, _end_of_file(source))
    return None


_OPENS = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*\{")  # a line that opens a block: `moe {`


def _missing_close(source: Source, brace: _Brace, before: int, fallback: Span) -> Diagnostic:
    """'{' of `brace` is never closed: point at the first line after it that is indented like it
    (in a file that does not indent the blocks' bodies: the first line that opens a block)."""
    opened = Span(source, brace.line, brace.column, brace.line, brace.column + 1)
    lines = range(brace.line + 1, min(before, len(source.lines) + 1))
    body = next((_code(source.line(n)) for n in lines if _code(source.line(n)).strip()), "")
    flat = bool(body.strip()) and _indent(body) <= brace.indent and not body.strip().startswith("}")
    for number in lines:
        code = _code(source.line(number))
        if flat and not _OPENS.match(code):
            continue
        if code.strip() and _indent(code) <= brace.indent and not code.strip().startswith("}"):
            where = Span(source, number, _indent(code) + 1, number, len(code.rstrip()) + 1)
            return Diagnostic(
                f"missing '}}': '{brace.label} {{' (line {brace.line}) is not closed before this line",
                where,
                f"add '}}' at the end of '{brace.label}', on the line above",
                notes=(("opened here", opened),),
            )
    return Diagnostic(
        f"missing '}}': '{brace.label} {{' (line {brace.line}) is not closed",
        fallback,
        f"add '}}' to close '{brace.label}'",
        notes=(("opened here", opened),),
    )


def _missing_open(source: Source, line: int, brace: Span, after: int = 0) -> Diagnostic | None:
    """A '}' with nothing (or the wrong block) to close: is the '{' missing after a header above it?"""
    indent = _indent(source.line(line))
    for number in range(line - 1, after, -1):
        code = _code(source.line(number))
        if not code.strip():
            continue
        if _indent(code) > indent:
            continue
        if _indent(code) < indent or "{" in code:
            return None
        header = _HEADER.fullmatch(code)
        if header is None:
            return None
        end = len(code.rstrip()) + 1
        return Diagnostic(
            f"missing '{{' after '{code.strip()}'",
            Span(source, number, end, number, end + 1),
            f"a block is written '{code.strip()} {{ ... }}'",
            notes=(("the '}' that closes it", brace),),
        )
    return None
