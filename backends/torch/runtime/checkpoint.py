"""Checkpoints of a generated PyTorch program, on torch.distributed.checkpoint (DCP). Runtime support.

One checkpoint per saved step, OUT/checkpoints/<step>/:

    __<rank>_0.distcp   what rank <rank> wrote: its shards of the split parameters (its experts,
                        its heads, d_ff units and vocabulary rows) and of their optimizer state;
                        a tensor that several ranks hold whole (a dense parameter, Adam's step
                        count) is written once, by one of them
    .metadata           DCP's index: each tensor's global shape and where each of its chunks lies
    meta.json           the step, the seed, the examples seen, the tokenizer, the mesh, and the
                        program's spec digest and spec.yaml text (flags.run_identity): --resume
                        checks them (written by rank 0)

Each parameter is saved as a DTensor over the DeviceMesh (placements from parallel.py: Shard(d)
on the mesh axes that split dim d, Replicate on the rest), so the files hold whole, mesh-free
tensors in pieces: DCP loads them onto the mesh it is given, piece by piece.

Nothing else is needed to resume: batch `step` of the data is a function of (seed, step) (see
data.py), and every random number of a step (dropout, router jitter) comes from a stream named by
(seed + 1, step, ...) (layers.Stream), not from generator state. Nothing draws from torch's global
generator. A resumed run therefore sees the batches and the noise an uninterrupted one would and,
on CPU, computes the same bits.

Saves are atomic. Every rank writes into <step>.tmp/; after a barrier, rank 0 adds meta.json,
syncs, and renames <step>.tmp/ to <step>/ (one rename: the checkpoint appears whole or not at all);
a second barrier keeps every rank from going on before it exists. A process killed during a save
leaves <step>.tmp/ behind, which latest_step() ignores and the next run deletes: the previous
checkpoint stays the latest. The directory must be one file system that every rank sees (DCP's
FileSystemWriter needs that too).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from .layers import ir_name
from .optim import Adafactor
from .parallel import Mesh

TEMPORARY = ".tmp"  # suffix of a checkpoint being written (never a step number)
META = "meta.json"

Placement = Sequence[tuple[str, ...]]  # per dim of a tensor, the mesh axes splitting it


def _distributed_job() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence DCP's warning that a single process saves without a process group (that is meant)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _barrier() -> None:
    if _distributed_job():
        dist.barrier()


@contextmanager
def _unwrapped(everything: bool) -> Iterator[None]:
    """What a DCP call raised, as the exception a rank raised: DCP wraps each rank's in a
    CheckpointException (a BaseException), which the loop would not know. Ctrl-C is always handed on
    as the KeyboardInterrupt it is (the loop's stop; an unfinished save stays <step>.tmp/, so the
    previous checkpoint remains the latest); with `everything`, any failure is (a damaged checkpoint
    read back: flags.reading_checkpoint makes it one line)."""
    try:
        yield
    except CheckpointException as error:
        for raised, _ in error.failures.values():
            if everything or isinstance(raised, KeyboardInterrupt):
                raise raised from None
        raise


def _sync_directory(path: Path) -> None:
    """fsync a directory, so that a rename inside it survives a crash of the machine too."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---- what is saved -------------------------------------------------------------------------------


def _distributed(value: torch.Tensor, placement: Placement, mesh: Mesh) -> Any:
    """This rank's shard as a DTensor of the whole tensor (the shard itself without a DeviceMesh)."""
    if mesh.device_mesh is None:
        return value
    from torch.distributed.tensor import DTensor, Replicate, Shard

    placements = []
    for axis in mesh.axes:
        dims = [dim for dim, axes in enumerate(placement) if axis in axes]
        placements.append(Shard(dims[0]) if dims else Replicate())
    shape = [size * mesh.size(axes) for size, axes in zip(value.shape, placement, strict=True)]
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(
        value, mesh.device_mesh, placements, run_check=False, shape=torch.Size(shape), stride=stride
    )


def _state_placement(
    key: str, value: torch.Tensor, param: torch.Tensor, placement: Placement, group: Mapping[str, Any], mesh: Mesh
) -> Placement | None:
    """Where an optimizer-state tensor of `param` lies: like the parameter when it has its shape,
    like the parameter less the averaged dim for Adafactor's factored moments; None: replicated."""
    if value.shape == param.shape:
        return placement
    if key in ("v_row", "v_col"):
        whole = [size * mesh.size(axes) for size, axes in zip(param.shape, placement, strict=True)]
        factored = Adafactor.factored_dims(whole, group["min_dim_size_to_factor"])
        assert factored is not None, f"{key} of an unfactored parameter"
        d1, d0 = factored
        dropped = d0 if key == "v_row" else d1
        return tuple(axes for dim, axes in enumerate(placement) if dim != dropped)
    if value.dim() == 0:
        return None
    raise ValueError(f"checkpoint: no placement known for optimizer state {key!r} of shape {tuple(value.shape)}")


def training_state(
    model: nn.Module, placements: Mapping[str, Placement], opt: torch.optim.Optimizer, mesh: Mesh
) -> dict[str, Any]:
    """Everything a checkpoint holds but meta.json: every parameter ("model/<IR name>") and every
    optimizer-state entry ("optimizer/<IR name>/<key>"), each rank's shards as DTensors."""
    state: dict[str, Any] = {}
    group_of = {param: group for group in opt.param_groups for param in group["params"]}
    for path, param in model.named_parameters():
        name = ir_name(path)
        state[f"model/{name}"] = _distributed(param.detach(), placements[name], mesh)
        for key, value in opt.state.get(param, {}).items():
            entry = f"optimizer/{name}/{key}"
            if not isinstance(value, torch.Tensor):
                state[entry] = value  # e.g. Adafactor's step count (an int); DCP pickles it
                continue
            where = _state_placement(key, value, param, placements[name], group_of[param], mesh)
            state[entry] = value if where is None else _distributed(value, where, mesh)
    return state


def _local(value: Any) -> Any:
    return value.to_local() if hasattr(value, "to_local") else value


def load_training_state(model: nn.Module, opt: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Put loaded values back into the model's parameters and the optimizer's state."""
    with torch.no_grad():
        for path, param in model.named_parameters():
            name = ir_name(path)
            param.copy_(_local(state[f"model/{name}"]))
            slots = opt.state.get(param, {})
            for key, current in list(slots.items()):
                loaded = _local(state[f"optimizer/{name}/{key}"])
                if isinstance(current, torch.Tensor):
                    current.copy_(loaded)
                else:
                    slots[key] = loaded


def prime_optimizer(opt: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter]) -> None:
    """Create every optimizer-state entry (at its shape and placement) so that a checkpoint can be
    loaded into it: one step on zero gradients. The parameters are then overwritten by the load."""
    for param in params:
        param.grad = torch.zeros_like(param)
    for group in opt.param_groups:
        group["lr"] = 0.0
    opt.step()
    opt.zero_grad(set_to_none=True)


# ---- the directory ---------------------------------------------------------------------------------


class Checkpoints:
    """The checkpoints of one run: find the latest, save (atomically), restore, keep the newest `keep`.

    save and restore are collective: every rank calls them, in the same order.
    """

    def __init__(self, directory: Path, keep: int, primary: bool) -> None:
        self.directory = directory.absolute()
        self.keep = keep
        self.primary = primary

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first (unfinished saves are not among them)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            if path.name.isdigit() and (path / META).is_file() and (path / ".metadata").is_file():
                found.append(int(path.name))
        return sorted(found)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def previous(self, step: int) -> int | None:
        """The newest checkpoint before `step`, if any."""
        earlier = [found for found in self.steps() if found < step]
        return earlier[-1] if earlier else None

    def clean(self) -> None:
        """Rank 0 deletes what saves killed midway left behind; then every rank goes on."""
        if self.primary and self.directory.is_dir():
            for path in self.directory.iterdir():
                if path.name.endswith(TEMPORARY):
                    shutil.rmtree(path, ignore_errors=True)
        _barrier()

    def save(self, step: int, state: dict[str, Any], meta: Mapping[str, Any]) -> None:
        """Write checkpoint `step` (see the module docstring for the protocol); returns once it exists."""
        staging = self.directory / f"{step}{TEMPORARY}"
        if self.primary:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        _barrier()  # the directory exists before any rank writes into it
        writer = dcp.FileSystemWriter(staging, sync_files=True)
        with _quiet(), _unwrapped(everything=False):
            dcp.save(state, storage_writer=writer, no_dist=not _distributed_job())
        _barrier()  # every rank's file is written (rank 0 wrote .metadata last, after gathering all)
        if self.primary:
            with (staging / META).open("w", encoding="utf-8") as file:
                json.dump(dict(meta), file, indent=2, sort_keys=True)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            _sync_directory(staging)
            final = self.directory / str(step)
            if final.exists():  # not in a normal run (a resume starts at the latest); never two of a step
                shutil.rmtree(final)
            os.rename(staging, final)  # the commit
            _sync_directory(self.directory)
            for old in self.steps()[: -self.keep]:
                shutil.rmtree(self.directory / str(old), ignore_errors=True)
        _barrier()  # nobody goes on (or stops) before the checkpoint exists

    def meta(self, step: int) -> dict[str, Any]:
        """meta.json of checkpoint `step`: step, seed, examples seen, tokenizer, mesh, spec digest and text."""
        meta: dict[str, Any] = json.loads((self.directory / str(step) / META).read_text(encoding="utf-8"))
        return meta

    def shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        """The global shape of each parameter saved in checkpoint `step` (from DCP's index, no tensors read)."""
        index = dcp.FileSystemReader(self.directory / str(step)).read_metadata().state_dict_metadata
        return {
            key.removeprefix("model/"): tuple(entry.size)
            for key, entry in index.items()
            if key.startswith("model/") and hasattr(entry, "size")
        }

    def whole_params(self, step: int, model: nn.Module) -> None:
        """Load checkpoint `step`'s parameters, whole, into `model` (built whole, unplaced) in this
        one process: DCP reads every rank's shards of each from the files, whichever mesh wrote
        them. The optimizer state is not read. (--export-init with --resume.)"""
        state = {f"model/{ir_name(path)}": param.detach() for path, param in model.named_parameters()}
        with _quiet(), _unwrapped(everything=True), torch.no_grad():
            dcp.load(state, storage_reader=dcp.FileSystemReader(self.directory / str(step)), no_dist=True)

    def restore(self, step: int, state: dict[str, Any]) -> None:
        """Load checkpoint `step` into `state` (from training_state), every tensor in place."""
        with _quiet(), _unwrapped(everything=True):
            dcp.load(
                state, storage_reader=dcp.FileSystemReader(self.directory / str(step)), no_dist=not _distributed_job()
            )
