"""Do switchc's PyTorch program and transformers' SwitchTransformersForConditionalGeneration compute
the same model? The same weights and batch through both: the loss, every gradient, and where each
Switch layer sends each token.

    .venv/bin/pip install -c ci/constraints.txt torch==2.13.0 transformers   # as for bench_step.py
    .venv/bin/python benchmarks/check_hf_parity.py                  # bench_step's 16-expert config: 30 s
    .venv/bin/python benchmarks/check_hf_parity.py --experts 1 --quick

bench_step.py's "HF Switch, switchc init" row starts HF from the PyTorch program's initial weights;
this script is why that row is the same work as the program's: it compiles bench_step's spec with
`switchc compile --backend torch`, builds the program's model (seed 0), loads its weights into HF
(`hf_weights.hf_state_dict`, strict: every HF weight set), and runs one forward and backward pass
of each in training mode on bench_step's random batch, with the three things the two define
differently turned off on both sides:

- capacity: HF counts it per sequence, switchc per routing group; here it is the whole sequence
  (switchc: capacity factor = the expert count), so no token is dropped on either side;
- router jitter: each draws its own noise; off (switchc moe.jitter_eps 0, HF router_jitter_noise 0);
- router losses: HF takes one load-balancing and one z-loss over all of a stack's layers at once,
  switchc one per layer (PAPER.md, eq. 4); both coefficients 0, so each loss is the cross-entropy.

It prints the largest differences and exits 1 if the losses differ by more than 1e-5 (relative),
a gradient by more than 1e-4 of that gradient's largest entry, or any token goes to another expert.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_step  # noqa: E402  # the benchmark's spec, shapes and batch
from hf_weights import hf_state_dict  # noqa: E402

LOSS_TOLERANCE = 1e-5  # relative
GRADIENT_TOLERANCE = 1e-4  # of the gradient's largest entry


def compile_program(workdir: Path, shape: bench_step.Shape, experts: int) -> Path:
    spec = workdir / "parity.yaml"
    spec.write_text(bench_step.spec_yaml(shape, experts), encoding="utf-8")
    program = workdir / "program"
    overrides = [
        f"moe.capacity_factor={{train: {experts}, eval: {experts}}}",  # C = S: nothing dropped
        "moe.jitter_eps=0",
        "moe.aux_loss_coef=0",
        "moe.z_loss_coef=0",
    ]
    command = [str(bench_step.SWITCHC), "compile", str(spec), "--backend", "torch", "-o", str(program)]
    for override in overrides:
        command += ["--set", override]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return program


def switchc_pass(
    program: Path, batch: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The program's model (seed 0) in training mode: (its weights and, after one pass, the loss and
    the gradients, by IR name, and the tokens per expert by Switch layer)."""
    sys.path.insert(0, str(program))
    import model as program_model  # the generated program's model.py
    import torch
    from runtime.layers import ir_name  # type: ignore[import-not-found]

    module = program_model.build(0)
    weights = {ir_name(path): p.detach().numpy().copy() for path, p in module.named_parameters()}
    module.train()
    loss, metrics = module({name: torch.from_numpy(value).long() for name, value in batch.items()})
    loss.backward()
    grads = {ir_name(path): p.grad.detach().numpy() for path, p in module.named_parameters()}
    routed = {
        name.removeprefix("tokens_per_expert/"): np.asarray(value.detach())
        for name, value in metrics.items()
        if name.startswith("tokens_per_expert/")
    }
    return weights, float(loss.detach()), grads, routed


def hf_pass(
    shape: bench_step.Shape, experts: int, weights: dict[str, np.ndarray], batch: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray], list[np.ndarray]]:
    """HF with the same weights, training mode: (loss, gradients by HF name, tokens per expert by
    router, encoder first)."""
    import torch
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router

    model = bench_step.hf_model(
        asdict(shape),
        experts,
        shape.inputs_length,  # capacity = the sequence: nothing dropped
        router_jitter_noise=0.0,
        router_z_loss_coef=0.0,
        router_aux_loss_coef=0.0,
    )
    model.load_state_dict(hf_state_dict(weights), strict=True)
    model.train()
    counts: list[np.ndarray] = []

    def record(module: Any, inputs: Any, output: Any) -> None:
        counts.append(output[0].sum(dim=(0, 1)).detach().numpy())  # one-hot [batch, length, experts]

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, SwitchTransformersTop1Router)]
    out = model(
        input_ids=torch.from_numpy(batch["inputs"]).long(),
        labels=torch.from_numpy(batch["targets"]).long(),
        output_router_logits=True,
    )
    out.loss.backward()
    for hook in hooks:
        hook.remove()
    # an expert no token reached has no gradient: zero, as switchc's
    grads = {
        name: np.zeros(p.shape, np.float32) if p.grad is None else p.grad.numpy()
        for name, p in model.named_parameters()
    }
    # transformers 5.24 ties the encoder's and decoder's token embeddings to `shared` only when
    # tie_word_embeddings is set (switchc's default unties the output projection alone): here they are
    # separate tables, both loaded with switchc's one table, and `shared` is unused. The gradient of
    # switchc's table is their sum (where a later version ties them, only `shared` is listed).
    for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        grads["shared.weight"] = grads["shared.weight"] + grads.pop(name, 0)
    return float(out.loss.detach()), grads, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=bench_step.REFERENCE_EXPERTS, help="experts per Switch layer")
    parser.add_argument("--quick", action="store_true", help="bench_step's --quick sizes")
    args = parser.parse_args()
    shape = bench_step.QUICK if args.quick else bench_step.FULL
    batch = bench_step.random_batch(asdict(shape))
    with tempfile.TemporaryDirectory(prefix="hf_parity_") as tmp:
        program = compile_program(Path(tmp), shape, args.experts)
        weights, ours, our_grads, our_routes = switchc_pass(program, batch)
    theirs, their_grads, their_routes = hf_pass(shape, args.experts, weights, batch)

    failures = []
    loss_error = abs(ours - theirs) / abs(theirs)
    print(f"loss: switchc {ours:.6f}, HF {theirs:.6f}, relative difference {loss_error:.1e}")
    if loss_error > LOSS_TOLERANCE:
        failures.append("loss")

    # switchc's gradients in HF's layout (a re-layout, as for the weights); the embedding's three HF
    # names are one parameter, listed once by named_parameters
    mapped = {name: value.numpy() for name, value in hf_state_dict(our_grads).items() if name in their_grads}
    errors = sorted(
        ((np.abs(mapped[name] - g).max() / max(np.abs(g).max(), 1e-30), name) for name, g in their_grads.items()),
        reverse=True,
    )
    print(f"gradients: {len(errors)} parameters; largest differences (of the gradient's largest entry):")
    for error, name in errors[:5]:
        print(f"  {error:.1e}  {name}")
    if errors[0][0] > GRADIENT_TOLERANCE:
        failures.append("gradients")

    # switchc's metrics list the Switch layers by name; HF's routers ran encoder first, in block order
    ordered = sorted(our_routes, key=lambda name: (not name.startswith("encoder"), int(name.split("/")[1])))
    same = [np.array_equal(our_routes[name], counts) for name, counts in zip(ordered, their_routes, strict=True)]
    print(
        "tokens per expert: "
        + ", ".join(f"{name} {'same' if ok else 'DIFFERENT'}" for name, ok in zip(ordered, same, strict=True))
    )
    if not all(same):
        failures.append("routing")

    if failures:
        print(f"MISMATCH: {', '.join(failures)}")
        raise SystemExit(1)
    print("switchc's PyTorch program and HF compute the same model")


if __name__ == "__main__":
    main()
