"""`switchc report` and `switchc graph` as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from tests.conftest import SPECS_DIR
from tests.ir.tiny import TINY

runner = CliRunner()


def run(*args: str):
    return runner.invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def tiny_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


CONTRACT = [
    ("params", "total"),
    ("params", "active_per_token"),
    ("flops", "model", "forward_per_sequence"),
    ("flops", "model", "train_step_per_device"),
    ("flops", "executed", "train_step_per_device"),
    ("memory", "per_device_bytes"),
    ("time", "step_seconds"),
]


def test_json_holds_the_documented_contract(tiny_file: str) -> None:
    result = run(
        "report", tiny_file, "--set", "mesh.axes={data: 2, expert: 4}", "--format", "json", "--hardware", "cpu"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["version"] == 1
    assert data["conventions"] and all(isinstance(c, str) for c in data["conventions"])
    for path in CONTRACT:
        value = data
        for key in path:
            value = value[key]
        assert isinstance(value, (int, float)) and value > 0, path
    collectives = data["comm"]["collectives"]
    assert {"all-to-all", "all-reduce"} <= {c["kind"] for c in collectives}
    for entry in collectives:
        assert {"kind", "mesh_axes", "count", "bytes_per_device", "source", "layer", "span", "phase"} <= set(entry)
    dispatch = next(c for c in collectives if c["kind"] == "all-to-all")
    assert dispatch["mesh_axes"] == ["expert"] and dispatch["span"].startswith(tiny_file)


def test_several_specs_compare_side_by_side(tiny_file: str) -> None:
    result = run("report", "t5-base", "switch-base", "moe-base")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "metric" in line)
    assert all(name in header for name in ("t5-base", "switch-base", "moe-base"))
    assert "FLOPs/seq forward, Table 9 convention" in result.output
    data = json.loads(run("report", "t5-base", tiny_file, "--format", "json").output)
    assert [r["spec"]["name"] for r in data["reports"]] == ["t5-base", "tiny"]
    # two specs of one name (a file and its DSL twin) are told apart by their file names
    twins = json.loads(run("report", "switch-tiny", "switch-tiny.switch", "--format", "json").output)
    assert [r["spec"]["name"] for r in twins["reports"]] == ["switch-tiny.yaml", "switch-tiny.switch"]


def test_markdown_keeps_a_pipe_or_a_line_break_in_a_files_name_inside_its_cell(tmp_path: Path) -> None:
    spec = tmp_path / "a|b\nc.yaml"
    spec.write_text((SPECS_DIR / "switch-tiny.yaml").read_text())
    result = run("report", str(spec), "--format", "markdown")
    assert result.exit_code == 0, result.output
    header, rule = result.stdout.splitlines()[:2]
    assert header == "| metric | a\\|b\\nc |" and rule == "|---|---|"


def test_a_capacity_too_small_for_the_tokens_is_noted_beside_the_mfu_it_inflates() -> None:
    """Capacity factor 0.5: 8 experts x 256 slots for 4,096 encoder tokens. Model FLOPs count the
    half that find no slot, so MFU reads above --mfu; the note says why, for each stack."""
    capacity = ("--set", "moe.capacity_factor.train=0.5")
    report = json.loads(run("report", "switch-tiny", *capacity, "--format", "json").stdout)
    assert report["time"]["model_flops_utilization"] > report["time"]["mfu"] == 0.5
    (encoder,) = [note for note in report["notes"] if note.startswith("encoder:")]
    assert encoder.startswith("encoder: 8 experts x capacity 256 = 2048 slots per routing group for 4096 tokens:")
    assert "at least 2048 (50%) of them find no slot" in encoder
    assert json.loads(run("report", "switch-tiny", "--format", "json").stdout)["notes"] == []
    table = run("report", "switch-tiny", *capacity, "--format", "markdown").stdout
    assert "| note 1 | encoder: " in table and "| note 2 | decoder: " in table  # both, not the last alone
    tiny = ("--set", "moe.capacity_factor.train=0.002", "--set", "moe.min_capacity=1", "--format", "json")
    notes = json.loads(run("report", "switch-tiny", *tiny).stdout)["notes"]
    assert "at least 4080 (99.6%) of them" in notes[0]  # rounded down, never up: "at least" stays true


def test_markdown_lists_the_conventions(tiny_file: str) -> None:
    result = run("report", tiny_file, "--format", "markdown", "--hardware", "h100")
    assert result.exit_code == 0
    assert result.output.startswith("| metric | tiny |")
    assert "Conventions:" in result.output and "no causal halving" in result.output
    assert "step time on h100" in result.output


PRIME = ("--set", "train.batch_size=1", "--set", "train.inputs_length=4099", "--set", "train.targets_length=1024")


def test_routing_groups_a_prime_token_count_leaves_tiny_are_noted(tmp_path: Path) -> None:
    """4099 tokens per device (a prime) and group_size 4096: groups of one token, each padded to
    every expert's capacity. The report and compile say so, with the ways out; a routine spec
    gets no note."""
    said = "encoder: routing groups of 1 token, the largest divisor of its 4099 tokens per device up to "
    said += "moe.group_size 4096: 8 expert slots per token; choose train.batch_size and train.inputs_length so "
    said += "that the tokens per device have a divisor near 4096, or raise moe.group_size to 4099"
    report = run("report", "switch-tiny", *PRIME, "--format", "markdown")
    assert f"| note | {said} |" in report.output
    assert json.loads(run("report", "switch-tiny", *PRIME, "--format", "json").output)["notes"] == [said]
    assert json.loads(run("report", "switch-tiny", "--format", "json").output)["notes"] == []
    compiled = runner.invoke(main, ["compile", "switch-tiny", *PRIME, "-o", str(tmp_path / "p")])
    assert compiled.exit_code == 0 and f"note: {said}\n" in compiled.stderr
    for name in ("switch-tiny", "switch-base"):
        assert json.loads(run("report", name, "--format", "json").output)["notes"] == []


def test_a_capacity_set_by_the_min_capacity_floor_is_noted_with_the_padding_it_costs() -> None:
    """Switch-Base's 128 experts on routing groups of 64 tokens: the capacity factor asks for 1
    slot per expert, min_capacity makes it 4, so 512 slots run for 64 tokens (executed expert
    FLOPs 8x the model's). Switch-C as shipped pads the same way (2,048 experts x 4 slots for
    groups of 512 and 114 tokens); Switch-Base as shipped, whose factor sets its capacity, does not."""
    notes = json.loads(run("report", "switch-base", "--set", "moe.group_size=64", "--format", "json").output)["notes"]
    assert [note.split(":")[0] for note in notes] == ["encoder", "decoder"]
    assert notes[0].startswith(
        "encoder: capacity 4 is moe.min_capacity's floor (capacity factor 1.25 gives 1): 128 experts x 4 = 512 "
        "slots per routing group for 64 routed tokens, so the experts execute 8x the FLOPs the tokens need"
    )
    assert "or a lower moe.min_capacity pad less" in notes[0]
    switch_c = json.loads(run("report", "switch-c", "--format", "json").output)["notes"]
    assert [note.split(" (")[0] for note in switch_c] == [
        "encoder: capacity 4 is moe.min_capacity's floor",
        "decoder: capacity 4 is moe.min_capacity's floor",
    ]
    assert "8192 slots per routing group for 512 routed tokens, so the experts execute 16x" in switch_c[0]
    floor_only = ("--set", "moe.group_size=32", "--set", "moe.min_capacity=6")  # 8 x 5 slots wanted, 8 x 6 run
    assert json.loads(run("report", "switch-tiny", *floor_only, "--format", "json").output)["notes"] == []


def test_a_set_that_makes_a_dense_spec_a_switch_model_is_noted() -> None:
    result = runner.invoke(main, ["report", "t5-base", "switch-base", "--set", "moe.num_experts=64"])
    assert result.exit_code == 0
    assert result.stderr == "note: t5-base is dense; the --set options make it a Switch model too\n"
    alone = runner.invoke(main, ["report", "t5-base", "switch-base", "--set", "train.batch_size=64"])
    assert alone.exit_code == 0 and alone.stderr == ""


def test_plot_writes_a_png(tiny_file: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "layers.png"
    result = run("report", tiny_file, "--plot", str(out))
    assert result.exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_puts_each_layer_of_specs_of_other_depths_at_one_tick() -> None:
    """switch-tiny (2 blocks per stack) beside t5-base (12): encoder.final is one tick for both,
    and every point of either sits at the tick of its own layer."""
    pytest.importorskip("matplotlib")
    from switchc.analysis import hardware, report_for
    from switchc.analysis.report import layer_figure
    from switchc.spec import load_spec

    reports = [report_for(load_spec(name), hardware("cpu")) for name in ("switch-tiny", "t5-base")]
    figure = layer_figure(reports)
    top = figure.axes[0]
    ticks = [label.get_text() for label in top.get_xticklabels()]
    assert ticks == [row.layer for row in reports[1].layers]  # the deeper spec's layers hold the shallower's
    for report, line in zip(reports, top.get_lines()[::2], strict=True):  # each spec's model-FLOPs line
        assert [ticks[int(x)] for x in line.get_xdata()] == [row.layer for row in report.layers]


@pytest.mark.parametrize(("name", "said"), [("layers.txt", "unknown format '.txt'"), ("layers", "no suffix")])
def test_plot_needs_a_suffix_matplotlib_writes(tiny_file: str, tmp_path: Path, name: str, said: str) -> None:
    pytest.importorskip("matplotlib")
    result = run("report", tiny_file, "--plot", str(tmp_path / name))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: cannot plot to '{name}': {said}" in result.stderr and ".png, .ps" in result.stderr
    assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.png").exists()


def test_a_plot_format_this_host_cannot_draw_is_an_error_after_the_report(
    tiny_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.pgf is drawn by LaTeX: without it the report is printed all the same, then one error."""
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))  # no xelatex, whatever this host has
    result = run("report", tiny_file, "--plot", str(tmp_path / "layers.pgf"), "--format", "json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert json.loads(result.stdout)["spec"]["name"] == "tiny"
    assert "error: cannot draw layers.pgf: 'xelatex' not found" in result.stderr
    assert "hint: choose a format matplotlib draws itself, e.g. .png, .svg or .pdf" in result.stderr
    assert not (tmp_path / "layers.pgf").exists()


def test_a_command_in_a_hint_is_quoted_for_the_shell(tiny_file: str, tmp_path: Path) -> None:
    missing = tmp_path / "dir with space"
    result = run("report", tiny_file, "--plot", str(missing / "layers.png"))
    assert result.exit_code == 2 and f"create it first (mkdir -p '{missing}')" in result.stderr


def test_a_user_hardware_file(tiny_file: str, tmp_path: Path) -> None:
    profile = tmp_path / "hw.yaml"
    profile.write_text(
        "lab:\n  description: x\n  source: y\n  peak_flops: {bfloat16: 1.0e12, float32: 1.0e12}\n"
        "  memory_bytes: 1.0e9\n  memory_bandwidth: 1.0e9\n  interconnect_bandwidth: 1.0e9\n  latency: 1.0e-6\n"
    )
    result = run("report", tiny_file, "--hardware-file", str(profile), "--hardware", "lab", "--format", "json")
    assert json.loads(result.output)["time"]["hardware"] == "lab"
    profile.write_text("lab:\n  description: x\n  peak_flop: 3\n")
    result = run("report", tiny_file, "--hardware-file", str(profile), "--hardware", "lab")
    assert result.exit_code == 2
    assert f"{profile}:3:3: error: unknown key 'peak_flop'" in result.output
    assert "Traceback" not in result.output


def test_a_hardware_file_that_is_not_utf8_is_a_user_error(tiny_file: str, tmp_path: Path) -> None:
    profile = tmp_path / "hw.yaml"
    profile.write_bytes(b"lab:\n  description: \xff\xfe\n")
    result = run("report", tiny_file, "--hardware-file", str(profile), "--hardware", "lab")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{profile}:2:16: error: not UTF-8 text (invalid start byte at byte 20)" in result.output
    assert "    2 |   description: \ufffd\ufffd\n" in result.output  # the line, the bytes replaced
    profile.write_bytes(b"\xef\xbb\xbflab:\n  description: a\n\xff\n")  # after a byte-order mark
    result = run("report", tiny_file, "--hardware-file", str(profile), "--hardware", "lab")
    assert f"{profile}:3:1: error: not UTF-8 text (invalid start byte at byte 25)" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--hardware", "tpu3"], "unknown hardware profile 'tpu3'"),
        (["--set", "moe.num_experts=7", "--set", "mesh.axes={expert: 2}"], "num_experts (7) is not divisible"),
        (["--mfu", "1.5"], "1.5"),
        (["--mfu", "nan"], "'nan' is not a finite number"),
    ],
)
def test_user_errors_exit_2_without_a_traceback(tiny_file: str, args: list[str], message: str) -> None:
    result = run("report", tiny_file, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_graph_writes_dot(tiny_file: str, tmp_path: Path) -> None:
    out = tmp_path / "g.dot"
    result = run("graph", tiny_file, "--set", "mesh.axes={data: 2, expert: 4}", "-o", str(out))
    assert result.exit_code == 0
    text = out.read_text()
    assert text.startswith('digraph "tiny" {')
    assert '"encoder/1/experts" [label="ExpertFFN' in text
    assert "AllToAll" in text and "style=dashed" in text
    logical = tmp_path / "logical.dot"
    run("graph", tiny_file, "--unsharded", "-o", str(logical))
    assert "AllToAll" not in logical.read_text()


@pytest.mark.parametrize("suffix,magic", [(".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_graph_renders_with_graphviz(tiny_file: str, tmp_path: Path, suffix: str, magic: bytes) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    out = tmp_path / f"g{suffix}"
    result = run("graph", tiny_file, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)


def test_graph_without_graphviz_says_how_to_install_it(
    tiny_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = run("graph", tiny_file, "-o", str(tmp_path / "g.svg"))
    assert result.exit_code == 2
    assert "apt-get install graphviz" in result.output


def test_graph_rejects_an_unknown_format(tiny_file: str, tmp_path: Path) -> None:
    result = run("graph", tiny_file, "-o", str(tmp_path / "g.pdf"))
    assert result.exit_code == 2
    assert "unknown format '.pdf'" in result.output


def test_a_spec_that_does_not_fit_is_shown_with_full_remat() -> None:
    """T5-Base as written (no remat) needs 32 GiB per tpuv3 core of 16: the report says what
    train.remat: full would need and cost, the figures of the same spec compiled with it."""
    as_written = json.loads(run("report", "t5-base", "--format", "json").output)
    remat = json.loads(run("report", "t5-base", "--set", "train.remat=full", "--format", "json").output)
    assert as_written["memory"]["fits"] is False and remat["memory"]["fits"] is True
    assert as_written["full_remat"] == {
        "per_device_bytes": remat["memory"]["per_device_bytes"],
        "fits": True,
        "step_seconds": remat["time"]["step_seconds"],
        "recompute_flops_per_device": remat["flops"]["executed"]["recompute_per_device"],
    }
    assert remat["full_remat"] is None  # already remat, and fits
    assert json.loads(run("report", "switch-tiny", "--format", "json").output)["full_remat"] is None  # fits
    table = run("report", "t5-base", "--format", "markdown").output
    row = "| with train.remat: full | 4.58 GiB (fits); step 1.12 s: +7.21T FLOPs/device to recompute each block |"
    assert row in table
    # Switch-XXL on 512 cores of 16 GiB fits with remat; on 64 it does not fit either way.
    small = run("report", "switch-xxl", "--set", "mesh.axes={expert: 64, model: 1}", "--format", "markdown").output
    assert "GiB (does not fit either); step" in small


def test_a_spec_the_programs_refuse_is_reported_with_a_located_warning() -> None:
    """Span corruption of 256 input tokens makes more targets than switch-tiny's 32: compile and
    check refuse the spec, the report still costs it and says why the programs would not run."""
    result = runner.invoke(main, ["report", "switch-tiny", "--set", "train.inputs_length=256", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["spec"]["name"] == "switch-tiny"
    assert result.stderr.startswith("<builtin>/switch-tiny.yaml:30:19: warning: span corruption"), result.stderr
    assert "compile and check refuse this spec" in result.stderr and "hint: set train.targets_length" in result.stderr
    assert "<command line>:1:27: note: train.inputs_length is set here" in result.stderr  # what made it too short
    # the JSON, read by a tool that never sees stderr, carries the same warning among the spec's notes
    (refusal,) = [note for note in report["notes"] if "refuse this spec" in note]
    assert refusal.startswith("<builtin>/switch-tiny.yaml:30:19: span corruption")
    assert "train.inputs_length is set at <command line>:1:27; set train.targets_length to at least" in refusal
    markdown = runner.invoke(
        main, ["report", "switch-tiny", "--set", "train.inputs_length=256", "--format", "markdown"]
    )
    assert "refuse this spec" in markdown.stdout
    table = runner.invoke(main, ["report", "switch-tiny", "--set", "train.inputs_length=256"])
    assert "refuse this spec" not in table.stdout  # on the terminal the located warning above says it once
    assert table.stderr.count("refuse this spec") == 1
    clean = runner.invoke(main, ["report", "switch-tiny", "--format", "json"])
    assert clean.stderr == ""
    assert not any("refuse" in note for note in json.loads(clean.stdout)["notes"])


def test_a_control_character_in_a_hardware_file_is_located_with_a_hint_for_that_file(tmp_path: Path) -> None:
    profile = tmp_path / "lab.yaml"
    profile.write_text("lab:\n  peak_flops: {float32: 1e12\x07}\n")
    result = run("report", "switch-tiny", "--hardware-file", str(profile), "--hardware", "lab")
    assert result.exit_code == 2 and "\x07" not in result.stderr
    assert f"{profile}:2:29: error: control character '\\x07' (U+0007): YAML allows none" in result.stderr
    assert "hint: delete it: a hardware file holds printable text" in result.stderr


def test_batch_prioritized_routing_in_the_decoder_is_noted(tmp_path: Path) -> None:
    """Ordering a group's slots by router probability lets a target's slot depend on later targets
    in a decoder Switch layer: report and compile say so and how to keep it to the encoder."""
    prioritized = ("--set", "moe.batch_prioritized_routing=true")
    notes = json.loads(run("report", "switch-tiny", *prioritized, "--format", "json").output)["notes"]
    assert len(notes) == 1 and notes[0].startswith(
        "decoder: moe.batch_prioritized_routing orders the decoder's Switch layers (decoder/1) too"
    )
    assert notes[0].endswith("make the decoder dense (layout.decoder.switch: [])")
    compiled = runner.invoke(main, ["compile", "switch-tiny", *prioritized, "-o", str(tmp_path / "p")])
    assert compiled.exit_code == 0 and f"note: {notes[0]}\n" in compiled.stderr
    encoder_only = (*prioritized, "--set", "layout.decoder.switch=[]")
    assert json.loads(run("report", "switch-tiny", *encoder_only, "--format", "json").output)["notes"] == []
