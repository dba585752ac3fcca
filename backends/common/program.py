"""Backend-neutral assembly of a generated program: its runtime/ folder, the launcher code of its
train.py, the checks every backend makes of a spec, and the file set.

A program is model.py (the backend's lowering), train.py (the backend's docstring of launch
commands over the launcher below), runtime/ (the backend's runtime package plus COMMON_MODULES,
copied verbatim), and spec.yaml. This module runs inside switchc; it is not copied into programs.
"""

from __future__ import annotations

from importlib import resources

from switchc.errors import UserError
from switchc.spec import Spec
from switchc.spec.emit import to_yaml

from .data import BYTE_OFFSET, EXTRA_IDS, corrupted_lengths, noise_spans, raw_length_for

# backends/common modules every program carries in runtime/ (standard library and numpy only)
COMMON_MODULES = ("data.py", "flags.py", "host.py", "metrics.py", "weights.py", "routing.py")


def runtime_files(package: str, modules: tuple[str, ...]) -> dict[str, str]:
    """runtime/<name> -> text: `modules` of the backend's runtime `package`, then COMMON_MODULES."""
    files = {}
    runtime = resources.files(package)
    for name in modules:
        files[f"runtime/{name}"] = (runtime / name).read_text(encoding="utf-8")
    common = resources.files("switchc.backends.common")
    for name in COMMON_MODULES:
        files[f"runtime/{name}"] = (common / name).read_text(encoding="utf-8")
    return files


def check_data(spec: Spec) -> None:
    """What runtime/data.py needs of the spec's shapes, as located errors when the program is made
    (the program checks the same when it starts, where the corpus itself may still fall short)."""
    data, train = spec.data, spec.train
    if data.tokenizer == "byte" and spec.model.vocab_size < BYTE_OFFSET + 256 + 1:
        raise UserError.at(
            spec.span("model.vocab_size"),
            f"the byte tokenizer needs vocab_size >= {BYTE_OFFSET + 256 + 1} (3 specials, 256 bytes, 1 sentinel), "
            f"not {spec.model.vocab_size}",
            f"set model.vocab_size to at least {BYTE_OFFSET + 256 + 1}, or use data.tokenizer: sentencepiece",
        )
    if data.objective == "prefix_lm":
        for key in ("inputs_length", "targets_length"):
            if getattr(train, key) < 2:
                raise UserError.at(
                    spec.span(f"train.{key}"),
                    f"prefix_lm needs {key} >= 2 (a token and EOS on either side of its split), "
                    f"not {getattr(train, key)}",
                    f"set train.{key} to 2 or more",
                )
        return
    raw = raw_length_for(train.inputs_length, data.noise_density, data.mean_noise_span)
    _, targets = corrupted_lengths(raw, data.noise_density, data.mean_noise_span)
    if targets > train.targets_length:
        raise UserError.at(
            spec.span("train.targets_length"),
            f"span corruption of the {raw} tokens that inputs_length {train.inputs_length} holds makes {targets} "
            f"target tokens, more than targets_length {train.targets_length}",
            f"set train.targets_length to at least {targets}, or lower data.noise_density",
        )
    _, spans = noise_spans(raw, data.noise_density, data.mean_noise_span)
    sentinels = EXTRA_IDS if data.tokenizer == "sentencepiece" else spec.model.vocab_size - BYTE_OFFSET - 256
    if spans > sentinels:
        raise UserError.at(
            spec.span("train.inputs_length"),
            f"span corruption of {raw} tokens makes up to {spans} noise spans, but the {data.tokenizer} tokenizer "
            f"has {sentinels} sentinel ids",
            "shorten train.inputs_length, raise data.mean_noise_span"
            + (", or raise model.vocab_size (every id above 258 is a sentinel)" if data.tokenizer == "byte" else ""),
        )


def train_script(spec: Spec, docstring: str, *, import_note: str = "", evaluate_also: str = "") -> str:
    """train.py: `docstring` (what the program needs, its launch commands and flags), then main().

    import_note: a comment on `import model`; evaluate_also: a further condition (on `args`) for
    loading the held-out split, beside --eval-every > 0 and a spec that has one.
    """
    note = f"  # {import_note}" if import_note else ""
    also = f" and {evaluate_also}" if evaluate_also else ""
    return f'''"""{docstring}"""

import sys

from runtime.loop import parse_args


def main(argv: list[str]) -> None:
    args = parse_args(argv, __doc__, default_steps={spec.train.steps}, default_seed={spec.train.seed})
    import model{note}
    from runtime import data, loop

    evaluate = args.eval_every > 0 and model.CONFIG.eval_fraction > 0{also}
    eval_data = data.dataset(model.CONFIG, "eval") if evaluate else None
    loop.run(model, data.dataset(model.CONFIG), args, eval_data)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def program_files(spec: Spec, *, train: str, model: str, runtime: dict[str, str]) -> dict[str, str]:
    """Every file of a program, path -> text, in path order."""
    check_data(spec)
    files = {"train.py": train, "model.py": model, "spec.yaml": to_yaml(spec), **runtime}
    return dict(sorted(files.items()))
