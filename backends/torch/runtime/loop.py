"""The training loop of a generated PyTorch program. Runtime support, copied verbatim.

The generated `model` module provides: CONFIG (sizes and train settings), MESH_AXES and RULES
(the mesh and the logical-axis rules), PARAMS (IR name -> shape, logical axes, init std),
PARAM_AXES, build(seed) -> an initialised Transformer whose forward(batch, noise) returns
(loss, metrics), and for MFU MODEL_FLOPS_PER_STEP, PEAK_FLOPS and DEFAULT_HARDWARE. This module
joins the torchrun job, builds the DeviceMesh, hands the model to parallel.parallelize, and runs
forward, backward, gradient reduction and the optimizer step:

    every step          train step; the loss and the gradients are checked for NaN/Inf before
                        the optimizer applies them (every rank reaches the same verdict)
    every --log-every   a train record (metrics.py has the schema, the JAX program's) to the
                        progress display, OUT/metrics.jsonl and OUT/tensorboard (rank 0)
    every --eval-every  an eval record: --eval-batches batches of the held-out split, in eval
                        mode (the eval capacity factor, no jitter, no dropout)
    every --checkpoint-every   a checkpoint in OUT/checkpoints (checkpoint.py: DCP, each rank
                        writes its own shards, committed atomically)
    --resume            continue from the latest checkpoint, at the same step; on CPU the losses
                        are bit-identical to a run that was never interrupted
    --init-from FILE    start from the weights in a safetensors file keyed by IR names (weights.py)
    --export-init FILE  write the step-0 weights to such a file, then exit (with --resume: the
                        latest checkpoint's)

The last step always logs, evaluates and checkpoints. A NaN or Inf in the loss or the gradients
stops training on every rank with the step and the quantity, and exit status 3
(metrics.NON_FINITE_EXIT), after a train record of the step before it; the bad step is never
applied nor saved.
SIGTERM (a preemption notice) finishes the step in progress, logs and checkpoints it (unevaluated),
and exits with status 143 (metrics.StopRequest); one during an evaluation or a save stops
once it is done. Ctrl-C stops at once.

Every rank reads only its rows of each global batch (the data pipeline is deterministic per
(seed, epoch, index)); records are means over batch shards (per-expert counts: sums).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from . import flags, host, metrics, weights
from .checkpoint import Checkpoints, load_training_state, prime_optimizer, training_state
from .layers import Noise, flat_params, ir_name, keep_draws_eager, load_flat
from .optim import clip_by_global_norm, optimizer_for, schedule
from .parallel import (
    Mesh,
    Parallel,
    Whereabouts,
    init_distributed,
    keep_collectives_eager,
    parallelize,
    split_axes,
)

T = TypeVar("T")


def parse_args(
    argv: Sequence[str],
    description: str,
    default_steps: int,
    default_seed: int,
    *,
    held_out: bool = True,
    hardware: Sequence[str] = (),
    cosine: bool = False,
) -> argparse.Namespace:
    """The shared flags (flags.py, the JAX program's where they apply) and the PyTorch program's own."""
    parser = flags.parser(
        description,
        default_steps,
        default_seed,
        held_out=held_out,
        hardware=hardware,
        cosine=cosine,
        resume_help="continue from the latest checkpoint in OUT/checkpoints, at its step (none yet: from step 0)",
        init_from_help="start from the weights in FILE (safetensors keyed by IR names; runtime/weights.py), "
        "not from --seed; with --resume, only while OUT has no checkpoint",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda when available (default)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="seconds any collective may wait for the other ranks before failing (default: 120)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the model's forward and backward under torch.compile (inductor): faster steps after a "
        "first step, and a first evaluation, that compile for a minute or more on a CPU",
    )
    if any(arg == "--devices" or arg.startswith("--devices=") for arg in argv):  # argparse: "unrecognized"
        parser.error(
            "--devices is the JAX program's flag; this program runs one process per device: torchrun "
            "--standalone --nproc-per-node N train.py"
        )
    args = parser.parse_args(argv)
    flags.check(parser, args)
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        build = "a CPU build of torch" if torch.version.cuda is None else "no CUDA device is visible"
        parser.error(f"--device cuda: {build}; use --device cpu (or auto, which picks CUDA when there is one)")
    flags.make_folders(parser, args)  # last: a refused flag leaves no folder behind
    flags.outlive_stdout()
    if not args.system_malloc:
        host.retain_freed_memory()  # before torch starts its intra-op threads
    return args


def _local_batch(data: Any, step: int, config: Any, parallel: Parallel, device: torch.device) -> dict[str, Any]:
    """This rank's rows of global batch `step`, and the target count its loss is averaged over:
    the global batch's divided by the batch shards, so that the mean of the shards' losses is the
    global mean (see layers.masked_mean)."""
    local = data.batch(step, config.batch_size, parallel.batch_rows(config.batch_size))
    batch = {
        "inputs": torch.from_numpy(local.inputs).long().to(device),
        "targets": torch.from_numpy(local.targets).long().to(device),
    }
    count = (batch["targets"] > 0).sum().float()
    batch["target_count"] = parallel.mean_over_batch(count)
    return batch


def run(model_module: ModuleType, data: Any, args: argparse.Namespace, eval_data: Any = None) -> list[dict[str, Any]]:
    """Train until step args.steps; returns the records (rank 0 also shows them and writes --out).

    `data` and `eval_data` give batch(step, batch_size, rows) (data.Examples); without
    eval_data (or with --eval-every 0) nothing is evaluated. A run that ends before its first step
    (an error, --export-init) removes what it made in --out (flags.tidy_unless_trained).
    """
    with flags.tidy_unless_trained(args):
        return _run(model_module, data, args, eval_data)


def _run(model_module: ModuleType, data: Any, args: argparse.Namespace, eval_data: Any) -> list[dict[str, Any]]:
    if args.export_init is not None:  # no process group needed: every rank would build the same weights
        if args.resume:
            export_checkpoint(model_module, args)
        else:
            export_weights(model_module, args.export_init, args.seed, args.init_from)
        return []
    mesh, device = init_distributed(model_module.MESH_AXES, args.timeout, args.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    whereabouts = Whereabouts(rank, world)
    try:
        records = _train(model_module, data, eval_data, args, mesh, device, whereabouts)
        if world > 1:
            whereabouts.doing = "after the last step"
            # every rank is done with the groups before any tears them down: a rank that destroyed
            # its process group while a peer's gloo threads still served the last collectives
            # aborted ("terminate called without an active exception", exit -6) after a good run
            dist.barrier()
        return records
    except Exception as error:
        if world > 1:  # without the process group's teardown
            flags.leave_job(error, f"rank {rank}", "ranks", whereabouts.timed_out(error, args.timeout))
        print(f"error: rank {rank}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _same_settings(args: argparse.Namespace, model_module: ModuleType, world: int) -> None:
    """Refuse a run whose ranks were started with different programs or flags (flags.run_settings)."""
    every: list[dict[str, str] | None] = [None] * world
    dist.all_gather_object(every, flags.run_settings(args, model_module))
    refusal = flags.disagreement([settings for settings in every if settings is not None])
    if refusal is not None:
        raise SystemExit(refusal)


def _together(check: Callable[[], T], rank: int, world: int) -> T:
    """Run a check that every rank makes before training and that may refuse the run (SystemExit
    with a message). If any rank refuses, every rank stops, and the first rank of each host says
    each distinct reason once (naming the ranks it came from when not all did), rather than each
    rank repeating it or the rest waiting at their next collective for one that has left."""
    refusal = None
    try:
        value = check()
    except SystemExit as refused:
        if world == 1 or not isinstance(refused.code, str):
            raise
        refusal = refused.code
    if world > 1:
        refusals: list[str | None] = [None] * world
        dist.all_gather_object(refusals, refusal)
        if any(refusals):
            if flags.first_on_host():
                for message in dict.fromkeys(r for r in refusals if r):
                    ranks = [str(i) for i, r in enumerate(refusals) if r == message]
                    who = "" if len(ranks) == world else f"rank {', '.join(ranks)}: "
                    print(f"{who}{message}", file=sys.stderr, flush=True)
            raise SystemExit(1)
    return value


def _lock_run_directory(out: Path, primary: bool) -> None:
    """Rank 0 takes the run directory's lock (flags.lock_run_directory)."""
    refusal = flags.lock_run_directory(out) if primary else None
    if refusal is not None:
        raise SystemExit(refusal)


def _open_checkpoints(
    checkpoints: Checkpoints, args: argparse.Namespace, model_module: ModuleType, primary: bool, tokenizer: str
) -> tuple[int | None, dict[str, Any] | None]:
    """The latest checkpoint's step and, with --resume, its record once checked against this
    program and the run's `tokenizer`; refused: a checkpoint there without --resume, or one this
    program cannot continue."""
    flags.check_checkpoint_directory(checkpoints.directory, "torch")
    found = checkpoints.latest_step()
    if found is not None and not args.resume:
        raise SystemExit(
            f"error: {checkpoints.directory} has checkpoints already (the latest: step {found})\n"
            "hint: pass --resume to continue that run, or choose another --out"
        )
    if found is None and args.resume and primary:  # a run stopped before its first checkpoint: nothing to resume
        print(f"--resume: no checkpoint in {checkpoints.directory} yet; starting at step 0", flush=True)
    if found is None or not args.resume:
        return found, None
    return found, flags.checked_record(checkpoints, found, args, model_module, primary, "torch", tokenizer)


def _device_kind(device: torch.device) -> str:
    """What the device is, as hardware profiles name it: the GPU's name ("NVIDIA H200"), else "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _hardware(args: argparse.Namespace, model_module: ModuleType, device: torch.device) -> str:
    """The hardware profile MFU is measured against (metrics.choose_hardware)."""
    platform = "gpu" if device.type == "cuda" else device.type
    return metrics.choose_hardware(
        args.hardware, platform, _device_kind(device), model_module.PEAK_FLOPS, model_module.DEFAULT_HARDWARE
    )


def _initial_weights(model: torch.nn.Module, model_module: ModuleType, path: Path) -> None:
    """--init-from: every parameter from a weights file (whole tensors; parallelize shards them)."""
    try:
        flat = weights.load(path, model_module.PARAMS)
    except (OSError, ValueError) as error:  # FileNotFoundError, weights.WeightsError
        raise flags.init_from_error(path, error) from None
    note = weights.architecture_note(path, model_module.ARCHITECTURE)
    if note is not None and int(os.environ.get("RANK", "0")) == 0:
        print(note, flush=True)
    load_flat(model, flat)


def export_weights(model_module: ModuleType, path: Path, seed: int, init_from: Path | None) -> None:
    """--export-init: the step-0 weights (seed's, or init_from's), built, checked and written by the
    first rank alone (a refused --init-from is said once), with where they came from
    (weights.provenance)."""
    if int(os.environ.get("RANK", "0")) != 0:  # the first rank builds, checks and writes them alone
        return
    model = model_module.build(seed)
    if init_from is not None:
        _initial_weights(model, model_module, init_from)
    provenance = weights.provenance("torch", seed, init_from, architecture=model_module.ARCHITECTURE)
    _write_weights(model, model_module, path, provenance, 0)


def export_checkpoint(model_module: ModuleType, args: argparse.Namespace) -> None:
    """--export-init with --resume: the weights of --out's latest checkpoint, which a resumed run
    would continue from; the first rank alone reads them whole (Checkpoints.whole_params) and
    writes them, so any number of processes, or one, exports the checkpoint of any mesh."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    _lock_run_directory(args.out, True)  # as the JAX program: no run may rotate the checkpoint away meanwhile
    checkpoints = Checkpoints(args.out / "checkpoints", args.keep, primary=True)
    flags.check_checkpoint_directory(checkpoints.directory, "torch")
    found = checkpoints.latest_step()
    if found is None:
        raise flags.no_checkpoint_to_export(args.out)
    record = flags.checked_record(checkpoints, found, args, model_module, announce=True)
    seed = int(record["seed"])  # the run's, which an export need not be given
    model = model_module.build(seed)
    with flags.reading_checkpoint(checkpoints, found):
        checkpoints.whole_params(found, model)
    where = (checkpoints.directory / str(found), found)
    _write_weights(
        model,
        model_module,
        args.export_init,
        weights.provenance("torch", seed, checkpoint=where, architecture=model_module.ARCHITECTURE),
        found,
    )


def _write_weights(
    model: torch.nn.Module, model_module: ModuleType, path: Path, provenance: tuple[dict[str, str], str], step: int
) -> None:
    """Write the model's weights to `path` (runtime/weights.py), with their provenance, and say so."""
    arrays = {name: value.detach().float().numpy() for name, value in flat_params(model).items()}
    meta, source = provenance
    try:
        weights.save(path, arrays, model_module.PARAMS, meta)
    except OSError as error:
        raise SystemExit(f"error: --export-init {path}: {error.strerror or error}") from None
    print(f"wrote the step-{step} weights ({source}) to {path}", flush=True)


def build(
    model_module: ModuleType,
    seed: int,
    mesh: Mesh,
    device: torch.device,
    init_from: Path | None = None,
    *,
    rank: int = 0,
    world: int = 1,
    compile: bool = False,
) -> tuple[Parallel, torch.optim.Optimizer]:
    """The model, initialised from `seed` (or from the weights file `init_from`), placed on the
    mesh by parallel.parallelize, and the optimizer model.CONFIG names over its parameters. A
    weights file every rank refuses (not there, not this model's) is said once (`_together`).
    `compile` (--compile): the placed model runs under torch.compile (`compiled`)."""

    def initialised() -> torch.nn.Module:
        model = model_module.build(seed)
        if init_from is not None:
            _initial_weights(model, model_module, init_from)
        return model

    model = _together(initialised, rank, world)  # no collective inside: each rank reads the file
    parallel = parallelize(model, mesh, model_module.RULES, model_module.PARAM_AXES, device)
    if compile:
        parallel.module = compiled(parallel.module, device)
    return parallel, optimizer_for(model_module.CONFIG, model, parallel.placements, mesh)


def compiled(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """--compile: `module` (the model, or its DDP wrapper) under torch.compile with inductor. The
    parameters, and so checkpoints and weights files, stay the model's own. Random draws and
    collectives run between the compiled graphs (layers.keep_draws_eager,
    parallel.keep_collectives_eager), so every number and every collective is the eager
    program's; only float rounding may differ where kernels fuse.

    On a CPU, inductor's vectorized loop tails are turned off: with them, torch 2.13's generated
    code corrupted the heap (glibc: "corrupted size vs. prev_size") in the second step of
    benchmarks/bench_step.py's 16-expert model; with scalar tails, or no vectorization, it ran.
    """
    keep_draws_eager()
    keep_collectives_eager()
    if device.type == "cpu":
        import torch._inductor.config as inductor

        inductor.cpp.enable_loop_tail_vec = False
    wrapped: torch.nn.Module = torch.compile(module)  # type: ignore[assignment]  # an nn.Module in, an nn.Module out
    return wrapped


def train_step(
    parallel: Parallel,
    opt: torch.optim.Optimizer,
    batch: dict[str, Any],
    noise: Noise,
    learning_rate: float,
    clip_grad_norm: float,
    number: int,
) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
    """One training step: forward, backward, gradient reduction, the NaN/Inf check (raises
    metrics.NonFiniteError, naming step `number`, before anything is applied), clipping and the
    optimizer step at `learning_rate`. Returns (loss, the model's metrics, global gradient norm)."""
    loss, step_metrics = parallel.module(batch, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    parallel.finish_gradients()
    grad_norm = parallel.grad_norm()
    _check_finite(number, loss, grad_norm, parallel)
    clip_by_global_norm(parallel.model.parameters(), grad_norm, clip_grad_norm)
    for group in opt.param_groups:
        group["lr"] = learning_rate
    opt.step()
    return loss, step_metrics, grad_norm


def _train(
    model_module: ModuleType,
    data: Any,
    eval_data: Any,
    args: argparse.Namespace,
    mesh: Mesh,
    device: torch.device,
    whereabouts: Whereabouts,
) -> list[dict[str, Any]]:
    """The training loop of run(); `whereabouts.doing` follows it, for an error a timeout ends it with."""
    config = model_module.CONFIG
    rank, world = whereabouts.rank, whereabouts.world
    primary = rank == 0
    if world > 1:  # every rank runs the same program with the same flags, or none trains
        _together(lambda: _same_settings(args, model_module, world), rank, world)

    def say(text: str) -> None:
        if primary:
            print(text, flush=True)

    if args.out is not None:  # one run per directory, before anything in it is read or written
        _together(lambda: _lock_run_directory(args.out, primary), rank, world)
    checkpoints, found, resumed = None, None, None  # resumed: meta.json of the checkpoint this run continues
    if args.out is not None and (args.checkpoint_every or args.resume):
        checkpoints = Checkpoints(args.out / "checkpoints", args.keep, primary)
        found, resumed = _together(
            lambda: _open_checkpoints(checkpoints, args, model_module, primary, data.tokenizer), rank, world
        )
        checkpoints.clean()

    hardware = _hardware(args, model_module, device)
    peak = model_module.PEAK_FLOPS[hardware]
    init_from = args.init_from if resumed is None else None
    parallel, opt = build(
        model_module, args.seed, mesh, device, init_from, rank=rank, world=world, compile=args.compile
    )
    model = parallel.model
    params = list(model.parameters())
    learning_rate = schedule(config.schedule, config.learning_rate, config.warmup_steps, config.steps)

    start = 0
    if resumed is not None:
        assert checkpoints is not None and found is not None
        prime_optimizer(opt, params)
        state = training_state(model, parallel.placements, opt, mesh)
        try:
            with flags.reading_checkpoint(checkpoints, found):
                checkpoints.restore(found, state)
        except SystemExit as refused:
            # DCP's load is collective: a damaged file fails it on every rank, each raising the same
            # first failure (checkpoint._unwrapped), so the first rank of each host says it
            if not flags.first_on_host() and isinstance(refused.code, str):
                raise SystemExit(1) from None
            raise
        load_training_state(model, opt, state)
        start = int(resumed["step"])

    devices = mesh.size(mesh.axes)
    shape = " x ".join(f"{axis}={size}" for axis, size in model_module.MESH_AXES.items())
    say(
        f"mesh {shape} on {devices} {device.type} process{'es' if devices > 1 else ''}; steps {start}..{args.steps}; "
        + metrics.mfu_against(hardware, peak, args.hardware, _device_kind(device), model_module.DEFAULT_HARDWARE)
    )
    if args.compile:
        say(
            "--compile: the first step and the first evaluation compile the model (torch.compile); "
            "their records' step time includes it"
        )
    if resumed is not None:
        ignored = f" (not from --init-from {args.init_from}: the checkpoint has the weights)" if args.init_from else ""
        say(f"resumed at step {start} from {args.out / 'checkpoints'}{ignored}")
        if start >= args.steps:
            where = "past" if start > args.steps else "at"
            say(f"note: the run is already {where} --steps {args.steps}; nothing to train (a larger --steps goes on)")
    elif args.init_from is not None:
        say(f"initialised from {args.init_from}")

    tokens_per_step = config.batch_size * (config.inputs_length + config.targets_length)
    evaluating = eval_data is not None and args.eval_every > 0
    eval_batches = []
    if evaluating:
        eval_batches = [_local_batch(eval_data, i, config, parallel, device) for i in range(args.eval_batches)]
        repeats = eval_data.repeats(args.eval_batches, config.batch_size)
        if repeats is not None:
            say(repeats)
    saving = checkpoints is not None and args.checkpoint_every > 0

    log = metrics.MetricsLog(args.out, resume_step=start if args.resume else None) if args.out and primary else None
    if log is not None and log.note:
        say(log.note)
    progress = metrics.Progress(args.steps, start, hidden=metrics.unweighted(config)) if primary else None
    records: list[dict[str, Any]] = []

    def emit(entry: dict[str, Any]) -> None:
        records.append(entry)
        if log is not None:
            log.write(entry)
        if progress is not None:
            progress.show(entry)

    began = time.perf_counter()
    window_start, window_steps, paused = began, 0, 0.0
    logged = start  # the step of the latest train record

    def log_train(
        number: int,
        loss: torch.Tensor,
        step_metrics: dict[str, Any],
        grad_norm: torch.Tensor,
        worked: float | None = None,
    ) -> None:
        """The train record of step `number` (every rank takes part: the metrics are averaged over
        batch shards); step time and throughput are the mean over the steps since the last record,
        which took `worked` seconds (None: until now) besides evaluations and checkpoints."""
        nonlocal window_start, window_steps, paused, logged
        values = _reduce_over_batch({**step_metrics, "loss": loss}, parallel)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - window_start - paused if worked is None else worked) / window_steps
        window_start, window_steps, paused, logged = time.perf_counter(), 0, 0.0, number
        extra = {"grad_norm": float(grad_norm), "learning_rate": learning_rate(number - 1)}
        flops = model_module.MODEL_FLOPS_PER_STEP
        emit(metrics.train_record(number, values, seconds, tokens_per_step, flops, devices, peak, **extra))

    def save(number: int) -> None:
        """Checkpoint step `number` (every rank takes part)."""
        assert checkpoints is not None
        whereabouts.doing = f"while saving step {number}"
        meta = {
            "step": number,
            "seed": args.seed,
            "examples_seen": number * config.batch_size,
            "tokenizer": data.tokenizer,
            "mesh": dict(model_module.MESH_AXES),
            **flags.run_identity(model_module),
        }
        with flags.ctrl_c_held():  # DCP's writer cut mid-file fails the save
            checkpoints.save(number, training_state(model, parallel.placements, opt, mesh), meta)

    parallel.module.train()
    reached = start  # the steps done so far
    unlogged: tuple[int, torch.Tensor, dict[str, Any], torch.Tensor] | None = None  # the latest step done
    worked = 0.0  # seconds of training steps since the latest record, up to its end
    stop = metrics.StopRequest()
    flags.training_began()  # Ctrl-C is this loop's to handle from here on
    try:
        stop.install()
        if log is not None:  # the earlier run's records go now: a checkpoint may come before the first record
            log.start()
        for index in range(start, args.steps):
            flags.raise_if_interrupted()
            number = index + 1  # steps done once this one is
            whereabouts.doing = f"in step {number}"
            batch = _local_batch(data, index, config, parallel, device)
            noise = Noise(
                args.seed + 1,
                index,
                rows=parallel.batch_rows(config.batch_size),
                global_batch=config.batch_size,
                shard=parallel.batch_shard,
            )
            loss, step_metrics, grad_norm = train_step(
                parallel, opt, batch, noise, learning_rate(index), config.clip_grad_norm, number
            )
            reached = number
            unlogged, worked = (number, loss, step_metrics, grad_norm), time.perf_counter() - window_start - paused
            window_steps += 1
            if progress is not None:
                progress.advance()
            last = number == args.steps
            # SIGTERM on any rank: every rank logs and checkpoints this step, then stops (unevaluated)
            stop_now = parallel.any_rank(stop.requested) and not last
            due_eval = evaluating and (number % args.eval_every == 0 or last)
            log_now = number % args.log_every == 0 or last or stop_now
            eval_now = due_eval and not stop_now
            save_now = saving and (number % args.checkpoint_every == 0 or last or stop_now)
            if log_now:
                log_train(number, loss, step_metrics, grad_norm)
            interrupted = time.perf_counter()
            if eval_now:
                whereabouts.doing = f"in the evaluation after step {number}"
                emit(metrics.record(number, "eval", _evaluate(parallel, eval_batches)))
            if save_now:
                save(number)
            if (eval_now or save_now) and not (stop_now or last):
                # a SIGTERM during the evaluation or the save stops the run here, not after another
                # step: every rank evaluates and saves at the same steps, so every rank asks here
                stop_now = parallel.any_rank(stop.requested)
                if stop_now and not log_now:
                    log_train(number, loss, step_metrics, grad_norm, worked=worked)
                if stop_now and saving and not save_now:
                    save(number)
            paused += time.perf_counter() - interrupted
            if stop_now:
                if progress is not None:
                    progress.close()
                kept = checkpoints.latest_step() if checkpoints is not None else None
                skipped = due_eval and not eval_now
                metrics.stop_interrupted(signal.SIGTERM, number, kept, announce=primary, unevaluated=skipped)
    except metrics.NonFiniteError as err:
        flags.stopping()
        if unlogged is not None and unlogged[0] > logged:  # the last step before the bad one gets its record
            log_train(*unlogged, worked=worked)
        if progress is not None:
            progress.close()
        kept = checkpoints.latest_step() if checkpoints is not None else None
        metrics.stop_training(err, kept, f"rank {rank}: " if world > 1 else "")
    except OSError as error:  # a save or a record that could not be written
        if error.filename is None:  # not a file (a connection): run() says it
            raise
        flags.stopping()
        if progress is not None:
            progress.close()
        if log is not None:
            log.close()
        kept = checkpoints.latest_step() if checkpoints is not None else None
        metrics.stop_writing(error, kept, f"rank {rank}: " if world > 1 else "")
    except KeyboardInterrupt:  # Ctrl-C: stop now
        flags.stopping()
        if progress is not None:
            progress.close()
        kept = checkpoints.latest_step() if checkpoints is not None else None  # saves are synchronous here
        metrics.stop_interrupted(signal.SIGINT, reached, kept, announce=primary, first=start)
    finally:
        stop.restore()
        if progress is not None:
            progress.close()
        if log is not None:
            log.close()
    say(f"done: step {max(start, args.steps)} in {time.perf_counter() - began:.1f}s")
    return records


def _check_finite(step: int, loss: torch.Tensor, grad_norm: torch.Tensor, parallel: Parallel) -> None:
    """Raise metrics.NonFiniteError on every rank if the step's loss or a gradient has a NaN or Inf.

    The verdict is the same everywhere: the loss is averaged over batch shards (ranks that share
    a batch shard compute the same loss) and the gradient norm is global. Only when one of them is
    not finite are the bad elements counted per parameter (summed over its shards) to name it.
    """
    loss_mean = parallel.mean_over_batch(loss.detach().float())
    if bool(torch.isfinite(loss_mean)) and bool(torch.isfinite(grad_norm)):
        return
    by_axes: dict[tuple[str, ...], list[tuple[str, torch.Tensor]]] = {}
    for path, param in parallel.model.named_parameters():
        name = ir_name(path)
        grad = param.grad if param.grad is not None else torch.zeros(())
        bad = (~torch.isfinite(grad)).sum().double()
        by_axes.setdefault(split_axes(parallel.placements[name]), []).append((name, bad))
    counts: dict[str, int] = {}
    for axes, entries in by_axes.items():  # the same order on every rank (named_parameters')
        totals = torch.stack([bad for _, bad in entries])
        group = parallel.mesh.group(axes)
        if group is not None:
            dist.all_reduce(totals, group=group)
        counts.update({name: int(total) for (name, _), total in zip(entries, totals.cpu().tolist(), strict=True)})
    ordered = {name: counts[name] for name in parallel.placements if name in counts}
    metrics.check_finite(step, loss_mean.cpu(), ordered)
    # finite elements whose squares overflow the norm: the update is clipped to nothing, not NaN


def _reduce_over_batch(values: Mapping[str, Any], parallel: Parallel) -> dict[str, np.ndarray]:
    """Metrics of the global batch from each rank's: scalars are means over batch shards (each
    shard's loss is its share of the global mean), tokens_per_expert/<layer> counts are sums.
    One all-reduce (float64) for all of them."""
    arrays = {key: np.asarray(torch.as_tensor(value).detach().cpu().double().numpy()) for key, value in values.items()}
    flat = torch.from_numpy(np.concatenate([array.reshape(-1) for array in arrays.values()]))
    group = parallel.mesh.group(parallel.plan.batch)
    if group is not None:
        flat = flat.to(next(parallel.model.parameters()).device)  # nccl: on the GPU
        dist.all_reduce(flat, group=group)
        flat = flat.cpu()
    total = flat.numpy()
    out: dict[str, np.ndarray] = {}
    offset = 0
    for key, array in arrays.items():
        piece = total[offset : offset + array.size].reshape(array.shape)
        offset += array.size
        out[key] = piece if key.startswith(metrics.PER_EXPERT) else piece / parallel.batch_shards
    return out


def _evaluate(parallel: Parallel, batches: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Metrics over the eval batches in eval mode (no noise, eval capacity): means, counts summed."""
    parallel.module.eval()
    try:
        with torch.no_grad():
            outputs = []
            for batch in batches:
                loss, values = parallel.model(batch)  # the model itself: DDP has nothing to do here
                outputs.append(
                    {key: torch.as_tensor(v).cpu().double().numpy() for key, v in {**values, "loss": loss}.items()}
                )
    finally:
        parallel.module.train()
    return _reduce_over_batch(metrics.average(outputs), parallel)
