"""Spec text -> `Spec`: parse, apply command-line overrides, validate types, then cross-check.

A spec is YAML (`.yaml`, `.yml`) or the switchc DSL (`.switch`, see dsl.py), told apart by the
file name. Both become the same located tree (yamltree), so overrides, validation and every
error message below are shared. Every failure is a `UserError` whose diagnostics point into the
spec file or the override that caused it. All mistakes found in one pass are reported together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from switchc.errors import Diagnostic, PlainUserError, Source, Span, UserError, did_you_mean
from switchc.files import read_error, read_text
from switchc.spec import dsl, yamltree
from switchc.spec.checks import OVERRIDE_SOURCE_NAME, cross_check
from switchc.spec.schema import IDENTIFIER_PATTERN, SECTIONS, SpecBody, section_type, strip_annotated
from switchc.spec.spec import Origin, Spec
from switchc.spec.yamltree import Entry, Mapping, Scalar

YAML_SUFFIXES = (".yaml", ".yml")
DSL_SUFFIX = ".switch"
SPEC_SUFFIXES = (*YAML_SUFFIXES, DSL_SUFFIX)


@cache
def _adapter() -> TypeAdapter[SpecBody]:
    return TypeAdapter(SpecBody)


def builtin_spec_names() -> list[str]:
    """Names of the specs shipped with switchc (specs/ in the repo), usable instead of a path.

    Each ships as YAML and as its DSL twin; the name alone reads the YAML, `NAME.switch` the twin.
    """
    root = resources.files("switchc.specs")
    return sorted({p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith(SPEC_SUFFIXES)})


def is_dsl(source: Source) -> bool:
    """Whether a source is DSL text: its name ends in .switch (anything else is read as YAML)."""
    return source.name.lower().endswith(DSL_SUFFIX)


def read_source(spec: str) -> Source:
    """The text of `spec`: a path to a file, or the name of a built-in spec (NAME, NAME.yaml, NAME.switch)."""
    path = Path(spec)
    try:
        if path.is_file():
            return Source(str(path), read_text(path))
        if path.is_dir():
            if spec in builtin_spec_names() and not Path(f"{spec}.yaml").exists():  # e.g. compile's -o switch-base
                hint = f"for the built-in spec {spec}, pass {spec}.yaml (the name alone reads this directory)"
            else:
                hint = "pass a spec file such as specs/switch-tiny.yaml"
            raise PlainUserError(f"{path} is a directory", hint)
        if path.exists():  # a FIFO, a device, a socket: no name of a built-in spec either
            raise PlainUserError(f"{path} is not a regular file", "save the spec in a file, and pass that")
    except OSError as err:  # looking at it was refused (a directory on the way that may not be searched)
        raise read_error(path, err) from None
    names = builtin_spec_names()
    stem, dot, suffix = spec.rpartition(".")
    if spec in names:
        stem, suffix = spec, "yaml"
    elif not (dot and stem in names and f".{suffix}" in SPEC_SUFFIXES):
        hint = did_you_mean(spec, names) or f"built-in specs: {', '.join(names)}"
        raise PlainUserError(f"no such spec file or built-in spec: {spec}", hint)
    resource = resources.files("switchc.specs") / f"{stem}.{suffix}"
    if not resource.is_file():
        raise PlainUserError(f"built-in spec {stem} has no .{suffix} version", f"use {stem}")
    return Source(f"<builtin>/{stem}.{suffix}", resource.read_text(encoding="utf-8"))


def load_spec(spec: str, overrides: Sequence[str] = ()) -> Spec:
    """Read, override and validate a spec given as a path or a built-in name."""
    source = read_source(spec)
    name = Path(source.name).name.rsplit(".", 1)[0]
    return parse_spec(source, overrides, name=name)


def _empty_moe(tree: Mapping) -> Diagnostic | None:
    """`moe:` with nothing after it is YAML's null, which (as `moe: null`) makes the model dense;
    but every other empty section is an error, and the keys under it are most often commented out.
    Only a written null says dense: an empty one is refused."""
    entry = tree.get("moe")
    if entry is not None and isinstance(entry.value, yamltree.Scalar) and entry.value.plain and not entry.value.text:
        if entry.key.span.source.name == OVERRIDE_SOURCE_NAME:
            hint = "--set 'moe={}' for Switch layers with the paper's defaults, or --set moe=null for a dense model"
        else:
            hint = (
                "write `moe: {}` for Switch layers with the paper's defaults, or `moe: null` (or no moe section) for "
                "a dense model"
            )
        return Diagnostic("the moe section is empty", entry.key.span, hint)
    return None


def parse_spec(source: Source, overrides: Sequence[str] = (), name: str | None = None) -> Spec:
    """Validate spec text, YAML or DSL by its name (and `--set KEY=VALUE` overrides applied on top of it)."""
    try:
        tree = dsl.parse(source) if is_dsl(source) else yamltree.parse(source)
        if tree is not None and not isinstance(tree, Mapping):
            raise UserError.at(
                tree.span,
                "the top level of a spec must be a mapping of sections",
                f"start with section names: {', '.join(SECTIONS)}",
            )
    except UserError:
        _check_misnamed_dsl(source)
        raise
    if tree is None:
        raise UserError.at(
            source.start(),
            "the spec is empty",
            f"write the sections you set (model, moe, ...; {'`model {}`' if is_dsl(source) else '`{}`'} takes every "
            "default); `switchc explain switch-tiny` prints a full spec",
        )
    tree = apply_overrides(tree, overrides)
    empty_moe = _empty_moe(tree)
    try:
        body = _validate(tree, is_dsl(source))
    except UserError as err:  # said with the others, in the file's order
        if empty_moe is None:
            raise
        found = sorted((empty_moe, *err.diagnostics), key=lambda d: (d.span.source is not source, d.span.line))
        raise UserError(found) from None
    if empty_moe is not None:
        raise UserError([empty_moe])
    origin = Origin(
        name=name or source.name,
        source=source,
        value_spans={path: span for path, span, _ in yamltree.leaf_spans(tree)},
        key_spans={path: key for path, _, key in yamltree.leaf_spans(tree) if key is not None},
    )
    data = body.data
    if data.eval_path is not None and "data.eval_fraction" not in origin.value_spans:
        data = dataclasses.replace(data, eval_fraction=0.0)  # the eval text is eval_path's: nothing held out
    spec = Spec(body.model, body.moe, body.layout, body.mesh, body.train, data, origin=origin)
    problems = list(cross_check(spec))
    if problems:
        raise UserError(problems)
    return spec


def _check_misnamed_dsl(source: Source) -> None:
    """A file not named .switch that is no valid YAML spec but parses as the DSL (a .switch file
    copied to NAME.yaml, say): the error says to rename it, rather than point at YAML syntax it
    never meant to be."""
    if is_dsl(source) or source.name == OVERRIDE_SOURCE_NAME:
        return
    try:
        dsl.parse(source)
    except UserError:
        return
    name = Path(source.name).name
    stem, suffix = name.rsplit(".", 1)[0], Path(name).suffix
    hint = f"rename it to {stem}{DSL_SUFFIX}"
    if source.name.lower().endswith(YAML_SUFFIXES):  # then it can be written as the YAML its name promised
        hint += f"; for YAML, then: switchc fmt {stem}{DSL_SUFFIX} -o {stem}{suffix}"
    raise UserError.at(
        source.start(),
        "this is switchc DSL text, but only files named *.switch are read as the DSL (any other name is read as YAML)",
        hint,
    )


def _validate(tree: Mapping, dsl_text: bool = False) -> SpecBody:
    try:
        return _adapter().validate_python(yamltree.to_python(tree))
    except ValidationError as err:
        errors = err.errors()
        # A key that is no valid name (pydantic's "[key]" errors) says it all: its value's error is noise.
        bad_keys = {tuple(e["loc"][: e["loc"].index("[key]")]) for e in errors if "[key]" in e["loc"]}
        errors = [e for e in errors if "[key]" in e["loc"] or not any(e["loc"][: len(k)] == k for k in bad_keys)]
        found = [_diagnostic(tree, e, dsl_text) for e in errors]
        found.sort(key=lambda d: (d.span.line, d.span.column))
        raise UserError(found) from None


# ---- command-line overrides ---------------------------------------------------------------------

_OVERRIDE = re.compile(r"(?P<key>[^=\s]+)=(?P<value>.*)", re.DOTALL)


def apply_overrides(tree: Mapping, overrides: Sequence[str]) -> Mapping:
    """`tree` with each `KEY=VALUE` set; spans of overridden values point at the command line.

    VALUE is YAML (`64`, `geglu`, `{data: 2, expert: 4}`); KEY is a dotted path that must exist
    in the schema. A key given twice with different values is an error, as in MaxText.
    """
    if not overrides:
        return tree
    lines = [f"--set {item}" for item in overrides]
    source = Source(OVERRIDE_SOURCE_NAME, "\n".join(lines))
    prefix = len("--set ")
    errors: list[Diagnostic] = []
    seen: dict[str, tuple[str, Span]] = {}
    line_no = 0  # where each --set starts in `source`: an earlier VALUE may span lines ({a: 1,\n b: 2})
    listed = {key: entry for key in _DEPTHS if (entry := _depth_from_blocks(tree, key)) is not None}
    for index, item in enumerate(overrides):
        line_no += len((lines[index - 1] + "\n").splitlines()) if index else 1  # a VALUE's final \n: a line
        whole = Span(source, line_no, prefix + 1, line_no, prefix + 1 + len(item))
        match = _OVERRIDE.fullmatch(item)
        if match is None:
            spaced = item[:1].isspace() and _OVERRIDE.fullmatch(item.lstrip()) is not None
            hint = "remove the space before the key" if spaced else None
            errors.append(Diagnostic("an override is KEY=VALUE", whole, hint or "e.g. --set moe.num_experts=64"))
            continue
        key, value_text = match["key"], match["value"]
        key_span = Span(source, line_no, prefix + 1, line_no, prefix + 1 + len(key))
        problem = _check_override_key(key, key_span)
        if problem is not None:
            errors.append(problem)
            continue
        previous = seen.get(key)
        if previous is not None and previous[0] != value_text.strip():
            errors.append(
                Diagnostic(
                    f"'{key}' is set twice with different values",
                    key_span,
                    "keep one of the two --set options",
                    notes=(("first set here", previous[1]),),
                )
            )
            continue
        inner = next((earlier for earlier in seen if earlier.startswith(key + ".")), None)
        removes = value_text.strip() in ("", "null", "~")  # `--set moe=null` drops the section on purpose
        if inner is not None and not removes:  # a later parent would replace the earlier child's value silently
            errors.append(
                Diagnostic(
                    f"--set {key} replaces all of {key}, dropping the earlier --set {inner}",
                    key_span,
                    f"set '{key}' first and '{inner}' after it, or put {inner.removeprefix(key + '.')} in this value",
                    notes=(("set here", seen[inner][1]),),
                )
            )
            continue
        seen[key] = (value_text.strip(), key_span)
        value_column = prefix + len(key) + 1  # 0-based column of VALUE on its line
        padded = "\n" * (line_no - 1) + " " * value_column + value_text
        value = yamltree.parse(source, padded)
        if value is None:  # `key=` sets null, like an empty YAML value
            value = Scalar("", True, Span(source, line_no, value_column + 1, line_no, value_column + 2))
        tree = _set_path(tree, key.split("."), key_span, value)
    for key, blocks in listed.items():  # after every --set: `--set model={...}` replaces the depth too
        changed = _changed_depth(tree, key, blocks, seen)
        if changed is not None:
            errors.append(changed)
    if errors:
        raise UserError(sorted(errors, key=lambda d: (d.span.line, d.span.column)))
    return tree


_DEPTHS = ("model.encoder_layers", "model.decoder_layers")


def _changed_depth(tree: Mapping, key: str, blocks: Entry, seen: dict[str, tuple[str, Span]]) -> Diagnostic | None:
    """The error for overrides that gave a stack whose blocks a DSL file lists (`blocks`, from
    _depth_from_blocks) another depth, or none (`--set model={d_model: 64}` dropped it, and the
    default of 12 took its place); None when the depth is the blocks' still (0x2 is 2)."""
    final, _ = yamltree.find(tree, tuple(key.split(".")))
    if final is blocks.value:
        return None
    model, _ = yamltree.find(tree, ("model",))
    if model is not None and not isinstance(model, Mapping):
        return None  # `--set model=5` (or null): no depth to speak of; validation says model takes a mapping
    if isinstance(final, Scalar) and isinstance(blocks.value, Scalar):
        with contextlib.suppress(UserError):  # an integer out of range: the validation says so
            if yamltree.resolve_scalar(final) == yamltree.resolve_scalar(blocks.value):
                return None
    setting = next((name for name in reversed(seen) if name in ("model", key)), None)
    if setting is None:
        return None
    stack = blocks.key.text.removesuffix("_layers")
    if any(name in seen for name in ("layout", f"layout.{stack}", f"layout.{stack}.switch")):
        return None  # the command line gives the stack's layout too: the file's list of blocks is replaced
    count = blocks.value.text if isinstance(blocks.value, Scalar) else "?"  # merge_stacks makes a Scalar
    notes = ((f"the {stack}'s blocks are listed here", blocks.key.span),)
    if setting == key:
        return Diagnostic(
            f"--set {key} cannot change the {stack}'s depth: the file lists its {count} blocks",
            seen[setting][1],
            f"add or remove blocks in the file's '{stack}' (or write `switch = ...` there and set {key}), or give "
            f"the {stack}'s layout here too (--set 'layout.{stack}.switch=every 2')",
            notes=notes,
        )
    if isinstance(final, Scalar):
        message = (
            f"--set model gives the {stack} a different depth ({final.text}) from the file's list of {count} blocks"
        )
    else:
        message = (
            f"--set model drops the {stack}'s depth, which the file's list of {count} blocks gives (the default "
            "would take its place)"
        )
    return Diagnostic(
        message,
        seen[setting][1],
        f"set the model's settings one by one (--set model.d_model=64), or keep {key.removeprefix('model.')}: "
        f"{count} in the value",
        notes=notes,
    )


def _depth_from_blocks(tree: Mapping, key: str) -> Entry | None:
    """The entry of `key` (one of _DEPTHS) when a DSL stack's list of blocks made it
    (dsl.depth_from_blocks); None otherwise."""
    model = tree.get("model")
    if model is None or not isinstance(model.value, Mapping):
        return None
    entry = model.value.get(key.removeprefix("model."))
    if entry is None:
        return None
    return entry if dsl.depth_from_blocks(entry.key.span, entry.key.text.removesuffix("_layers")) else None


def _check_override_key(key: str, span: Span) -> Diagnostic | None:
    parts = key.split(".")
    if "" in parts:  # moe..num_experts, .moe, moe.
        return Diagnostic(
            f"'{key}' names an empty key (two dots together, or a dot at an end)",
            span,
            f"write it as {'.'.join(p for p in parts if p)}",
        )
    cls: Any = SpecBody
    for depth, part in enumerate(parts):
        if cls is None:  # under a free-form mapping (mesh.axes, mesh.rules): any name
            return None
        names = [f.name for f in fields(cls)]
        if part not in names:
            where = ".".join(parts[:depth]) or "the spec"
            return Diagnostic(
                f"unknown key {_quoted(part)} in {where}",
                span,
                did_you_mean(part, names) or f"keys here: {', '.join(names)}",
            )
        cls = _field_dataclass(cls, part)
        if cls is False and depth < len(parts) - 1:
            return Diagnostic(f"'{'.'.join(parts[: depth + 1])}' is a value, not a section", span)
    return None


def _set_path(node: Mapping, parts: list[str], key_span: Span, value: yamltree.Node) -> Mapping:
    head, rest = parts[0], parts[1:]
    key = Scalar(head, True, key_span)
    if not rest:
        return node.with_entry(Entry(key, value))
    entry = node.get(head)
    child = entry.value if entry is not None and isinstance(entry.value, Mapping) else Mapping((), key_span)
    return node.with_entry(Entry(entry.key if entry else key, _set_path(child, rest, key_span, value)))


# ---- pydantic errors -> located diagnostics ------------------------------------------------------


def _field_dataclass(cls: Any, name: str) -> Any:
    """The section class of field `name` of `cls`; None for a free-form mapping; False for a value."""
    hint = typing.get_type_hints(cls, include_extras=True)[name]
    section = section_type(hint)
    if section is not None:
        return section
    return None if typing.get_origin(strip_annotated(hint)) is dict else False


def _section_class(loc: tuple[Any, ...]) -> Any:
    """The dataclass of the section at `loc`, or None where `loc` names none."""
    cls: Any = SpecBody
    for part in loc:
        if not (is_dataclass(cls) and isinstance(part, str)) or part not in {f.name for f in fields(cls)}:
            return None
        cls = _field_dataclass(cls, part)
    return cls if is_dataclass(cls) else None


def _section_keys(loc: tuple[Any, ...]) -> list[str]:
    cls = _section_class(loc)
    return [f.name for f in fields(cls)] if cls is not None else []


def _example(cls: Any, key: str, value: Any) -> str:
    """`value` written as the example under `key` of the section `cls`, or the key's default where
    the section would refuse the value there (a hint's example must be valid)."""
    try:
        TypeAdapter(cls).validate_python({key: value})
    except ValidationError:
        default = next(f.default for f in fields(cls) if f.name == key)
        return "VALUE" if default is MISSING else _describe(default).strip("'")
    return _describe(value).strip("'")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str):
        return _quoted(value)
    return repr(value)


def _quoted(text: str) -> str:
    """'text', with what a terminal would not show as itself (control characters, zero-width and
    other invisible characters) escaped: an error message must not rewrite the user's screen."""
    if text.isprintable():
        return f"'{text}'"
    return repr(text) if "'" not in text else '"' + repr(text)[1:-1] + '"'


# pydantic's range errors: the bound each states (a NaN fails every one: it is said to be not finite)
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _diagnostic(tree: Mapping, error: Any, dsl_text: bool = False) -> Diagnostic:
    loc = tuple(p for p in error["loc"] if p != "[key]")
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    dotted = ".".join(str(p) for p in loc)
    node, key = yamltree.find(tree, loc)
    span = node.span if node is not None else yamltree.nearest(tree, loc)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        section = ".".join(str(p) for p in loc[:-1])
        where = f"section '{section}'" if section else "the spec"
        candidates = _section_keys(loc[:-1])
        hint = did_you_mean(str(loc[-1]), candidates) or (
            f"keys allowed here: {', '.join(candidates)}" if candidates else None
        )
        if section and loc[-1] in SECTIONS:  # a section inside another: a brace or indentation slipped
            hint = (
                f"'{loc[-1]}' is a top-level block: is a '}}' missing above it?"
                if dsl_text
                else f"'{loc[-1]}' is a top-level section: un-indent it"
            )
        return Diagnostic(f"unknown key {_quoted(str(loc[-1]))} in {where}", key.span if key else span, hint)
    if kind in ("missing", "missing_argument"):
        where = ".".join(str(p) for p in loc[:-1])
        example = "switch = every 2" if dsl_text else "switch: every 2"
        return Diagnostic(f"{where}: '{loc[-1]}' is required", span, f"e.g. {example}" if loc[-1] == "switch" else None)
    if error["loc"][-1:] == ("[key]",):  # a mapping key failed (mesh axis names, rule names)
        span = key.span if key is not None else span
        return _key_diagnostic(loc, kind, value, ctx, span)
    if kind == "int_type":
        hint = _unquote_hint(value)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:  # beyond: float noise, no setting
            hint = f"write it as an integer: {int(value)}"
        return Diagnostic(f"{dotted}: expected an integer, got {_describe(value)}", span, hint)
    if kind == "float_type":
        return Diagnostic(f"{dotted}: expected a number, got {_describe(value)}", span, _unquote_hint(value))
    if kind == "finite_number" or (kind in _BOUNDS and isinstance(value, float) and not math.isfinite(value)):
        return Diagnostic(f"{dotted}: {_describe(value)} is not a finite number", span, "write a finite value")
    if kind == "bool_type":
        hint = _unquote_hint(value) if value is None else None  # a quoted number is no boolean either
        if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):  # YAML 1.1's booleans
            meant = "true" if value.lower() in ("yes", "on", "y") else "false"
            hint = f"specs read YAML 1.2, where {value} is text: write {meant}"
        return Diagnostic(f"{dotted}: expected true or false, got {_describe(value)}", span, hint)
    if kind == "string_too_short":
        return Diagnostic(f"{dotted} is empty", span, "give it a value, or leave the key out for its default")
    if kind == "string_unicode":  # a lone half of a UTF-16 surrogate pair ("\ud800" in a quoted YAML string)
        return Diagnostic(
            f"{dotted}: holds half of a UTF-16 surrogate pair, which is no character",
            span,
            "write the character itself, or both halves of its pair",
        )
    if kind == "string_type":
        hint = _unquote_hint(value) if value is None else 'quote it: "..."'
        return Diagnostic(f"{dotted}: expected text, got {_describe(value)}", span, hint)
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = did_you_mean(str(value), choices) or f"choose one of: {', '.join(choices)}"
        return Diagnostic(f"{dotted}: unknown choice {_describe(value)}", span, hint)
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return Diagnostic(f"{dotted}: {_describe(value)} is out of range, it must be {_BOUNDS[kind]} {limit}", span)
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == IDENTIFIER_PATTERN:  # mesh axes only
        return Diagnostic(f"{dotted}: {_describe(value)} is not a valid mesh axis name", span, MESH_AXIS_HINT)
    if kind == "string_pattern_mismatch":
        return Diagnostic(
            f"{dotted}: {_describe(value)} contains control characters or line breaks",
            span,
            "write it on one line with printable characters",
        )
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type", "model_type"):
        return Diagnostic(
            f"{dotted or 'the spec'}: expected a mapping of keys, got {_describe(value)}",
            span,
            _mapping_hint(loc, value, span, dsl_text),
        )
    if kind in ("tuple_type", "list_type"):
        return Diagnostic(f"{dotted}: expected a list of mesh axis names, got {_describe(value)}", span)
    message = error["msg"].removeprefix("Value error, ")
    hint = None
    if loc[:1] == ("layout",) and loc[-1:] == ("switch",):
        said = "switch =" if dsl_text else "switch:"
        hint = f"write `{said} every 2`, `{said} [1, 3]` (0-based blocks) or `{said} []` (a dense stack)"
    return Diagnostic(f"{dotted}: {message}", span, hint)


def _unquote_hint(value: Any) -> str | None:
    """For a number written in quotes ("768") or with '_' separators (1_2), which make it text: how
    to write it; for no value at all (`d_model:`, `--set model.d_model=`), to give one."""
    if value is None:
        return "write a value after the key, or leave the key out for its default"
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        if "_" in value:  # Python reads 1_2 as 12; YAML and the DSL take no separators in numbers
            return f"write the number without '_' separators: {value.strip().replace('_', '')}"
        return f"write the number without quotes: {value.strip()}"
    return None


def _mapping_hint(loc: tuple[Any, ...], value: Any, span: Span, dsl_text: bool) -> str:
    """How to write the section at `loc`, given `value` (a scalar or a list), in the syntax the
    mistake was made in (--set, DSL or YAML): its keys, and an example. A section of a few keys
    (capacity_factor: train, eval) gets the value under its first key, as the value probably meant."""
    cls = _section_class(loc)
    keys = [f.name for f in fields(cls)] if cls is not None else []
    name = str(loc[-1]) if loc else "name"
    first = keys and len(keys) <= 3 and not isinstance(value, (dict, list))
    key, example = (keys[0], _example(cls, keys[0], value)) if first else ("KEY", "VALUE")
    its = f" ({', '.join(keys)})" if keys else ""
    if span.source.name == OVERRIDE_SOURCE_NAME and loc:
        return f"set one of its keys{its}: --set {'.'.join(str(p) for p in loc)}.{key}={example}"
    if dsl_text:
        return f"write it as a block of its keys{its}: {name} {{ {key} = {example} }}"
    return f"write its keys{its} under it, e.g. {name}: {{{key}: {example}}}"


MESH_AXIS_HINT = (
    "a mesh axis is a Python identifier in ASCII that is not a keyword: letters a-z and A-Z, digits and '_', "
    "not starting with a digit, "
    "at most 32 characters"
)


def _key_diagnostic(loc: tuple[Any, ...], kind: str, value: Any, ctx: Any, span: Span) -> Diagnostic:
    where = ".".join(str(p) for p in loc[:-1])
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = did_you_mean(str(value), choices) or f"logical axes: {', '.join(choices)}"
        return Diagnostic(f"{where}: unknown logical axis {_describe(value)}", span, hint)
    name, colon, size = str(value).partition(":")
    dsl_name, equals, dsl_size = str(value).partition("=")
    if colon and name.isidentifier() and size.strip().isdigit():  # {data:2}: YAML read one key, `data:2`
        hint = f"YAML needs a space after the colon: {{{name}: {size.strip()}}}"
    elif equals and dsl_name.strip().isidentifier() and dsl_size.strip().isdigit():  # the DSL's form, in YAML
        hint = f"in YAML (a --set VALUE, a .yaml file) write {{{dsl_name.strip()}: {dsl_size.strip()}}}"
    else:
        hint = MESH_AXIS_HINT
    return Diagnostic(f"{where}: {_describe(value)} is not a valid mesh axis name", span, hint)
