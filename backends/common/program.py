"""Backend-neutral assembly of a generated program: its runtime/ folder, the launcher code of its
train.py, the checks every backend makes of a spec, and the file set.

A program is model.py (the backend's lowering), train.py (the backend's docstring of launch
commands over the launcher below), runtime/ (the backend's runtime modules plus COMMON_MODULES,
copied verbatim, and an __init__.py of its own), and spec.yaml. The runtime modules import the
common ones as siblings (`from . import flags`), as they are in a program; inside switchc, each
runtime package's __init__.py gives backends/common's modules as its own. This module runs inside
switchc; it is not copied into programs.
"""

from __future__ import annotations

import shlex
import textwrap
from importlib import resources
from pathlib import PurePath
from types import SimpleNamespace

from switchc.analysis import builtin_profiles
from switchc.errors import Diagnostic, UserError
from switchc.spec import Spec
from switchc.spec.checks import OVERRIDE_SOURCE_NAME
from switchc.spec.emit import to_yaml

from .codegen import call_lines, config_values, docstring_text, literal
from .data import shape_problem

# backends/common modules every program carries in runtime/ (standard library and numpy only)
COMMON_MODULES = ("data.py", "flags.py", "host.py", "metrics.py", "weights.py", "routing.py")


def runtime_files(package: str, modules: tuple[str, ...], summary: str) -> dict[str, str]:
    """runtime/<name> -> text: `modules` of the backend's runtime `package`, then COMMON_MODULES,
    and runtime/__init__.py, its docstring `summary` (the package's own __init__.py is switchc's)."""
    files = {"runtime/__init__.py": f'"""{summary}"""\n'}
    runtime = resources.files(package)
    for name in modules:
        files[f"runtime/{name}"] = (runtime / name).read_text(encoding="utf-8")
    common = resources.files("switchc.backends.common")
    for name in COMMON_MODULES:
        files[f"runtime/{name}"] = (common / name).read_text(encoding="utf-8")
    return files


def program_config(spec: Spec) -> SimpleNamespace:
    """The values of the program's model.CONFIG (codegen.config_values), for runtime/data.py
    called from switchc."""
    return SimpleNamespace(**{name: value for _, items in config_values(spec) for name, value in items})


def evaluates(spec: Spec) -> bool:
    """Whether the spec has text to evaluate on: a held-out share of data.path, or data.eval_path."""
    return spec.data.eval_fraction > 0 or spec.data.eval_path is not None


def check_data(spec: Spec) -> None:
    """What runtime/data.py needs of the spec's shapes (its `shape_problem`), as a located error when
    the program is made; the program checks the same when it starts. The error is at the setting the
    hint names, with a note at each related setting written elsewhere (such as an inputs_length given
    with --set that makes the built-in spec's targets_length too short)."""
    problem = shape_problem(program_config(spec))
    if problem is None:
        return
    setting, error, hint, related = problem
    span = spec.span(setting)
    notes = tuple(
        (f"{other} is set here", spec.span(other))
        for other in related
        if not spec.is_default(other) and (spec.is_default(setting) or spec.span(other).source is not span.source)
    )
    raise UserError([Diagnostic(error, span, hint, notes)])


def train_script(spec: Spec, docstring: str, *, import_note: str = "", evaluate_also: str = "") -> str:
    """train.py: `docstring` (what the program needs, its launch commands and flags), then main().

    import_note: a comment on `import model`; evaluate_also: a further condition (on `args`) for
    loading the held-out split, beside --eval-every > 0 (which a spec without one refuses).
    """
    note = f"  # {import_note}" if import_note else ""
    # without a held-out split --eval-every defaults to 0 and refuses any other value (flags.check)
    held_out = [] if evaluates(spec) else ["held_out=False"]
    # a cosine schedule ends at train.steps: a --steps past it is refused with the other flags (flags.check)
    cosine = ["cosine=True"] if spec.train.optimizer.schedule == "cosine" else []
    # --hardware takes model.PEAK_FLOPS's profile names, known before model.py is imported
    hardware = literal(tuple(sorted(builtin_profiles())))
    parse = "\n".join(
        call_lines(
            "args = parse_args",
            [
                "argv",
                "__doc__",
                f"default_steps={spec.train.steps}",
                f"default_seed={spec.train.seed}",
                *held_out,
                *cosine,
                f"hardware={hardware}",
            ],
        )
    )
    also = f" and {evaluate_also}" if evaluate_also else ""
    return f'''"""{docstring}"""

import signal
import sys

# A Ctrl-C while the program's own helpers load (the line below) waits, blocked, for catch_ctrl_c()
# to take it: it is then the one line of a Ctrl-C before training, not a traceback from the import.
if hasattr(signal, "pthread_sigmask"):  # not on Windows
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})

from runtime.flags import Terminated, catch_ctrl_c, imports_held, stop_if_interrupted, tidy_unless_trained  # noqa: E402


def main(argv: list[str]) -> None:
    # Ctrl-C (and SIGTERM, once the flags are read) waits for the imports, then is one line (below):
    # cut by a signal, a framework's import can fail, crash in native code, or swallow it.
    with imports_held():
        from runtime.loop import parse_args

{parse}
    with tidy_unless_trained(args):  # a run that stops before its first step leaves no folder it made
        with imports_held():
            import model{note}
            from runtime import data, loop

        evaluate = args.eval_every > 0{also}
        eval_data = data.dataset(model.CONFIG, "eval") if evaluate else None
        loop.run(model, data.dataset(model.CONFIG, seed=args.seed), args, eval_data)


if __name__ == "__main__":
    try:
        catch_ctrl_c()  # and lets through a Ctrl-C blocked above
        main(sys.argv[1:])
    except (KeyboardInterrupt, Terminated, ImportError) as error:  # Ctrl-C or SIGTERM while starting: one line
        stop_if_interrupted(error)
        raise
'''


def made_from(spec: Spec, backend: str, beside: str = "") -> str:
    """The header's sentence on how the program was made: the spec file's name, not the path it was
    given by (a program is the same whichever directory it was compiled from), and the --set
    overrides applied to it, quoted for a shell; wrapped to the header's width. `beside`: more on
    the files beside it."""
    source = spec.origin.source.name
    name = PurePath(source).name
    where = f"the built-in spec {name}" if source.startswith("<builtin>") else docstring_text(name)
    spans = (*spec.origin.value_spans.values(), *spec.origin.key_spans.values())
    given = next((span.source for span in spans if span.source.name == OVERRIDE_SOURCE_NAME), None)
    if given is not None:
        overrides = (f"--set {shlex.quote(line.removeprefix('--set '))}" for line in given.lines)
        where += " with " + docstring_text(" ".join(overrides))
    sentence = f"Made by `switchc compile --backend {backend}` from {where}; spec.yaml beside this file is the "
    sentence += f"resolved spec{beside}."
    return textwrap.fill(sentence, width=100, break_on_hyphens=False, break_long_words=False)


def tokenizer_needs(spec: Spec) -> str:
    """The header's line on what the spec's tokenizer needs beyond the listed packages ('' for the
    byte tokenizer): runtime/data.py imports sentencepiece to train or load the model."""
    return (
        "\nThis spec's SentencePiece tokenizer also needs sentencepiece."
        if spec.data.tokenizer == "sentencepiece"
        else ""
    )


def title(spec: Spec) -> str:
    """What the program trains, for the first line of its header."""
    return "a Switch Transformer" if spec.moe is not None else "a dense T5"


# The style the generated code keeps, shipped with it: `ruff format --check .` and `ruff check .`
# in a program's folder pass (tests/backends/programs.py checks it on every program it compiles).
RUFF_TOML = """\
# How this program is formatted and linted: `ruff format --check .` and `ruff check .` pass here.
line-length = 120
target-version = "py311"

[lint]
select = ["E", "F", "W", "B", "I"]

[lint.isort]
known-first-party = ["model", "runtime"]
"""


def program_files(spec: Spec, *, train: str, model: str, runtime: dict[str, str]) -> dict[str, str]:
    """Every file of a program, path -> text, in path order."""
    check_data(spec)
    files = {"train.py": train, "model.py": model, "spec.yaml": to_yaml(spec), "ruff.toml": RUFF_TOML, **runtime}
    return dict(sorted(files.items()))
