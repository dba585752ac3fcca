"""Every mistake in a `.switch` file is reported at its exact line and column, with a hint.

Each case is DSL text, the position the first diagnostic must point at (1-based, as printed),
words its message must contain, and words of its hint where one is promised. The CLI test runs
every case through `switchc check`: exit status 2, `file:line:col: error:`, no traceback.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.errors import Source, UserError
from switchc.spec import parse_spec
from tests.spec.located import Mistake, assert_located, first_error

MOE = "moe { num_experts = 4 }\n"

MISTAKES = [
    # -- braces --
    Mistake(
        "missing closing brace before the next block",
        "model {\n  d_model = 8\n\nmoe {\n  num_experts = 4\n}\n",
        4,
        1,
        "missing '}': 'model {' (line 1) is not closed before this line",
        "add '}'",
    ),
    Mistake(
        "missing closing brace of a nested block",
        "moe {\n  capacity_factor {\n    train = 1.5\n  num_experts = 4\n}\n",
        4,
        3,
        "missing '}': 'capacity_factor {' (line 2)",
    ),
    Mistake(
        "one capacity factor for both",
        "moe { capacity_factor = 1.25 }\n",
        1,
        25,
        "moe.capacity_factor: expected a mapping of keys, got 1.25",
        "write it as a block of its keys (train, eval): capacity_factor { train = 1.25 }",
    ),
    Mistake(
        "a stack's block inside a section (its words were each 'needs a value')",
        "model { block { attention, ffn } }\n",
        1,
        9,
        "'block' is not a block of 'model'",
        "listed in an encoder or decoder stack: encoder { block { ... } }",
    ),
    Mistake(  # the hint was "write 'repeat { ... }'", which the next check refused too
        "a stack's repeat inside a section",
        "model { repeat 2 { d_model = 3 } }\n",
        1,
        9,
        "'repeat' is not a block of 'model'",
        "encoder { repeat 2 { ... } }",
    ),
    Mistake("missing closing brace at the end", "model { d_model = 8\n", 1, 20, "missing '}'", "close 'model'"),
    Mistake(  # refused at the count, before a list of 16M blocks is built
        "a stack repeated past the schema's depth",
        "encoder {\n  repeat 16777216 { block { attention, ffn } }\n}\n",
        2,
        10,
        "more than 1024 blocks in 'encoder'",
        "a stack holds at most 1024 blocks",
    ),
    Mistake("missing opening brace", "model\n  d_model = 8\n}\n", 1, 6, "missing '{' after 'model'", "model { ... }"),
    Mistake(
        "missing opening brace of a nested block",
        "moe {\n  capacity_factor\n    train = 1.5\n  }\n}\n",
        2,
        18,
        "missing '{' after 'capacity_factor'",
    ),
    Mistake("stray closing brace", "model { d_model = 8 }\n}\n", 2, 1, "unmatched '}'", "delete it"),
    Mistake(
        "a section inside another",
        "model {\n  d_model = 8\n  moe { num_experts = 4 }\n}\n",
        3,
        3,
        "unknown key 'moe' in section 'model'",
        "is a '}' missing above it?",
    ),
    # -- unknown words, with the nearest known one --
    Mistake("unknown block", "modle { d_model = 8 }\n", 1, 1, "unknown block 'modle'", "did you mean 'model'?"),
    Mistake(
        "unknown setting",
        "model { num_head = 4 }\n",
        1,
        9,
        "unknown key 'num_head' in section 'model'",
        "did you mean 'num_heads'?",
    ),
    Mistake(
        "unknown choice",
        "model { ffn_activation = gelux }\n",
        1,
        26,
        "model.ffn_activation: unknown choice 'gelux'",
        "did you mean 'gelu'?",
    ),
    Mistake(
        "unknown block in a stack",
        MOE + "encoder { blok { attention, ffn } }\n",
        2,
        11,
        "unknown block 'blok' in 'encoder'",
        "did you mean 'block'?",
    ),
    Mistake(
        "unknown sublayer",
        MOE + "encoder { block { atention, ffn } }\n",
        2,
        19,
        "unknown sublayer 'atention'",
        "did you mean 'attention'?",
    ),
    Mistake(
        "unknown placement word",
        MOE + "encoder { switch = evry 2 }\n",
        2,
        20,
        "expected 'every K' or a list of block indices, got 'evry 2'",
        "switch = every 2",
    ),
    Mistake("unknown top-level word", "modl\n", 1, 1, "unexpected word 'modl'", "did you mean 'model'?"),
    # -- duplicates --
    Mistake(
        "duplicate setting",
        "model {\n  d_model = 8\n  d_ff = 16\n  d_model = 16\n}\n",
        4,
        3,
        "duplicate setting 'd_model' in 'model'",
        "delete one of the two",
    ),
    Mistake("duplicate block", "model { d_model = 8 }\nmodel { d_ff = 8 }\n", 2, 1, "duplicate block 'model'"),
    Mistake(
        "depth given twice",
        "model { encoder_layers = 4 }\nencoder { block { attention, ffn } }\n",
        2,
        1,
        "encoder_layers is given twice",
        "delete encoder_layers from 'model'",
    ),
    Mistake(
        "placement given twice",
        MOE + "encoder {\n  switch = every 2\n  switch = [1]\n}\n",
        4,
        3,
        "duplicate setting 'switch' in 'encoder'",
    ),
    # -- numbers and values --
    Mistake("bad number: letters", "model { d_model = 7o8 }\n", 1, 19, "bad number '7o8'", "768, -5, 0.1 or 1e-2"),
    Mistake("bad number: two points", "model { d_model = 1.2.3 }\n", 1, 19, "bad number '1.2.3'"),
    Mistake("bad number: separators", "model { vocab_size = 32_128 }\n", 1, 22, "bad number '32_128'", "'_'"),
    Mistake(
        "float for an integer",
        "model { d_model = 768.0 }\n",
        1,
        19,
        "expected an integer, got 768.0",
        "write it as an integer: 768",
    ),
    Mistake("out of range", "model { dropout_rate = 1.0 }\n", 1, 24, "it must be < 1"),
    Mistake("True is not a keyword", "model { tie_embeddings = True }\n", 1, 26, "expected true or false, got 'True'"),
    Mistake("missing value", "model { d_model = }\n", 1, 17, "'d_model =' has no value"),
    Mistake("missing value before the next line", "model {\n  d_model =\n  d_ff = 16\n}\n", 2, 11, "has no value"),
    Mistake("missing equals sign", "model { d_model 768 }\n", 1, 17, "missing '=' between 'd_model' and '768'"),
    Mistake("YAML colon", "model {\n  d_model: 8\n}\n", 2, 10, "unexpected ':'", "give the file a .yaml name"),
    Mistake("a block written with =", "model = { d_model = 8 }\n", 1, 7, "a block is written without '='"),
    Mistake("two values", "model { d_model = 8 9 }\n", 1, 21, "unexpected number '9' after a value"),
    Mistake("list without commas", "mesh { rules { batch = [data expert] } }\n", 1, 30, "expected ',' or ']'"),
    Mistake("unterminated string", 'data { path = "abc }\n', 1, 15, "unterminated string"),
    Mistake("single quotes", "data { path = 'abc' }\n", 1, 15, "strings are written in double quotes"),
    Mistake("bad escape", 'data { source = text, path = "a\\qb" }\n', 1, 32, "bad escape '\\q' in a string"),
    Mistake(
        "bad escape after a good one",
        'data { source = text, path = "\\\\\\u12" }\n',
        1,
        33,
        "bad escape '\\u' in a string",
    ),
    Mistake(
        "a tab written as it is",
        'data { source = text, path = "a\tb" }\n',
        1,
        30,
        "data.path: 'a\\tb' contains control characters or line breaks",
    ),
    Mistake(
        "control character in a path",
        'data { source = text, path = "a\\nb.txt" }\n',
        1,
        30,
        "control characters or line breaks",
    ),
    Mistake("empty file", "", 1, 1, "the spec is empty", "`model {}` takes every default"),
    Mistake(
        "a missing brace in a file that does not indent",
        "model {\nd_model = 768\n\nmoe {\nnum_experts = 2\n}\n",
        4,
        1,
        "missing '}': 'model {' (line 1) is not closed before this line",
    ),
    Mistake("a no-break space", "model {\xa0d_model = 8 }\n", 1, 8, "unexpected no-break space", "plain space"),
    Mistake("a zero-width space", "model {\u200bd_model = 8 }\n", 1, 8, "unexpected zero width space", "plain space"),
    Mistake("a quoted number", 'model { d_model = "768" }\n', 1, 19, "expected an integer", "without quotes: 768"),
    Mistake(
        "half a surrogate pair",
        'data { source = text, path = "a\\ud800" }\n',
        1,
        30,
        "'\\ud800' is half of a UTF-16 surrogate pair",
        "both halves",
    ),
    # -- stacks and blocks --
    Mistake(
        "decoder block without cross-attention",
        MOE + "decoder { block { attention, switch } }\n",
        2,
        30,
        "expected 'cross_attention' here, not 'switch'",
        "not supported yet by the IR",
    ),
    Mistake(
        "cross-attention in the encoder",
        MOE + "encoder { block { attention, cross_attention, ffn } }\n",
        2,
        30,
        "an encoder block has no cross_attention",
    ),
    Mistake(
        "block without an FFN",
        MOE + "encoder { block { attention } }\n",
        2,
        29,
        "this encoder block lacks 'ffn' or 'switch'",
        "not supported yet by the IR",
    ),
    Mistake("two FFNs", MOE + "encoder { block { attention, ffn, switch } }\n", 2, 35, "'switch' after the FFN"),
    Mistake(
        "Switch attention",
        MOE + "encoder { block { switch_attention, ffn } }\n",
        2,
        19,
        "Switch attention (the Switch Transformer paper, App. A) is not supported yet by the IR",
    ),
    Mistake(
        "per-layer Switch settings",
        MOE + "encoder { block { attention, switch(num_experts = 64, top_k = 2) } }\n",
        2,
        36,
        "per-layer Switch settings (experts, top_k, capacity) are not supported yet by the IR",
        "from the moe section",
    ),
    Mistake("sublayer outside a block", MOE + "encoder { attention }\n", 2, 11, "'attention' is a sublayer"),
    Mistake(
        "repeat without a count", MOE + "encoder { repeat { block { attention, ffn } } }\n", 2, 11, "needs a count"
    ),
    Mistake("repeat zero times", MOE + "encoder { repeat 0 { block { attention, ffn } } }\n", 2, 18, "at least 1"),
    Mistake("empty stack", MOE + "encoder { }\n", 2, 1, "'encoder' is empty"),
    Mistake(
        "blocks and a placement",
        MOE + "encoder {\n  switch = every 2\n  block { attention, ffn }\n}\n",
        3,
        3,
        "gives both `switch = ...` and a list of blocks",
    ),
    Mistake("layout block", "layout { encoder { switch = every 2 } }\n", 1, 1, "the DSL has no 'layout' block"),
    Mistake("layers in a stack", MOE + "encoder { layers = 12 }\n", 2, 11, "unknown setting 'layers'", "_layers"),
    # -- layout checks (shared with YAML), pointing into the .switch file --
    Mistake(
        "block out of range",
        "model { encoder_layers = 2 }\n" + MOE + "encoder { switch = [0, 2] }\n",
        3,
        24,
        "block 2 is out of range: the encoder has 2 blocks (0 to 1)",
    ),
    Mistake(
        "block listed twice",
        "model { encoder_layers = 4 }\n" + MOE + "encoder { switch = [1, 1] }\n",
        3,
        24,
        "block 1 is listed twice",
    ),
    Mistake(
        "Switch layers without a moe section",
        "decoder { block { attention, cross_attention, switch } }\n",
        1,
        47,
        "the layout places Switch layers in the decoder, but the spec has no moe section",
        "or make the stack dense (blocks with `ffn`)",
    ),
    Mistake(  # the hint spoke of blocks with `ffn`, which this stack does not list
        "Switch layers by `switch = [...]` without a moe section",
        "model { d_model = 64 }\nencoder { switch = [1] }\n",
        2,
        21,
        "the layout places Switch layers in the encoder, but the spec has no moe section",
        "add a moe section (e.g. `moe { num_experts = 8 }`), or make the stack dense (`switch = []`)",
    ),
    Mistake(  # 'every K' places Switch layers as a list does: it was taken as a dense model
        "Switch layers by `switch = every 2` without a moe section",
        "model { d_model = 64 }\nencoder { switch = every 2 }\n",
        2,
        20,
        "the layout places Switch layers in the encoder, but the spec has no moe section",
        "add a moe section (e.g. `moe { num_experts = 8 }`), or make the stack dense (`switch = []`)",
    ),
    Mistake(
        "expert_every disagrees with the blocks",
        "moe { num_experts = 4, expert_every = 1 }\n"
        "encoder { block { attention, ffn }  block { attention, switch } }\n",
        1,
        39,
        "moe.expert_every 1 disagrees with layout.encoder.switch",
    ),
]


def _first(text: str, overrides: tuple[str, ...] = ()) -> UserError:
    return first_error("spec.switch", text, overrides)


@pytest.mark.parametrize("depth", [65, 5000])
def test_nesting_too_deep_is_located_not_a_crash(depth: int) -> None:
    """Lark's transformer recursed once per level: about 485 nested repeats or lists were a traceback."""
    (diagnostic,) = _first("model { d_model = " + "[" * depth + "]" * depth + " }").diagnostics
    assert diagnostic.message == "this is nested more than 64 blocks or lists deep"
    assert (diagnostic.span.line, diagnostic.span.column) == (1, 19 + 63)  # `model {` is one
    stack = "encoder { " + "repeat 1 { " * depth + "block { attention, ffn }" + " }" * depth + " }"
    (diagnostic,) = _first(stack).diagnostics
    assert (diagnostic.span.line, diagnostic.span.column) == (1, 11 + 11 * 63 + 9)


@pytest.mark.parametrize("case", MISTAKES, ids=lambda case: case.name)
def test_mistake_is_located(case: Mistake) -> None:
    first = _first(case.text).diagnostics[0]
    assert first.span.source.name == "spec.switch"
    assert_located(first, case)


def test_at_least_fifteen_distinct_mistakes() -> None:
    assert len({case.name for case in MISTAKES}) == len(MISTAKES) >= 15


def test_rendering_shows_location_line_caret_and_hint() -> None:
    error = _first("model {\n  d_model = 8\n  num_head = 4\n}\n")
    assert error.render() == (
        "spec.switch:3:3: error: unknown key 'num_head' in section 'model'\n"
        "    3 |   num_head = 4\n"
        "      |   ^^^^^^^^\n"
        "hint: did you mean 'num_heads'?"
    )


def test_an_integer_too_long_for_any_setting_is_one_located_error() -> None:
    """Python refuses to convert a decimal string of over 4,300 digits: it was a lark VisitError."""
    error = _first("model { d_model = " + "9" * 5000 + " }\n")
    (diagnostic,) = error.diagnostics
    assert diagnostic.message == "an integer of 5000 digits is out of range"
    assert (diagnostic.span.line, diagnostic.span.column) == (1, 19)


def test_missing_brace_renders_where_it_was_opened() -> None:
    rendered = _first("model {\n  d_model = 8\n\nmoe {\n  num_experts = 4\n}\n").render()
    assert rendered == (
        "spec.switch:4:1: error: missing '}': 'model {' (line 1) is not closed before this line\n"
        "    4 | moe {\n"
        "      | ^^^^^\n"
        "spec.switch:1:7: note: opened here\n"
        "    1 | model {\n"
        "      |       ^\n"
        "hint: add '}' at the end of 'model', on the line above"
    )


def test_all_mistakes_after_parsing_are_reported_together_in_order() -> None:
    text = "model { d_model = 1.2.3, d_model = 8 }\n" + MOE + "encoder { block { atention, ffn } }\nfoo { }\n"
    error = _first(text)
    positions = [(d.span.line, d.span.column) for d in error.diagnostics]
    assert positions == [(1, 19), (1, 26), (3, 19), (4, 1)]
    assert error.render().endswith("4 errors")


def test_override_mistakes_on_a_dsl_spec_point_at_the_command_line() -> None:
    text = "model { d_model = 64 }\nmoe { num_experts = 8 }\ntrain { batch_size = 8 }\n"
    first = _first(text, ("moe.num_experts=sixty",)).diagnostics[0]
    assert first.span.source.name == "<command line>"
    assert (first.span.line, first.span.column) == (1, 23)
    assert "expected an integer, got 'sixty'" in first.message


@pytest.mark.parametrize("layers", ["1", "3"])
def test_an_override_cannot_change_the_depth_of_a_stack_written_as_blocks(layers: str) -> None:
    """The blocks written in the file are the stack: --set model.encoder_layers would silently
    build another one (3) or blame expert_every or a block index (1). The same depth is fine."""
    text = MOE + "encoder {\n  block { attention, ffn }\n  block { attention, switch }\n}\n"
    error = _first(text, (f"model.encoder_layers={layers}",))
    assert len(error.diagnostics) == 1
    first = error.diagnostics[0]
    assert first.span.source.name == "<command line>" and (first.span.line, first.span.column) == (1, 7)
    assert first.message == "--set model.encoder_layers cannot change the encoder's depth: the file lists its 2 blocks"
    (note, where), *_ = first.notes
    assert note == "the encoder's blocks are listed here" and (where.line, where.column) == (2, 1)
    assert parse_spec(Source("spec.switch", text), ("model.encoder_layers=2",)).model.encoder_layers == 2
    placed = parse_spec(Source("spec.switch", MOE + "encoder { switch = [1] }\n"), ("model.encoder_layers=3",))
    assert placed.model.encoder_layers == 3  # `switch = ...` leaves the depth to model.encoder_layers
    assert "or give the encoder's layout here too (--set 'layout.encoder.switch=every 2')" in (first.hint or "")


@pytest.mark.parametrize("order", ["layout first", "depth first"])
def test_a_layout_on_the_command_line_frees_a_listed_stacks_depth(order: str) -> None:
    """A built-in DSL spec cannot be edited: with the stack's layout given on the command line, the
    file's list of blocks no longer says anything of the stack, and its depth can be set too."""
    text = MOE + "encoder {\n  block { attention, ffn }\n  block { attention, switch }\n}\n"
    given = ["layout.encoder.switch=every 2", "model.encoder_layers=4"]
    spec = parse_spec(Source("spec.switch", text), tuple(given if order == "layout first" else reversed(given)))
    assert spec.model.encoder_layers == 4 and spec.layout.encoder is not None


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("model={d_model: 64}", "--set model drops the encoder's depth, which the file's list of 2 blocks gives"),
        ("model={encoder_layers: 5}", "--set model gives the encoder a different depth (5) from the file's list of 2"),
    ],
)
def test_replacing_the_model_section_cannot_change_a_listed_stacks_depth_either(override: str, said: str) -> None:
    """The guard matched model.encoder_layers only: `--set model={...}` replaced the depth the
    blocks give (with the default, 12, when the value has none), and the spec passed."""
    text = MOE + "encoder {\n  block { attention, switch }\n  block { attention, ffn }\n}\n"
    (first,) = _first(text, (override,)).diagnostics
    assert first.message.startswith(said) and (first.span.line, first.span.column) == (1, 7)
    kept = parse_spec(Source("spec.switch", text), ("model={d_model: 64, encoder_layers: 2}",))
    assert (kept.model.d_model, kept.model.encoder_layers) == (64, 2)
    assert parse_spec(Source("spec.switch", text), ("model.encoder_layers=0x2",)).model.encoder_layers == 2


@pytest.mark.parametrize(("value", "got"), [("5", "5"), ("null", "null"), ("[1]", "a list")])
def test_a_model_that_is_no_mapping_is_said_so_not_that_it_drops_the_depth(value: str, got: str) -> None:
    """On a file that lists its blocks, `--set model=5` was two errors about dropping each stack's
    depth, and never that model takes a mapping (as a YAML spec says)."""
    text = (
        MOE + "encoder {\n  block { attention, switch }\n}\ndecoder {\n  block { attention, cross_attention, ffn }\n}\n"
    )
    (first,) = _first(text, (f"model={value}",)).diagnostics
    assert first.message == f"model: expected a mapping of keys, got {got}", first.render()
    assert first.span.source.name == "<command line>" and (first.span.line, first.span.column) == (1, 13)


def test_a_block_past_a_listed_stack_hints_at_more_blocks_not_the_setting_it_refuses() -> None:
    """The hint said to set model.encoder_layers, which a file that lists its blocks refuses."""
    text = MOE + "encoder {\n  block { attention, switch }\n  block { attention, ffn }\n}\n"
    layout = ("layout.encoder.switch=[0, 1, 2]",)
    (first,) = _first(text, layout).diagnostics
    assert first.message == "block 2 is out of range: the encoder has 2 blocks (0 to 1)"
    assert first.hint == "blocks are numbered from 0; add blocks to the file's 'encoder' for a deeper encoder"
    (first,) = _first(MOE + "encoder { switch = [0] }\n", ("model.encoder_layers=2", *layout)).diagnostics
    assert first.hint == "blocks are numbered from 0; set model.encoder_layers for a deeper encoder"


@pytest.mark.parametrize("case", MISTAKES, ids=lambda case: case.name)
def test_check_reports_mistakes_with_status_2_and_no_traceback(case: Mistake, tmp_path) -> None:
    path = tmp_path / "bad.switch"
    path.write_text(case.text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert f"{path}:{case.line}:{case.column}: error: " in result.stderr
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("spec.txt", "model {\n  d_model = 64\n}\n" + MOE),
        ("spec", "model {\n  d_model = 64\n}\n" + MOE),
        ("spec.conf", "model {\n  d_model = 64\n}\n" + MOE),
        ("spec.yaml", "# copied from a .switch file\nmodel {\n  d_model = 64\n}\n" + MOE),  # YAML syntax error
        ("spec.yml", MOE),  # YAML reads one scalar: "the top level must be a mapping"
    ],
)
def test_dsl_text_in_a_file_not_named_switch_is_told_to_rename(name: str, text: str, tmp_path) -> None:
    """Any name but *.switch is read as YAML; DSL text there would fail on YAML syntax it never
    meant, so the error says what the file is and what to call it (a .yaml file: and how to get
    the YAML its name promised)."""
    path = tmp_path / name
    path.write_text(text)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}:1:1: error: this is switchc DSL text, but only files named *.switch are read" in result.stderr
    then = f"; for YAML, then: switchc fmt spec.switch -o {name}" if name.endswith(("yaml", "yml")) else ""
    assert f"hint: rename it to spec.switch{then}\n" in result.stderr


def test_a_yaml_mistake_in_a_txt_file_stays_a_yaml_error(tmp_path) -> None:
    path = tmp_path / "spec.txt"
    path.write_text("model:\n  d_model: [\n")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2 and "YAML syntax error" in result.stderr and "rename" not in result.stderr
