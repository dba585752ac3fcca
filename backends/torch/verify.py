"""`switchc verify --backend torch`: hold the cost report against what the PyTorch program runs.

The generated program runs one train step (forward, backward, the gradient reductions, gradient
norm and clipping, the optimizer update: what runtime/loop.py does per step) on the spec's mesh:
one gloo process per mesh device on this CPU (a one-device mesh: one plain process). In every
process the step runs under torch.utils.flop_counter.FlopCounterMode, and every collective it
issues is recorded by wrapping torch.distributed's functions for the length of the step. This
module compares:

- FLOPs: the report's executed FLOPs per device (matmuls only, by its convention: see
  switchc/analysis/flops.py) with FlopCounterMode's total on one rank. FlopCounterMode counts
  matmuls only (mm, addmm, bmm, baddbmm; einsum reaches it as these; scaled-dot-product
  attention and convolutions too) and ignores elementwise work, norms, softmax, gathers and
  scatters, so the two conventions are the same and the tolerance is tight (default 1%). One
  known difference: with top_k = 1 torch runs the combine einsum ("gskd,gsk->gsd", a contraction
  of size 1) as an elementwise multiply, which FlopCounterMode does not count, where the report
  (and XLA) count a dot of 2 x tokens x d_model FLOPs, x 3 with its backward: about 0.02% of a
  switch-tiny step. With top_k >= 2 the counts agree exactly. Experts run as padded bmm ([E, G * C, D]), so no
  grouped-matmul formula is needed; one for aten._grouped_mm is registered anyway (FlopCounterMode
  has none) in case a runtime uses it, so that it could not count 0 silently.
- Collectives, per kind and the mesh axes each call's process group spans, in bytes of the
  result buffer of one rank (the report's and the JAX verify's convention): the all-to-all count
  exactly and its bytes within the tolerance; all-reduce by total bytes only, because
  DistributedDataParallel reduces dense gradients in buckets (25 MiB by default; the report has
  one all-reduce per parameter group) and the expert gradients over their replicas go in one
  flattened all-reduce (Parallel.finish_gradients). Reductions of at most SMALL_BYTES per call
  (the loss divisor, gradient-norm partial sums, metrics) are listed but compared on neither side
  (the report's entries of that size are left out too); every all-to-all is compared.

DDP's gradient all-reduces are issued from C++ (its Reducer), which Python wrappers do not see:
the worker registers DDP's own `allreduce_hook` (torch.distributed.algorithms.ddp_comm_hooks),
which issues the same averaged all-reduce of each bucket through torch.distributed.all_reduce.

The worker half of this module runs inside each rank's process (`python -m
switchc.backends.torch.verify --worker PROGRAM OUT`) and imports the generated program's own
`model` and `runtime` from PROGRAM; it needs torch only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.verify import (
    BYTES_TOLERANCE,
    FLOPS_TOLERANCE,
    TIMEOUT,
    Comparison,
    MeasurementFailed,
    collective_comparisons,
    write_program,
)

KINDS = {  # torch.distributed function -> the report's kind
    "all_reduce": "all-reduce",
    "all_to_all_single": "all-to-all",
    "all_to_all": "all-to-all",
    "all_gather_into_tensor": "all-gather",
    "all_gather": "all-gather",
    "reduce_scatter_tensor": "reduce-scatter",
    "reduce_scatter": "reduce-scatter",
    "broadcast": "broadcast",
}


@dataclass(frozen=True)
class TorchCollective:
    """One collective call of the step, as one rank issued it."""

    kind: str  # all-reduce, all-to-all, ...
    function: str  # the torch.distributed function (DDP's bucket reduces: all_reduce)
    bytes_per_device: int  # the result buffer on this rank
    group_size: int  # ranks in the call's process group
    group: tuple[int, ...]  # those ranks (global, numbered in mesh order)
    phase: str  # forward (outside autograd's backward) or backward (inside it)


@dataclass(frozen=True)
class Verification:
    spec_name: str
    devices: int
    comparisons: tuple[Comparison, ...]
    collectives: tuple[TorchCollective, ...]  # rank 0's
    flops_by_op: dict[str, int]  # rank 0's FlopCounterMode total per aten op

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)


# ---- the worker: one rank's train step ---------------------------------------------------------------


class _Recorder:
    """Collectives issued while `recording`: torch.distributed's functions, wrapped."""

    def __init__(self) -> None:
        self.calls: list[TorchCollective] = []

    @contextmanager
    def recording(self) -> Iterator[None]:
        import torch
        import torch.distributed as dist

        originals: dict[str, Callable[..., Any]] = {}

        def wrap(function: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def recorded(*args: Any, **kwargs: Any) -> Any:
                group = kwargs.get("group")
                if group is None:
                    # positional group: all_reduce(t, op, group), all_to_all_single(out, in, osz, isz, group)
                    position = {"all_reduce": 2, "all_to_all_single": 4, "broadcast": 2}.get(function)
                    if position is not None and len(args) > position:
                        group = args[position]
                out = args[0] if args else kwargs.get("tensor", kwargs.get("output"))
                tensors = out if isinstance(out, list | tuple) else [out]
                size = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
                in_backward = torch._C._current_graph_task_id() != -1
                self.calls.append(
                    TorchCollective(
                        kind=KINDS[function],
                        function=function,
                        bytes_per_device=int(size),
                        group_size=dist.get_world_size(group),
                        group=tuple(
                            dist.get_process_group_ranks(group) if group is not None else range(dist.get_world_size())
                        ),
                        phase="backward" if in_backward else "forward",
                    )
                )
                return original(*args, **kwargs)

            return recorded

        for function in KINDS:
            originals[function] = getattr(dist, function)
            setattr(dist, function, wrap(function, originals[function]))
        try:
            yield
        finally:
            for function, original in originals.items():
                setattr(dist, function, original)


def _register_grouped_mm() -> None:
    """A FLOP formula for aten._grouped_mm, which FlopCounterMode lacks (it would count 0)."""
    import torch
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    op = getattr(torch.ops.aten, "_grouped_mm", None)
    if op is None or op in flop_registry:
        return

    def grouped_mm_flop(a_shape: Sequence[int], b_shape: Sequence[int], *args: Any, **kwargs: Any) -> int:
        if len(a_shape) == 2 and len(b_shape) == 2:  # [K, M_total] x [M_total, N] -> [G, K, N]
            return 2 * a_shape[0] * a_shape[1] * b_shape[1]
        if len(a_shape) == 2:  # [M_total, K] x [G, K, N] -> [M_total, N]
            return 2 * a_shape[0] * a_shape[1] * b_shape[-1]
        if len(b_shape) == 2:  # [G, M, K] x [K, N_total] -> [M, N_total]
            return 2 * a_shape[1] * a_shape[2] * b_shape[1]
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]  # [G, M, K] x [G, K, N]

    register_flop_formula(op)(grouped_mm_flop)


def _worker(program: Path, out: Path, seed: int, timeout: float) -> None:
    """One rank: build the program's model on the mesh, run one train step under the counters."""
    sys.path.insert(0, str(program))
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.flop_counter import FlopCounterMode

    model = importlib.import_module("model")
    layers = importlib.import_module("runtime.layers")
    optim = importlib.import_module("runtime.optim")
    parallel = importlib.import_module("runtime.parallel")
    _register_grouped_mm()
    config = model.CONFIG

    mesh, device = parallel.init_distributed(model.MESH_AXES, timeout, "cpu")
    rank = dist.get_rank() if dist.is_initialized() else 0
    try:
        placed = parallel.parallelize(model.build(seed), mesh, model.RULES, model.PARAM_AXES, device)
        if isinstance(placed.module, DistributedDataParallel):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            group = placed.mesh.group(placed.plan.batch)
            placed.module.register_comm_hook(group, allreduce_hook)
        params = list(placed.model.parameters())
        opt = optim.optimizer_for(config, placed.model, placed.placements, mesh)
        # The global batch: random ids (FLOPs and collectives do not depend on the values; capacity
        # padding fixes every shape), with padding as real batches have; this rank's rows of it.
        rng = np.random.default_rng(seed)
        shape = (config.batch_size, config.inputs_length), (config.batch_size, config.targets_length)
        inputs, targets = (rng.integers(3, config.vocab_size, size) for size in shape)
        targets[:, -2:] = 0
        rows = placed.batch_rows(config.batch_size)
        batch = {"inputs": torch.from_numpy(inputs[rows]).long(), "targets": torch.from_numpy(targets[rows]).long()}
        noise = layers.Noise(seed + 1, 0, rows=rows, global_batch=config.batch_size, shard=placed.batch_shard)
        placed.module.train()
        recorder = _Recorder()
        counter = FlopCounterMode(display=False)
        with recorder.recording(), counter:  # the step of runtime/loop.py
            batch["target_count"] = placed.mean_over_batch((batch["targets"] > 0).sum().float())
            loss, _ = placed.module(batch, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            placed.finish_gradients()
            grad_norm = placed.grad_norm()
            optim.clip_by_global_norm(params, grad_norm, config.clip_grad_norm)
            opt.step()
        by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
        result = {
            "rank": rank,
            "flops": int(counter.get_total_flops()),
            "flops_by_op": by_op,
            "collectives": [c.__dict__ for c in recorder.calls],
            "loss": float(loss.detach()),
        }
        (out / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---- the driver: launch the ranks, compare ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_step(
    program: Path, devices: int, out: Path, *, seed: int = 0, timeout: float = TIMEOUT["torch"]
) -> list[dict[str, Any]]:
    """Run the program's train step on `devices` gloo processes; every rank's counts, rank order."""
    program, out = program.resolve(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "switchc.backends.torch.verify", "--worker", str(program), str(out)]
    command += ["--seed", str(seed), "--timeout", str(timeout)]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes on this host's cores, not N x cores threads
    ranks = []
    port = _free_port()
    for rank in range(devices):
        rank_env = dict(env)
        if devices > 1:
            rank_env |= {
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(devices),
                "LOCAL_WORLD_SIZE": str(devices),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
        log = open(out / f"rank{rank}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
        ranks.append((subprocess.Popen(command, cwd=program, env=rank_env, stdout=log, stderr=log), log))
    deadline = time.monotonic() + timeout
    failed = None
    timed_out = False
    try:
        for rank, (process, _) in enumerate(ranks):
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failed = failed or f"rank {rank} did not finish within {timeout:g}s"
                timed_out = True
                break
            if code != 0:
                failed = failed or f"rank {rank} exited with status {code}"
    finally:
        for process, log in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    if failed:
        said = {rank: (out / f"rank{rank}.log").read_text(encoding="utf-8")[-3000:].strip() for rank in range(devices)}
        logs = "\n".join(f"--- rank {rank}:\n{text}" for rank, text in said.items() if text)
        what = f"the generated program's train step on {devices} process{'es' if devices > 1 else ''}"
        raise MeasurementFailed(f"{what} failed: {failed}", logs, timeout if timed_out else None)
    return [json.loads((out / f"rank{rank}.json").read_text(encoding="utf-8")) for rank in range(devices)]


def compare(
    report: Mapping[str, Any],
    ranks: Sequence[Mapping[str, Any]],
    *,
    flops_tolerance: float,
    bytes_tolerance: float,
    data_parallel: bool = True,
) -> list[Comparison]:
    """The report against rank 0's counts (every rank runs the same shapes; a rank that differs
    from rank 0 is a comparison of its own). data_parallel: the mesh splits the batch (DDP then
    reduces dense gradients in buckets)."""
    executed = float(report["flops"]["executed"]["train_step_per_device"])
    first = ranks[0]
    results = [
        Comparison(
            "matmul FLOPs per device (train step)",
            executed,
            float(first["flops"]),
            flops_tolerance,
            "FlopCounterMode: matmuls only",
        )
    ]
    for other in ranks[1:]:
        if other["flops"] != first["flops"]:
            results.append(
                Comparison(f"matmul FLOPs on rank {other['rank']}", executed, float(other["flops"]), flops_tolerance)
            )
    measured = [(c["kind"], c["group"], int(c["bytes_per_device"])) for c in first["collectives"]]
    results += collective_comparisons(
        report,
        measured,
        bytes_tolerance=bytes_tolerance,
        source="torch",
        notes={"all-reduce": " (DDP buckets: bytes compared)" if data_parallel else " (bytes compared)"},
    )
    return results


def verify(
    spec: Any,
    report: Mapping[str, Any],
    *,
    flops_tolerance: float = FLOPS_TOLERANCE["torch"],
    bytes_tolerance: float = BYTES_TOLERANCE,
    keep: Path | None = None,
    timeout: float = TIMEOUT["torch"],
    files: Mapping[str, str] | None = None,
) -> Verification:
    """Generate the spec's PyTorch program (`files`: its files, when the caller has them already),
    run one train step on its mesh, compare with `report`."""
    from .program import generate

    devices = spec.mesh.num_devices
    with tempfile.TemporaryDirectory(prefix="switchc-verify-") as scratch:
        work = keep or Path(scratch)
        program = write_program(files if files is not None else generate(spec), work / "program")
        ranks = run_step(program, devices, work / "counts", seed=spec.train.seed, timeout=timeout)
    comparisons = compare(
        report,
        ranks,
        flops_tolerance=flops_tolerance,
        bytes_tolerance=bytes_tolerance,
        data_parallel=spec.mesh.shards("batch") > 1,
    )
    collectives = tuple(TorchCollective(**{**c, "group": tuple(c["group"])}) for c in ranks[0]["collectives"])
    return Verification(spec.name, devices, tuple(comparisons), collectives, dict(ranks[0]["flops_by_op"]))


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="one rank of `switchc verify --backend torch` (internal)")
    parser.add_argument("--worker", nargs=2, metavar=("PROGRAM", "OUT"), type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=TIMEOUT["torch"])
    args = parser.parse_args(argv)
    _worker(args.worker[0].resolve(), args.worker[1].resolve(), args.seed, args.timeout)


if __name__ == "__main__":
    main(sys.argv[1:])
