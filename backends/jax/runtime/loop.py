"""The training loop of a generated JAX program. Runtime support, copied verbatim.

The generated `model` module provides: CONFIG (sizes and train settings), MESH_AXES and RULES
(the mesh and the logical-axis rules), PARAMS and PARAM_AXES (each parameter's shape and logical
axes), init_params(rng), loss_fn(params, batch, rng, train, experts) -> (loss, metrics), and for
MFU MODEL_FLOPS_PER_STEP, PEAK_FLOPS and DEFAULT_HARDWARE. This module places everything on the
mesh with NamedSharding (pjit semantics), jits one train step (forward + backward + optimizer
update) and one eval step (forward with train=False), and runs them:

    every step          train step; its NaN/Inf check runs one step behind, so the host never
                        stalls the device (see _Health)
    every --log-every   a train record (metrics.py has the schema) to the progress display,
                        OUT/metrics.jsonl and OUT/tensorboard
    every --eval-every  an eval record: --eval-batches batches of the held-out split
    every --checkpoint-every   a checkpoint in OUT/checkpoints (checkpoint.py), after the steps
                        before it are known to be finite: a NaN never reaches a checkpoint
    --resume            continue from the latest checkpoint, at the same step (or start afresh if
                        there is none yet); on CPU the losses are bit-identical to a run that
                        was never interrupted

The last step always logs, evaluates and checkpoints. A NaN or Inf in the loss or the gradients
stops training with the step and the quantity, and exit status 3 (metrics.NON_FINITE_EXIT), after
a train record of the step before it.
SIGTERM (a preemption notice) finishes the step in progress, logs and checkpoints it (unevaluated),
and exits with status 143 (metrics.StopRequest); one during an evaluation or a save (with one process) stops
once it is done. Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import flags, host, metrics
from .sharding import fake_cpu_devices


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
    """The shared flags (flags.py) and the JAX program's own; parsed before jax is imported (see --devices)."""
    parser = flags.parser(
        description,
        default_steps,
        default_seed,
        held_out=held_out,
        hardware=hardware,
        cosine=cosine,
        resume_help="continue from the latest checkpoint in OUT/checkpoints, at its step (none yet: from step 0)",
        init_from_help="start from the weights in FILE (from --export-init of this or the PyTorch program) "
        "instead of --seed's; with --resume, only while OUT has no checkpoint",
    )
    parser.add_argument(
        "--devices", type=int, default=None, metavar="N", help="fake this many CPU devices (CPU hosts only)"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one process per host: call jax.distributed.initialize() (the cluster from the environment: "
        "SLURM, Open MPI, Kubernetes, Cloud TPU; elsewhere give --coordinator, --num-processes, --process-id)",
    )
    parser.add_argument(
        "--coordinator", default=None, metavar="HOST:PORT", help="with --distributed: process 0's address"
    )
    parser.add_argument("--num-processes", type=int, default=None, metavar="N", help="with --distributed: N in all")
    parser.add_argument(
        "--process-id", type=int, default=None, metavar="I", help="with --distributed: this one's, 0..N-1"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,  # 120 with --distributed; refused without it (one process waits for none)
        metavar="SECONDS",
        help="with --distributed: seconds a process waits for the others to join, and for a word from one "
        "before it counts as dead (default: 120)",
    )
    parser.add_argument(
        "--dump-hlo",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/train_step.hlo.txt and DIR/cost_analysis.json for the compiled step, then exit (the "
        "step is compiled for the weights' shapes: none are initialised, loaded or restored)",
    )
    if any(arg == "--device" or arg.startswith("--device=") for arg in argv):  # argparse: "unrecognized"
        parser.error(
            "--device is the PyTorch program's flag; this program runs on the devices jax finds (on a CPU host, "
            "--devices N fakes N of them)"
        )
    args = parser.parse_args(argv)
    flags.check(parser, args)
    cluster = {
        "--coordinator": args.coordinator,
        "--num-processes": args.num_processes,
        "--process-id": args.process_id,
    }
    given = [flag for flag, value in cluster.items() if value is not None]
    if given and not args.distributed:
        parser.error(f"{given[0]} applies only with --distributed")
    if given and len(given) < len(cluster):
        parser.error(f"{', '.join(given)} without {', '.join(f for f in cluster if f not in given)}: give all three")
    if given:
        if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
            parser.error(f"--process-id {args.process_id} is not in 0..{args.num_processes - 1} (--num-processes)")
        address, _, port = args.coordinator.rpartition(":")
        if not address or not port.isdigit():
            parser.error(f"--coordinator {args.coordinator}: give HOST:PORT, e.g. 10.0.0.1:1234")
    if args.timeout is not None and not args.distributed:
        parser.error("--timeout applies only with --distributed")
    if args.timeout is None:
        args.timeout = 120.0
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if args.dump_hlo is not None and args.dump_hlo.exists() and not args.dump_hlo.is_dir():
        parser.error(f"--dump-hlo {args.dump_hlo}: not a directory")
    if args.devices is not None and args.devices < 1:
        parser.error("--devices must be >= 1")
    flags.make_folders(parser, args)  # last: a refused flag leaves no folder behind
    flags.outlive_stdout()
    if not args.system_malloc:
        host.retain_freed_memory()  # before jax starts XLA's threads
    if args.devices is not None:
        fake_cpu_devices(args.devices)
    return args


# XLA's own deadline for joining is this much later than --timeout, so that _join_processes' watchdog
# speaks first (XLA's expiry is a C++ check failure: an abort with a stack trace).
_JOIN_GRACE_SECONDS = 10


def _join_processes(args: argparse.Namespace) -> None:
    """jax.distributed.initialize(), bounded by --timeout. XLA aborts the process (a C++ check, no
    Python error) when the coordinator cannot be reached or a process is missing, so the program
    says what it waits for first; a process other than 0 first checks that the coordinator answers
    at all (a wrong --coordinator is then one line), and a watchdog ends a join that is not complete
    after --timeout with one error naming what to start, before XLA's later deadline aborts."""
    import threading

    import jax

    seconds = max(1, round(args.timeout))
    if args.coordinator is not None:
        who = f"process {args.process_id} of {args.num_processes}"
        print(f"--distributed: {who}: joining at {args.coordinator} (waiting at most {seconds}s)", flush=True)
        if args.process_id != 0:
            _reach(args.coordinator, seconds)
        hint = (
            f"start every process, --process-id 0 to {args.num_processes - 1}, with --coordinator "
            f"{args.coordinator} --num-processes {args.num_processes}, within --timeout of each other"
        )
    else:
        who = "this process"
        print(f"--distributed: joining the cluster's processes (waiting at most {seconds}s)", flush=True)
        hint = "check that the cluster manager started every process of the job"

    def give_up() -> None:
        print(
            f"error: --distributed: {who}: the job's processes did not all join within {seconds}s\n"
            f"hint: {hint}, or raise --timeout",
            file=sys.stderr,
        )
        flags.exit_now(1)

    watchdog = threading.Timer(seconds, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=seconds + _JOIN_GRACE_SECONDS,
            heartbeat_timeout_seconds=seconds,
        )
    except (ValueError, RuntimeError) as error:  # no cluster found in the environment
        raise SystemExit(
            f"error: --distributed: jax.distributed.initialize() failed: {error}\n"
            "hint: start the program once per host under a cluster manager that jax.distributed detects "
            "(SLURM, Open MPI's mpirun, Kubernetes, Cloud TPU), or give --coordinator, --num-processes and "
            "--process-id; on one host, drop --distributed"
        ) from None
    finally:
        watchdog.cancel()


def _same_settings(args: argparse.Namespace, model: ModuleType) -> None:
    """Refuse a run whose processes were started with different programs or flags
    (flags.run_settings): every process gathers every other's settings, as the PyTorch program's
    ranks do, and each says which differ and each process's value (flags.disagreement)."""
    import numpy as np
    from jax.experimental import multihost_utils

    text = np.frombuffer(json.dumps(flags.run_settings(args, model)).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([text.size], np.int32))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)  # process_allgather takes one shape from all
    padded[: text.size] = text
    rows = np.asarray(multihost_utils.process_allgather(padded))
    every = [json.loads(row[:length].tobytes()) for row, length in zip(rows, lengths.tolist(), strict=True)]
    refusal = flags.disagreement(every, "process")
    if refusal is not None:
        raise SystemExit(refusal)


def _reach(address: str, seconds: int) -> None:
    """Wait until something accepts connections at `address` (HOST:PORT), at most `seconds`."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise SystemExit(
                    f"error: --distributed: nothing answers at --coordinator {address} after {seconds}s ({error})\n"
                    "hint: start process 0 there (--process-id 0) within --timeout, and check the address"
                ) from None
            time.sleep(1)


def _shardings(model: ModuleType, mesh: Any) -> Any:
    import jax

    from .sharding import Rules

    rules = Rules(model.RULES)
    return jax.tree.map(
        lambda axes: rules.sharding(mesh, axes),
        model.PARAM_AXES,
        is_leaf=lambda node: isinstance(node, tuple),
    )


def _state_sharding(path: Any, shape: tuple[int, ...], model: ModuleType, rules: Any, mesh: Any) -> Any:
    """The sharding of one optimizer-state leaf, from the parameter it belongs to (see build)."""
    keys = [getattr(entry, "key", None) for entry in path]
    name = next((key for key in reversed(keys) if key in model.PARAMS), None)
    if name is not None:
        param_shape, axes, _ = model.PARAMS[name]
        if tuple(shape) == tuple(param_shape):
            return rules.sharding(mesh, axes)
        for dropped in range(len(param_shape)):
            if tuple(shape) == tuple(param_shape[:dropped]) + tuple(param_shape[dropped + 1 :]):
                return rules.sharding(mesh, axes[:dropped] + axes[dropped + 1 :])
    return rules.sharding(mesh, ())


def _weights() -> Any:
    """runtime/weights.py, imported when it is used: --init-from and --export-init."""
    from . import weights

    return weights


def _load_weights(model: ModuleType, path: Path, param_sharding: Any) -> dict[str, Any]:
    """--init-from: the weights of a file (runtime/weights.py), checked against PARAMS and placed."""
    import jax

    def place(name: str, value: Any) -> Any:
        value = value.astype(model.DTYPE)
        return jax.make_array_from_callback(value.shape, param_sharding[name], lambda index: value[index])

    try:
        flat = _weights().load(path, model.PARAMS)
    except (OSError, ValueError) as error:  # FileNotFoundError, weights.WeightsError: one line, as in PyTorch
        raise flags.init_from_error(path, error) from None
    note = _weights().architecture_note(path, model.ARCHITECTURE)
    if note is not None and jax.process_index() == 0:
        print(note, flush=True)
    return {name: place(name, value) for name, value in flat.items()}


def export_weights(
    model: ModuleType,
    params: dict[str, Any],
    path: Path,
    seed: int,
    init_from: Path | None = None,
    checkpoint: tuple[Path, int] | None = None,
) -> None:
    """--export-init: every process gathers the whole weights; the first one writes them, with
    where they came from (seed's init, the file `init_from`, or `checkpoint`'s directory and
    step: weights.provenance)."""
    import jax
    import numpy as np

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    arrays = {name: np.asarray(jax.device_get(value), np.float32) for name, value in params.items()}
    if jax.process_index() == 0:
        meta, source = _weights().provenance("jax", seed, init_from, checkpoint, model.ARCHITECTURE)
        try:
            _weights().save(path, arrays, model.PARAMS, meta)
        except OSError as error:
            raise SystemExit(f"error: --export-init {path}: {error.strerror or error}") from None
        step = 0 if checkpoint is None else checkpoint[1]
        print(f"wrote the step-{step} weights ({source}) to {path}", flush=True)


def build(model: ModuleType, seed: int, init_from: Path | None = None, abstract: bool = False) -> dict[str, Any]:
    """Mesh, parameters, optimizer state, the jitted train and eval steps, all placed on the mesh.

    The parameters are init_params(seed)'s, or with `init_from` a weights file's. `abstract`: the
    parameters and optimizer state are their shapes, dtypes and shardings only (nothing is computed
    or allocated), enough to compile the steps (--dump-hlo)."""
    import jax
    import optax

    from .optim import clip_by_global_norm, optimizer, schedule
    from .parallel import ExpertParallel
    from .sharding import Rules, make_mesh

    config = model.CONFIG
    mesh = make_mesh(model.MESH_AXES)
    rules = Rules(model.RULES)
    param_sharding = _shardings(model, mesh)
    batch_sharding = rules.sharding(mesh, ("batch", None))
    replicated = rules.sharding(mesh, ())
    experts = ExpertParallel(mesh, rules)

    init = jax.jit(model.init_params, out_shardings=param_sharding)
    if abstract:
        params = jax.eval_shape(init, jax.random.key(seed))
    elif init_from is not None:
        params = _load_weights(model, init_from, param_sharding)
    else:
        params = init(jax.random.key(seed))
    learning_rate = schedule(config.schedule, config.learning_rate, config.warmup_steps, config.steps)
    tx = optimizer(
        config.optimizer,
        learning_rate,
        beta1=config.beta1,
        beta2=config.beta2,
        weight_decay=config.weight_decay,
    )
    # Optimizer state lives where its parameter lives: a moment shaped like its parameter takes
    # the parameter's sharding, a factored one (Adafactor's row or column statistics) the
    # parameter's minus the dim it averages out, and scalars (step counts) are replicated.
    # Left to jit, the moments come out replicated and every step all-gathers the gradients.
    state_shapes = jax.eval_shape(tx.init, params)
    opt_sharding = jax.tree_util.tree_map_with_path(
        lambda path, leaf: _state_sharding(path, leaf.shape, model, rules, mesh), state_shapes
    )
    init_state = jax.jit(tx.init, out_shardings=opt_sharding)
    opt_state = jax.eval_shape(init_state, params) if abstract else init_state(params)

    def train_step(params: Any, opt_state: Any, batch: dict[str, Any], rng: Any) -> Any:
        def loss(p: Any) -> Any:
            return model.loss_fn(p, batch, rng, train=True, experts=experts)

        (total, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        grad_norm = optax.tree.norm(grads)  # before clipping: the metric and the NaN/Inf check
        clipped = clip_by_global_norm(grads, grad_norm, config.clip_grad_norm)
        updates, opt_state = tx.update(clipped, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {**metrics, "loss": total, "grad_norm": grad_norm}
        return params, opt_state, metrics, health(total, grad_norm, grads)

    def eval_step(params: Any, batch: dict[str, Any], rng: Any) -> Any:
        total, metrics = model.loss_fn(params, batch, rng, train=False, experts=experts)
        return {**metrics, "loss": total}

    batch_shardings = {"inputs": batch_sharding, "targets": batch_sharding}
    step = jax.jit(
        train_step,
        in_shardings=(param_sharding, opt_sharding, batch_shardings, replicated),
        out_shardings=(param_sharding, opt_sharding, replicated, replicated),
        donate_argnums=(0, 1),
    )
    evaluate = jax.jit(eval_step, in_shardings=(param_sharding, batch_shardings, replicated), out_shardings=replicated)
    return {
        "mesh": mesh,
        "params": params,
        "opt_state": opt_state,
        "step": step,
        "evaluate": evaluate,
        "learning_rate": learning_rate,
        "batch_sharding": batch_shardings,
    }


def health(loss: Any, grad_norm: Any, grads: Mapping[str, Any]) -> dict[str, Any]:
    """A train step's NaN/Inf check: `finite`, the loss, and per parameter how many gradient
    elements are NaN or Inf. The host reads `finite` alone unless it is false.

    The counts are taken only when the loss or the global gradient norm is not finite, as the
    PyTorch program does: XLA:CPU runs an integer count over every gradient element as a slow
    reduce-window, a cost that grows with the expert weights, while the norm is computed anyway.
    A norm that overflows to Inf on large but finite gradients counts no bad element and leaves
    `finite` true: no value is NaN or Inf.
    """
    import jax.numpy as jnp
    from jax import lax

    def count() -> dict[str, Any]:
        return {name: jnp.sum(~jnp.isfinite(g), dtype=jnp.int32) for name, g in grads.items()}

    def none() -> dict[str, Any]:
        return {name: jnp.zeros((), jnp.int32) for name in grads}

    non_finite = lax.cond(jnp.isfinite(loss) & jnp.isfinite(grad_norm), none, count)
    finite = jnp.isfinite(loss) & (sum(non_finite.values()) == 0)
    return {"finite": finite, "loss": loss, "gradient_non_finite": non_finite}


def _global_batch(data: Any, step: int, batch_size: int, shardings: dict[str, Any]) -> dict[str, Any]:
    """Batch `step` as global arrays; with several processes each one reads only its own rows."""
    import jax

    processes, index = jax.process_count(), jax.process_index()
    if processes == 1:
        batch = data.batch(step, batch_size)
        return {name: jax.device_put(getattr(batch, name), shardings[name]) for name in shardings}
    per_process = batch_size // processes
    local = data.batch(step, batch_size, slice(index * per_process, (index + 1) * per_process))
    return {name: jax.make_array_from_process_local_data(shardings[name], getattr(local, name)) for name in shardings}


def dump_hlo(state: dict[str, Any], batch: dict[str, Any], rng: Any, directory: Path) -> None:
    """The compiled train step's optimized HLO and XLA's cost analysis of it."""
    compiled = state["step"].lower(state["params"], state["opt_state"], batch, rng).compile()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train_step.hlo.txt").write_text(compiled.as_text(), encoding="utf-8")
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax returns one dict per program
        cost = cost[0]
    cost = {key: float(value) for key, value in cost.items()}
    (directory / "cost_analysis.json").write_text(json.dumps(cost, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {directory / 'train_step.hlo.txt'} and {directory / 'cost_analysis.json'}")


class _Health:
    """The NaN/Inf check of each train step, read one step late.

    Reading a step's flag on the host waits for that step to finish; reading the previous
    step's flag right after dispatching the next one keeps the device busy meanwhile. `settle`
    checks whatever is pending (before a record, an evaluation or a checkpoint is made).
    """

    def __init__(self) -> None:
        self.pending: tuple[int, Any] | None = None

    def push(self, step: int, health: Any) -> None:
        self.settle()
        self.pending = (step, health)

    def settle(self) -> None:
        if self.pending is None:
            return
        step, health = self.pending
        self.pending = None
        if not bool(health["finite"]):
            metrics.check_finite(step, health["loss"], health["gradient_non_finite"])
            raise metrics.NonFiniteError(step, "the loss or a gradient", "not finite")  # not reached: named above


def _lock_run_directory(out: Path, primary: bool) -> None:
    """The first process takes the run directory's lock (flags.lock_run_directory); every process
    learns whether it got it, so that a refusal ends them all at once and is said once."""
    import jax
    import numpy as np

    refusal = flags.lock_run_directory(out) if primary else None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)))
        if refused and refusal is None:
            raise SystemExit(1)
    if refusal is not None:
        raise SystemExit(refusal)


def _evaluate(state: dict[str, Any], params: Any, batches: list[dict[str, Any]], rng: Any) -> dict[str, Any]:
    """Metrics over the eval batches: means, and per-expert counts summed."""
    import jax

    outputs = [state["evaluate"](params, batch, rng) for batch in batches]
    return metrics.average([jax.device_get(out) for out in outputs])


def run(model: ModuleType, data: Any, args: argparse.Namespace, eval_data: Any = None) -> list[dict[str, Any]]:
    """Train until step args.steps; returns the records (also shown, and written to --out).

    `data` and `eval_data` give batch(step, batch_size[, rows]) (data.Examples); without
    eval_data (or with --eval-every 0) nothing is evaluated. A run that ends before its first step
    (an error, --export-init, --dump-hlo) removes what it made in --out (flags.tidy_unless_trained).
    """
    with flags.tidy_unless_trained(args):
        return _run(model, data, args, eval_data)


def _run(model: ModuleType, data: Any, args: argparse.Namespace, eval_data: Any) -> list[dict[str, Any]]:
    import jax

    from .checkpoint import Checkpoints
    from .sharding import make_mesh

    config = model.CONFIG
    if args.distributed:
        _join_processes(args)
    primary = jax.process_index() == 0
    if jax.process_count() > 1:  # every process runs the same program with the same flags, or none trains
        _same_settings(args, model)

    def say(text: str) -> None:
        if primary:
            print(text, flush=True)

    init_from = getattr(args, "init_from", None)
    export = getattr(args, "export_init", None)
    if export is not None and not args.resume:
        export_weights(model, build(model, args.seed, init_from)["params"], export, args.seed, init_from)
        return []

    make_mesh(model.MESH_AXES)  # too few devices: said before orbax starts its threads
    if args.out is not None:  # one run per directory, before anything in it is read or written
        _lock_run_directory(args.out, primary)
    checkpoints, found, record = None, None, None
    identity = flags.run_identity(model)  # recorded in every checkpoint, checked on --resume
    if args.out is not None and (args.checkpoint_every or args.resume):
        flags.check_checkpoint_directory(args.out / "checkpoints", "jax")
        checkpoints = Checkpoints(args.out / "checkpoints", args.keep)
        found = checkpoints.latest_step()
        if found is not None and not args.resume:
            raise SystemExit(
                f"error: {checkpoints.directory} has checkpoints already (the latest: step {found})\n"
                "hint: pass --resume to continue that run, or choose another --out"
            )
        if found is None and args.resume and export is None:  # a run stopped before its first checkpoint
            say(f"--resume: no checkpoint in {checkpoints.directory} yet; starting at step 0")
        if found is not None:  # before building anything: another spec's checkpoint is refused
            with flags.stopping_at_once():  # orbax's reads run on its threads
                record = flags.checked_record(checkpoints, found, args, model, primary, "jax", data.tokenizer)
    if export is not None and found is None:
        raise flags.no_checkpoint_to_export(args.out)
    if export is not None and record is not None:
        # orbax restores the optimizer state with the parameters, into this program's optimizer's
        # tree: another optimizer's state does not fit it (the PyTorch program reads parameters only)
        other = flags.other_optimizer_state(record.get("spec", ""), flags.run_identity(model)["spec"], "jax")
        if other is not None:
            raise SystemExit(
                f"error: --export-init: {args.out / 'checkpoints' / str(found)} holds the optimizer state of "
                f"{other[0]}, which this program's optimizer ({other[1]}) cannot restore\n"
                f"hint: export with the run's own program (switchc train's is {args.out / 'program' / 'train.py'})"
            )
    # A resumed run takes its checkpoint's weights; --init-from only starts a run that has none yet.
    # Restored or only compiled for (--dump-hlo), the state is built as shapes: nothing is computed,
    # and a resumed run does not hold initial weights beside the restored ones.
    dumping = args.dump_hlo is not None and export is None  # an export writes the weights and ends there
    state = build(model, args.seed, init_from if found is None else None, abstract=dumping or found is not None)
    start = 0
    if checkpoints is not None and found is not None:
        if not dumping:
            with flags.stopping_at_once(), flags.reading_checkpoint(checkpoints, found):
                state["params"], state["opt_state"] = checkpoints.restore(found, state["params"], state["opt_state"])
        start = found
    if export is not None:  # --resume: the weights the run would continue from
        assert checkpoints is not None and found is not None and record is not None
        saved = (checkpoints.directory / str(found), found)
        with flags.stopping_at_once():  # the run's seed, which an export need not be given
            export_weights(model, state["params"], export, int(record["seed"]), checkpoint=saved)
        return []
    mesh = state["mesh"]
    device = jax.devices()[0]
    hardware = metrics.choose_hardware(
        args.hardware, device.platform, device.device_kind, model.PEAK_FLOPS, model.DEFAULT_HARDWARE
    )
    peak = model.PEAK_FLOPS[hardware]
    params, opt_state = state["params"], state["opt_state"]

    say(
        f"mesh {' x '.join(f'{axis}={size}' for axis, size in mesh.shape.items())} on {mesh.size} {device.platform} "
        f"device{'s' if mesh.size > 1 else ''}; steps {start}..{args.steps}; "
        + metrics.mfu_against(hardware, peak, args.hardware, device.device_kind, model.DEFAULT_HARDWARE)
    )
    if jax.device_count() > mesh.size:
        say(f"note: {jax.device_count()} devices; the mesh uses {mesh.size} of them (--devices sets how many to fake)")
    if found is not None and not dumping:  # --dump-hlo reads no weights
        ignored = f" (not from --init-from {init_from}: the checkpoint has the weights)" if init_from else ""
        say(f"resumed at step {start} from {args.out / 'checkpoints'}{ignored}")
        if start >= args.steps:
            where = "past" if start > args.steps else "at"
            say(f"note: the run is already {where} --steps {args.steps}; nothing to train (a larger --steps goes on)")
    elif init_from is not None and not dumping:
        say(f"initialised from {init_from}")

    base_rng = jax.random.key(args.seed + 1)
    tokens_per_step = config.batch_size * (config.inputs_length + config.targets_length)
    if dumping:
        arrays = _global_batch(data, start, config.batch_size, state["batch_sharding"])
        dump_hlo(state, arrays, jax.random.fold_in(base_rng, start), args.dump_hlo)
        return []
    evaluating = eval_data is not None and args.eval_every > 0
    shardings = state["batch_sharding"]
    eval_batches = []
    if evaluating:
        eval_batches = [_global_batch(eval_data, i, config.batch_size, shardings) for i in range(args.eval_batches)]
        repeats = eval_data.repeats(args.eval_batches, config.batch_size)
        if repeats is not None:
            say(repeats)
    eval_rng = jax.random.key(0)  # unused with train=False (no jitter, no dropout)
    saving = checkpoints is not None and args.checkpoint_every > 0

    progress = metrics.Progress(args.steps, start, hidden=metrics.unweighted(config)) if primary else None
    health = _Health()
    records: list[dict[str, Any]] = []
    train_step = state["step"]
    if start < args.steps:  # compile ahead, so that the first record's step time is a step's
        compiling = time.perf_counter()
        first = _global_batch(data, start, config.batch_size, shardings)
        train_step = train_step.lower(params, opt_state, first, jax.random.fold_in(base_rng, start)).compile()
        say(f"compiled the train step in {time.perf_counter() - compiling:.1f}s")
    flags.raise_if_interrupted()  # a Ctrl-C during the compile that a JAX callback swallowed
    # its files are started as the steps begin: a run stopped before leaves none (tidy_unless_trained)
    log = metrics.MetricsLog(args.out, resume_step=start if args.resume else None) if args.out and primary else None
    if log is not None and log.note:
        say(log.note)

    def emit(entry: dict[str, Any]) -> None:
        records.append(entry)
        if log is not None:
            log.write(entry)
        if progress is not None:
            progress.show(entry)

    began = time.perf_counter()
    window_start, window_steps, paused = began, 0, 0.0
    logged = start  # the step of the latest train record

    def log_train(number: int, values: Mapping[str, Any]) -> None:
        """The train record of step `number` (its metrics on the host): step time and throughput
        are the mean over the steps since the last record."""
        nonlocal window_start, window_steps, paused, logged
        seconds = (time.perf_counter() - window_start - paused) / window_steps
        window_start, window_steps, paused, logged = time.perf_counter(), 0, 0.0, number
        learning_rate = float(state["learning_rate"](number - 1))
        flops = model.MODEL_FLOPS_PER_STEP
        emit(
            metrics.train_record(
                number, values, seconds, tokens_per_step, flops, mesh.size, peak, learning_rate=learning_rate
            )
        )

    reached = start  # the steps dispatched so far
    recent: dict[int, Any] = {}  # the metrics of the last three steps dispatched, on the device
    several = jax.process_count() > 1
    stop = metrics.StopRequest()

    def stopping(number: int) -> bool:
        """Whether SIGTERM asks to stop after step `number`: at once with one process; with several,
        at the step jax.distributed's preemption service makes every process agree on."""
        if several:
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(number))
        return stop.requested

    def committed() -> int | None:
        """The newest checkpoint, once a save in flight is committed."""
        if checkpoints is None:
            return None
        with flags.ctrl_c_held():
            checkpoints.wait()
        return checkpoints.latest_step()

    def save(number: int) -> None:
        """Checkpoint step `number` (orbax commits it in the background)."""
        assert checkpoints is not None
        meta = {
            "step": number,
            "seed": args.seed,
            "examples_seen": number * config.batch_size,
            "tokenizer": data.tokenizer,
            **identity,
        }
        with flags.ctrl_c_held():  # it waits for the save before it
            checkpoints.save(number, params, opt_state, meta)

    flags.training_began()  # Ctrl-C is this loop's to handle from here on
    try:
        if not several:  # several processes: jax.distributed catches SIGTERM
            stop.install()
        if log is not None:  # the earlier run's records go now: a checkpoint may come before the first record
            log.start()
        for index in range(start, args.steps):
            flags.raise_if_interrupted()
            number = index + 1  # steps done once this one is
            arrays = _global_batch(data, index, config.batch_size, shardings)
            rng = jax.random.fold_in(base_rng, index)
            params, opt_state, step_metrics, step_health = train_step(params, opt_state, arrays, rng)
            reached = number
            recent[number] = step_metrics
            recent.pop(number - 3, None)
            health.push(number, step_health)
            window_steps += 1
            if progress is not None:
                progress.advance()
            last = number == args.steps
            # SIGTERM: log and checkpoint this step, then stop (unevaluated)
            stop_now = stopping(number) and not last
            due_eval = evaluating and (number % args.eval_every == 0 or last)
            log_now = number % args.log_every == 0 or last or stop_now
            eval_now = due_eval and not stop_now
            save_now = saving and (number % args.checkpoint_every == 0 or last or stop_now)
            if not (log_now or eval_now or save_now):
                continue
            health.settle()
            if log_now:
                log_train(number, jax.device_get(step_metrics))
            interrupted = time.perf_counter()
            if eval_now:
                emit(metrics.record(number, "eval", _evaluate(state, params, eval_batches, eval_rng)))
            if save_now:
                save(number)
            paused += time.perf_counter() - interrupted
            if (eval_now or save_now) and not (stop_now or last or several) and stop.requested:
                # one process: a SIGTERM during the evaluation or the save stops the run here, not
                # after another step (several agree on the step through jax.distributed's
                # preemption service, asked once a step: `stopping`)
                stop_now = True
                if not log_now:
                    log_train(number, jax.device_get(step_metrics))
                if saving and not save_now:
                    save(number)
            if stop_now:
                if progress is not None:
                    progress.close()
                skipped = due_eval and not eval_now
                metrics.stop_interrupted(signal.SIGTERM, number, committed(), announce=primary, unevaluated=skipped)
        health.settle()
        if checkpoints is not None:  # the last save is committed before the run is done
            with flags.ctrl_c_held():
                checkpoints.wait()
    except metrics.NonFiniteError as err:
        flags.stopping()
        good = err.step - 1  # the steps before the bad one are finite: the last gets its record
        if good > logged and good in recent:
            window_steps = err.step - logged  # every step up to the bad one has finished (settled)
            log_train(good, jax.device_get(recent[good]))
        if progress is not None:
            progress.close()
        metrics.stop_training(err, committed())  # a save in flight is of a step before the bad one
    except KeyboardInterrupt:  # Ctrl-C: stop now
        flags.stopping()
        if progress is not None:
            progress.close()
        kept = None
        if checkpoints is not None:
            # a save in flight is committed first; the interrupt may have caught orbax between two
            # saves, so its threads are joined (close) and the directory, not its list, says what exists
            checkpoints.close()
            kept = max(checkpoints.committed_steps(), default=None)
        if log is not None:
            log.close()
        # leave at once, without the interpreter's shutdown: under work still queued on the devices
        # (an evaluation's batches, dispatched ahead) it crashed (SIGSEGV); and with several
        # processes it would wait at jax.distributed's barrier for the others
        who = f"process {jax.process_index()}: " if several else ""
        metrics.stop_interrupted(signal.SIGINT, reached, kept, who=who, at_once=True, first=start)
    except Exception as error:
        flags.stopping()
        if isinstance(error, OSError) and error.filename is not None:  # a save or a record not written
            if progress is not None:
                progress.close()
            if log is not None:
                log.close()
            kept = max(checkpoints.committed_steps(), default=None) if checkpoints is not None else None
            metrics.stop_writing(error, kept, f"process {jax.process_index()}: " if several else "")
        if not several:
            raise
        # Most often another process died (a collective fails): say so in one line and leave, as
        # jax.distributed's shutdown would wait for the dead process.
        if log is not None:
            log.close()
        flags.leave_job(error, f"process {jax.process_index()}", "processes")
    finally:
        flags.stopping()  # the run is over, one way or another: a Ctrl-C now does not cut a save's commit
        stop.restore()
        if progress is not None:
            progress.close()
        if checkpoints is not None:
            checkpoints.close()
        if log is not None:
            log.close()
    say(f"done: step {max(start, args.steps)} in {time.perf_counter() - began:.1f}s")
    return records
