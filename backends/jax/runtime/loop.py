"""The training loop of a generated JAX program. Runtime support, copied verbatim.

The generated `model` module provides: CONFIG (sizes and train settings), MESH_AXES and RULES
(the mesh and the logical-axis rules), PARAM_AXES (logical axes of each parameter),
init_params(rng), and loss_fn(params, batch, rng, train, experts) -> (loss, metrics). This module places everything on
the mesh with NamedSharding (pjit semantics), jits one train step (forward + backward + optimizer
update), and runs it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .sharding import fake_cpu_devices


def parse_args(argv: Sequence[str], description: str, default_steps: int, default_seed: int) -> argparse.Namespace:
    """Flags shared by every generated program; parsed before jax is imported (see --devices)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=default_steps, help="training steps (default: the spec's)")
    parser.add_argument("--seed", type=int, default=default_seed, help="seed for init, data and noise")
    parser.add_argument("--devices", type=int, default=None, help="fake this many CPU devices (CPU hosts only)")
    parser.add_argument("--log-every", type=int, default=10, help="print metrics every N steps")
    parser.add_argument("--out", type=Path, default=None, help="write metrics.jsonl here")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one process per host: call jax.distributed.initialize() (coordinator from the cluster's environment)",
    )
    parser.add_argument(
        "--dump-hlo",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/train_step.hlo.txt and DIR/cost_analysis.json for the compiled step, then exit",
    )
    args = parser.parse_args(argv)
    if args.steps < 0:
        parser.error("--steps must be >= 0")
    if args.devices is not None:
        if args.devices < 1:
            parser.error("--devices must be >= 1")
        fake_cpu_devices(args.devices)
    return args


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


def build(model: ModuleType, seed: int) -> dict[str, Any]:
    """Mesh, parameters, optimizer state and the jitted train step, all placed on the mesh."""
    import jax
    import optax

    from .optim import optimizer, schedule
    from .parallel import ExpertParallel
    from .sharding import Rules, make_mesh

    config = model.CONFIG
    mesh = make_mesh(model.MESH_AXES)
    rules = Rules(model.RULES)
    param_sharding = _shardings(model, mesh)
    batch_sharding = rules.sharding(mesh, ("batch", None))
    replicated = rules.sharding(mesh, ())
    experts = ExpertParallel(mesh, rules)

    params = jax.jit(model.init_params, out_shardings=param_sharding)(jax.random.key(seed))
    learning_rate = schedule(config.schedule, config.learning_rate, config.warmup_steps, config.steps)
    tx = optimizer(
        config.optimizer,
        learning_rate,
        beta1=config.beta1,
        beta2=config.beta2,
        weight_decay=config.weight_decay,
        clip_grad_norm=config.clip_grad_norm,
    )
    # Optimizer state lives where its parameter lives: a moment shaped like its parameter takes
    # the parameter's sharding, a factored one (Adafactor's row or column statistics) the
    # parameter's minus the dim it averages out, and scalars (step counts) are replicated.
    # Left to jit, the moments come out replicated and every step all-gathers the gradients.
    state_shapes = jax.eval_shape(tx.init, params)
    opt_sharding = jax.tree_util.tree_map_with_path(
        lambda path, leaf: _state_sharding(path, leaf.shape, model, rules, mesh), state_shapes
    )
    opt_state = jax.jit(tx.init, out_shardings=opt_sharding)(params)

    def train_step(params: Any, opt_state: Any, batch: dict[str, Any], rng: Any) -> Any:
        def loss(p: Any) -> Any:
            return model.loss_fn(p, batch, rng, train=True, experts=experts)

        (total, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {**metrics, "loss": total, "grad_norm": optax.global_norm(grads)}
        return params, opt_state, metrics

    batch_shardings = {"inputs": batch_sharding, "targets": batch_sharding}
    step = jax.jit(
        train_step,
        in_shardings=(param_sharding, opt_sharding, batch_shardings, replicated),
        out_shardings=(param_sharding, opt_sharding, replicated),
        donate_argnums=(0, 1),
    )
    return {"mesh": mesh, "params": params, "opt_state": opt_state, "step": step, "batch_sharding": batch_shardings}


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


def run(model: ModuleType, data: Any, args: argparse.Namespace) -> list[dict[str, float]]:
    """Train for args.steps steps; returns the logged metrics (also printed, and written to --out)."""
    import jax
    import numpy as np

    config = model.CONFIG
    if args.distributed:
        jax.distributed.initialize()
    state = build(model, args.seed)
    step_fn = state["step"]
    params, opt_state = state["params"], state["opt_state"]
    mesh = state["mesh"]
    print(f"mesh {dict(mesh.shape)} on {mesh.size} {jax.devices()[0].platform} device(s); {args.steps} steps")
    base_rng = jax.random.key(args.seed + 1)
    tokens_per_step = config.batch_size * (config.inputs_length + config.targets_length)
    history: list[dict[str, float]] = []
    log = None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        log = (args.out / "metrics.jsonl").open("w", encoding="utf-8")
    start = time.perf_counter()
    window_start, window_steps = start, 0
    for step in range(args.steps):
        arrays = _global_batch(data, step, config.batch_size, state["batch_sharding"])
        rng = jax.random.fold_in(base_rng, step)
        if args.dump_hlo is not None:
            dump_hlo({**state, "params": params, "opt_state": opt_state}, arrays, rng, args.dump_hlo)
            return history
        params, opt_state, metrics = step_fn(params, opt_state, arrays, rng)
        window_steps += 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            values = {k: float(np.mean(np.asarray(v))) for k, v in metrics.items() if np.ndim(v) == 0}
            now = time.perf_counter()
            values["tokens_per_second"] = tokens_per_step * window_steps / (now - window_start)
            window_start, window_steps = now, 0
            record = {"step": step + 1, **values}
            history.append(record)
            shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"step {step + 1:>6}  {shown}", flush=True)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
    if log is not None:
        log.close()
    print(f"done: {args.steps} steps in {time.perf_counter() - start:.1f}s")
    return history
