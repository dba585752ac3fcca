"""The `layout` section (YAML) and the stacks (DSL): where Switch layers sit, validated, and
followed by the IR, the cost model and the JAX backend."""

from __future__ import annotations

import dataclasses
import importlib.util
import textwrap
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from switchc.analysis import hardware
from switchc.analysis.report import analyse
from switchc.errors import Source, UserError
from switchc.ir import build_graph, op_of
from switchc.passes import lower
from switchc.spec import load_spec, parse_spec
from switchc.spec.emit import to_yaml
from switchc.spec.schema import LayoutConfig, StackLayout, json_schema
from tests.ir.tiny import MODEL, REST, D, E, F

MOE = "moe:\n  num_experts: 8\n"
DEEP = MODEL.replace("encoder_layers: 2", "encoder_layers: 4").replace("decoder_layers: 2", "decoder_layers: 6")


def spec(layout: str, *overrides: str, moe: str = MOE, model: str = DEEP):
    return parse_spec(Source("s.yaml", model + moe + textwrap.dedent(layout) + REST), overrides)


def first_error(layout: str, *overrides: str, moe: str = MOE):
    with pytest.raises(UserError) as info:
        spec(layout, *overrides, moe=moe)
    return info.value.diagnostics[0]


def switch_layers(graph) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"encoder": [], "decoder": []}
    for node in graph.nodes:
        op = op_of(graph, node)
        if op.kind == "ExpertFFN":
            stack, index = op.layer.split(".")
            found[stack].append(int(index))
    return found


# ---- meaning ------------------------------------------------------------------------------------


def test_no_layout_is_the_expert_every_rule() -> None:
    found = spec("")
    assert found.layout == LayoutConfig()
    assert found.switch_blocks("encoder") == (1, 3) and found.switch_blocks("decoder") == (1, 3, 5)
    assert spec("layout: null\n").layout == LayoutConfig()


def test_every_k_a_list_and_a_dense_stack() -> None:
    found = spec("layout:\n  encoder: {switch: every 3}\n  decoder: {switch: [0, 5]}\n")
    assert found.layout == LayoutConfig(StackLayout("every 3"), StackLayout((0, 5)))
    assert found.switch_blocks("encoder") == (2,) and found.switch_blocks("decoder") == (0, 5)
    assert [found.is_switch_layer("decoder", i) for i in range(6)] == [True, False, False, False, False, True]
    dense_encoder = spec("layout: {encoder: {switch: []}}\n")
    assert dense_encoder.switch_blocks("encoder") == () and dense_encoder.switch_blocks("decoder") == (1, 3, 5)


def test_a_written_expert_every_that_agrees_is_fine() -> None:
    found = spec("layout: {decoder: {switch: [1, 3, 5]}}\n", moe=MOE + "  expert_every: 2\n")
    assert found.switch_blocks("decoder") == (1, 3, 5)


def test_a_layout_given_with_set_overrides_the_files_expert_every() -> None:
    found = spec("", "layout.encoder.switch=[]", moe=MOE + "  expert_every: 1\n")
    assert found.switch_blocks("encoder") == () and found.switch_blocks("decoder") == tuple(range(6))


def test_a_dense_model_may_have_a_dense_layout() -> None:
    found = spec("layout: {encoder: {switch: []}, decoder: {switch: []}}\n", moe="")
    assert found.moe is None and found.switch_blocks("decoder") == ()


def test_is_switch_layer_names_the_stack() -> None:
    found = spec("layout: {encoder: {switch: [0]}}\n")
    assert found.is_switch_layer("encoder", 0) and not found.is_switch_layer("decoder", 0)
    with pytest.raises(ValueError, match="unknown stack"):
        found.is_switch_layer("middle", 0)


# ---- mistakes -----------------------------------------------------------------------------------

LAYOUT_MISTAKES = [
    ("index out of range", "layout:\n  encoder: {switch: [1, 4]}\n", 14, 25, "block 4 is out of range"),
    ("index listed twice", "layout:\n  encoder: {switch: [1, 1]}\n", 14, 25, "block 1 is listed twice"),
    ("indices out of order", "layout:\n  encoder: {switch: [3, 1]}\n", 14, 25, "list the blocks in ascending order"),
    ("every zero", "layout:\n  encoder: {switch: every 0}\n", 14, 21, "'every 0': K in 'every K' is at least 1"),
    ("every a word", "layout:\n  encoder: {switch: evry 2}\n", 14, 21, "got 'evry 2'"),
    ("negative index", "layout:\n  encoder: {switch: [-1]}\n", 14, 21, "block indices are integers >= 0, got -1"),
    ("every beyond the stack", "layout:\n  encoder: {switch: every 5}\n", 14, 21, "places no Switch layer"),
    ("missing switch", "layout:\n  encoder: {}\n", 14, 12, "layout.encoder: 'switch' is required"),
    ("unknown stack", "layout:\n  encodr: {switch: []}\n", 14, 3, "unknown key 'encodr'"),
]


@pytest.mark.parametrize("case", LAYOUT_MISTAKES, ids=lambda case: case[0])
def test_layout_mistake_is_located(case: tuple[str, str, int, int, str]) -> None:
    _, layout, line, column, message = case
    found = first_error(layout)
    assert (found.span.line, found.span.column) == (line, column), found.render()
    assert message in found.message, found.render()


def test_switch_layers_need_a_moe_section() -> None:
    found = first_error("layout:\n  decoder: {switch: [2]}\n", moe="")
    assert found.message == "the layout places Switch layers in the decoder, but the spec has no moe section"
    assert (found.span.line, found.span.column) == (12, 22)


def test_switch_layers_every_k_need_a_moe_section_too() -> None:
    """`switch: every 2` places Switch layers as a list does; it was taken as a dense model."""
    found = first_error("layout:\n  encoder: {switch: every 2}\n", moe="")
    assert found.message == "the layout places Switch layers in the encoder, but the spec has no moe section"
    assert (found.span.line, found.span.column) == (12, 21)  # at `every 2`
    removed = first_error("layout:\n  encoder: {switch: every 2}\n", "moe=null")
    assert removed.message.endswith("but --set moe=null removed the moe section")
    assert (removed.span.line, removed.span.column) == (14, 21) and removed.notes[0][0] == "moe removed here"


def test_expert_every_that_disagrees_is_an_error_with_a_note() -> None:
    found = first_error("layout:\n  decoder: {switch: [0]}\n", moe=MOE + "  expert_every: 2\n")
    assert found.message == "moe.expert_every 2 disagrees with layout.decoder.switch"
    assert (found.span.line, found.span.column) == (13, 17)
    ((note, where),) = found.notes
    assert "decoder layout" in note and (where.line, where.column) == (15, 21)


def test_a_moe_section_needs_some_switch_layer() -> None:
    found = first_error("layout: {encoder: {switch: []}, decoder: {switch: []}}\n")
    assert "places no Switch layer" in found.message and (found.span.line, found.span.column) == (13, 1)


def test_the_json_schema_describes_the_layout() -> None:
    schema = json_schema()
    good = {"layout": {"encoder": {"switch": "every 2"}, "decoder": {"switch": [1, 3]}}}
    jsonschema.validate(good, schema)
    for bad in ({"switch": "every two"}, {"switch": "every 2 "}, {"switch": "xevery 2"}, {"switch": [-1]}, {}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"layout": {"encoder": bad}}, schema)


def test_the_resolved_yaml_loads_back() -> None:
    for layout, overrides in (
        ("layout: {decoder: {switch: [0]}}\n", ()),
        ("", ("layout.encoder.switch=[]",)),
    ):
        found = spec(layout, *overrides, moe=MOE + "  expert_every: 1\n" if overrides else MOE)
        again = parse_spec(Source("resolved.yaml", to_yaml(found)))
        assert [again.switch_blocks(s) for s in ("encoder", "decoder")] == [
            found.switch_blocks(s) for s in ("encoder", "decoder")
        ]
        if not overrides:
            assert again == found


# ---- the IR, the cost model and the backend follow the layout -----------------------------------


def test_the_ir_puts_switch_layers_where_the_layout_says() -> None:
    found = spec("layout:\n  encoder: {switch: []}\n  decoder: {switch: [0, 2, 5]}\n")
    graph = build_graph(found)
    assert switch_layers(graph) == {"encoder": [], "decoder": [0, 2, 5]}
    kinds = Counter(op_of(graph, n).kind for n in graph.nodes)
    assert kinds["DenseFFN"] == 4 + 3 and kinds["Router"] == kinds["AuxLoss"] == 3


def test_the_cost_model_counts_the_layouts_switch_layers() -> None:
    cpu = hardware("cpu")
    base = analyse(lower(spec("")), cpu)  # Switch layers: encoder 1, 3; decoder 1, 3, 5
    decoder_only = analyse(lower(spec("layout: {encoder: {switch: []}, decoder: {switch: every 1}}\n")), cpu)
    experts, router, dense_ffn = E * 2 * D * F, D * E, 2 * D * F  # ReLU: wi and wo
    assert base.params.experts == 5 * experts and decoder_only.params.experts == 6 * experts
    # one more Switch layer in place of one dense FFN
    assert decoder_only.params.total - base.params.total == experts + router - dense_ffn
    executed = decoder_only.flops.executed, base.flops.executed
    assert executed[0] != executed[1]  # capacity padding and routers sit elsewhere


def test_the_dsl_and_yaml_layouts_build_the_same_graph() -> None:
    yaml = spec("layout:\n  encoder: {switch: [1]}\n  decoder: {switch: every 3}\n")
    dsl = parse_spec(
        Source(
            "s.switch",
            "model {\n  vocab_size = 4096, d_model = 128, d_ff = 512, d_kv = 32, num_heads = 4\n"
            "  decoder_layers = 6, ffn_activation = relu, dtype = float32\n}\n"
            "moe { num_experts = 8 }\n"
            "encoder {\n  block { attention, ffn }\n  block { attention, switch }\n"
            "  repeat 2 { block { attention, ffn } }\n}\n"
            "decoder { switch = every 3 }\n"
            "mesh { axes { data = 1 } }\n"
            "train { batch_size = 32, inputs_length = 128, targets_length = 32, optimizer { name = adam } }\n",
        )
    )
    assert dataclasses.replace(dsl, layout=yaml.layout) == yaml
    assert switch_layers(build_graph(dsl)) == switch_layers(build_graph(yaml)) == {"encoder": [1], "decoder": [2, 5]}


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_the_jax_backend_lowers_the_layout() -> None:
    from switchc.backends.jax.program import generate

    files = generate(load_spec("switch-tiny.switch", ["layout.encoder.switch=[]", "layout.decoder.switch=every 1"]))
    assert "Switch layers: decoder/0, decoder/1." in files["model.py"]
    assert "encoder/1/experts" not in files["model.py"] and "decoder/0/experts" in files["model.py"]
    compile(files["model.py"], "model.py", "exec")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_a_program_with_switch_layers_only_in_the_decoder_trains(tmp_path) -> None:
    import subprocess
    import sys

    from click.testing import CliRunner

    from switchc.cli import main

    program = tmp_path / "program"
    settings = ["layout.encoder.switch=[]", "layout.decoder.switch=every 1", "moe.group_size=128"]
    settings += ["train.batch_size=16"]  # one PyTorch process: the layout, not the mesh (JAX's took 14 s)
    args = [
        "compile",
        "switch-tiny.switch",
        "--backend",
        "torch",
        "-o",
        str(program),
        *(f"--set={s}" for s in settings),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + result.stderr
    launcher = (
        "import runpy, sys\n"
        "sys.modules['switchc'] = None\n"
        "sys.argv = ['train.py', '--steps', '2', '--out', 'run']\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    run = subprocess.run([sys.executable, "-c", launcher], cwd=program, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    last = (program / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert "dropped_fraction/decoder/1" in last and "dropped_fraction/encoder" not in last


def test_expert_every_set_against_a_files_layout_names_every_stack_and_the_layout_overrides() -> None:
    """switch-tiny.switch writes its Switch blocks as a layout of both stacks; a --set
    moe.expert_every cannot remove it, so the hint gives the --set of the layout itself, for every
    stack it disagrees with (it named the encoder's alone, and then the same error came for the
    decoder), and that --set passes."""
    with pytest.raises(UserError) as refused:
        load_spec("switch-tiny.switch", ["moe.expert_every=1"])
    (found,) = refused.value.diagnostics
    assert found.message == "moe.expert_every 1 disagrees with layout.encoder.switch and layout.decoder.switch"
    assert [note for note, _ in found.notes] == [
        "the encoder layout is written here",
        "the decoder layout is written here",
    ]
    overrides = ["--set 'layout.encoder.switch=every 1'", "--set 'layout.decoder.switch=every 1'"]
    assert found.hint is not None and found.hint.endswith("set it instead, " + " ".join(overrides))
    spec = load_spec("switch-tiny.switch", [line.split(" ", 1)[1].strip("'") for line in overrides])
    assert spec.switch_blocks("encoder") == spec.switch_blocks("decoder") == (0, 1)


def test_a_depth_set_against_a_files_layout_and_expert_every_notes_the_set_and_hints_the_layout(
    tmp_path: Path,
) -> None:
    """A file with both a layout and expert_every (switchc fmt --to yaml of a .switch twin): a --set
    of a stack's depth makes them disagree. The error notes that --set, and hints the layout's."""
    twin = tmp_path / "switch-tiny.yaml"
    twin.write_text(to_yaml(load_spec("switch-tiny.switch")))
    with pytest.raises(UserError) as refused:
        load_spec(str(twin), ["model.encoder_layers=4"])
    (found,) = refused.value.diagnostics
    assert found.message == "moe.expert_every 2 disagrees with layout.encoder.switch"
    assert [note for note, _ in found.notes] == [
        "the encoder layout is written here",
        "model.encoder_layers is set here",
    ]
    assert found.hint is not None and found.hint.endswith(
        "set it for the new one too, --set 'layout.encoder.switch=every 2'"
    )
    spec = load_spec(str(twin), ["model.encoder_layers=4", "layout.encoder.switch=every 2"])
    assert spec.switch_blocks("encoder") == (1, 3)
