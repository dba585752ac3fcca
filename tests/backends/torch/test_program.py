"""`switchc compile --backend torch`: the generated program is deterministic, formatted, standalone,
trains on real text, gives the same losses on 1, 2 and 4 gloo processes, and never hangs when a
rank dies."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.spec import load_spec
from tests.backends import programs
from tests.backends.programs import RUN_TIMEOUT, run_program, train_losses

# No dropout and a routing group that divides every process's tokens: the loss must then be the
# same on every mesh (jitter is drawn for the global batch, so it is the same too).
TINY = ("--set", "moe.group_size=128", "--set", "train.batch_size=16")


def compile_program(tmp_path: Path, *args: str, name: str = "prog") -> Path:
    return programs.compile_program(tmp_path / name, *TINY, *args, backend="torch")


def test_output_is_byte_identical_for_the_same_spec(tmp_path: Path) -> None:
    first = compile_program(tmp_path, name="a")
    second = compile_program(tmp_path, name="b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    expected = ("model.py", "train.py", "spec.yaml", "report.json", "runtime/parallel.py", "runtime/data.py")
    for path in (*expected, "runtime/routing.py"):
        assert Path(path) in files
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


@pytest.mark.parametrize(
    "settings",
    [
        ("--set", "model.dropout_rate=0.1", "--set", "moe.z_loss_coef=0.001", "--set", "moe.expert_dropout_rate=0.2"),
        ("--set", "model.tie_embeddings=true", "--set", "model.ffn_activation=geglu", "--set", "moe.top_k=2"),
        ("--set", "train.remat=full", "--set", "model.dropout_rate=0.1"),
        ("--set", "mesh.axes={data: 2, expert: 2, model: 2}", "--set", "model.dtype=bfloat16"),
        ("--set", "moe=null"),  # dense: no noise to draw
    ],
)
def test_output_is_formatted_lint_clean_and_type_checks(
    tmp_path: Path, mypy_cache: Path, settings: tuple[str, ...]
) -> None:
    """Under the ruff.toml the program ships with, and mypy with switchc's own flags (module
    attributes of the blocks were `Tensor | Module` to it)."""
    program = compile_program(tmp_path, *settings)
    assert programs.ruff_findings(program) == []
    assert programs.type_findings(program, mypy_cache) == ""


def test_resolved_spec_and_report_sit_beside_the_program(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    assert load_spec(str(program / "spec.yaml")) == load_spec("switch-tiny", [TINY[1], TINY[3]])
    report = json.loads((program / "report.json").read_text())
    assert report["spec"]["name"] == "switch-tiny"


def test_generated_code_never_imports_switchc_or_jax(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    for path in program.rglob("*.py"):
        assert not programs.imported_modules(path) & {"switchc", "jax", "optax"}, path


def test_parameters_are_the_ir_table_of_the_jax_program(tmp_path: Path) -> None:
    """Same names, shapes, logical axes and init std as the JAX program's PARAMS: weights can move."""
    from switchc.backends.jax.program import generate as generate_jax

    program = compile_program(tmp_path)
    spec = load_spec("switch-tiny", [TINY[1], TINY[3]])

    def table(text: str) -> object:
        tree = ast.parse(text)
        (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PARAMS"]
        return ast.literal_eval(node.value)

    assert table((program / "model.py").read_text()) == table(generate_jax(spec)["model.py"])


def test_unsupported_choices_are_located_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "p")
    result = CliRunner().invoke(
        main,
        ["compile", "switch-tiny", "--backend", "torch", "-o", out, "--set", "mesh.rules={embed: data}"],
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("<command line>:1:26: error: the PyTorch backend cannot split the embed axis")
    assert not (tmp_path / "p").exists()


def test_a_tensor_parallel_rule_onto_a_token_axis_of_one_device_is_a_located_error(tmp_path: Path) -> None:
    """The spec checks refuse heads, mlp or vocab over an axis of two or more devices that also
    splits the batch or the experts (tests/spec/test_errors.py); on an axis of one device the
    spec splits nothing, and the PyTorch program, whose vocab-parallel layers would still take the
    axis, refuses it itself."""
    args = ["compile", "switch-tiny", "--backend", "torch", "-o", str(tmp_path / "p")]
    args += ["--set", "mesh.axes={data: 1, expert: 2}", "--set", "mesh.rules={vocab: data}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    error = "error: the PyTorch backend cannot split vocab over data, which also splits the batch\n"
    assert error in result.stderr and result.stderr.startswith("<command line>:2:"), result.stderr
    assert "the standard rules put heads, mlp and vocab on a `model` axis" in result.stderr
    assert not (tmp_path / "p").exists()


def test_help_documents_the_flags_and_launch_commands(tmp_path: Path) -> None:
    result = run_program(compile_program(tmp_path, "--set", "mesh.axes={data: 2, expert: 2}"), "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--steps", "--seed", "--log-every", "--out", "--timeout", "--device"):
        assert flag in result.stdout
    assert "torchrun --standalone --nproc-per-node 4 train.py" in result.stdout
    assert "--rdzv-endpoint" in result.stdout  # several hosts


def test_a_mesh_needs_its_number_of_processes(tmp_path: Path) -> None:
    result = run_program(compile_program(tmp_path, "--set", "mesh.axes={expert: 2}"), "--steps", "1")
    assert result.returncode != 0
    assert "error: the mesh expert=2 needs 2 processes, this job has 1" in result.stderr
    assert "hint: torchrun --standalone --nproc-per-node 2 train.py --steps 1\n" in result.stderr  # as started
    # under torchrun every rank finds it; the first says it
    program = compile_program(tmp_path / "four", "--set", "mesh.axes={expert: 4}")
    result = run_program(program, "--steps", "1", processes=2)
    assert result.returncode != 0
    assert result.stderr.count("needs 4 processes, this job has 2") == 1, result.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """30 steps on one process: the reference losses, and a run on real text."""
    program = compile_program(tmp_path_factory.mktemp("one"))
    return train_losses(program, "--steps", "30", "--log-every", "1")


def test_trains_on_real_text(one_process: list[float]) -> None:
    assert len(one_process) == 30
    assert one_process[-1] < one_process[0] - 0.5, one_process  # Shakespeare bytes: from ~ln(512) down


def test_trains_with_the_prefix_lm_objective(tmp_path: Path) -> None:
    """The encoder reads text up to a random point, the decoder predicts what follows (runtime/data.py)."""
    program = compile_program(tmp_path, "--set", "data.objective=prefix_lm")
    found = train_losses(program, "--steps", "30", "--log-every", "10")
    assert len(found) == 3
    assert found[-1] < found[0] - 0.5, found


@pytest.mark.parametrize(
    ("mesh", "processes"),
    [("{expert: 2}", 2), ("{data: 2, expert: 2}", 4), ("{data: 2, model: 2}", 4)],
    ids=["expert", "data-expert", "data-model"],
)
def test_every_mesh_matches_one_process(tmp_path: Path, one_process: list[float], mesh: str, processes: int) -> None:
    program = compile_program(tmp_path, "--set", f"mesh.axes={mesh}")
    found = train_losses(program, "--steps", "3", "--log-every", "1", processes=processes)
    # The same sums in another order: fp32 rounding, then Adam magnifies last-bit differences.
    assert found[0] == pytest.approx(one_process[0], rel=2e-5), mesh
    assert found == pytest.approx(one_process[:3], rel=2e-4), mesh


def test_full_remat_trains_alike(tmp_path: Path, one_process: list[float]) -> None:
    """train.remat: full recomputes each block in the backward pass (layers.remat): the same
    losses, here with the experts split over two processes, so that the recomputation runs the
    all-to-alls again."""
    program = compile_program(tmp_path, "--set", "train.remat=full", "--set", "mesh.axes={expert: 2}")
    assert "layers.remat(encoder_block_0" in (program / "model.py").read_text()
    found = train_losses(program, "--steps", "3", "--log-every", "1", processes=2)
    assert found == pytest.approx(one_process[:3], rel=2e-4)


def test_a_crashed_rank_makes_every_rank_exit(tmp_path: Path) -> None:
    """Rank 1 raises at step 1; started as independent processes (no torchrun to kill the rest),
    every rank must still exit non-zero, well within the bound."""
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    args = ["--steps", "5", "--log-every", "1", "--timeout", "30"]
    statuses, errors, elapsed = programs.independent_ranks(program, [args, args], prelude=programs.fail_at(1, 1))
    assert all(status != 0 for status in statuses), statuses
    assert "rank 1 fails at step 1 (test)" in errors[1]
    assert "error: rank 0:" in errors[0]
    assert elapsed < 120, elapsed


def test_ranks_started_with_different_flags_are_refused_before_training(tmp_path: Path) -> None:
    """Another --seed on one rank trained other data and init without a word; another --steps left
    the others waiting at a collective until --timeout."""
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    flags = ["--log-every", "1", "--timeout", "30"]
    statuses, errors, _ = programs.independent_ranks(
        program, [["--steps", "3", "--seed", "0", *flags], ["--steps", "2", "--seed", "1", *flags]]
    )
    assert statuses == [1, 1], errors
    assert errors[0] == errors[1], errors  # as on two hosts: each host's log says it (once)
    assert errors[0].startswith("error: the processes of this run were started with different settings:\n"), errors
    assert "\n  --steps: 3 on rank 0, 2 on rank 1\n  --seed: 0 on rank 0, 1 on rank 1\n" in errors[0]
    assert errors[0].count("hint: start every process with the same program and the same flags") == 1
    assert "Traceback" not in errors[0]


def test_a_rank_that_never_joins_is_one_line_after_timeout(tmp_path: Path) -> None:
    """Rank 1 fails while starting (here: never started); rank 0 waits --timeout, then says so."""
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    port = str(programs.free_port())
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-c", programs.launcher(), "--steps", "2", "--timeout", "3"]
    result = subprocess.run(
        command, cwd=program, env={**env, "MASTER_PORT": port}, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith("error: rank 0: the 2 processes did not come together (DistStoreError: ")
    assert "says why in its own log; one that is slow to start needs a longer --timeout (now 3s)" in result.stderr


def test_a_hung_rank_times_out_under_torchrun(tmp_path: Path) -> None:
    """Rank 1 stops in step 2 without exiting: the others fail after --timeout seconds, saying
    where they waited, which flag bounds the wait and which rank had not timed out, and torchrun
    ends the job with an error."""
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    start = time.monotonic()
    result = run_program(
        program,
        *("--steps", "5", "--timeout", "5", "--eval-every", "0"),
        processes=2,
        prelude=programs.fail_at(1, 1, hang=True),
    )
    assert result.returncode != 0
    assert "error: rank 0:" in result.stderr and "Timed out" in result.stderr
    assert "error: rank 0: a collective in step 2 waited --timeout 5s for a rank that did not come\n" in result.stderr
    assert "error: rank 0: rank 1 had not timed out (yet): most likely it is the one that hung" in result.stderr
    assert (
        "hint: if nothing is wrong and a rank only takes longer than that in step 2, raise --timeout" in result.stderr
    )
    assert time.monotonic() - start < 120


@pytest.mark.slow
def test_a_hung_first_rank_is_named_without_torchrun(tmp_path: Path) -> None:
    """Without torchrun the job's store is served by rank 0's process: when rank 0 is the one
    that hangs, rank 1 still finds it there and names it."""
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    args = ["--steps", "5", "--timeout", "5", "--eval-every", "0"]
    prelude = programs.fail_at(0, 2, hang=True)
    statuses, errors, elapsed = programs.independent_ranks(program, [args, args], prelude, hung=[0])
    assert statuses[1] == 1, errors[1]
    assert "error: rank 1: a collective in step 3 waited --timeout 5s for a rank that did not come\n" in errors[1]
    assert "error: rank 1: rank 0 had not timed out (yet): most likely it is the one that hung" in errors[1]
    assert elapsed < 120, elapsed


@pytest.mark.slow
def test_switchc_train_runs_torchrun(tmp_path: Path) -> None:
    mesh = ("--set", "mesh.axes={expert: 2}")
    command = [
        "train",
        "switch-tiny",
        "--backend",
        "torch",
        *TINY,
        *mesh,
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["step"] == 2
