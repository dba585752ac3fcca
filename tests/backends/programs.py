"""What the backend tests share: compile a program through the CLI, run its train.py as a user
would (with `import switchc` made impossible; torchrun for several processes), read what a run
wrote (metrics.jsonl, TensorBoard events, checkpoints), and run `switchc verify`.

Helpers only: every assertion about a program stays in the test that makes it.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from switchc.cli import main

RUN_TIMEOUT = 300  # seconds; never let a stuck run hang the suite (the machine is small and shared)
TIMING = ("step_seconds", "tokens_per_second", "mfu")  # wall-clock: differ between any two runs
# The training tests' model: one encoder and one decoder block, each with a Switch FFN, shrunk so
# that XLA compiles its step in seconds.
SMALL_SWITCH = {
    "model.encoder_layers": "1",
    "model.decoder_layers": "1",
    "moe.expert_every": "1",
    "model.d_model": "32",
    "model.d_ff": "64",
    "model.num_heads": "2",
    "model.d_kv": "16",
    "train.batch_size": "4",
    "train.inputs_length": "32",
    "train.targets_length": "8",
    "moe.group_size": "32",
}


def set_args(settings: Mapping[str, str]) -> list[str]:
    """`--set KEY=VALUE` for each setting."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def compile_program(out: Path, *args: str, backend: str = "jax", spec: str = "switch-tiny") -> Path:
    """`switchc compile SPEC --backend BACKEND -o OUT ARGS`; returns OUT."""
    result = CliRunner().invoke(main, ["compile", spec, "--backend", backend, "-o", str(out), *args])
    assert result.exit_code == 0, result.output + result.stderr
    return out


def xla_cache(tmp_path: Path) -> dict[str, str]:
    """The environment of JAX runs that share compiled steps: a later run of the same step loads
    it from tmp_path/xla-cache instead of compiling it again."""
    return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla-cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def launcher(prelude: str = "") -> str:
    """Python that runs train.py with this process's arguments, `prelude` first, switchc unimportable."""
    return (
        "import faulthandler, runpy, signal, sys\n"
        "sys.modules['switchc'] = None  # the program must not need switchc\n"
        "faulthandler.register(signal.SIGUSR1)  # a test that finds it stuck gets every thread's stack\n"
        f"{prelude}"
        "sys.argv = ['train.py', *sys.argv[1:]]\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )


def fail_at(rank: int, step: int, *, hang: bool = False) -> str:
    """A launcher prelude for a PyTorch program: rank `rank` raises (or, with `hang`, stops without
    exiting) as it reads the batch of step `step` (0-based), so that a test can check that the other
    ranks then fail with an error, at once or after --timeout, instead of waiting forever."""
    if hang:
        failure = (
            f"print('rank {rank} hangs at step {step} (test)', file=sys.stderr, flush=True)\n"
            # SIGTERM's default ends it: torchrun's SIGTERM at the end of the job need not wait out
            # its grace period for a step that never ends
            "        signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
            "        while True:\n"
            "            time.sleep(60)\n"
        )
    else:
        failure = f"raise RuntimeError('rank {rank} fails at step {step} (test)')\n"
    return (
        "import os, time\n"
        "import runtime.loop\n"
        "_read = runtime.loop._local_batch\n"
        "def _failing(data, step, *args):\n"
        f"    if int(os.environ.get('RANK', '0')) == {rank} and step == {step}:\n"
        f"        {failure}"
        "    return _read(data, step, *args)\n"
        "runtime.loop._local_batch = _failing\n"
    )


def launch(program: Path, *args: str, processes: int = 1, prelude: str = "") -> list[str]:
    """The command that runs train.py (in `program`) as a user would: torchrun for several processes."""
    if processes == 1:
        return [sys.executable, "-c", launcher(prelude), *args]
    (program / "launch.py").write_text(launcher(prelude))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return [*torchrun, "launch.py", *args]


def signal_at(
    command: list[str],
    step: int,
    number: int,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Start `command` (a training run logging every step), send it signal `number` once its record
    of step `step` is printed (after calling `meanwhile`, if given), and return its exit status and
    stderr. A run still going RUN_TIMEOUT seconds later fails the test with its threads' stacks."""
    environment = {**os.environ, **(env or {})}
    with (
        tempfile.TemporaryFile("w+") as stderr,  # a file, not a pipe: nothing blocks while stdout is read
        subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=stderr, text=True) as job,
    ):
        assert job.stdout is not None
        for line in job.stdout:
            if re.match(rf"train\s+step\s+{step}/", line):
                break
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            job.send_signal(number)
        try:
            job.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            job.send_signal(signal.SIGUSR1)  # faulthandler (see launcher) prints every thread's stack
            time.sleep(5)
            job.kill()
            job.communicate()
            stderr.seek(0)
            raise AssertionError(
                f"still running {RUN_TIMEOUT}s after signal {number}:\n{stderr.read()[-12000:]}"
            ) from None
        stderr.seek(0)
        return job.returncode, stderr.read()


@contextlib.contextmanager
def another_run_holding(directory: Path) -> Iterator[int]:
    """Another process holds DIRECTORY's run lock (runtime/flags.py's, as a running program does)
    while the block runs; yields its pid. flock locks belong to an open file: a lock taken in the
    test's own process would not stand in for another run's."""
    holder = (
        "import sys, time; from pathlib import Path; from switchc.backends.common import flags; "
        f"flags.lock_run_directory(Path(sys.argv[1])); print('held', flush=True); time.sleep({RUN_TIMEOUT})"
    )
    with subprocess.Popen([sys.executable, "-c", holder, str(directory)], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout is not None and other.stdout.readline() == "held\n"
            yield other.pid
        finally:
            other.kill()


def run_program(
    program: Path,
    *args: str,
    processes: int = 1,
    prelude: str = "",
    env: Mapping[str, str] | None = None,
    timeout: int = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run train.py (stdout a pipe, not a terminal) with one thread per process, plus `env`."""
    return subprocess.run(
        launch(program, *args, processes=processes, prelude=prelude),
        cwd=program,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def train_losses(program: Path, *args: str, processes: int = 1) -> list[float]:
    """Run the program (into ./run) and read the full-precision train losses rank 0 logged.

    No evaluation or checkpoints: test_training.py covers those, and they would only add time.
    """
    quiet = ("--eval-every", "0", "--checkpoint-every", "0")
    result = run_program(program, *args, *quiet, "--out", "run", processes=processes)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return [entry["loss"] for entry in records(program / "run", "train")]


def ruff_findings(program: Path) -> list[str]:
    """What `ruff format --check .` and `ruff check .` say in the program's folder, under the
    ruff.toml it ships with; [] when it is formatted and lint-clean."""
    ruff = [sys.executable, "-m", "ruff"]
    commands = [[*ruff, "format", "--check", "--no-cache", "."], [*ruff, "check", "--no-cache", "."]]
    findings = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=program)
        if result.returncode != 0:
            findings.append(result.stdout + result.stderr)
    return findings


# The flags switchc's own code is type-checked with (pyproject.toml's [tool.mypy]); modules without
# type information (optax, tensorboardX, tqdm) count as Any, as there.
MYPY_FLAGS = (
    "--disallow-untyped-defs",
    "--no-implicit-optional",
    "--warn-unused-ignores",
    "--warn-redundant-casts",
    "--ignore-missing-imports",
)


def type_findings(program: Path, cache: Path) -> str:
    """What mypy says about the program's folder (train.py, model.py, runtime/) under MYPY_FLAGS;
    "" when it passes. `cache` is mypy's cache folder: one for the session makes every program
    after the first take a second or two (torch's stubs are read once)."""
    command = [sys.executable, "-m", "mypy", *MYPY_FLAGS, "--cache-dir", str(cache), "."]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=program)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a coordinator or torch's store)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def independent_ranks(
    program: Path, per_rank: list[list[str]], prelude: str = "", *, hung: Sequence[int] = ()
) -> tuple[list[int], list[str], float]:
    """Rank i runs train.py with per_rank[i] as its own process (as on several hosts, no torchrun
    agent to stop the rest): their exit statuses, stderr texts, and the seconds until all ended.
    The `hung` ranks (a prelude stops them) are killed once the others have ended."""
    port = str(free_port())
    start = time.monotonic()
    processes = []
    for rank, args in enumerate(per_rank):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            **{"RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": str(len(per_rank))},
            **{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        }
        command = [sys.executable, "-c", launcher(prelude), *args]
        processes.append(
            subprocess.Popen(command, cwd=program, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    errors: dict[int, str] = {}
    try:
        for rank, process in enumerate(processes):
            if rank not in hung:
                errors[rank] = process.communicate(timeout=RUN_TIMEOUT)[1]
        elapsed = time.monotonic() - start
    finally:
        for process in processes:
            process.kill()
    for rank in hung:
        errors[rank] = processes[rank].communicate()[1]
    return [process.returncode for process in processes], [errors[rank] for rank in range(len(processes))], elapsed


def records(run: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl, or those of one split."""
    found = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in found if split is None or r["split"] == split]


def without_timing(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if k not in TIMING} for entry in entries]


def snapshot(directory: Path) -> dict[Path, bytes]:
    """Every file under `directory` with its bytes: to show that a refused command changed nothing.
    The run lock (.lock) is left out: a program refused after it took the lock has written its pid there."""
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file() and path.name != ".lock"}


def checkpoint_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())


def tensorboard_events(directory: Path) -> list[Any]:
    """Every event of the TFRecord files in `directory` (length, crc, event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event()
            event.ParseFromString(data[offset + 12 : offset + 12 + length])
            events.append(event)
            offset += 12 + length + 4
    return events


def tensorboard_values(directory: Path) -> tuple[dict[tuple[int, str], float], dict[tuple[int, str], Any]]:
    """The scalars and the histograms of the events in `directory`, by (step, tag)."""
    values = [(event.step, value) for event in tensorboard_events(directory) for value in event.summary.value]
    scalars = {(step, v.tag): v.simple_value for step, v in values if v.HasField("simple_value")}
    histograms = {(step, v.tag): v.histo for step, v in values if v.HasField("histo")}
    return scalars, histograms


def imported_modules(path: Path) -> set[str]:
    """The top-level packages a Python file imports, anywhere in it."""
    tree = ast.parse(path.read_text())
    nodes = list(ast.walk(tree))
    found = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    found |= {(node.module or "").split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom)}
    return found


# switchc verify's small model: routing groups of 64 tokens, 4 experts
VERIFY_SMALL = (
    "train.batch_size=8",
    "train.inputs_length=64",
    "train.targets_length=16",
    "moe.num_experts=4",
    "moe.group_size=64",
)


def verify(backend: str, overrides: list[str], mesh: str, exit_codes: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """`switchc verify switch-tiny --backend BACKEND --format json` of VERIFY_SMALL, `overrides` and
    the mesh; its JSON."""
    args = ["verify", "switch-tiny", "--backend", backend, "--format", "json"]
    for item in [*VERIFY_SMALL, *overrides, f"mesh.axes={mesh}"]:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in exit_codes, result.output + result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def fake_checkpoint(directory: Path, step: int, markers: tuple[str, ...]) -> Path:
    """A step directory holding just `markers` (flags.CHECKPOINT_MARKERS: a trailing / is a directory)."""
    path = directory / str(step)
    path.mkdir(parents=True)
    for marker in markers:
        if marker.endswith("/"):
            (path / marker).mkdir()
        else:
            (path / marker).write_text("{}")
    return path


def check_reexport_records_its_source(program: Path, backend: str) -> None:
    """`--export-init --init-from FILE` records and prints FILE (and the seed that made its
    weights), not --seed, and creates nothing in --out (leaves seven.safetensors, seed 7's export)."""
    from switchc.backends.common import weights

    exported = run_program(program, "--export-init", "seven.safetensors", "--seed", "7")
    assert exported.returncode == 0, exported.stderr[-3000:]
    again = run_program(
        program, "--export-init", "again.safetensors", "--init-from", "seven.safetensors", "--out", "r/exp"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    said = f"wrote the step-0 weights (from seven.safetensors: written by the {backend} program, seed 7)"
    assert f"{said} to again.safetensors" in again.stdout
    meta = weights.metadata(program / "again.safetensors")
    assert meta["init_from"] == "seven.safetensors" and meta["init_from_seed"] == "7" and "seed" not in meta
    assert not (program / "r").exists()
