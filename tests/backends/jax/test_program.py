"""`switchc compile --backend jax`: the generated program is deterministic, formatted, standalone,
safe against hostile specs, and trains to the same losses on any mesh."""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.analysis.flops import count_flops
from switchc.cli import main
from switchc.passes import lower
from switchc.spec import load_spec
from tests.backends import programs
from tests.backends.programs import run_program, train_losses

# No dropout and a routing group that divides every device's tokens: the loss must then be the
# same on every mesh (jitter is drawn for the global batch, so it is the same too).
TINY = ("--set", "moe.group_size=128", "--set", "train.batch_size=16")


def compile_program(tmp_path: Path, *args: str, name: str = "prog") -> Path:
    return programs.compile_program(tmp_path / name, *TINY, *args)


def test_output_is_byte_identical_for_the_same_spec(tmp_path: Path) -> None:
    first = compile_program(tmp_path, name="a")
    second = compile_program(tmp_path, name="b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert Path("model.py") in files and Path("train.py") in files and Path("spec.yaml") in files
    assert Path("runtime/moe.py") in files and Path("runtime/routing.py") in files
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


@pytest.mark.parametrize(
    "settings",
    [
        ("--set", "model.dropout_rate=0.1", "--set", "moe.z_loss_coef=0.001"),
        ("--set", "moe=null"),
        # RULES too long for one line; blocks written as functions for jax.checkpoint
        ("--set", "mesh.axes={data: 2, expert: 2, model: 2}", "--set", "train.remat=full"),
    ],
    ids=["switch", "dense", "three-axis mesh, remat"],
)
def test_output_is_formatted_lint_clean_and_type_checks(
    tmp_path: Path, mypy_cache: Path, settings: tuple[str, ...]
) -> None:
    """Under the ruff.toml the program ships with (a dense one drew noise it never read: F841),
    and mypy with switchc's own flags."""
    program = compile_program(tmp_path, *settings)
    assert (program / "ruff.toml").is_file()
    assert programs.ruff_findings(program) == []
    assert programs.type_findings(program, mypy_cache) == ""


def test_the_header_names_the_spec_file_and_its_overrides_not_the_path_typed(tmp_path: Path) -> None:
    """The same spec compiled from two folders is the same program; the --set overrides it was
    compiled with are in its header, quoted for a shell."""
    spec = (tmp_path / "a" / "my spec.yaml", tmp_path / "some" / "much" / "longer" / "path" / "my spec.yaml")
    for path in spec:
        path.parent.mkdir(parents=True)
        path.write_text("moe: {num_experts: 4}\n")
    settings = ("--set", "mesh.axes={data: 2}")
    first = programs.compile_program(tmp_path / "p1", *settings, spec=str(spec[0]))
    second = programs.compile_program(tmp_path / "p2", *settings, spec=str(spec[1]))
    assert (first / "train.py").read_bytes() == (second / "train.py").read_bytes()
    header = " ".join((first / "train.py").read_text().split('"""')[1].split())
    assert "from my spec.yaml with --set 'mesh.axes={data: 2}'; spec.yaml beside this file" in header


def test_resolved_spec_and_report_sit_beside_the_program(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    beside = load_spec(str(program / "spec.yaml"))
    assert beside == load_spec("switch-tiny", [TINY[1], TINY[3]])
    report = json.loads((program / "report.json").read_text())
    assert report["spec"]["name"] == "switch-tiny"
    assert report["flops"]["executed"]["train_step_per_device"] > 0


def test_generated_code_never_imports_switchc(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    for path in program.rglob("*.py"):
        assert "switchc" not in programs.imported_modules(path), path


def test_hostile_strings_stay_data(tmp_path: Path) -> None:
    """data.path and data.jsonl_field are the free strings that reach generated code: they must stay literals."""
    hostile = "x\"); import os; os.system('touch pwned'); (\"\\\\"
    settings = [f"--set=data.{key}={json.dumps(hostile)}" for key in ("path", "jsonl_field")]
    program = compile_program(tmp_path, "--set", "data.source=jsonl", *settings, name="hostile")
    tree = ast.parse((program / "model.py").read_text())
    config = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Config")
    values = {
        node.target.id: node.value
        for node in config.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    for key in ("path", "jsonl_field"):
        assert isinstance(values[key], ast.Constant) and values[key].value == hostile, key
    # nothing but the docstring and annotated fields inside Config; no stray calls at module level
    assert all(isinstance(node, ast.AnnAssign) for node in config.body[1:])
    assert not any(isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) for node in tree.body)


def test_compile_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(foreign)])
    assert result.exit_code == 2 and "was not written by switchc" in result.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()  # made beforehand, as for a mount or a share: nothing in it to keep
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(tmp_path / "empty")])
    assert result.exit_code == 0 and (tmp_path / "empty" / "train.py").is_file(), result.output
    program = compile_program(tmp_path)
    (program / "runtime" / "stale.py").write_text("old")  # a module an earlier compile wrote, the new one does not
    marker = program / ".switchc-program"
    marker.write_text(marker.read_text() + f"{hashlib.sha256(b'old').hexdigest()}  runtime/stale.py\n")
    (program / "__pycache__").mkdir()
    (program / ".ruff_cache").mkdir()  # README: `ruff check .` in the program's folder
    compile_program(tmp_path)  # a switchc-written directory is replaced whole
    assert not (program / "runtime" / "stale.py").exists() and (program / "train.py").is_file()
    # ... unless it holds what a user put there (README's --dump-hlo example writes into it)
    (program / "hlo").mkdir()
    (program / "hlo" / "train_step.hlo.txt").write_text("HloModule")
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(program)])
    assert result.exit_code == 2 and "holds files switchc did not write" in result.stderr
    assert "hlo/" in result.stderr and (program / "hlo" / "train_step.hlo.txt").read_text() == "HloModule"


def test_compile_replacing_a_program_leaves_its_neighbours_and_the_umask_alone(tmp_path: Path) -> None:
    """Replacing a program renamed the old one to the fixed name .DIR.old beside it, deleting a
    backup of the user's by that name first (a file by it failed the compile); the program's folder
    was mkdtemp's 0700 whatever the umask."""
    program = compile_program(tmp_path)
    (tmp_path / f".{program.name}.old").mkdir()
    (tmp_path / f".{program.name}.old" / "notes.txt").write_text("backup\n")
    (tmp_path / f".{program.name}.old.txt").write_text("mine\n")
    before = sorted(path.name for path in tmp_path.iterdir())
    previous = os.umask(0o022)
    try:
        compile_program(tmp_path)
    finally:
        os.umask(previous)
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert (tmp_path / f".{program.name}.old" / "notes.txt").read_text() == "backup\n"
    assert stat.S_IMODE(program.stat().st_mode) == 0o755
    (tmp_path / "link").symlink_to(program)  # -o LINK: the program it names is replaced, the link kept
    result = CliRunner().invoke(
        main, ["compile", "switch-tiny", "--set", "train.steps=9", "-o", str(tmp_path / "link")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link").is_symlink() and "default_steps=9" in (program / "train.py").read_text()


def test_compile_never_replaces_a_file_edited_since_it_wrote_it(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    (program / "model.py").write_text((program / "model.py").read_text() + "# my change\n")
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(program)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {program} holds files edited since switchc wrote them (model.py), which" in result.stderr
    assert (program / "model.py").read_text().endswith("# my change\n")
    (program / "notes.txt").write_text("mine\n")  # both kinds at once: one message names them all
    both = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(program)])
    assert "holds files switchc did not write (notes.txt) and files edited since switchc wrote them (model.py)" in (
        both.stderr
    )
    (program / "notes.txt").unlink()
    (program / "model.py").unlink()  # the hint's way to take the new file: nothing edited is left
    compile_program(tmp_path)
    assert not (program / "model.py").read_text().endswith("# my change\n")


def test_compile_never_deletes_a_file_added_inside_the_programs_folders(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    (program / "runtime" / "__pycache__").mkdir()  # what running the program leaves is its own
    (program / "runtime" / "__pycache__" / "loop.cpython-311.pyc").write_bytes(b"")
    compile_program(tmp_path)
    (program / "runtime" / "mine.py").write_text("x = 1\n")
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(program)])
    assert result.exit_code == 2 and "holds files switchc did not write" in result.stderr
    assert "(runtime/mine.py)" in result.stderr and (program / "runtime" / "mine.py").read_text() == "x = 1\n"
    (program / "runtime" / "mine.py").unlink()
    (program / "model.py").unlink()  # a folder where compile wrote a file: it holds someone's files
    (program / "model.py").mkdir()
    (program / "model.py" / "notes.txt").write_text("mine\n")
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(program)])
    assert result.exit_code == 2 and "(model.py/)" in result.stderr
    assert (program / "model.py" / "notes.txt").read_text() == "mine\n"
    shutil.rmtree(program / "model.py")
    shutil.rmtree(program / "runtime")  # and a file where it wrote a folder
    (program / "runtime").write_text("my notes\n")
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(program)])
    assert result.exit_code == 2 and "did not write (runtime)" in result.stderr
    assert (program / "runtime").read_text() == "my notes\n"


def test_a_tampered_marker_reads_nothing_outside_the_program(tmp_path: Path) -> None:
    """An entry naming ../x or an absolute path is no file compile wrote: neither read nor named."""
    program = compile_program(tmp_path)
    (tmp_path / "outside.txt").write_text("not the program's\n")
    marker = program / ".switchc-program"
    marker.write_text(marker.read_text() + f"00  ../outside.txt\n00  {tmp_path / 'outside.txt'}\n")
    compile_program(tmp_path)  # replaced as any program compile wrote
    assert (tmp_path / "outside.txt").read_text() == "not the program's\n"
    assert "outside" not in marker.read_text()  # the new marker lists the new program's files only


def test_an_older_marker_without_digests_is_still_replaced(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    (program / ".switchc-program").write_text("written by switchc compile; the directory may be replaced\n")
    (program / "model.py").write_text("# edited under an older switchc, which kept no digests\n")
    compile_program(tmp_path)
    assert (program / "model.py").read_text().startswith('"""')


def test_a_compile_the_system_refuses_names_the_program_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the hidden staging directory beside it, which the system's message names."""

    def refused(*args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".program.x1y2z3"))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    result = CliRunner().invoke(main, ["compile", "switch-tiny", "-o", str(tmp_path / "program")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'program'}: Permission denied\n")
    assert f"hint: choose a directory you can write to, not {tmp_path}" in result.stderr
    assert ".program.x1y2z3" not in result.stderr


def test_trains_on_real_text(tmp_path: Path) -> None:
    program = compile_program(tmp_path)
    found = train_losses(program, "--steps", "30", "--log-every", "10")
    assert len(found) == 3
    assert found[-1] < found[0] - 0.5, found  # Shakespeare bytes: from ~ln(512) towards ~3 nats


@pytest.mark.slow  # 25 s; backends/common/test_data.py trains and caches SentencePiece by default
def test_trains_with_a_sentencepiece_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SentencePiece is trained on the program's first run and cached; the second run reuses it."""
    monkeypatch.setenv("SWITCHC_CACHE", str(tmp_path / "cache"))  # inherited by the program
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_text(300_000))
    program = compile_program(
        tmp_path,
        "--set",
        "data.tokenizer=sentencepiece",
        "--set",
        "data.source=text",
        "--set",
        f"data.path={json.dumps(str(corpus))}",
    )
    cache = programs.xla_cache(tmp_path)  # the second run loads the compiled step
    first = run_program(program, "--steps", "12", "--log-every", "6", "--eval-every", "0", "--out", "run", env=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sentencepiece: trained" in first.stderr
    records = [json.loads(line) for line in (program / "run" / "metrics.jsonl").read_text().splitlines()]
    found = [r["loss"] for r in records if r.get("split", "train") == "train"]
    assert len(found) == 2 and found[-1] < found[0], found
    quiet = ("--eval-every", "0", "--checkpoint-every", "0")
    again = run_program(program, "--steps", "1", *quiet, "--out", "run2", env=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sentencepiece: using cached" in again.stderr
    assert len(list((tmp_path / "cache" / "sentencepiece").glob("*.model"))) == 1


def shakespeare_text(characters: int) -> str:
    from switchc.backends.common.data import read_documents

    return "".join(read_documents("shakespeare", None, "text"))[:characters]


@pytest.fixture(scope="module")
def one_device_losses(tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    program = compile_program(tmp_path_factory.mktemp("one"))
    return train_losses(program, "--steps", "3", "--log-every", "1")


# The mesh of all three axes runs by default; the two-axis meshes add a minute and run with -m slow.
MESHES = [
    "{data: 2, expert: 2, model: 2}",
    pytest.param("{data: 2, expert: 4}", marks=pytest.mark.slow),
    pytest.param("{data: 4, model: 2}", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mesh", MESHES)
def test_every_mesh_matches_one_device(mesh: str, one_device_losses: list[float], tmp_path: Path) -> None:
    program = compile_program(tmp_path, "--set", f"mesh.axes={mesh}")
    found = train_losses(program, "--steps", "3", "--log-every", "1", "--devices", "8")
    # The first loss is the same forward pass summed in another order: equal to fp32 rounding
    # (seen: up to 5e-6 relative). Later ones follow Adam updates, which divide by
    # sqrt(v) + 1e-8 and so magnify last-bit differences of near-zero gradients (seen: 4e-5).
    assert found[0] == pytest.approx(one_device_losses[0], rel=2e-5)
    assert found == pytest.approx(one_device_losses, rel=2e-4)


def test_tied_embeddings_on_a_split_batch_train_as_on_one_device(tmp_path: Path) -> None:
    """With the batch split, the tied table's lookup and logits read per-shard copies of it
    (layers.shard_copies, so that its gradient is all-reduced once): the same losses as one device,
    and the program stays lint-clean."""
    tied = ("--set", "model.tie_embeddings=true")
    one = train_losses(compile_program(tmp_path / "one", *tied), "--steps", "3", "--log-every", "1")
    program = compile_program(tmp_path / "mesh", *tied, "--set", "mesh.axes={data: 2, expert: 2, model: 2}")
    assert "layers.shard_copies(" in (program / "model.py").read_text()
    assert programs.ruff_findings(program) == []
    found = train_losses(program, "--steps", "3", "--log-every", "1", "--devices", "8")
    assert found[0] == pytest.approx(one[0], rel=2e-5)  # as test_every_mesh_matches_one_device
    assert found == pytest.approx(one, rel=2e-4)


@pytest.mark.slow  # 16 s; test_verify.py compiles and counts the remat step by default
def test_full_remat_trains_alike(one_device_losses: list[float], tmp_path: Path) -> None:
    """train.remat: full wraps each block in jax.checkpoint (layers.remat): the same losses."""
    program = compile_program(tmp_path, "--set", "train.remat=full")
    assert "layers.remat(encoder_block_0" in (program / "model.py").read_text()
    found = train_losses(program, "--steps", "3", "--log-every", "1")
    assert found == pytest.approx(one_device_losses, rel=2e-5)


# 17.5B parameters: 65 GiB of float32 weights, and as much again for gradients and twice for Adam
DUMPED_LARGE = [
    "model.d_model=4096",
    "model.d_ff=16384",
    "moe.num_experts=64",
    "model.encoder_layers=2",
    "model.decoder_layers=2",
]


def test_dump_hlo_writes_the_compiled_step_and_its_cost(tmp_path: Path) -> None:
    """The step is compiled for the weights' shapes and shardings: a model whose weights alone
    are more than this host's memory dumps, since none are initialised."""
    settings = [*DUMPED_LARGE, "mesh.axes={data: 2, expert: 4}"]
    program = compile_program(tmp_path, *[arg for setting in settings for arg in ("--set", setting)])
    result = run_program(program, "--devices", "8", "--dump-hlo", str(tmp_path / "hlo"))
    assert result.returncode == 0, result.stderr[-2000:]
    # the largest resident set of any process this test session waited for (KiB): not the weights'
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 8 * 2**20
    hlo = (tmp_path / "hlo" / "train_step.hlo.txt").read_text()
    assert "all-to-all" in hlo
    assert "f32[16,4096,16384]" in hlo  # each device's 16 of the 64 experts' wi
    cost = json.loads((tmp_path / "hlo" / "cost_analysis.json").read_text())
    report = count_flops(lower(load_spec("switch-tiny", [*TINY[1::2], *settings])))
    # every matmul the report counts, plus elementwise work (switchc verify compares them closely)
    assert report.executed.train_step_per_device < cost["flops"] < 1.15 * report.executed.train_step_per_device


def test_help_documents_the_flags(tmp_path: Path) -> None:
    result = run_program(compile_program(tmp_path), "--help")
    assert result.returncode == 0
    for flag in ("--steps", "--devices", "--seed", "--dump-hlo", "--distributed", "--out", "--resume", "--eval-every"):
        assert flag in result.stdout
    assert "python train.py --devices 1" in result.stdout  # the docstring's launch commands


def test_too_few_devices_is_one_error_even_with_checkpoints(tmp_path: Path) -> None:
    """Said before orbax starts its threads: no orbax traceback after it at interpreter exit.
    (Not at parse time: on a GPU host --devices sets only the CPU's count, and the mesh is the GPUs'.)"""
    program = compile_program(tmp_path, "--set", "mesh.axes={data: 2, expert: 4}")
    result = run_program(program, "--devices", "2", "--steps", "1", "--out", "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: the mesh data=2 x expert=4 needs 8 devices, this host has 2." in result.stderr
    assert "hint: on a CPU host pass --devices 8 to fake them" in result.stderr
    assert not (program / "run").exists()


def test_distributed_without_a_cluster_is_one_error_with_a_hint(tmp_path: Path) -> None:
    result = run_program(compile_program(tmp_path), "--distributed", "--steps", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: --distributed: jax.distributed.initialize() failed: " in result.stderr
    assert "under a cluster manager that jax.distributed detects" in result.stderr
    assert "on one host, drop --distributed" in result.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--coordinator", "127.0.0.1:1234"], "--coordinator applies only with --distributed"),
        (["--timeout", "5"], "--timeout applies only with --distributed"),  # it was taken, and ignored
        (
            ["--distributed", "--coordinator", "127.0.0.1:1234", "--process-id", "0"],
            "--coordinator, --process-id without --num-processes: give all three",
        ),
        (
            ["--distributed", "--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2 is not in 0..1 (--num-processes)",
        ),
        (
            ["--distributed", "--coordinator", "localhost", "--num-processes", "2", "--process-id", "1"],
            "--coordinator localhost: give HOST:PORT, e.g. 10.0.0.1:1234",
        ),
    ],
)
def test_an_explicit_cluster_is_checked_as_flags(tmp_path: Path, flags: list[str], said: str) -> None:
    result = run_program(compile_program(tmp_path), *flags, "--steps", "1")
    assert result.returncode == 2 and said in result.stderr, result.stderr[-3000:]


def test_a_coordinator_that_never_answers_is_one_error_after_timeout(tmp_path: Path) -> None:
    """XLA would abort the process (a C++ check failure) after --timeout; the program asks first."""
    cluster = ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1"]
    result = run_program(compile_program(tmp_path), "--distributed", *cluster, "--timeout", "2", "--steps", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "--distributed: process 1 of 2: joining at 127.0.0.1:1 (waiting at most 2s)" in result.stdout
    assert "error: --distributed: nothing answers at --coordinator 127.0.0.1:1 after 2s (" in result.stderr
    assert "hint: start process 0 there (--process-id 0) within --timeout" in result.stderr


def test_a_process_that_never_joins_is_one_error_after_timeout(tmp_path: Path) -> None:
    """Process 0 of 2 alone: XLA would abort it (a C++ check failure and its stack) some time after
    --timeout; the program's watchdog says what to start first."""
    address = f"127.0.0.1:{programs.free_port()}"
    cluster = ["--coordinator", address, "--num-processes", "2", "--process-id", "0", "--devices", "1"]
    result = run_program(compile_program(tmp_path), "--distributed", *cluster, "--timeout", "2", "--steps", "1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Check failure" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith(
        "error: --distributed: process 0 of 2: the job's processes did not all join within 2s\n"
        f"hint: start every process, --process-id 0 to 1, with --coordinator {address} --num-processes 2, "
        "within --timeout of each other, or raise --timeout\n"
    ), result.stderr[-3000:]


def _two_processes(program: Path, *per_process: list[str]) -> tuple[list[int], list[str]]:
    """Processes 0 and 1 of a --distributed job on this host (one device each), each with its own
    flags: their exit statuses and stderr texts."""
    cluster = ["--distributed", "--coordinator", f"127.0.0.1:{programs.free_port()}", "--num-processes", "2"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", programs.launcher(), *cluster, "--process-id", str(index), "--devices", "1", *args],
            cwd=program,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index, args in enumerate(per_process)
    ]
    try:
        errors = [process.communicate(timeout=programs.RUN_TIMEOUT)[1] for process in processes]
    finally:
        for process in processes:
            process.kill()
    return [process.returncode for process in processes], errors


QUIET = ["--eval-every", "0", "--checkpoint-every", "0", "--log-every", "1"]


def test_two_processes_on_one_host_match_one_device(one_device_losses: list[float], tmp_path: Path) -> None:
    """--coordinator, --num-processes and --process-id: jax.distributed without a cluster manager.
    The 1-device run's losses, and both processes exit 0 (no abort in jax.distributed's shutdown)."""
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    statuses, errors = _two_processes(program, *[[*QUIET, "--steps", "3", f"--out=run{index}"] for index in range(2)])
    assert statuses == [0, 0], [error[-2000:] for error in errors]
    assert not (program / "run1" / "metrics.jsonl").exists()  # process 0 writes the records
    found = [record["loss"] for record in programs.records(program / "run0", "train")]
    assert found == pytest.approx(one_device_losses, rel=2e-4)


def test_processes_started_with_different_flags_are_refused(tmp_path: Path) -> None:
    program = compile_program(tmp_path, "--set", "mesh.axes={expert: 2}")
    statuses, errors = _two_processes(program, [*QUIET, "--steps", "3"], [*QUIET, "--steps", "4", "--seed", "1"])
    assert statuses == [1, 1], errors
    said = (  # every process's values, as the PyTorch program's ranks say them (a checksum said only its own)
        "error: the processes of this run were started with different settings:\n"
        "  --steps: 3 on process 0, 4 on process 1\n"
        "  --seed: 0 on process 0, 1 on process 1\n"
        "hint: start every process with the same program and the same flags\n"
    )
    for error in errors:
        assert error.endswith(said) and "Traceback" not in error, error


def test_too_few_devices_in_a_job_count_the_jobs_and_hint_per_process(tmp_path: Path) -> None:
    """It said "this host has 2" (the job's devices) and hinted --devices 4, which then was refused
    as too many; the job-wide message with the per-process count is the one to give."""
    program = compile_program(tmp_path, "--set", "mesh.axes={data: 2, expert: 2}")
    statuses, errors = _two_processes(program, *[[*QUIET, "--steps", "1"]] * 2)
    assert statuses == [1, 1], errors
    for error in errors:
        assert "the job's 2 processes have 2 (1 on this one)" in error and "this host has" not in error, error
        assert "hint: --devices 2 on CPU hosts, or a mesh of 2 devices" in error and "Traceback" not in error


def test_devices_the_mesh_leaves_unused_are_noted(tmp_path: Path) -> None:
    result = run_program(compile_program(tmp_path), "--devices", "2", "--steps", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "note: 2 devices; the mesh uses 1 of them" in result.stdout
