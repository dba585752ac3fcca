"""The command-line flags every generated training program shares, and their checks. Runtime
support, copied verbatim into every program (runtime/flags.py).

It needs the standard library only: a program parses its flags before its framework starts (a
JAX program's --devices must take effect before jax is imported). Each backend's runtime/loop.py
builds its parser here, adds its own flags (JAX: --devices, --distributed with --coordinator,
--num-processes, --process-id and --timeout, --dump-hlo; PyTorch: --device, --timeout), parses,
calls `check` before its own checks, and `make_folders` after them.

It also holds the checks of --resume against the run: `run_identity` is what each checkpoint
records of the program that wrote it, and `check_resume` compares a checkpoint's record with this
program.

A run that stops before its training loop begins (a refused flag, an unreadable --init-from,
--export-init) leaves no trace: `make_folders` notes the folders it creates (args.made), and the loops
run inside `tidy_unless_trained`, which removes them and the run directory's lock file when this
process created them and they are still empty.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any, NoReturn

try:
    import fcntl
except ImportError:  # Windows: runs there take no lock on their directory
    fcntl = None  # type: ignore[assignment]


def first_on_host() -> bool:
    """This process is the first of its host in a job (torchrun's LOCAL_RANK 0; without LOCAL_RANK,
    RANK 0; a process started alone). A job of several hosts has a log per host: what every process
    would say alike is said by the first of each host, so that each log says it, once."""
    return os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) == "0"


class _Parser(argparse.ArgumentParser):
    """argparse, quiet on every process but the first of each host (`first_on_host`): a usage
    error exits each with status 2, but is printed once per log, not once per rank."""

    @staticmethod
    def _first_process() -> bool:
        return first_on_host()

    def print_help(self, file: Any = None) -> None:
        if self._first_process():
            super().print_help(file)

    def error(self, message: str) -> NoReturn:
        if not self._first_process():
            sys.exit(2)
        super().error(message)


MAX_SEED = 2**24  # train.seed's bound (switchc's switchc/spec/schema.py): --seed takes the same seeds
EVAL_BATCHES = 10  # --eval-batches' default


def _named(what: str) -> Callable[[str], Path]:
    """A path flag's type: an empty path, which Path reads as "." (an unset shell variable in
    `--out "$RUN"`), is refused, naming `what` to give; a run in the current directory would
    write, and a later one clear, its files."""

    def path(text: str) -> Path:
        if not text:
            raise argparse.ArgumentTypeError(f"an empty path; name {what}")
        return Path(text)

    return path


def parser(
    description: str,
    default_steps: int,
    default_seed: int,
    *,
    held_out: bool,
    resume_help: str,
    init_from_help: str,
    hardware: Sequence[str] = (),
    cosine: bool = False,
) -> argparse.ArgumentParser:
    """A parser with the shared flags. `held_out`: whether the spec holds out an eval split
    (data.eval_fraction > 0, or data.eval_path); without one --eval-every defaults to 0 and any other value
    is refused. `cosine`: the spec's schedule is cosine, which ends at `default_steps` (train.steps):
    a --steps past it is refused (`past_the_schedule`).
    `resume_help` and `init_from_help` are the help texts of --resume and --init-from, whose
    details differ between the backends. `hardware`: the names --hardware takes (model.PEAK_FLOPS's,
    which train.py passes: model.py is not imported before the flags are read); none: any, checked later."""
    every = max(1, default_steps // 10)
    # No abbreviations: the JAX program's --devices N and the PyTorch program's --device KIND must not
    # pass for each other (`--device cpu` to the JAX program would read as `--devices cpu`).
    flags = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    # --checkpoint-every and --keep parse to None when not given, so that `check` can refuse them
    # without --out (nothing would be saved); it then puts these defaults in.
    # --eval-every likewise, so that `check` can refuse it for a spec without a held-out split.
    flags.set_defaults(checkpoint_default=every, keep_default=3, eval_default=every if held_out else 0)
    flags.set_defaults(held_out=held_out, schedule_end=default_steps if cosine else None)
    flags.add_argument(
        "--steps",
        type=int,
        default=default_steps,
        metavar="N",
        help=f"train until this step (default: the spec's, {default_steps}"
        + ("; the cosine schedule ends there, so no more)" if cosine else ")"),
    )
    flags.add_argument(
        "--seed",
        type=int,
        default=default_seed,
        metavar="N",
        help=f"seed for init, data and noise: 0..{MAX_SEED} (default: the spec's, {default_seed})",
    )
    flags.add_argument(
        "--log-every", type=int, default=10, metavar="N", help="a train record every N steps (default: 10)"
    )
    flags.add_argument(
        "--out",
        type=_named("the run directory (--out . for this one)"),
        default=None,
        metavar="DIR",
        help="run directory: metrics.jsonl, tensorboard/ and checkpoints/ (default: none written)",
    )
    flags.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="N",
        help=f"evaluate on the held-out split every N steps and at the end; 0: never (default: {every})"
        if held_out
        else "evaluate every N steps: this program's spec has no text to evaluate on (data.eval_fraction is 0 and "
        "no data.eval_path), so 0 only",
    )
    flags.add_argument(
        "--eval-batches", type=int, default=None, metavar="N", help=f"batches per evaluation (default: {EVAL_BATCHES})"
    )
    flags.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help=f"with --out, save a checkpoint every N steps and at the end; 0: never (default: {every})",
    )
    flags.add_argument(
        "--keep", type=int, default=None, metavar="K", help="with --out, keep the newest K checkpoints (default: 3)"
    )
    flags.add_argument("--resume", action="store_true", help=resume_help)
    flags.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: continue a checkpoint written by a program built from another spec (its changed "
        "settings are printed); without it such a resume is refused",
    )
    flags.add_argument(
        "--init-from", type=_named("the weights file"), default=None, metavar="FILE", help=init_from_help
    )
    flags.add_argument(
        "--export-init",
        type=str,  # as given, a trailing separator included (a Path drops it); `check` makes it a Path
        default=None,
        metavar="FILE",
        help="write the step-0 weights (--seed's, or --init-from's) to FILE (safetensors keyed by IR names, "
        "runtime/weights.py; either program's --init-from reads it), then exit; with --resume, the weights of "
        "--out's latest checkpoint",
    )
    flags.add_argument(
        "--hardware",
        default=None,
        choices=tuple(hardware) or None,
        metavar="NAME",
        help="hardware profile for MFU: "
        + (", ".join(hardware) if hardware else "model.PEAK_FLOPS lists them")
        + " (default: cpu on CPUs, else the device's, else the report's)",
    )
    flags.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc as configured (default: keep freed memory in the process; runtime/host.py)",
    )
    return flags


def check(flags: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The shared flags' impossible values: a usage error (exit status 2) naming the flag."""
    if args.steps < 0:
        flags.error("--steps must be >= 0")
    if args.schedule_end is not None and args.steps > args.schedule_end and args.export_init is None:
        flags.error(past_the_schedule(args.steps, args.schedule_end, args.resume))  # an export trains no step
    if not 0 <= args.seed <= MAX_SEED:  # the spec's train.seed takes the same
        flags.error(f"--seed must be in 0..{MAX_SEED}")

    # Values first, then the flags' company: `--keep 0` says 0 is no count before it asks for --out.
    # (--checkpoint-every, --eval-every and --keep are None when not given; their defaults are valid.)
    for name, least in (("log_every", 1), ("eval_batches", 1), ("keep", 1), ("eval_every", 0), ("checkpoint_every", 0)):
        value = getattr(args, name)
        if value is not None and value < least:
            flags.error(f"--{name.replace('_', '-')} must be >= {least}")
    if args.out is None:  # nothing would be saved: say so rather than ignore the flag
        if args.checkpoint_every:
            flags.error("--checkpoint-every applies only with --out (the run directory checkpoints are saved in)")
        if args.keep is not None:
            flags.error("--keep applies only with --out (the run directory checkpoints are saved in)")
    if args.eval_every and not args.held_out:  # silently evaluating nothing would look like a broken eval
        flags.error(
            f"--eval-every {args.eval_every}: this program's spec holds out no text to evaluate on "
            "(data.eval_fraction is 0 and no data.eval_path); compile it with data.eval_fraction > 0 or a "
            "data.eval_path, or drop --eval-every"
        )
    if args.eval_every is None:
        args.eval_every = args.eval_default
    if args.checkpoint_every is None:
        args.checkpoint_every = args.checkpoint_default
    if args.keep is None:
        args.keep = args.keep_default
    if args.eval_batches is not None and args.eval_every == 0:  # evaluating never: say so, as for --keep
        why = "this one does not: --eval-every is 0" if args.held_out else "this program's spec holds out no text"
        flags.error(f"--eval-batches applies only to a run that evaluates ({why})")
    if args.eval_batches is None:
        args.eval_batches = EVAL_BATCHES
    if args.resume and args.out is None:
        flags.error("--resume needs --out (the run directory whose checkpoints/ to resume from)")
    if args.init_from is not None and not args.resume and not args.init_from.exists():  # resumed: maybe unread
        flags.error(f"--init-from: no weights file at {args.init_from}")
    if args.allow_changes and not args.resume:
        flags.error("--allow-changes applies only with --resume")
    if args.export_init is not None:
        given = str(args.export_init)
        if not given:  # Path("") is ".", the current directory
            flags.error("--export-init: an empty path; name the file to write, e.g. init.safetensors")
        args.export_init = Path(given)
        if args.resume and not (args.out / "checkpoints").is_dir():  # --resume has made sure of --out
            flags.error(
                f"--export-init with --resume writes the weights of {args.out}'s latest checkpoint, and "
                f"{args.out / 'checkpoints'} does not exist (without --resume it writes the step-0 weights)"
            )
        # A Path drops a trailing separator ("w/new/" is "w/new") and a final "." ("w/." is "w"):
        # such a path names a directory, and would be written as a file of that name.
        separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
        if args.export_init.is_dir() or given.endswith(separators) or os.path.basename(given) in (".", ".."):
            step = args.export_init.resolve()
            if step.is_dir() and step.name.isdigit() and step.parent.name == "checkpoints":
                run = Path(os.path.relpath(step.parent.parent))  # from here: `--export-init 2` in checkpoints/ is ..
                flags.error(
                    f"--export-init {given} is a checkpoint of the run {run}, not a file to write; to write the "
                    f"weights of that run's latest checkpoint: --export-init FILE --resume --out {run} (FILE "
                    "outside the run)"
                )
            what = "is a directory" if args.export_init.is_dir() else "names a directory"
            flags.error(
                f"--export-init {given} {what}; name the file to write, e.g. {args.export_init / 'init.safetensors'}"
            )
        # The run's files (checkpoints, metrics) and any other file but an earlier export are not
        # for an export to replace: `--export-init RUN/checkpoints/3/meta.json` destroyed that checkpoint.
        if args.out is not None and args.export_init.resolve().is_relative_to(args.out.resolve()):
            flags.error(f"--export-init {given} is inside the run directory --out {args.out}; write it elsewhere")
        if args.export_init.is_file() and not _holds_weights(args.export_init):
            flags.error(
                f"--export-init {given} exists and is not a weights file; name a new file (an earlier export is "
                "replaced, nothing else is)"
            )


def make_folders(flags: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Create --out (or --export-init's folder). Each backend's parse_args calls it last, once every
    flag is accepted (`check`'s and its own checks): a refused command leaves no folder behind.
    Each one made is noted in args.made, for `tidy_unless_trained` to remove if no step is trained;
    a folder the system refuses is a usage error, and what was made for it is removed first."""
    args.made = []

    def refuse(message: str) -> NoReturn:
        remove_made(args)
        flags.error(message)

    if args.export_init is not None:
        try:  # a folder the system refuses is a usage error, as with --out
            # not noted in args.made: a process of a job that has nothing to write would remove it
            # while the first one still reads the weights it will write there
            _make_folder(args.export_init.parent, [])
        except OSError as error:
            refuse(f"--export-init {args.export_init}: {error.strerror or error}")
        return  # nothing trains, so nothing is written in --out: it is not created
    if args.out is not None:  # create it now: a path the system refuses is a usage error, not a traceback later
        if args.out.exists() and not args.out.is_dir():
            refuse(f"--out {args.out} is a file; --out names the run directory")
        for name, folder in (("checkpoints", True), ("tensorboard", True), ("metrics.jsonl", False)):
            path = args.out / name
            if name == "checkpoints" and not args.checkpoint_every:
                continue  # nothing is saved there
            if path.exists() and path.is_dir() != folder:  # a run writes there: an error at its first record
                kind, wanted = ("a folder", "file") if path.is_dir() else ("a file", "folder")
                refuse(f"--out {args.out}: {path} is {kind}, where a run writes its {name} {wanted}")
        try:
            _make_folder(args.out, args.made)
        except OSError as error:
            refuse(f"--out {args.out}: {error.strerror or error}")
        # A folder that takes no files would fail only at the first record or save: JAX's saves run in
        # the background, where a failure can leave the program unable to exit.
        folders = [args.out, args.out / "checkpoints"] if args.checkpoint_every else [args.out]
        for folder in folders:
            refused = _unwritable(folder, args.made)
            if refused is not None:
                refuse(f"--out {args.out}: cannot write files in {folder} ({refused}); choose another --out")


def _holds_weights(path: Path) -> bool:
    """Whether `path` is a switchc weights file (runtime/weights.py: its header metadata says so)."""
    from . import weights  # here: numpy and safetensors are not for every program's start

    try:
        return weights.metadata(path).get("format") == weights.FORMAT
    except (OSError, ValueError, ImportError):  # not safetensors; or no safetensors to tell
        return False


def _make_folder(folder: Path, made: list[Path]) -> None:
    """mkdir -p FOLDER, adding each folder it creates to `made`, outermost first."""
    missing = []
    path = folder
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    made.extend(reversed(missing))


def _unwritable(folder: Path, made: list[Path]) -> str | None:
    """Why no file can be written in `folder` (created if missing, and then added to `made`), or
    None when one can."""
    probe = folder / f".switchc-write-test-{os.getpid()}"
    try:
        _make_folder(folder, made)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return error.strerror or str(error)
    return None


@contextlib.contextmanager
def tidy_unless_trained(args: argparse.Namespace) -> Iterator[None]:
    """Around a program's run: should it end before its training loop begins (`training_began`),
    by an error, by design (--export-init, --dump-hlo) or by SIGTERM, it removes what this process
    made for the run and that is still empty: the folders `make_folders` created (args.made) and the run
    directory's lock file, when this process created it. A refused --init-from then leaves no run
    directory behind, and a directory that was there before keeps only what it held. The outermost
    one makes SIGTERM raise Terminated until the loop begins (`_end_on_sigterm`), so that it
    unwinds through here instead of killing the process where it stands."""
    _training[0] = False
    ours = _end_on_sigterm(args)
    outermost = _Importing.tidy is None
    if outermost:
        _Importing.tidy = args
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if outermost:
            _Importing.tidy = None
        if not _training[0]:
            remove_made(args)


class Terminated(BaseException):
    """SIGTERM came before the training loop began (`_end_on_sigterm`). Like KeyboardInterrupt, it
    is no Exception: it unwinds through every handler to train.py's top level (stop_if_interrupted)."""


def _end_on_sigterm(args: argparse.Namespace) -> bool:
    """Make SIGTERM before the training loop begins unwind the program (Terminated) instead of
    killing it where it stands, so that `tidy_unless_trained` removes the run directory and lock it
    made; the loop installs its own handler for its steps. Once the loop has begun, and inside
    `ctrl_c_held` (a write), SIGTERM ends the process at once, as the system's default does. True
    when installed: not where another handler is (an outer tidy_unless_trained's), nor in a JAX job
    of several processes, whose distributed runtime installs its own (a C++ handler that a Python
    one must not replace later)."""
    if getattr(args, "distributed", False) or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    _Terminating.raised = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


class _Terminating:
    raised = False  # a Terminated is on its way up (a callback that swallows it resets this: _unraisable)


def _on_sigterm(signal_number: int, frame: Any) -> None:
    """SIGTERM's handler before the training loop begins (_end_on_sigterm)."""
    if _Importing.depth:  # raised once the imports are done (imports_held)
        _Importing.terminated = True
        return
    if _training[0] or _CtrlC.holds:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if not _Terminating.raised:  # a second SIGTERM (a launcher passing it on) is the same request
        _Terminating.raised = True
        raise Terminated


class _Importing:
    depth = 0  # imports_held blocks entered and not left
    terminated = False  # a SIGTERM came during them
    tidy: argparse.Namespace | None = None  # the run tidy_unless_trained tidies (a forced exit's to tidy)


@contextlib.contextmanager
def imports_held() -> Iterator[None]:
    """train.py's imports of the program and its framework: cut by a signal, an import can fail in
    pieces (numpy's C extension: two ImportError tracebacks), crash in native code, or swallow the
    KeyboardInterrupt. A Ctrl-C or a SIGTERM during them is raised once they are done
    (KeyboardInterrupt, Terminated); FORCE_PRESSES of Ctrl-C still end the program at once."""
    _Importing.depth += 1
    _CtrlC.holds += 1
    try:
        yield
    finally:
        _CtrlC.holds -= 1
        _Importing.depth -= 1
    if _Importing.terminated and not _Importing.depth and not _Terminating.raised:
        _Terminating.raised = True
        raise Terminated
    raise_if_interrupted()


def remove_made(args: argparse.Namespace) -> None:
    """Remove the lock file this process created in --out (letting go of the lock) and the folders
    `make_folders` made (args.made), innermost first; a folder that holds anything is kept."""
    out = getattr(args, "out", None)
    if out is not None:
        lock = (out / LOCK_NAME).resolve()
        if lock in _created_locks:
            with contextlib.suppress(OSError):
                lock.unlink()  # while it is held; a run that opened it meanwhile sees it go (_is_at)
            release_run_directory(out)
    for folder in reversed(getattr(args, "made", [])):
        with contextlib.suppress(OSError):
            folder.rmdir()
    args.made = []


def past_the_schedule(steps: int, end: int, resume: bool) -> str:
    """Why --steps `steps` is refused under a cosine schedule, which reaches zero at the spec's
    train.steps (`end`): a run past it would train on at learning rate 0 (rsqrt and constant
    schedules have no end), and the fix. `resume`: the hint says how to continue this run (a longer
    schedule is another spec: --allow-changes)."""
    if resume:
        how = (
            f"to continue this run on a longer schedule, compile the spec with train.steps = {steps} and resume "
            f"with --allow-changes (switchc train SPEC --steps {steps} --out RUN --resume --allow-changes)"
        )
    else:
        how = (
            f"compile the spec with train.steps = {steps} (switchc compile SPEC --set train.steps={steps}, "
            f"or switchc train SPEC --steps {steps})"
        )
    return (
        f"--steps {steps} runs past the end of the cosine schedule, which decays the learning rate to zero at "
        f"train.steps = {end}\nhint: {how}, or pass --steps {end} or fewer"
    )


# ---- Ctrl-C outside the training loop ------------------------------------------------------------

_training = [False]  # set by the loop when its steps begin (training_began); read on Ctrl-C
FORCE_PRESSES = 3  # Ctrl-Cs that end a run at once, whatever it is waiting for


class _CtrlC:
    """What catch_ctrl_c's handler knows of the Ctrl-Cs so far."""

    presses = 0  # SIGINTs received (a swallowed one delivered again is not another)
    raised = False  # a KeyboardInterrupt is on its way up (raised, and not swallowed)
    holds = 0  # depth of ctrl_c_held blocks, and 1 more for good once the run is stopping
    again = False  # the next SIGINT is a swallowed one delivered again
    previous_hook: Any = None  # sys.unraisablehook before catch_ctrl_c
    in_hook = False  # the main thread is in _unraisable, where a signal delivered again would be lost


def _on_sigint(signal_number: int, frame: Any) -> None:
    """SIGINT's handler (catch_ctrl_c)."""
    if _CtrlC.again:
        _CtrlC.again = False
    else:
        _CtrlC.presses += 1
    if _CtrlC.presses >= FORCE_PRESSES:  # whatever the run waits for (a save on a hung file system)
        began = _training[0]
        if not began and _Importing.tidy is not None:  # what the run made goes, as on the way out
            remove_made(_Importing.tidy)
        if _Parser._first_process():
            lost = (
                "a checkpoint save in flight is lost; the latest complete one is kept"
                if began
                else "no step was trained"
            )
            print(
                f"\nSIGINT {_CtrlC.presses} times: leaving now, without waiting for the work in progress ({lost}).",
                file=sys.stderr,
            )
        exit_now(128 + signal.SIGINT)
    if _CtrlC.holds or _CtrlC.raised:  # held, or the same request as the one on its way
        return
    _CtrlC.raised = True
    raise KeyboardInterrupt


def _unraisable(error: Any) -> None:
    """sys.unraisablehook: a KeyboardInterrupt (or a SIGTERM's Terminated) that a callback
    swallowed is delivered again, in silence; every other error goes to the hook there was before."""
    kind = error.exc_type if isinstance(error.exc_type, type) else None
    if kind is not None and issubclass(kind, Terminated):
        _Terminating.raised = False
        number = signal.SIGTERM
    elif kind is not None and issubclass(kind, KeyboardInterrupt):
        _CtrlC.raised, _CtrlC.again = False, True
        number = signal.SIGINT
    else:
        (_CtrlC.previous_hook or sys.__unraisablehook__)(error)
        return
    # from another thread, once the main thread has left the hook (raised in it, the signal's
    # exception would be swallowed again); raise_if_interrupted is the net
    _CtrlC.in_hook = True
    try:
        timer = threading.Timer(0.01, _deliver_again, args=(number,))
        timer.daemon = True
        with contextlib.suppress(RuntimeError):  # no new thread while the interpreter shuts down
            timer.start()
    finally:
        _CtrlC.in_hook = False


def _deliver_again(number: signal.Signals) -> None:
    """Deliver signal `number` to the main thread once more (_unraisable), as a signal sent to that
    thread: it also ends a wait the thread is in (a sleep, a join), where a signal only noted for it
    (_thread.interrupt_main) would be taken when the wait ends. It waits for the main thread to
    leave the hook first: on a busy machine the main thread can still be starting this timer's
    thread when it fires, and the handler's exception, raised in the hook, was swallowed there."""
    waited = time.monotonic() + 5.0
    while _CtrlC.in_hook and time.monotonic() < waited:
        time.sleep(0.001)
    signal.pthread_kill(threading.main_thread().ident or 0, number)


class _Outliving:
    """sys.stdout that outlives its reader: once the pipe it writes to is closed (`train.py | head`),
    what it is given goes to /dev/null, where a BrokenPipeError would have ended the run mid-step."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def _gone(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # what is still buffered, and Python's flush at exit, go there too
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def outlive_stdout() -> None:
    """Keep training when the reader of stdout goes away (a pipe to `head`, a closed log viewer):
    progress lines are for the reader; metrics.jsonl and checkpoints are the run's record."""
    if not isinstance(sys.stdout, _Outliving):
        sys.stdout = _Outliving(sys.stdout)


def catch_ctrl_c() -> None:
    """Make sure no Ctrl-C is lost, and none cuts a save in half. Python raises KeyboardInterrupt
    wherever the main thread is when the signal is handled; in a garbage-collector callback (JAX
    registers one), a finalizer or a weakref callback, Python reports it as "Exception ignored in
    ..." and carries on, and the run went on as if nothing had been pressed. Here Ctrl-C raises
    KeyboardInterrupt as before; a swallowed one prints nothing and is delivered again as soon as
    the main thread leaves the callback. Within ctrl_c_held, and once the run is stopping, Ctrl-C
    is noted, not raised; FORCE_PRESSES of them end the run at once. A program started with SIGINT
    ignored (`cmd &` in a script) keeps ignoring it.

    train.py blocks SIGINT while it imports this module (a Ctrl-C there raised KeyboardInterrupt
    out of the import, a traceback from every rank): the handler in place, it is unblocked, and a
    Ctrl-C pressed meanwhile is raised here, for train.py's top level to say in one line."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
            _CtrlC.previous_hook = sys.unraisablehook
            sys.unraisablehook = _unraisable
    finally:
        if hasattr(signal, "pthread_sigmask"):  # not on Windows
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed and no KeyboardInterrupt is on its way: it was
    held, or swallowed (catch_ctrl_c). The loops call it before every step."""
    if _CtrlC.presses and not _CtrlC.raised and not _CtrlC.holds:
        _CtrlC.raised = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Work that Ctrl-C must not cut in the middle: a checkpoint save, or the wait for one (orbax
    logs a traceback from the thread it was joining, DCP's writer is left mid-file and fails the
    save). A Ctrl-C during it is raised once it is done."""
    _CtrlC.holds += 1
    try:
        yield
    finally:
        _CtrlC.holds -= 1
    raise_if_interrupted()


def stopping() -> None:
    """The run is stopping (Ctrl-C, a NaN, a failed write): a further Ctrl-C (a second press,
    torchrun passing the first on) is noted, not raised, so that the stop ends as it began (its
    save committed, its message printed) rather than in a traceback. FORCE_PRESSES end it at once."""
    _CtrlC.holds += 1


def training_began() -> None:
    """The training loop is running its steps: it handles Ctrl-C itself from here on. A Ctrl-C
    raised before and still marked on its way was swallowed where no hook saw it (by code that
    catches everything): the loop's first `raise_if_interrupted` raises it again."""
    _training[0] = True
    _CtrlC.raised = False


def stop_if_interrupted(error: BaseException) -> None:
    """A Ctrl-C that reached train.py's top level (it came while the program imported its framework,
    read its data or compiled its step, or after the loop ended; the loop handles it in between),
    or a SIGTERM before the loop began (Terminated): one line from the first process, and exit
    status 130 (143 for SIGTERM) at once. An interrupted import can surface as another error
    (numpy's ImportError), so the error's causes are searched too. Returns, for the caller to
    re-raise, when `error` is neither.

    os._exit, not sys.exit: a compile the interrupt cut short leaves the framework's threads
    running, and an interpreter shutting down under them can crash (XLA: status 139).
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, (KeyboardInterrupt, Terminated)):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return
    name = signal.SIGTERM if isinstance(cause, Terminated) else signal.SIGINT
    if _Parser._first_process():
        when = "after the training loop ended" if _training[0] else "before training began (no step was trained)"
        print(f"\n{name.name}: stopped {when}.", file=sys.stderr)
    exit_now(128 + name)


def exit_now(status: int) -> NoReturn:
    """Flush what was printed and leave at once: no interpreter shutdown, which would wait for (or
    crash under) threads a framework left running, or for the other processes of a job."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def first_line(error: BaseException) -> str:
    """The first line of an error's text ('' for none): frameworks append C++ frames and specs."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


@contextlib.contextmanager
def stopping_at_once() -> Iterator[None]:
    """Around work whose threads outlive an error (orbax's reads: tensorstore and asyncio), which
    print "Event loop is closed" tracebacks from C++ callbacks once a read has failed, before and
    after the error reaches Python. While the work runs, what is written to stderr (file descriptor
    2, so theirs too) is held back: on success it is written out; on a SystemExit the program
    writes that error alone and leaves at once with its status, without waiting for those threads
    as an interpreter shutting down would."""
    sys.stderr.flush()
    stderr = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except SystemExit as error:
            sys.stderr.flush()
            if isinstance(error.code, str):
                os.write(stderr, (error.code + "\n").encode())
            exit_now(1 if isinstance(error.code, str) or error.code is None else int(error.code))
        finally:  # success, or an error that is not the user's: what was held back goes out
            sys.stderr.flush()
            os.dup2(stderr, 2)
            os.close(stderr)
            held.seek(0)
            sys.stderr.buffer.write(held.read())
            sys.stderr.flush()


def leave_job(error: BaseException, who: str, others: str, explained: Sequence[str] = ()) -> NoReturn:
    """One process of several failed, most often because another died first and a collective with
    it failed: say so in two lines (no traceback) and exit 1 at once, since the process group's or
    jax.distributed's teardown would wait for the dead process. `who`: "rank 0", "process 1";
    `others`: what the rest are called, "ranks" or "processes"; `explained`: what is known of the
    failure (lines; a "hint: " one as it is), said instead of pointing at the other logs."""
    said = [f"{who}: {type(error).__name__}: {first_line(error)}"]
    said += [line if line.startswith("hint: ") else f"{who}: {line}" for line in explained]
    if not explained:
        said.append(f"{who}: exiting; if this is a communication error, see the other {others}' logs")
    # one write: with PYTHONUNBUFFERED, print's separate newline lets ranks' lines interleave
    sys.stderr.write("".join(f"{line}\n" if line.startswith("hint: ") else f"error: {line}\n" for line in said))
    exit_now(1)


# ---- the run directory ------------------------------------------------------------------------------

LOCK_NAME = ".lock"
# Set by a launcher that holds the lock for the program it starts (switchc train): the lock file's
# path and the text the launcher wrote in it, a tab between them.
LOCK_ENV = "SWITCHC_RUN_LOCK"
_held: dict[Path, tuple[IO[str], str]] = {}  # lock file -> its open file and what this process wrote in it
_created_locks: set[Path] = set()  # the lock files of _held that this process created (remove_made's to remove)


def lock_run_directory(directory: Path, by: str = "") -> str | None:
    """Hold DIRECTORY/.lock for as long as this process lives; or, when another run holds it, the
    error to stop with, naming that run (None: locked, or flock does not exist here). `by` follows
    the holder's pid in what a refused run quotes (" (switchc train)").

    Two runs writing one directory would interleave their metrics and delete each other's
    checkpoints. The first process of a job takes an exclusive flock (released by the system when
    the process ends, however it ends, so no stale lock outlives a crash) and writes who it is into
    the file, which a second run quotes when it is refused. The backends' loops make every process
    of a job stop when the first is refused. A program started by a launcher that holds the lock
    for it (`lock_for_child`) runs under the launcher's lock.
    """
    if fcntl is None:
        return None
    path = directory / LOCK_NAME
    while True:
        existed = path.exists()
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as error:  # a directory this user cannot write: nothing of the run could be saved
            return _unwritable_run(directory, error)
        holder = _holder(handle)
        if holder is not None or _is_at(handle, path):
            break
        # The run that held it removed the file after we opened it (remove_made): a lock on that
        # file would lock nothing the next run opens. Take the lock of the file there now.
        handle.close()
    if holder is not None:
        handle.close()
        if os.environ.get(LOCK_ENV) == f"{path.resolve()}\t{holder.split(_AND)[0]}":  # our launcher's lock
            # Say who trains under it: should the launcher die (kill -9), its pid names no process,
            # and this one goes on holding the lock through the descriptor it inherited.
            with contextlib.suppress(OSError), path.open("a", encoding="utf-8") as note:
                note.write(f"its program: pid {os.getpid()}\n")
            return None
        message, hint = in_use(directory, holder)
        return f"error: {message}\nhint: {hint}"
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    text = f"pid {os.getpid()} on {socket.gethostname()}, since {since}{by}"
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(text + "\n")
        handle.flush()
    except OSError as error:  # a full disk
        if not existed:  # made here: --out and the folders made for it can then go (remove_made)
            with contextlib.suppress(OSError):
                path.unlink()
        handle.close()
        return _unwritable_run(directory, error)
    _held[path.resolve()] = (handle, text)
    if not existed:
        _created_locks.add(path.resolve())
    return None


def _unwritable_run(directory: Path, error: OSError) -> str:
    """lock_run_directory's error for a run directory it cannot write its lock file in."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space there, or choose another --out"
    else:
        hint = (
            "a run takes its directory's lock, also to resume or to --export-init from it: a run on read-only "
            "storage is copied to a writable place first"
        )
    return f"error: --out {directory}: cannot write {LOCK_NAME} there: {error.strerror or error}\nhint: {hint}"


def in_use(directory: Path, holder: str) -> tuple[str, str]:
    """(error, hint) when another run, `holder` (what its lock file says), is using DIRECTORY."""
    launched = " (its program's pid, should the launcher have exited)" if _AND in holder else ""
    return (
        f"another run is using {directory} ({holder})",
        f"wait for it to end, or stop it (kill -TERM PID checkpoints it first{launched}), or choose another --out",
    )


def lock_for_child(directory: Path) -> tuple[dict[str, str], tuple[int, ...]]:
    """The environment entry and the file descriptor that let a program this process starts run
    in DIRECTORY under this process's lock (taken with `lock_run_directory`): the program finds the
    lock held by the process the entry names and goes on, and the descriptor, passed to the child,
    keeps the lock held for as long as the child lives, even should this process die first.
    Nothing where this process holds no lock there (no flock on this system)."""
    path = (directory / LOCK_NAME).resolve()
    if path not in _held:
        return {}, ()
    handle, text = _held[path]
    return {LOCK_ENV: f"{path}\t{text}"}, (handle.fileno(),)


def release_run_directory(directory: Path) -> None:
    """Let go of DIRECTORY's lock, taken by this process with `lock_run_directory` (a process that
    goes on after its run, as switchc train called in-process does)."""
    held = _held.pop((directory / LOCK_NAME).resolve(), None)
    _created_locks.discard((directory / LOCK_NAME).resolve())
    if held is not None:
        held[0].close()


def run_directory_user(directory: Path) -> str | None:
    """Who holds DIRECTORY's lock ("pid N on HOST, since T"), or None when no run is using it."""
    if fcntl is None or not (directory / LOCK_NAME).is_file():
        return None
    with (directory / LOCK_NAME).open("a+", encoding="utf-8") as handle:
        return _holder(handle)  # closing the file lets go of the lock if it was free


def _is_at(handle: IO[str], path: Path) -> bool:
    """Whether the open file `handle` is still the file at `path` (not removed or replaced)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


_AND = "; "  # between the lines of a lock file, as a refused run quotes them: the holder, its program


def _holder(handle: IO[str]) -> str | None:
    """Take the lock on an open lock file; None if it was free, else what its holder wrote in it
    (and the program it started, when a launcher holds it), on one line."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        return _AND.join(line for line in handle.read().splitlines() if line.strip()) or (
            "a process that has not said which yet"
        )
    return None


# ---- resuming a run ---------------------------------------------------------------------------------

# What a complete checkpoint of each backend holds in its numbered step directory (a trailing /:
# a directory): the JAX program's orbax items, the PyTorch program's record and DCP index.
CHECKPOINT_MARKERS = {"jax": ("state/", "state/_METADATA", "meta/"), "torch": ("meta.json", ".metadata")}
BACKEND_NAMES = {"jax": "JAX (orbax)", "torch": "PyTorch (torch.distributed.checkpoint)"}


def _checkpoint_kind(path: Path) -> str | None:
    """The backend whose complete checkpoint `path` is, or None."""
    for backend, markers in CHECKPOINT_MARKERS.items():
        if all(_holds(path, marker) for marker in markers):
            return backend
    return None


def _holds(path: Path, marker: str) -> bool:
    return (path / marker).is_dir() if marker.endswith("/") else (path / marker).is_file()


def checkpoints_at(path: Path) -> tuple[str, str, Path] | None:
    """When `path` is a checkpoint (a run's checkpoints/STEP), a run's checkpoints/ holding one, or a
    run directory whose checkpoints/ holds one: (backend, what it is in words, the run directory);
    else None."""
    kind = _checkpoint_kind(path)
    if kind is not None:
        return kind, f"a {BACKEND_NAMES[kind]} checkpoint", _shown(path.absolute().parent.parent, path)
    for backend in CHECKPOINT_MARKERS:
        if latest_checkpoint(path, backend) is not None:
            return backend, f"a folder of {BACKEND_NAMES[backend]} checkpoints", _shown(path.absolute().parent, path)
        if latest_checkpoint(path / "checkpoints", backend) is not None:
            return backend, f"a run directory (with {BACKEND_NAMES[backend]} checkpoints)", path
    return None


def _shown(run: Path, given: Path) -> Path:
    """`run` as a path relative to the working directory when `given` was relative."""
    return run if given.is_absolute() else Path(os.path.relpath(run))


def no_checkpoint_to_export(out: Path) -> SystemExit:
    """--export-init with --resume in a run directory that has no checkpoint yet."""
    return SystemExit(
        f"error: --export-init with --resume writes the weights of {out}'s latest checkpoint, and "
        f"{out / 'checkpoints'} holds none yet\n"
        "hint: drop --resume for the step-0 weights, or export once the run has saved a checkpoint"
    )


def init_from_error(path: Path, error: OSError | ValueError) -> SystemExit:
    """The error (and hint) that stops a program whose --init-from FILE cannot be loaded: `error`,
    weights.load's (a WeightsError carries a hint). A checkpoint given for a weights file is told
    apart: checkpoints are no weights files, and --resume is what continues a run from them."""
    if isinstance(error, IsADirectoryError):
        found = checkpoints_at(path)
        if found is not None:
            _, what, run = found
            return SystemExit(
                f"error: --init-from {path} is {what}: checkpoints are not weights files\n"
                "hint: --init-from takes a weights file that --export-init FILE wrote; --resume continues a run "
                f"from its checkpoints (--out {run} --resume, with the program that wrote them)"
            )
    hint = getattr(error, "hint", None)
    return SystemExit(f"error: --init-from: {error}" + (f"\nhint: {hint}" if hint else ""))


# The flags every process of one run must be given alike (--out may differ: a path on each host).
AGREED_FLAGS = (
    "steps",
    "seed",
    "log_every",
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "keep",
    "resume",
    "allow_changes",
    "hardware",
)


def run_settings(args: argparse.Namespace, model: ModuleType) -> dict[str, str]:
    """What the processes of one run must agree on, as text: the program (its spec digest) and
    AGREED_FLAGS. A rank started with another --seed would train other data and init unnoticed;
    one with fewer --steps would leave the rest waiting at a collective until --timeout."""
    settings = {"the program (spec digest)": str(model.SPEC_DIGEST)}
    for name in AGREED_FLAGS:
        settings[f"--{name.replace('_', '-')}"] = str(getattr(args, name))
    return settings


def disagreement(every: Sequence[Mapping[str, str]], member: str = "rank") -> str | None:
    """The error when the processes' run_settings (one per process, in order) differ, else None.
    `member`: what the job calls one of them (torch: "rank", jax.distributed: "process")."""
    differing = [key for key in every[0] if len({settings[key] for settings in every}) > 1]
    if not differing:
        return None
    lines = "".join(
        f"\n  {key}: " + ", ".join(f"{settings[key]} on {member} {index}" for index, settings in enumerate(every))
        for key in differing
    )
    return (
        f"error: the processes of this run were started with different settings:{lines}\n"
        "hint: start every process with the same program and the same flags"
    )


# Where a complete checkpoint keeps its record (meta: step, seed, tokenizer, spec digest, spec.yaml's text) as JSON
META_FILES = {"jax": "meta/metadata", "torch": "meta.json"}


def recorded(directory: Path, backend: str, key: str) -> str | None:
    """What the newest `backend` checkpoint in `directory` records under `key` ("spec": the text of
    the spec.yaml its program was compiled from; "tokenizer"); None without a checkpoint, a
    readable record or that key."""
    value = _newest_record(directory, backend).get(key)
    return value if isinstance(value, str) and value else None


def recorded_seed(directory: Path, backend: str) -> int | None:
    """The --seed the run of the newest `backend` checkpoint in `directory` trained with; None
    without a checkpoint or a readable record."""
    value = _newest_record(directory, backend).get("seed")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _newest_record(directory: Path, backend: str) -> dict[str, Any]:
    step = latest_checkpoint(directory, backend)
    if step is None:
        return {}
    try:
        record = json.loads((directory / str(step) / META_FILES[backend]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def other_tokenizer(where: str, trained: str, tokenizer: str) -> tuple[str, str]:
    """(error, hint) for a resume whose data makes another tokenizer than `where`'s run trained with."""
    return (
        f"--resume: {where} was trained on the ids of another tokenizer ({trained}; these settings and text "
        f"make {tokenizer}): every id would now stand for other text",
        "resume with the run's data settings on the text it began with (a SentencePiece model trained here "
        "follows the training split's text: data.path, data.eval_fraction, data.eval_path); or start a new run "
        "in another --out from its weights (--export-init FILE --resume, then --init-from FILE)",
    )


def latest_checkpoint(directory: Path, backend: str) -> int | None:
    """The step of the newest complete `backend` checkpoint in `directory` (a run's checkpoints/)."""
    if not directory.is_dir():
        return None
    steps = [int(path.name) for path in directory.iterdir() if path.name.isdigit() and path.is_dir()]
    return max((step for step in steps if _checkpoint_kind(directory / str(step)) == backend), default=None)


def check_checkpoint_directory(directory: Path, backend: str) -> None:
    """Every numbered step directory in `directory` must be a complete checkpoint of this backend
    before a run writes there or resumes from it: another backend's run, or a step left empty or
    half-deleted, is refused with what it is, never overwritten or skipped. (Saves in flight live
    under other names until they are committed, and are not looked at.)"""
    if not directory.is_dir():
        return
    steps = sorted((int(path.name), path) for path in directory.iterdir() if path.name.isdigit() and path.is_dir())
    for step, path in steps:
        kind = _checkpoint_kind(path)
        if kind == backend:
            continue
        if kind is not None:
            raise SystemExit(
                f"error: {path} is a {BACKEND_NAMES[kind]} checkpoint, which this {BACKEND_NAMES[backend]} "
                "program can neither read nor overwrite\n"
                f"hint: that run was made by the {kind.upper() if kind == 'jax' else 'PyTorch'} program: resume it, or "
                "export its weights (--export-init FILE --resume), with that program; give this one another --out"
            )
        earlier = [s for s, p in steps if s < step and _checkpoint_kind(p) == backend]
        then = f"continue from step {earlier[-1]}" if earlier else "start the run afresh"
        contents = "empty" if not any(path.iterdir()) else "not a complete checkpoint"
        missing = [marker for marker in CHECKPOINT_MARKERS[backend] if not _holds(path, marker)]
        raise SystemExit(
            f"error: {path} is {contents} (no {' or '.join(missing)})\n"
            f"hint: delete it (rm -r {shlex.quote(str(path))}) to {then}"
        )


def checked_record(
    checkpoints: Any,
    step: int,
    args: argparse.Namespace,
    model: ModuleType,
    announce: bool,
    backend: str | None = None,
    tokenizer: str | None = None,
) -> Any:
    """The record (meta) of checkpoint `step` of a backend's Checkpoints, once check_resume has
    accepted it and the shapes saved in its metadata: before any array is read or anything built.
    `backend` ("jax" or "torch"): check_resume compares the optimizer states' layouts; `tokenizer`:
    the identity of this run's tokenizer (data.Examples.tokenizer), which it compares too."""
    with reading_checkpoint(checkpoints, step):
        meta, shapes = checkpoints.meta(step), checkpoints.shapes(step)
    where = f"checkpoint {checkpoints.directory / str(step)}"
    check_resume(meta, shapes, args, model, where, announce=announce, backend=backend, tokenizer=tokenizer)
    return meta


def optimizer_state_layout(settings: Mapping[str, str], backend: str) -> str:
    """The optimizer state that spec.yaml's settings (`train.optimizer.*`, as written: spec_settings)
    make a backend's program keep, in words; a checkpoint's state restores only into the same
    layout. Adafactor keeps momentum when beta1 is set, and optax's (the JAX program's) adds a
    transformation, with its state, for weight decay. Clipping keeps none (both programs clip
    outside the optimizer)."""
    name = settings.get("train.optimizer.name", "")
    if name != "adafactor":
        return name
    layout = [f"{'with' if settings.get('train.optimizer.beta1', 'null') != 'null' else 'without'} momentum"]
    if backend == "jax":
        layout.append(
            f"{'with' if float(settings.get('train.optimizer.weight_decay', '0')) else 'without'} weight decay"
        )
    return f"adafactor {', '.join(layout)}"


def other_optimizer_state(old: str, new: str, backend: str) -> tuple[str, str] | None:
    """(old's, new's) optimizer state layouts (optimizer_state_layout) when two spec.yaml texts give
    a backend's optimizer state different layouts; None when they agree or a text is empty."""
    if not (old and new):
        return None
    before, after = (optimizer_state_layout(spec_settings(text), backend) for text in (old, new))
    return None if before == after else (before, after)


@contextlib.contextmanager
def reading_checkpoint(checkpoints: Any, step: int) -> Iterator[None]:
    """Reading checkpoint `step` (record, metadata or arrays): a failure means it was damaged after it
    was committed, and stops the run with one line naming it and the step before it."""
    try:
        yield
    except Exception as error:
        where = f"checkpoint {checkpoints.directory / str(step)}"
        raise unreadable_checkpoint(where, error, checkpoints.previous(step)) from None


def unreadable_checkpoint(where: str, error: BaseException, previous: int | None) -> SystemExit:
    """The error for a checkpoint whose files cannot be read back (damaged after it was committed).
    It names the root cause: orbax wraps tensorstore's error ("Error reading <array> ... byte range
    ... not valid") in one that prints the array's slices and tensorstore's whole spec."""
    while error.__cause__ is not None:
        error = error.__cause__
    detail = first_line(error).split(" See full TensorStore details")[0]
    if len(detail) > 320:
        detail = detail[:320].rstrip() + " ..."
    if "tree structures do not match" in detail:  # orbax: the files are whole, their layout is another program's
        return SystemExit(
            f"error: --resume: {where} holds training state of another layout than this program's: {detail}\n"
            "hint: the checkpoint is not damaged (keep it): resume it with the program that wrote it, or write its "
            "weights with that program (--export-init FILE --resume) and start this one from them (--init-from FILE)"
        )
    then = f"continue from step {previous}" if previous is not None else "start the run afresh"
    return SystemExit(
        f"error: --resume: cannot read {where}: {type(error).__name__}{': ' + detail if detail else ''}\n"
        f"hint: the checkpoint is damaged; delete it to {then}"
    )


def run_identity(model: ModuleType) -> dict[str, str]:
    """What every checkpoint records of the program that wrote it: model.SPEC_DIGEST, and the text
    of spec.yaml beside model.py (empty if it was removed), so a refused resume can say what changed."""
    spec = Path(str(model.__file__)).with_name("spec.yaml")
    return {"spec_digest": model.SPEC_DIGEST, "spec": spec.read_text(encoding="utf-8") if spec.is_file() else ""}


# Settings whose value is a mapping of the user's names: one setting, whichever style spec.yaml
# writes it in (flow for a few entries, block for more), as switchc's own listing has them
# (switchc's switchc/spec/emit.py, WHOLE_MAPPINGS: a program imports nothing of switchc).
WHOLE_MAPPINGS = ("mesh.axes", "mesh.rules")

# Settings of spec.yaml in which a resumed run's program may differ from the run's and still be
# its program (none is listed as a change): train.seed, since a run's seed is the one its
# checkpoints record (meta "seed", which check_resume compares with --seed): `train.py --seed N`
# trains a spec of another train.seed with seed N, and `switchc train --resume` continues that run
# with the spec's train.seed set to N; and train.remat, which changes how a step is computed, not
# what (switchc's switchc/spec/emit.py, HOW_NOT_WHAT).
NOT_THE_RUN = ("train.seed", "train.remat")


def spec_settings(text: str) -> dict[str, str]:
    """A spec.yaml as switchc writes it (block sections indented by two, one setting per line, flow
    style for short maps and lists) -> {dotted key: the value as written}; WHOLE_MAPPINGS written
    in block style are given in flow style."""
    settings: dict[str, str] = {}
    path: list[str] = []
    key, depth = "", 0  # a flow value that yaml wrapped onto more lines continues the last key
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        if key and depth > 0:
            settings[key] += " " + stripped
            depth += stripped.count("{") + stripped.count("[") - stripped.count("}") - stripped.count("]")
            continue
        name, _, value = stripped.partition(":")
        path[(len(line) - len(stripped)) // 2 :] = [name]
        value = value.strip()
        key = ".".join(path) if value else ""
        if key:
            settings[key] = value
            depth = value.count("{") + value.count("[") - value.count("}") - value.count("]")
    whole: dict[str, str] = {}
    entries: dict[str, list[str]] = {}  # a mapping spec.yaml wrote in block style -> its entries
    for key, value in settings.items():
        owner = next((name for name in WHOLE_MAPPINGS if key.startswith(name + ".")), None)
        if owner is None:
            whole[key] = value
        else:
            whole.setdefault(owner, "")  # its place in the order, where its first entry stood
            entries.setdefault(owner, []).append(f"{key.removeprefix(owner + '.')}: {value}")
    for owner, items in entries.items():
        whole[owner] = "{" + ", ".join(items) + "}"
    return whole


def changed_settings(old: str, new: str) -> list[str]:
    """`key: old in the checkpoint, new in this program` for each setting in which two spec.yaml texts differ."""
    before, after = spec_settings(old), spec_settings(new)
    keys = [*before, *(key for key in after if key not in before)]
    return [
        f"{key}: {before.get(key, '(absent)')} in the checkpoint, {after.get(key, '(absent)')} in this program"
        for key in keys
        if before.get(key) != after.get(key)
    ]


def check_resume(
    meta: dict[str, Any],
    shapes: Mapping[str, Sequence[int]],
    args: argparse.Namespace,
    model: ModuleType,
    where: str,
    *,
    announce: bool = True,
    backend: str | None = None,
    tokenizer: str | None = None,
) -> None:
    """A checkpoint continues the run that wrote it: the same --seed, and a program built from the
    same spec (model.SPEC_DIGEST; the settings in model.EXTENDABLE may differ, and NOT_THE_RUN's:
    a spec.yaml that differs from the run's in train.seed alone is the run's, its seed compared as
    the checkpoint records it). Another
    spec's checkpoint is refused unless --allow-changes, which prints what changed and goes on if
    every parameter keeps its shape (`shapes`: IR name -> global shape, as saved) and, given the
    `backend`, the optimizer state its layout (another optimizer's state cannot be restored).
    Checkpoints written before SPEC_DIGEST existed record none; only their shapes are compared.
    A run's ids come from its tokenizer (`tokenizer`, as checkpoints record it): another one is
    refused even with --allow-changes. `announce`: print the note (one process of a job does)."""
    exporting = getattr(args, "export_init", None) is not None  # reads the weights only: any seed, mesh, ...
    if meta["seed"] != args.seed and not exporting:
        raise SystemExit(
            f"error: the checkpoint was trained with --seed {meta['seed']}, not {args.seed}: a resumed run keeps "
            f"its seed (its data order and noise)\nhint: add --seed {meta['seed']} (with switchc train --resume: "
            f"--set train.seed={meta['seed']})"
        )
    trained = meta.get("tokenizer")  # checkpoints of earlier programs record none
    if tokenizer and trained and trained != tokenizer and not exporting:  # not even with --allow-changes
        error, hint = other_tokenizer(where, trained, tokenizer)
        raise SystemExit(f"error: {error}\nhint: {hint}")
    recorded = meta.get("spec_digest")
    if recorded is None or recorded == model.SPEC_DIGEST:
        _check_shapes(shapes, model, where)
        return
    old, new = meta.get("spec", ""), run_identity(model)["spec"]
    differing = {line.split(":")[0]: line for line in changed_settings(old, new)}
    changes = [line for key, line in differing.items() if key not in (*model.EXTENDABLE, *NOT_THE_RUN)]
    if old and new and not changes and "train.seed" in differing:
        # SPEC_DIGEST hashes train.seed with the other settings, so the digests differ; the run's
        # seed is the checkpoint's, which --seed (the spec's train.seed by default) matched above
        _check_shapes(shapes, model, where)
        return
    if changes:
        listing = "".join(f"\n  {line}" for line in changes)
    elif old and new:
        listing = "\n  (no setting of spec.yaml differs: the two programs were made by different switchc versions)"
    else:
        listing = "\n  (spec.yaml is missing beside this program or in the checkpoint: the settings cannot be listed)"
    if args.allow_changes or exporting:
        _check_shapes(shapes, model, where, f"\nthe settings that differ from the run's:{listing}")
        other = None if exporting or backend is None else other_optimizer_state(old, new, backend)
        if other is not None:
            raise SystemExit(
                f"error: --resume --allow-changes: {where} holds the optimizer state of {other[0]}; this program's "
                f"optimizer ({other[1]}) keeps other state, which the checkpoint's cannot become:{listing}\n"
                "hint: keep the run's optimizer settings; or start a new run from its weights: write them with the "
                "run's own program (train.py --export-init FILE --resume --out RUN) and start this one with "
                "--init-from FILE and another --out"
            )
        if announce and exporting:
            print(
                f"note: {where} was written by a program of other settings (its weights fit):{listing}", file=sys.stderr
            )
        elif announce:
            print(f"note: --allow-changes: {where} continues with other settings:{listing}", file=sys.stderr)
        return
    raise SystemExit(
        f"error: --resume: {where} was written by a program built from another spec (spec digest {recorded}, "
        f"this program's {model.SPEC_DIGEST}):{listing}\n"
        "hint: resume with a program compiled from the run's spec; or add --allow-changes to continue the run "
        "with this program's settings; or choose another --out"
    )


def _check_shapes(shapes: Mapping[str, Sequence[int]], model: ModuleType, where: str, why: str = "") -> None:
    """Every parameter of model.PARAMS is in the checkpoint at its shape, and nothing else is.
    `why`: lines the error adds after the shapes (what changed in the spec)."""
    wanted = {name: shape for name, (shape, _, _) in model.PARAMS.items()}
    wrong = shape_differences(shapes, wanted, "in the checkpoint", "in this program")
    if wrong:
        raise SystemExit(
            f"error: --resume: {where} does not fit this program's model:"
            + "".join(f"\n  {line}" for line in wrong)
            + f"{why}\nhint: --allow-changes continues a run with other training settings (learning rate, "
            "schedule, clipping); a model with other shapes is a new run: choose another --out"
        )


def shape_differences(
    old: Mapping[str, Sequence[int]], new: Mapping[str, Sequence[int]], old_where: str, new_where: str, shown: int = 8
) -> list[str]:
    """`name: OLD SHAPE OLD_WHERE, NEW SHAPE NEW_WHERE` for each parameter whose shape differs or that
    one side lacks ('absent'), new's names first; at most `shown` lines, then '... and N more'."""
    before = {name: tuple(shape) for name, shape in old.items()}
    after = {name: tuple(shape) for name, shape in new.items()}
    wrong = [
        f"{name}: {before.get(name, 'absent')} {old_where}, {after.get(name, 'absent')} {new_where}"
        for name in [*after, *(name for name in before if name not in after)]
        if before.get(name) != after.get(name)
    ]
    return wrong[:shown] + ([f"... and {len(wrong) - shown} more"] if len(wrong) > shown else [])
