"""Model weights as a file of flat arrays keyed by IR parameter name. Runtime support, numpy only.

Copied verbatim into every generated program (JAX and PyTorch alike), so a weights file written
by one backend loads into the other: `train.py --export-init FILE` writes the step-0 weights,
`train.py --init-from FILE` starts training from them.

The format is safetensors (https://github.com/huggingface/safetensors): a small JSON header of
names, dtypes, shapes and offsets, then the raw little-endian data; framework-neutral, mmap-able,
and loaded without executing code. In a switchc weights file:

- every tensor is named by its IR parameter name, the key of the program's PARAMS table in
  model.py (e.g. "encoder/0/attention/q"), and has the shape PARAMS gives it: the same in the JAX
  and the PyTorch program of a spec (per-head attention kernels [d_model, heads, d_kv], expert
  kernels [experts, d_model, d_ff], ...). Nothing else is in the file, and nothing is missing.
- every tensor is float32. A bfloat16 model's weights are widened on save (losslessly) and
  narrowed back by the program that loads them, so numpy needs no bfloat16 type.
- every value is finite: a file holding NaN or Inf is refused on load (it would stop the run at
  its first step).
- the header's metadata holds {"format": "switchc-weights", "version": "1"} and whatever the
  writer adds: the programs add "backend" and where the weights came from (`provenance`): "seed",
  or for weights that --init-from read, "init_from" (that file's name) and "init_from_backend"
  and "init_from_seed" (what its own metadata says, where it says it), or for a checkpoint's
  weights (--export-init with --resume), "checkpoint" (its directory), "step" and "seed".

`save(path, params)` writes a file; `load(path, params_table)` reads one and checks it against a
PARAMS table, naming every missing, unexpected or misshapen tensor. A WeightsError's `hint` says
what to do about it (None where the message says it). Needs the `safetensors`
package (imported only when a weights file is read or written).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "switchc-weights"
VERSION = "1"
# How many names an error lists before it says "... and N more".
_SHOWN = 8


# What to do about weights that do not fit the model (their names or shapes).
SAME_SPEC = "export the weights from a program compiled from the same spec: the same model shapes"
# What to do about a damaged file.
EXPORT_AGAIN = "export the weights again (train.py --export-init FILE)"


class WeightsError(ValueError):
    """A weights file that does not fit the program: wrong names, shapes, format or values.
    `hint`: what to do about it, or None."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading or writing a weights file needs the safetensors package: pip install safetensors"
        ) from e
    return safetensors.numpy


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check(params: Mapping[str, Any], params_table: Mapping[str, Any], source: str = "weights") -> None:
    """Raise WeightsError unless `params` has exactly the names of `params_table`, at its shapes.

    params_table: a program's PARAMS, name -> (shape, logical axes, init std); only the shape is
    read (an entry may also be the bare shape).
    """
    problems = []
    missing = [name for name in params_table if name not in params]
    unexpected = [name for name in params if name not in params_table]
    if missing:
        problems.append(f"missing {len(missing)} parameter(s): {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected name(s): {_listed(unexpected)}")
    misshapen = []
    for name, entry in params_table.items():
        if name not in params:
            continue
        want = tuple(entry[0]) if entry and isinstance(entry[0], tuple | list) else tuple(entry)
        got = tuple(np.shape(params[name]))
        if got != want:
            misshapen.append(f"{name} is {list(got)}, the model wants {list(want)}")
    if misshapen:
        problems.append(f"{len(misshapen)} shape mismatch(es): {_listed(misshapen)}")
    if problems:
        raise WeightsError(
            f"{source} do not fit this model (the model has {len(params_table)} parameters): " + "; ".join(problems),
            SAME_SPEC,
        )


def save(
    path: str | os.PathLike[str],
    params: Mapping[str, Any],
    params_table: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `params` (IR name -> array: numpy, JAX or anything np.asarray takes) to `path`.

    Arrays are written as float32 in PARAMS order when `params_table` is given (then the names and
    shapes are checked first), else in the dict's order. metadata: extra header strings.
    """
    if params_table is not None:
        check(params, params_table, source="the weights to save")
        names = list(params_table)
    else:
        names = list(params)
    arrays = {name: np.ascontiguousarray(np.asarray(params[name], dtype=np.float32)) for name in names}
    header = {"format": FORMAT, "version": VERSION, **dict(metadata or {})}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb"):  # created as any new file is (the umask's mode); safetensors would make it 0600
            mode = os.stat(tmp).st_mode
        _safetensors().save_file(arrays, tmp, metadata=header)
        os.chmod(tmp, mode)
        os.replace(tmp, path)  # never a half-written file at `path`
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The header metadata of a weights file (format, version and what the writer added)."""
    return _open(path, tensors=False)[0]


def _provenance(
    backend: str,
    seed: int,
    init_from: str | os.PathLike[str] | None = None,
    checkpoint: tuple[str | os.PathLike[str], int] | None = None,
) -> tuple[dict[str, str], str]:
    """(metadata, words) of the weights a program exports: a checkpoint's (its directory and
    step, of a run seeded with `seed`), or step-0 weights made by `backend`'s init with `seed`,
    or, with `init_from`, read from that weights file (the seed made none of them). The metadata
    then names the file ("init_from") and passes on what the file's own metadata says of them
    ("init_from_backend": the program that wrote it; "init_from_checkpoint" and "init_from_step":
    the checkpoint they were trained to, or else "init_from_seed": the seed whose init they are,
    where known). The words complete "wrote the step-0 weights (WORDS) to FILE"."""
    if checkpoint is not None:
        directory, step = checkpoint
        meta = {"backend": backend, "checkpoint": os.fspath(directory), "step": str(step), "seed": str(seed)}
        return meta, f"checkpoint {os.fspath(directory)}"
    if init_from is None:
        return {"backend": backend, "seed": str(seed)}, f"seed {seed}"
    source = metadata(init_from)
    name = os.path.basename(os.fspath(init_from))
    meta = {"backend": backend, "init_from": name}
    details = []
    if "backend" in source:
        meta["init_from_backend"] = source["backend"]
        details.append(f"written by the {source['backend']} program")
    # Where the file's weights were made, passed on through any chain of re-exports: a checkpoint's
    # (its directory and step), else a seed's init.
    saved = source.get("checkpoint", source.get("init_from_checkpoint"))
    trained_to = source.get("step", source.get("init_from_step"))
    made_by = source.get("seed", source.get("init_from_seed"))
    if saved is not None:
        meta["init_from_checkpoint"] = saved
        details.append(f"from checkpoint {saved}")
        if trained_to is not None:
            meta["init_from_step"] = trained_to
    elif made_by is not None:
        meta["init_from_seed"] = made_by
        details.append(f"seed {made_by}")
    return meta, f"from {name}" + (f": {', '.join(details)}" if details else "")


def provenance(
    backend: str,
    seed: int,
    init_from: str | os.PathLike[str] | None = None,
    checkpoint: tuple[str | os.PathLike[str], int] | None = None,
    architecture: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], str]:
    """`_provenance`'s (metadata, words), the metadata with "architecture": the program's
    ARCHITECTURE as JSON (what the weights compute besides their shapes; see architecture_note)."""
    meta, words = _provenance(backend, seed, init_from, checkpoint)
    if architecture is not None:
        meta["architecture"] = json.dumps(dict(architecture), sort_keys=True)
    return meta, words


def architecture_note(path: str | os.PathLike[str], architecture: Mapping[str, Any]) -> str | None:
    """A note when the weights file at `path` was exported by a program whose ARCHITECTURE differs
    from `architecture` (this program's) in some setting: its weights fit the shapes, so they load,
    but they computed something else there (another activation, dtype, ...). None when the file
    records no architecture (written otherwise) or the same one."""
    recorded = metadata(path).get("architecture")
    if recorded is None:
        return None
    try:
        theirs = json.loads(recorded)
    except ValueError:
        return None
    differ = [
        f"{key} {json.dumps(theirs[key])} there, {json.dumps(value)} here"
        for key, value in architecture.items()
        if key in theirs and theirs[key] != value
    ]
    if not differ:
        return None
    return (
        f"note: {path} was exported by a program of another model ({'; '.join(differ)}); its weights fit this "
        "model's shapes, so they load"
    )


def _damage(path: str | os.PathLike[str]) -> str | None:
    """Why a file safetensors refused looks like a safetensors file cut short or altered (its first
    bytes begin one: an 8-byte header length, then the JSON header), with its size against the size
    its header gives; None when it does not begin as one (another kind of file)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        begun = f.read(1) == b"{"
        if size == 0:
            detail = ""
        elif not begun:
            return None
        elif 8 + length > size:
            detail = f", fewer than the {8 + length} of its header alone"
        else:
            f.seek(8)
            try:
                header = json.loads(f.read(length))
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
                detail = f", where its header describes {8 + length + end} bytes"
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                detail = ", and its header cannot be read"
    return f"{path} is truncated or damaged ({size} bytes{detail}): not a safetensors file that can be read"


def _open(path: str | os.PathLike[str], tensors: bool = True) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, arrays) of a safetensors file (no arrays unless `tensors`); WeightsError when it is not one."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a weights file (one that --export-init wrote)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    _safetensors()
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            arrays = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}  # noqa: SIM118 - not a dict
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError, ValueError)
        if not isinstance(e, OSError | ValueError) and type(e).__name__ != "SafetensorError":
            raise
        damage = _damage(path)
        if damage is not None:
            raise WeightsError(damage, EXPORT_AGAIN) from e
        raise WeightsError(f"{path} is not a safetensors file: {e}") from e
    return meta, arrays


def load(path: str | os.PathLike[str], params_table: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Read a weights file: IR name -> float32 array, in PARAMS order, checked against `params_table`.

    Raises WeightsError (naming the file and each problem) when the file is not a switchc weights
    file, is truncated, its names or shapes differ from the table's, or a tensor holds NaN or Inf;
    FileNotFoundError when there is no file.
    """
    meta, arrays = _open(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(
            f"{path} is a safetensors file but not switchc weights: its header's metadata is {meta}, without "
            f'"format": "{FORMAT}" (a file written otherwise, with the right names and shapes, loads once saved '
            f'with metadata={{"format": "{FORMAT}", "version": "{VERSION}"}}: runtime/weights.py)'
        )
    if meta.get("version") != VERSION:
        raise WeightsError(f"{path} has switchc weights format version {meta.get('version')}; this reads {VERSION}")
    check(arrays, params_table, source=f"the weights in {path}")
    out = {}
    for name in params_table:
        array = arrays[name]
        if array.dtype != np.float32:
            raise WeightsError(f"{path}: {name} is {array.dtype}; switchc weights are float32")
        out[name] = array
    bad = {name: int(array.size - np.count_nonzero(np.isfinite(array))) for name, array in out.items()}
    named = [f"{name} ({count} of {out[name].size} values)" for name, count in bad.items() if count]
    if named:
        raise WeightsError(
            f"{path} holds NaN or Inf: {len(named)} tensor(s) are not finite: {_listed(named)}",
            "these weights cannot train; export them again from a run or seed whose weights are finite "
            "(train.py --export-init FILE)",
        )
    return out
