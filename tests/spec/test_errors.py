"""Every user mistake is reported at the exact line and column, with a message and a hint.

Each case is a spec text, the position the first diagnostic must point at, words its message must
contain, and (where one is promised) words of its hint. Positions are 1-based, as printed.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from switchc.errors import Source, UserError
from switchc.spec.load import parse_spec
from tests.spec.located import Mistake, assert_located, first_error

MISTAKES = [
    Mistake("yaml syntax: unclosed bracket", "model:\n  d_model: [1, 2\n", 3, 1, "YAML syntax error"),
    Mistake(
        "yaml syntax: bad indentation",
        "model:\n  d_model: 8\n    d_ff: 16\n",
        3,
        9,
        "YAML syntax error",
        "quoted",
    ),
    Mistake("yaml syntax: tab indentation", "model:\n\td_model: 8\n", 2, 1, "YAML syntax error", "tabs"),
    Mistake("empty file", "", 1, 1, "the spec is empty", "`{}` takes every default"),
    Mistake("comments only", "# nothing here\n", 1, 1, "the spec is empty"),
    Mistake("top level is a list", "- model\n- moe\n", 1, 1, "must be a mapping of sections", "model, moe"),
    Mistake("top level is a scalar", "hello\n", 1, 1, "must be a mapping of sections"),
    Mistake("unknown section", "model: {}\ntrian:\n  steps: 1\n", 2, 1, "unknown key 'trian'", "did you mean 'train'"),
    Mistake(
        "unknown key in a section",
        "model:\n  d_model: 8\n  num_head: 4\n",
        3,
        3,
        "unknown key 'num_head' in section 'model'",
        "did you mean 'num_heads'",
    ),
    Mistake(
        "unknown nested key",
        "moe:\n  capacity_factor:\n    trian: 1.0\n",
        3,
        5,
        "unknown key 'trian' in section 'moe.capacity_factor'",
        "did you mean 'train'",
    ),
    Mistake(
        "duplicate key",
        "model:\n  d_model: 8\n  d_ff: 16\n  d_model: 16\n",
        4,
        3,
        "duplicate key 'd_model'",
        "appear once",
    ),
    Mistake("duplicate section", "model: {}\nmoe: {}\nmodel: {}\n", 3, 1, "duplicate key 'model'"),
    Mistake("string for an integer", "model:\n  d_model: wide\n", 2, 12, "expected an integer, got 'wide'"),
    Mistake(
        "float for an integer",
        "model:\n  d_model: 768.0\n",
        2,
        12,
        "expected an integer, got 768.0",
        "write it as an integer: 768",
    ),
    Mistake("fractional integer", "train:\n  batch_size: 12.5\n", 2, 15, "expected an integer, got 12.5"),
    Mistake("bool for an integer", "model:\n  num_heads: true\n", 2, 14, "expected an integer, got true"),
    Mistake("yes is not a bool", "model:\n  tie_embeddings: yes\n", 2, 19, "expected true or false, got 'yes'"),
    Mistake("string for a float", "moe:\n  aux_loss_coef: lots\n", 2, 18, "expected a number, got 'lots'"),
    Mistake("negative dimension", "model:\n  d_ff: -5\n", 2, 9, "out of range, it must be >= 1"),
    Mistake("huge dimension", "model:\n  d_model: 100000000000\n", 2, 12, "it must be <= 16777216"),
    Mistake("dropout of 1", "model:\n  dropout_rate: 1.0\n", 2, 17, "it must be < 1"),
    Mistake(
        "unknown choice",
        "model:\n  ffn_activation: gelux\n",
        2,
        19,
        "unknown choice 'gelux'",
        "did you mean 'gelu'",
    ),
    Mistake(
        "unknown choice far from any",
        "train:\n  optimizer:\n    name: sgd\n",
        3,
        11,
        "unknown choice 'sgd'",
        "choose one of: adafactor, adam",
    ),
    Mistake("section is a scalar", "model: 12\n", 1, 8, "expected a mapping of keys, got 12", "model: {KEY: VALUE}"),
    Mistake(
        "one capacity factor for both",
        "moe:\n  capacity_factor: 1.25\n",
        2,
        20,
        "moe.capacity_factor: expected a mapping of keys, got 1.25",
        "write its keys (train, eval) under it, e.g. capacity_factor: {train: 1.25}",
    ),
    Mistake(
        "one capacity factor, and invalid: the hint's example is the default, not the value",
        "moe:\n  capacity_factor: -2.0\n",
        2,
        20,
        "moe.capacity_factor: expected a mapping of keys, got -2.0",
        "write its keys (train, eval) under it, e.g. capacity_factor: {train: 1.25}",
    ),
    Mistake(
        "top_k above num_experts",
        "moe:\n  num_experts: 4\n  top_k: 8\n",
        3,
        10,
        "top_k 8 is larger than num_experts 4",
    ),
    Mistake(
        "capacity factor zero",
        "moe:\n  capacity_factor: {train: 0, eval: 2.0}\n",
        2,
        28,
        "moe.capacity_factor.train: 0 is out of range, it must be > 0",
    ),
    Mistake(
        "capacity factor negative",
        "moe:\n  capacity_factor:\n    eval: -1.5\n",
        3,
        11,
        "moe.capacity_factor.eval: -1.5 is out of range",
    ),
    Mistake(
        "a carriage return in a value is shown escaped, not sent to the terminal",
        'data:\n  path: "a\\rEVIL"\n',
        2,
        9,
        "data.path: 'a\\rEVIL' contains control characters",
    ),
    Mistake(
        "an invisible character in a key is shown",
        "model:\n  \u200bnum_heads: 4\n",
        2,
        3,
        "unknown key '\\u200bnum_heads' in section 'model'",
        "did you mean 'num_heads'?",
    ),
    Mistake(
        "an infinite learning rate (it would be written into model.py as a name)",
        "train:\n  optimizer:\n    learning_rate: .inf\n",
        3,
        20,
        "train.optimizer.learning_rate: inf is not a finite number",
        "write a finite value",
    ),
    Mistake("an infinite capacity factor", "moe:\n  capacity_factor: {train: .inf}\n", 2, 28, "is not a finite number"),
    Mistake("a NaN dropout rate (bounded)", "model:\n  dropout_rate: .nan\n", 2, 17, "nan is not a finite number"),
    Mistake("a NaN noise density (bounded)", "data:\n  noise_density: .nan\n", 2, 18, "nan is not a finite number"),
    Mistake("expert_every zero", "moe:\n  expert_every: 0\n", 2, 17, "moe.expert_every: 0 is out of range"),
    Mistake(
        "mesh axis zero", "mesh:\n  axes: {data: 0}\n", 2, 16, "mesh.axes.data: 0 is out of range, it must be >= 1"
    ),
    Mistake(  # a report would build the IR of every block: hours for this one
        "a stack of 16M blocks",
        "model:\n  encoder_layers: 16777216\n",
        2,
        19,
        "model.encoder_layers: 16777216 is out of range, it must be <= 1024",
    ),
    Mistake(
        "expert_every beyond the stacks",
        "model:\n  encoder_layers: 2\n  decoder_layers: 2\nmoe:\n  expert_every: 3\n",
        5,
        17,
        "no block would be a Switch layer",
    ),
    Mistake(
        "experts not divisible by the expert axis",
        "moe:\n  num_experts: 6\nmesh:\n  axes: {data: 1, expert: 4}\ntrain:\n  batch_size: 8\n",
        2,
        16,
        "num_experts (6) is not divisible by the 4 shards of mesh axes expert=4",
    ),
    Mistake(
        "batch not divisible by the data shards",
        "mesh:\n  axes: {data: 3}\ntrain:\n  batch_size: 32\n",
        4,
        15,
        "the global batch (32) is not divisible by the 3 shards of mesh axes data=3",
    ),
    Mistake(
        "the default batch not divisible by the data shards: the mesh axis is what the file wrote",
        "# my spec\n\nmesh:\n  axes: {data: 3}\n",
        4,
        16,
        "the global batch (2048, the default) is not divisible by the 3 shards of mesh axes data=3",
        "set train.batch_size to a multiple of 3",
    ),
    Mistake(
        "heads not divisible by the model axis",
        "model:\n  num_heads: 6\nmesh:\n  axes: {data: 1, model: 4}\ntrain:\n  batch_size: 8\n",
        2,
        14,
        "num_heads (6) is not divisible by the 4 shards of mesh axes model=4",
    ),
    Mistake(
        "misspelt mesh axis: nothing is split over it",
        "mesh:\n  axes: {data: 2, experts: 4}\ntrain:\n  batch_size: 8\n",
        2,
        28,
        "mesh axis 'experts' (4 devices) splits nothing: no rule maps a dimension onto it",
        "did you mean 'expert'?",
    ),
    Mistake(
        "a rule leaves a standard axis out",
        "mesh:\n  axes: {data: 2, expert: 2}\n  rules: {batch: [expert]}\ntrain:\n  batch_size: 8\n",
        2,
        16,
        "mesh axis 'data' (2 devices) splits nothing",
        "mesh.rules.batch leaves it out (by default batch is split over it): add it there",
    ),
    Mistake(
        "an axis of one's own with no rule",
        "mesh:\n  axes: {data: 2, pipe: 2}\ntrain:\n  batch_size: 8\n",
        2,
        25,
        "mesh axis 'pipe' (2 devices) splits nothing",
        "or map a dimension onto it in mesh.rules (e.g. batch: [data, pipe])",
    ),
    Mistake(
        "mesh axis name starts with a digit",
        "mesh:\n  axes: {data: 1, 2nd: 1}\n",
        2,
        19,
        "'2nd' is not a valid mesh axis name",
        "Python identifier",
    ),
    Mistake(
        "mesh axis name not in ASCII",
        "mesh:\n  axes: {data: 1, d\u00e4t\u00e4: 1}\n",
        2,
        19,
        "'d\u00e4t\u00e4' is not a valid mesh axis name",
        "Python identifier in ASCII",
    ),
    Mistake(
        "a number with separators",
        "model:\n  num_heads: 1_2\n",
        2,
        14,
        "model.num_heads",
        "write the number without '_' separators: 12",
    ),
    Mistake(
        "mesh axis name is code",
        "mesh:\n  axes:\n    data: 1\n    'os.system(\"rm -rf /\")': 1\n",
        4,
        5,
        "is not a valid mesh axis name",
    ),
    Mistake("mesh axis name is a keyword", "mesh:\n  axes: {class: 1}\n", 2, 10, "'class' is not a valid mesh axis"),
    Mistake("mesh axis of size zero", "mesh:\n  axes: {data: 0}\n", 2, 16, "mesh.axes.data: 0 is out of range"),
    Mistake(
        "rule names a missing mesh axis",
        "mesh:\n  axes: {data: 1, expert: 1}\n  rules:\n    batch: [data, expertt]\n",
        4,
        12,
        "names mesh axis 'expertt', which mesh.axes does not define",
        "did you mean 'expert'",
    ),
    Mistake(
        "rule for an unknown logical axis",
        "mesh:\n  rules:\n    expertz: data\n",
        3,
        5,
        "unknown logical axis 'expertz'",
        "did you mean 'experts'",
    ),
    Mistake(
        "jsonl without a path",
        "data:\n  source: jsonl\n",
        2,
        11,
        "data.source 'jsonl' needs data.path",
    ),
    Mistake(
        "a SentencePiece model for the byte tokenizer",
        "data:\n  tokenizer: byte\n  spm_model: t5.model\n",
        3,
        14,
        "data.spm_model is set but data.tokenizer is 'byte'",
        "set data.tokenizer to 'sentencepiece'",
    ),
    Mistake(
        "an eval path and a held-out share",
        "data:\n  source: text\n  path: train/\n  eval_path: valid/\n  eval_fraction: 0.1\n",
        5,
        18,
        "data.eval_fraction 0.1 and data.eval_path both choose the text to evaluate on",
        "keep data.eval_path",
    ),
    Mistake(
        "an eval path for the built-in corpus",
        "data:\n  eval_path: valid/\n",
        2,
        14,
        "data.eval_path is set but data.source is 'shakespeare'",
    ),
    Mistake(
        "control characters in a path",
        'data:\n  source: text\n  path: "a\\nb.txt"\n',
        3,
        9,
        "control characters or line breaks",
    ),
    Mistake(
        "a raw control character",
        "model:\n  d_model: 64\x07\n",
        2,
        14,
        "control character '\\x07' (U+0007): YAML allows none",
        "delete it",
    ),
    Mistake(
        "a noncharacter",
        "model:\n  d_model: 64\uffff\n",
        2,
        14,
        "character '\\uffff' (U+FFFF): YAML allows none",
        "delete it: a spec holds printable text",
    ),
    Mistake(  # YAML reads it as null, which `moe: null` spells to mean dense: keys commented out, most often
        "an empty moe section",
        "model:\n  d_model: 64\nmoe:\n#  num_experts: 128\n",
        3,
        1,
        "the moe section is empty",
        "write `moe: {}` for Switch layers with the paper's defaults, or `moe: null`",
    ),
    Mistake("python object tag", "model: !!python/object:os.system {}\n", 1, 8, "YAML tag", "plain data"),
    Mistake("custom tag", "model:\n  d_model: !big 8\n", 2, 12, "YAML tag '!big' is not allowed"),
    Mistake("anchor", "model: &m\n  d_model: 8\n", 1, 8, "YAML anchor '&m' is not allowed"),
    Mistake("two documents", "model: {}\n---\nmodel: {}\n", 2, 1, "one YAML document", "'---'"),
    Mistake("non-scalar key", "model:\n  ? [a, b]\n  : 1\n", 2, 5, "a key must be a plain name"),
    Mistake(
        "yes for true", "model:\n  tie_embeddings: yes\n", 2, 19, "expected true or false", "yes is text: write true"
    ),
    Mistake("off for false", "model:\n  tie_embeddings: Off\n", 2, 19, "expected true or false", "write false"),
    Mistake("empty field name", 'data:\n  jsonl_field: ""\n', 2, 16, "data.jsonl_field is empty", "leave the key out"),
    Mistake("lone surrogate", 'data:\n  path: "\\ud800"\n', 2, 9, "half of a UTF-16 surrogate pair", "both halves"),
    Mistake(  # max_distance is the default: the error pointed at `model:` (1:1)
        "too many position buckets for the default max distance",
        "model:\n  d_model: 64\n  relative_attention_num_buckets: 512\n",
        3,
        35,
        "relative_attention_max_distance 128 is within the decoder's 256 exact buckets",
        "lower model.relative_attention_num_buckets",
    ),
]


def _first(text: str, overrides: tuple[str, ...] = ()) -> UserError:
    return first_error("spec.yaml", textwrap.dedent(text), overrides)


@pytest.mark.parametrize("case", MISTAKES, ids=lambda case: case.name)
def test_mistake_is_located(case: Mistake) -> None:
    first = _first(case.text).diagnostics[0]
    assert_located(first, case)


def test_at_least_twenty_distinct_mistakes() -> None:
    assert len({case.name for case in MISTAKES}) == len(MISTAKES) >= 20


def test_rendering_shows_location_line_caret_and_hint() -> None:
    error = _first("model:\n  d_model: 8\n  num_head: 4\n")
    assert error.render() == (
        "spec.yaml:3:3: error: unknown key 'num_head' in section 'model'\n"
        "    3 |   num_head: 4\n"
        "      |   ^^^^^^^^\n"
        "hint: did you mean 'num_heads'?"
    )


def test_the_caret_lines_up_under_wide_characters() -> None:
    """A CJK character takes two columns on a terminal: the caret counts it so, and spans it with two."""
    error = _first('model:\n  d_model: "中文"\n')
    assert error.render().splitlines()[1:3] == ['    2 |   d_model: "中文"', "      |            ^^^^^^"]


def test_a_long_line_is_shown_around_its_mistake() -> None:
    """A number of 5,000 digits (or a minified file) is not echoed whole: 40 characters either side
    of the span, at most 60 carets."""
    lines = _first("model: {d_ff: 8, d_model: " + "9" * 5000 + "}\n").render().splitlines()
    assert lines[0] == "spec.yaml:1:27: error: an integer of 5000 digits is out of range"
    assert lines[1] == "    1 | model: {d_ff: 8, d_model: " + "9" * 100 + "..."
    assert lines[2] == "      |" + " " * 27 + "^" * 60
    assert lines[3] == "hint: no setting takes an integer of more than 40 digits"


@pytest.mark.parametrize("number", ["9" * 4400, "0x" + "f" * 5000, "-" + "1" * 41])
def test_an_integer_too_long_for_any_setting_is_located_not_a_crash(number: str) -> None:
    """Python refuses to convert a decimal string of over 4,300 digits (and repr of a huge hex)."""
    (diagnostic,) = _first(f"model: {{d_model: {number}}}\n").diagnostics
    assert diagnostic.message.startswith("an integer of ") and (diagnostic.span.line, diagnostic.span.column) == (1, 18)
    assert "is out of range" in _first("{}\n", (f"model.d_model={number}",)).render()


@pytest.mark.parametrize("depth", [65, 5000])
def test_a_value_nested_too_deep_is_located_not_a_crash(depth: int) -> None:
    """About 490 levels of lists exhausted Python's recursion in the tree's walkers: a traceback."""
    (diagnostic,) = _first("model: {d_model: " + "[" * depth + "]" * depth + "}\n").diagnostics
    assert diagnostic.message == "this value is nested more than 64 lists or mappings deep"
    assert (diagnostic.span.line, diagnostic.span.column) == (1, 18 + 62)  # the 65th level: the two mappings are two
    block = "".join(" " * i + f"k{i}:\n" for i in range(depth if depth < 600 else 600))
    (diagnostic,) = _first(block).diagnostics
    assert (diagnostic.span.line, diagnostic.span.column) == (65, 65)
    (diagnostic,) = _first("{}\n", ("model.d_model=" + "[" * depth + "]" * depth,)).diagnostics
    assert diagnostic.message == "this value is nested more than 64 lists or mappings deep"


def test_a_long_list_of_bad_blocks_says_five_and_counts_the_rest() -> None:
    """A range typed as 5,000 blocks of a 2-block stack printed 4,998 errors (20,000 lines)."""
    blocks = ", ".join(map(str, range(5000)))
    error = _first(
        f"moe: {{num_experts: 4}}\nmodel: {{encoder_layers: 2}}\nlayout: {{encoder: {{switch: [{blocks}]}}}}\n"
    )
    messages = [diagnostic.message for diagnostic in error.diagnostics]
    assert messages[:5] == [f"block {i} is out of range: the encoder has 2 blocks (0 to 1)" for i in range(2, 7)]
    assert messages[5:] == [
        "4993 more mistakes in layout.encoder.switch (the first 5 are said one by one); the next is here"
    ]
    unordered = ", ".join(map(str, range(40, 0, -1)))
    hint = _first(
        f"layout: {{encoder: {{switch: [{unordered}]}}}}\nmoe: {{num_experts: 4}}\nmodel: {{encoder_layers: 48}}\n"
    )
    assert hint.diagnostics[0].hint == "write [1, 2, 3, 4, 5, 6, ..., 35, 36, 37, 38, 39, 40]"


def test_duplicate_key_notes_the_first_occurrence() -> None:
    diagnostic = _first("model:\n  d_model: 8\n  d_model: 16\n").diagnostics[0]
    ((note_text, note_span),) = diagnostic.notes
    assert note_text == "first set here" and (note_span.line, note_span.column) == (2, 3)


def test_all_mistakes_in_a_file_are_reported_together_in_order() -> None:
    error = _first("model:\n  d_model: 1.5\n  d_ff: -1\n  bogus: 1\n")
    positions = [(d.span.line, d.span.column) for d in error.diagnostics]
    assert positions == [(2, 12), (3, 9), (4, 3)]
    assert error.render().endswith("3 errors")

    # an empty moe section is one of them, in its place, not a reason to hide the rest
    error = _first("moe:\nmodel:\n  d_model: x\n")
    assert [(d.span.line, d.message) for d in error.diagnostics] == [
        (1, "the moe section is empty"),
        (3, "model.d_model: expected an integer, got 'x'"),
    ]


# ---- command-line overrides are validated the same way and point at the override ---------------


@dataclass(frozen=True)
class OverrideMistake:
    name: str
    overrides: tuple[str, ...]
    line: int  # its line in the command-line text: one per --set, more where a VALUE spans lines
    column: int  # column in the line "--set KEY=VALUE"
    message: str
    hint: str | None = None


OVERRIDE_MISTAKES = [
    OverrideMistake("a space before the key", (" moe.num_experts=8",), 1, 7, "an override is KEY=VALUE", "the space"),
    OverrideMistake("wrong type", ("moe.num_experts=sixty",), 1, 23, "expected an integer, got 'sixty'"),
    OverrideMistake("unknown key", ("moe.num_expert=8",), 1, 7, "unknown key 'num_expert' in moe", "num_experts"),
    OverrideMistake("unknown section", ("mdoel.d_model=8",), 1, 7, "unknown key 'mdoel' in the spec", "'model'"),
    OverrideMistake("no equals sign", ("moe.num_experts",), 1, 7, "an override is KEY=VALUE"),
    OverrideMistake(  # was "unknown key '' in moe"
        "two dots",
        ("moe..num_experts=8",),
        1,
        7,
        "'moe..num_experts' names an empty key",
        "write it as moe.num_experts",
    ),
    OverrideMistake(  # the first value spans two lines of the command line: the second --set is on line 3
        "after a value of two lines",
        ("moe={num_experts: 4,\n  top_k: 2}", "model.d_ff=x"),
        3,
        18,
        "model.d_ff: expected an integer, got 'x'",
    ),
    OverrideMistake(
        "no value",
        ("moe.num_experts=",),
        1,
        23,
        "moe.num_experts: expected an integer, got null",
        "write a value after the key, or leave the key out for its default",
    ),
    OverrideMistake("after a value ending in a line break", ("model.d_model=64\n", "model.d_ff=x"), 3, 18, "got 'x'"),
    OverrideMistake("an empty moe", ("moe=",), 1, 7, "the moe section is empty", "--set 'moe={}' for Switch"),
    OverrideMistake("a control character", ("model.d_model=8", "data.path=a\x01b"), 2, 18, "control character '\\x01'"),
    OverrideMistake(
        "the DSL's axes in a --set",
        ("mesh.axes={data = 2}",),
        1,
        18,
        "'data = 2' is not a valid mesh axis name",
        "in YAML (a --set VALUE, a .yaml file) write {data: 2}",
    ),
    OverrideMistake("value below range", ("model.d_model=8", "moe.top_k=0"), 2, 17, "moe.top_k: 0 is out of range"),
    OverrideMistake(
        "set twice differently",
        ("moe.top_k=1", "moe.top_k=2"),
        2,
        7,
        "'moe.top_k' is set twice with different values",
    ),
    OverrideMistake(
        "a section after a key inside it",
        ("moe.top_k=2", "moe={num_experts: 4}"),
        2,
        7,
        "--set moe replaces all of moe, dropping the earlier --set moe.top_k",
        "set 'moe' first",
    ),
    OverrideMistake("into a value", ("model.d_model.x=1",), 1, 7, "'model.d_model' is a value, not a section"),
    OverrideMistake(
        "span corruption that corrupts nothing",
        ("data.noise_density=0",),
        1,
        26,
        "span corruption with noise_density 0 has nothing to corrupt",
        "data.objective: prefix_lm",
    ),
    OverrideMistake(
        "noise spans shorter than a token",
        ("data.mean_noise_span=0.5",),
        1,
        28,
        "data.mean_noise_span 0.5 is shorter than one token",
        "1 or more",
    ),
    OverrideMistake(
        "a cosine warm-up as long as the run",
        ("train.optimizer.schedule=cosine", "train.steps=50"),
        1,
        32,
        "the cosine schedule's warm-up (10000 steps, the default) is not shorter than train.steps (50)",
        "set train.optimizer.warmup_steps below 50",
    ),
    OverrideMistake(
        "too few position buckets",
        ("model.relative_attention_num_buckets=3",),
        1,
        44,
        "relative_attention_num_buckets 3 leaves the encoder no exact bucket",
        "4 or more",
    ),
    OverrideMistake(
        "a max distance inside the exact buckets",
        ("model.relative_attention_max_distance=16",),
        1,
        45,
        "relative_attention_max_distance 16 is within the decoder's 16 exact buckets",
        "above 16",
    ),
    OverrideMistake(  # pointed at the file's first line, the max distance being the default
        "too many position buckets set for the default max distance",
        ("model.relative_attention_num_buckets=512",),
        1,
        44,
        "relative_attention_max_distance 128 is within the decoder's 256 exact buckets",
    ),
    OverrideMistake(
        "one mesh axis on two dims of one weight",
        ("mesh.axes={expert: 2}", "mesh.rules={mlp: expert}"),
        2,
        24,
        "mesh axis 'expert' splits both experts and mlp, two dims of one weight tensor",
        "split experts and mlp over different mesh axes",
    ),
    OverrideMistake(
        "d_kv split over a model axis",  # refused as a split of kv, before it shares a tensor with heads
        ("mesh.axes={model: 2}", "mesh.rules={kv: model}"),
        2,
        23,
        "switchc cannot split kv over mesh axis 'model' (2 devices): attention scores sum over d_kv",
        "remove mesh.rules.kv",
    ),
    OverrideMistake(
        "d_model split over a model axis",
        ("mesh.axes={model: 2}", "mesh.rules={embed: [model], heads: null, mlp: null, vocab: null}"),
        2,
        26,
        "switchc cannot split embed over mesh axis 'model' (2 devices): attention and FFN layers sum over "
        "d_model inside",
        "remove mesh.rules.embed; split heads, mlp and vocab over a model axis",
    ),
    OverrideMistake(
        "the sequence split over data",
        ("mesh.axes={data: 2}", "mesh.rules={length: data}"),
        2,
        27,
        "switchc cannot split length over mesh axis 'data' (2 devices): the programs never split the sequence",
        "remove mesh.rules.length",
    ),
    OverrideMistake(
        "d_ff split over the data axis",
        ("mesh.axes={data: 2, expert: 2}", "mesh.rules={mlp: data}"),
        2,
        24,
        "switchc cannot split mlp over mesh axis 'data' (2 devices), which also splits the batch: the report's "
        "gathers between the two layouts are not how XLA reshards",
        "use 'data' for mlp or for the batch, not both; split heads, mlp and vocab over a model axis",
    ),
    OverrideMistake(
        "heads split over the expert axis",
        ("mesh.axes={data: 2, expert: 2}", "mesh.rules={heads: expert}"),
        2,
        26,
        "switchc cannot split heads over mesh axis 'expert' (2 devices), which also splits the batch and the experts",
        "use 'expert' for heads or for the batch and the experts, not both",
    ),
    OverrideMistake(
        "experts over an axis that does not split the batch",
        ("mesh.axes={data: 2, model: 2}", "mesh.rules={experts: model, heads: null, mlp: null, vocab: null}"),
        2,
        28,
        "switchc cannot split the experts over mesh axis 'model' (2 devices), which does not split the batch",
        "split the batch over 'model' too (batch: [data, model]), or the experts over an axis that splits the batch",
    ),
    OverrideMistake(
        "a batch rule that takes the model axis",  # the rule the spec wrote, not the standard heads rule
        ("mesh.axes={data: 1, model: 2}", "mesh.rules={batch: [data, model]}"),
        2,
        26,
        "switchc cannot split heads, mlp and vocab over mesh axis 'model' (2 devices), which also splits the batch",
        "use 'model' for heads, mlp and vocab or for the batch, not both",
    ),
    OverrideMistake(
        "one capacity factor for both",
        ("moe.capacity_factor=1.25",),
        1,
        27,
        "expected a mapping of keys, got 1.25",
        "set one of its keys (train, eval): --set moe.capacity_factor.train=1.25",
    ),
    OverrideMistake(
        "cross-check against the file",
        ("moe.top_k=16",),
        1,
        17,
        "top_k 16 is larger than num_experts 8",
    ),
    OverrideMistake(
        "a mesh axis the file's expert count does not divide",
        ("mesh.axes={expert: 3}",),
        1,
        26,
        "the global batch (8) is not divisible by the 3 shards of mesh axes expert=3",
        "set train.batch_size to a multiple of 3",
    ),
    OverrideMistake("bad mesh axis", ("mesh.axes={data: 1, 9x: 1}",), 1, 27, "'9x' is not a valid mesh axis name"),
    OverrideMistake(
        "no space after a flow mapping's colon",
        ("mesh.axes={data:2}",),
        1,
        18,
        "'data:2' is not a valid mesh axis name",
        "YAML needs a space after the colon: {data: 2}",
    ),
]

SWITCH = "model:\n  d_model: 64\nmoe:\n  num_experts: 8\ntrain:\n  batch_size: 8\n"


@pytest.mark.parametrize("case", OVERRIDE_MISTAKES, ids=lambda case: case.name)
def test_override_mistake_points_at_the_override(case: OverrideMistake) -> None:
    first = _first(SWITCH, case.overrides).diagnostics[0]
    assert first.span.source.name == "<command line>"
    assert (first.span.line, first.span.column) == (case.line, case.column), first.render()
    assert case.message in first.message, first.render()
    if case.hint is not None:
        assert first.hint is not None and case.hint in first.hint


@pytest.mark.parametrize(
    ("text", "overrides", "at", "note"),
    [
        (  # the file's warm-up, outlasting the --set steps: it pointed at the warm-up alone
            "train:\n  optimizer: {schedule: cosine, warmup_steps: 100}\n",
            ("train.steps=50",),
            ("<command line>", 1, 19),
            ("train.optimizer.warmup_steps is written here", "spec.yaml", 2, 47),
        ),
        (
            "train:\n  steps: 50\n  optimizer: {schedule: cosine}\n",
            ("train.optimizer.warmup_steps=100",),
            ("<command line>", 1, 36),
            ("train.steps is written here", "spec.yaml", 2, 10),
        ),
        (
            "model:\n  relative_attention_num_buckets: 64\n",
            ("model.relative_attention_max_distance=20",),
            ("<command line>", 1, 45),
            ("model.relative_attention_num_buckets is written here", "spec.yaml", 2, 35),
        ),
        (  # both in the file: the key the message names, the other noted
            "model:\n  relative_attention_num_buckets: 64\n  relative_attention_max_distance: 20\n",
            (),
            ("spec.yaml", 3, 36),
            ("model.relative_attention_num_buckets is written here", "spec.yaml", 2, 35),
        ),
    ],
    ids=[
        "warm-up in the file, steps set",
        "steps in the file, warm-up set",
        "buckets in the file, distance set",
        "both in the file",
    ],
)
def test_two_keys_that_disagree_point_at_the_one_set_and_note_the_other(
    text: str, overrides: tuple[str, ...], at: tuple[str, int, int], note: tuple[str, str, int, int]
) -> None:
    first = _first(text, overrides).diagnostics[0]
    assert (first.span.source.name, first.span.line, first.span.column) == at, first.render()
    ((said, where),) = first.notes
    assert (said, where.source.name, where.line, where.column) == note, first.render()


def test_override_error_renders_the_command_line() -> None:
    rendered = _first(SWITCH, ("moe.num_experts=sixty",)).render()
    assert rendered.splitlines()[:3] == [
        "<command line>:1:23: error: moe.num_experts: expected an integer, got 'sixty'",
        "    1 | --set moe.num_experts=sixty",
        "      |                       ^^^^^",
    ]


def test_a_control_character_is_never_echoed_to_the_terminal() -> None:
    rendered = _first(SWITCH, ("data.path=a\x1b[31mb",)).render()
    assert "\x1b" not in rendered and "| --set data.path=a\ufffd[31mb" in rendered
    # nor a bidi override that would redraw the line, in an excerpt of another mistake on it
    rendered = _first(SWITCH, ('model.d_model="\u202e"',)).render()
    assert "\u202e" not in rendered and '| --set model.d_model="\ufffd"' in rendered


def test_a_key_set_after_its_section_refines_it() -> None:
    """The other order is no conflict: the section first, then a key inside it."""
    spec = parse_spec(Source("t.yaml", SWITCH), ["moe={num_experts: 4}", "moe.top_k=2"])
    assert (spec.moe.num_experts, spec.moe.top_k) == (4, 2)
    # and a section set to null after keys inside it is removed on purpose (a dense variant)
    assert parse_spec(Source("t.yaml", SWITCH), ["moe.top_k=2", "moe=null"]).moe is None


def test_moe_null_over_a_layout_of_switch_layers_names_the_override_and_the_fix() -> None:
    """A layout that lists Switch layers (a DSL file's blocks) stays when --set moe=null removes
    the moe section: the error points at the override, and says which --set makes the stack dense."""
    text = "model:\n  encoder_layers: 2\nmoe: {num_experts: 4}\nlayout:\n  encoder: {switch: [1]}\n"
    (diagnostic,) = _first(text, ("moe=null",)).diagnostics
    assert (
        diagnostic.message
        == "the layout places Switch layers in the encoder, but --set moe=null removed the moe section"
    )
    assert diagnostic.hint == "make the encoder dense as well: --set 'layout.encoder.switch=[]'"
    ((note, where),) = diagnostic.notes
    assert note == "moe removed here" and (where.source.name, where.column) == ("<command line>", 11)
    assert parse_spec(Source("t.yaml", text), ["moe=null", "layout.encoder.switch=[]"]).moe is None


def test_a_hint_for_a_set_is_yaml_though_the_file_is_dsl() -> None:
    """--set VALUEs are YAML: a layout hint for one is YAML too, whatever the file's format."""
    dsl = "model { encoder_layers = 2 }\nmoe { num_experts = 4 }\n"
    with pytest.raises(UserError) as info:
        parse_spec(Source("t.switch", dsl), ["layout.encoder.switch=every 9"])
    assert info.value.diagnostics[0].hint == "write `switch: []` for a dense stack, or use a smaller K"


def test_a_key_that_is_no_valid_name_is_one_error_not_two() -> None:
    """`{data:2}` is one YAML key, `data:2`, with no value: its name is the mistake, not the null."""
    found = _first(SWITCH, ("mesh.axes={data:2}",))
    assert len(found.diagnostics) == 1, found.render()


def test_a_huge_whole_float_gets_no_digits_hint() -> None:
    """1e100 is a whole float, but its digits are float noise: no 'write it as 1000...0159...' hint."""
    first = _first("moe:\n  num_experts: 1e100\n").diagnostics[0]
    assert "expected an integer" in first.message and first.hint is None


def test_an_empty_spec_hint_does_not_claim_a_model_section_is_required() -> None:
    first = _first("# nothing yet\n").diagnostics[0]
    assert first.hint is not None and "`{}` takes every default" in first.hint and "needs" not in first.hint


def test_the_weight_axes_that_share_a_tensor_are_those_of_the_ir() -> None:
    """checks.SHARED_TENSOR_AXES against every parameter of a Switch model with GEGLU experts and
    untied embeddings: the pairs of weight axes that name dims of one tensor."""
    from itertools import combinations

    from switchc.backends.common.codegen import parameters

    from switchc.ir import build_graph
    from switchc.spec import load_spec
    from switchc.spec.checks import SHARED_TENSOR_AXES

    spec = load_spec("switch-tiny", ("model.ffn_activation=geglu", "model.tie_embeddings=false"))
    weight_axes = {"vocab", "embed", "heads", "kv", "mlp", "experts"}
    found = set()
    for param in parameters(build_graph(spec)).values():
        axes = {axis for dim in param.tensor.dims for axis in dim.logical if axis in weight_axes}
        found |= {frozenset(pair) for pair in combinations(sorted(axes), 2)}
    assert found == SHARED_TENSOR_AXES


@pytest.mark.parametrize(
    ("text", "opened", "hint"),
    [
        ("model: {d_model: 128\n", (1, 8), "close the '{' the note points at with '}'"),
        ("model: {d_model: 128\ntrain:\n  batch_size: 8\n", (1, 8), "close the '{' the note points at with '}'"),
        ("model:\n  d_model: [1, 2\n", (2, 12), "close the '[' the note points at with ']'"),
    ],
)
def test_an_unclosed_bracket_is_shown_where_it_opened(text: str, opened: tuple[int, int], hint: str) -> None:
    """YAML notices an unclosed '{' or '[' only where the text ends or stops fitting; a note points
    at the bracket itself (the error alone pointed at the end of the file)."""
    (diagnostic,) = first_error("spec.yaml", text).diagnostics
    ((what, span),) = diagnostic.notes
    assert what.startswith("parsing a flow") and (span.line, span.column) == opened
    assert diagnostic.hint is not None and diagnostic.hint.startswith(hint)
