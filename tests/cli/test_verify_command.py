"""`switchc verify` when the step cannot be measured: the program fails, or runs past --timeout.

Nothing is compared then, so it is neither agreement (0) nor a mismatch (1): exit status 3, the
error in one line, the end of the step's output, and a hint; no traceback. The program is replaced
by one that fails the same way a real one does (an exception at import, a compile that does not
end), so these run in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from switchc.cli import main
from switchc.errors import PlainUserError

BROKEN = "\n".join(
    ["import sys", "print('step: building the model', file=sys.stderr)", "raise MemoryError('no room for the experts')"]
)
SLOW = "import time\nprint('compiling the train step', flush=True)\ntime.sleep(120)\n"  # progress on stdout


def _verify_program(monkeypatch: pytest.MonkeyPatch, backend: str, text: str, *args: str) -> tuple[int, str]:
    """switchc verify switch-tiny with the backend's program replaced by `text` (its train.py and
    model.py: the JAX verify runs the one, the PyTorch verify's ranks import the other)."""
    pytest.importorskip(backend)
    program = __import__(f"switchc.backends.{backend}.program", fromlist=["generate"])
    monkeypatch.setattr(program, "generate", lambda spec: {"train.py": text, "model.py": text})
    result = CliRunner().invoke(main, ["verify", "switch-tiny", "--backend", backend, *args])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_step_that_fails_is_exit_3_with_its_output(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    code, stderr = _verify_program(monkeypatch, backend, BROKEN)
    assert code == 3, stderr
    said = stderr.splitlines()  # the progress line, then switchc's error: the program's traceback only quoted
    assert said[1].startswith("error: ") and " failed" in said[1] and stderr.count("error: ") == 1
    assert said[2] == "the step's output ended with:" and all(line.startswith("  ") for line in said[3:-1])
    assert "  MemoryError: no room for the experts" in stderr
    assert "hint: add --keep DIR to keep the generated program" in stderr


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_step_past_the_timeout_is_exit_3_naming_the_flag(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    code, stderr = _verify_program(monkeypatch, backend, SLOW, "--timeout", "3")
    assert code == 3, stderr
    assert "did not finish within 3s" in stderr
    assert "  compiling the train step" in stderr  # the step's output so far: its stdout too
    assert "raise --timeout (it was 3s)" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_stop_signal_ends_the_step_and_removes_the_scratch_directory(
    tmp_path: Path, backend: str, number: signal.Signals
) -> None:
    """SIGTERM to switchc alone (a CI job's time limit, `kill PID`) used to end switchc and leave
    the step's processes running and the scratch directory behind; now as with Ctrl-C both go,
    and the status says which signal stopped it (128 + its number), not a mismatch (1)."""
    pytest.importorskip(backend)
    started, scratch = tmp_path / "started", tmp_path / "tmp"
    started.mkdir()
    scratch.mkdir()
    sleeper = f"import os, pathlib, time\npathlib.Path({str(started)!r}, str(os.getpid())).touch()\ntime.sleep(120)\n"
    script = "\n".join(
        [
            f"from switchc.backends.{backend} import program",
            f"program.generate = lambda spec: {{'train.py': {sleeper!r}, 'model.py': {sleeper!r}}}",
            "from switchc.cli import main",
            f"main(['verify', 'switch-tiny', '--backend', {backend!r}], prog_name='switchc')",
        ]
    )
    env = {**os.environ, "TMPDIR": str(scratch)}
    switchc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(started.iterdir()) and switchc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(started.iterdir()), "the step never started"
        switchc.send_signal(number)
        _, stderr = switchc.communicate(timeout=60)
    finally:
        switchc.kill()
    assert switchc.returncode == 128 + number, stderr
    assert f"switchc verify: stopped by {number.name}; nothing was compared" in stderr
    assert "Traceback" not in stderr
    assert not [path.name for path in started.iterdir() if _running(int(path.name))]
    assert list(scratch.iterdir()) == []


def _running(pid: int) -> bool:
    """Whether process `pid` runs (a killed one its parent did not wait for is a zombie: not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_spec_compile_refuses_is_refused_before_the_step_starts(backend: str) -> None:
    """Span corruption of 256 inputs makes more targets than switch-tiny's 32: the located error of
    `switchc compile`, exit 2, and no "compiling ..." line for a step that never starts."""
    pytest.importorskip(backend)
    result = CliRunner().invoke(
        main, ["verify", "switch-tiny", "--backend", backend, "--set", "train.inputs_length=256"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("<builtin>/switch-tiny.yaml:30:19: error: span corruption"), result.stderr
    assert "train step" not in result.stderr


def test_keep_reuses_a_folder_an_earlier_verify_kept_and_nothing_else(tmp_path: Path) -> None:
    """A verify that timed out leaves its program in --keep DIR; the rerun its hint asks for (a
    larger --timeout) must not be refused for that. Anything else in DIR is not verify's to delete."""
    from switchc.cli.verify_commands import KEPT, _clear_kept

    keep = tmp_path / "keep"
    _clear_kept(keep)  # new: made, and marked
    (keep / "program").mkdir()
    (keep / "program" / "train.py").write_text("...")
    (tmp_path / "precious").mkdir()
    (keep / "counts").symlink_to(tmp_path / "precious")  # a link among verify's names: removed, not followed
    _clear_kept(keep)  # an earlier verify's: cleared
    assert sorted(path.name for path in keep.iterdir()) == [KEPT] and (tmp_path / "precious").is_dir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(PlainUserError, match="is not empty"):
        _clear_kept(keep)
    assert (keep / "notes.txt").read_text() == "mine"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "program").mkdir()  # verify's names, but no marker: someone else's
    with pytest.raises(PlainUserError, match="other is not empty") as refused:
        _clear_kept(tmp_path / "other")
    assert refused.value.hint == "--keep needs a new or empty directory, or one an earlier switchc verify kept"
    assert (tmp_path / "other" / "program").is_dir()


def test_the_jax_only_tolerance_is_refused_for_torch() -> None:
    """--total-flops-tolerance holds XLA's cost analysis: with --backend torch it was accepted and
    did nothing."""
    result = CliRunner().invoke(main, ["verify", "switch-tiny", "--backend", "torch", "--total-flops-tolerance", "0.1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --total-flops-tolerance applies only to --backend jax")


def test_a_tolerance_under_half_a_percent_is_shown_as_given() -> None:
    """The table printed a tolerance of 1e-7 as 0%, beside a MISMATCH it had caused."""
    pytest.importorskip("torch")
    result = CliRunner().invoke(main, ["verify", "switch-tiny", "--backend", "torch", "--flops-tolerance", "1e-7"])
    (row,) = [line for line in result.stdout.splitlines() if "matmul FLOPs" in line]
    assert " 1e-05% " in row and " 0% " not in row
