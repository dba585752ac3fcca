"""The DSL says what YAML says: the same Spec, with spans into the `.switch` file."""

from __future__ import annotations

import importlib.util
import json

import pytest

from switchc.errors import PlainUserError, Source
from switchc.spec import builtin_spec_names, load_spec, parse_spec, read_source
from switchc.spec.dsl import SUBLAYERS, TOP_LEVEL_BLOCKS
from switchc.spec.schema import LayoutConfig, StackLayout

YAML = """\
model:
  vocab_size: 512
  d_model: 64
  d_ff: 128
  d_kv: 16
  num_heads: 4
  encoder_layers: 2
  decoder_layers: 2
  ffn_activation: relu
  tie_embeddings: true
  dropout_rate: 0.1
  layer_norm_epsilon: 1e-6
moe:
  num_experts: 4
  expert_every: 2
  capacity_factor: {train: 2, eval: 2.0}
  z_loss_coef: .001
  router_dtype: float32
mesh:
  axes: {data: 2, expert: 2}
  rules: {batch: [data, expert], vocab: null, mlp: null}
train:
  batch_size: 8
  optimizer: {name: adam, beta1: null, learning_rate: 3e-4}
data:
  source: text
  path: "corpus/my file.txt"
"""

DSL = """\
# the same spec
model {
  vocab_size = 512, d_model = 64, d_ff = 128, d_kv = 16, num_heads = 4
  encoder_layers = 2; decoder_layers = 2
  ffn_activation = relu
  tie_embeddings = true
  dropout_rate = 0.1
  layer_norm_epsilon = 1e-6
}
moe {
  num_experts = 4
  expert_every = 2
  capacity_factor { train = 2, eval = 2.0 }
  z_loss_coef = .001
  router_dtype = float32
}
mesh {
  axes { data = 2, expert = 2 }
  rules { batch = [data, expert], vocab = null, mlp = null }
}
train { batch_size = 8, optimizer { name = adam, beta1 = null, learning_rate = 3e-4 } }
data { source = text, path = "corpus/my file.txt" }
"""


def parse(text: str, name: str = "s.switch", *overrides: str):
    return parse_spec(Source(name, text), overrides)


def test_the_dsl_and_yaml_give_equal_specs() -> None:
    dsl, yaml = parse(DSL), parse(YAML, "s.yaml")
    assert dsl == yaml
    assert dsl.moe is not None and dsl.moe.capacity_factor.train == 2.0
    assert isinstance(dsl.moe.capacity_factor.train, float)
    assert dsl.mesh.logical_rules()["vocab"] == () and dsl.mesh.logical_rules()["mlp"] == ()
    assert dsl.data.path == "corpus/my file.txt"
    assert [p for p in yaml.origin.value_spans if not p[-1].isdigit()] == [
        p for p in dsl.origin.value_spans if not p[-1].isdigit()
    ]


def test_values_keep_their_spans_in_the_switch_file() -> None:
    spec = parse(DSL)
    span = spec.span("moe.capacity_factor.train")
    assert (span.source.name, span.line, span.column, span.end_column) == ("s.switch", 13, 29, 30)
    key = spec.key_span("model.d_ff")
    assert (key.line, key.column) == (3, 35)
    assert spec.span("mesh.rules.batch.1").column == 26  # list items have spans too
    assert spec.is_default("model.init_scale") and not spec.is_default("model.tie_embeddings")


def test_comments_separators_and_trailing_commas() -> None:
    spec = parse("model { d_model = 64, ; d_ff = 128; }  # done\nmesh { rules { batch = [data,], } }\n")
    assert spec.model.d_ff == 128 and spec.mesh.rules["batch"] == ("data",)


def test_true_false_null_are_the_only_keywords() -> None:
    spec = parse('data { source = text, path = "null" }\nmoe = null\n')
    assert spec.data.path == "null" and spec.moe is None
    assert parse('data { source = text, path = "true" }\n').data.path == "true"


def test_an_empty_block_takes_the_defaults() -> None:
    spec = parse("moe {}\n")
    assert spec.moe is not None and spec.moe.num_experts == 128


def test_blocks_say_the_depth_and_where_the_experts_sit() -> None:
    spec = parse(
        "moe { num_experts = 4 }\n"
        "encoder {\n  repeat 2 { block { attention, ffn }  block { attention, switch } }\n}\n"
        "decoder {\n  block { attention, cross_attention, switch }\n"
        "  repeat 3 { repeat 2 { block { attention, cross_attention, ffn } } }\n}\n"
    )
    assert (spec.model.encoder_layers, spec.model.decoder_layers) == (4, 7)
    assert spec.layout == LayoutConfig(StackLayout((1, 3)), StackLayout((0,)))
    assert spec.switch_blocks("encoder") == (1, 3) and spec.switch_blocks("decoder") == (0,)
    assert [spec.is_switch_layer("decoder", i) for i in range(7)] == [True] + [False] * 6
    # model.<stack>_layers points at the stack, each Switch block at its `switch`
    assert spec.span("model.encoder_layers").line == 2
    assert (spec.span("layout.encoder.switch.1").line, spec.span("layout.encoder.switch.1").column) == (3, 59)


def test_compact_placements() -> None:
    spec = parse(
        "model { encoder_layers = 6, decoder_layers = 4 }\nmoe { num_experts = 4 }\n"
        "encoder { switch = every 3 }\ndecoder { switch = [0, 3] }\n"
    )
    assert spec.layout == LayoutConfig(StackLayout("every 3"), StackLayout((0, 3)))
    assert spec.switch_blocks("encoder") == (2, 5) and spec.switch_blocks("decoder") == (0, 3)


def test_a_dense_stack_in_a_switch_model() -> None:
    spec = parse("model { encoder_layers = 2, decoder_layers = 2 }\nmoe { num_experts = 4 }\nencoder { switch = [] }\n")
    assert spec.switch_blocks("encoder") == () and spec.switch_blocks("decoder") == (1,)  # decoder: expert_every 2


def test_overrides_apply_to_dsl_specs() -> None:
    text = "moe { num_experts = 4 }\nencoder { switch = every 2 }\ntrain { batch_size = 8 }\n"
    spec = parse(text, "s.switch", "moe.num_experts=8", "layout.encoder.switch=[0, 1]", "model.encoder_layers=2")
    assert spec.moe is not None and spec.moe.num_experts == 8
    assert spec.layout.encoder == StackLayout((0, 1))
    assert spec.span("moe.num_experts").source.name == "<command line>"
    assert spec.span("train.batch_size").source.name == "s.switch"


def test_strings_reach_the_spec_through_the_same_validation() -> None:
    hostile = "x\"); import os; os.system('rm -rf /'); (\""
    text = 'data { source = text, path = "x\\"); import os; os.system(\'rm -rf /\'); (\\"" }\n'
    assert parse(text).data.path == hostile  # text, checked like YAML's; never code
    axes = parse("mesh { axes { data = 1 } }\n").mesh.axes
    assert axes == {"data": 1}


def test_files_are_read_by_their_extension(tmp_path) -> None:
    dsl = tmp_path / "mine.switch"
    dsl.write_text(DSL, encoding="utf-8")
    yml = tmp_path / "mine.yml"
    yml.write_text(YAML, encoding="utf-8")
    assert load_spec(str(dsl)) == load_spec(str(yml))
    assert load_spec(str(dsl)).name == "mine"


def test_builtin_names_prefer_yaml_and_take_an_extension() -> None:
    names = builtin_spec_names()
    assert "switch-base" in names and len(names) == len(set(names))
    assert read_source("switch-base").name == "<builtin>/switch-base.yaml"
    assert read_source("switch-base.switch").name == "<builtin>/switch-base.switch"
    assert read_source("switch-base.yaml").name == "<builtin>/switch-base.yaml"
    with pytest.raises(PlainUserError, match="no such spec"):
        read_source("switch-base.json")


def test_the_vocabularies_are_documented() -> None:
    from tests.conftest import REPO

    docs = (REPO / "docs" / "dsl.md").read_text(encoding="utf-8")
    for word in (*TOP_LEVEL_BLOCKS, *SUBLAYERS, "block", "repeat", "every"):
        assert f"`{word}" in docs, word


def test_every_example_in_the_language_reference_is_a_valid_spec() -> None:
    import re

    from tests.conftest import REPO

    docs = (REPO / "docs" / "dsl.md").read_text(encoding="utf-8")
    examples = re.findall(r"```(switch|yaml)\n(.*?)```", docs, re.DOTALL)
    assert sum(kind == "switch" for kind, _ in examples) >= 5
    for kind, text in examples:
        parse(text, f"example.{kind}")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="the JAX backend needs jax")
def test_hostile_dsl_text_stays_a_literal_in_generated_code() -> None:
    import ast

    from switchc.backends.jax.program import generate

    hostile = "x\"); import os; os.system('touch pwned'); (\"\\\\"
    head = read_source("switch-tiny.switch").text.split("data {")[0]
    spec = parse(head + f"data {{ source = text, tokenizer = byte, path = {json.dumps(hostile)} }}\n")
    assert spec.data.path == hostile
    tree = ast.parse(generate(spec)["model.py"])
    config = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Config")
    values = {
        n.target.id: n.value for n in config.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    assert isinstance(values["path"], ast.Constant) and values["path"].value == hostile
