"""The JAX and PyTorch programs of one spec agree: the same weights and batch give the same loss,
router losses, routing decisions and gradients, to float32 round-off (DESIGN.md, "What keeps it
honest"; issue #5 item 5).

For each spec variant both programs are generated; one backend initialises the weights and
writes them with its program's runtime/weights.py (safetensors, flat arrays keyed by IR name);
both programs load that file, run one forward and backward pass of the same batch on one
device (train mode: training capacity factor), and the results are held side by side. The
imports run one program at a time: each program has its own top-level `model` and `runtime`,
taken out of sys.modules before the other one is imported.

Router jitter is off in every variant (moe.jitter_eps=0): the two programs draw their noise
from different generators (JAX's threefry keys, torch's Philox per-row streams), so jitter
agrees in distribution only, never bit-wise. Dropout is 0 in these specs for the same reason.

Tolerances, float32 (eps 1.2e-7): the programs compute the same math in a different order
(JAX stacks q, k, v into one einsum and embeds inputs and targets in one lookup, XLA fuses and
reassociates reductions), so results differ by round-off. Measured on these variants: losses
within 2e-7 relative, each gradient within 3e-6 of its largest element. The test allows
rtol 1e-5 on losses and metrics and, per gradient tensor, an error of 1e-4 x its largest
element: two orders of magnitude above round-off, far below any real bug (a missing term, a
wrong scale, a transposed weight are O(1) errors). Routing decisions (tokens per expert, the
dropped fraction) must be identical.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("torch")
pytest.importorskip("safetensors")

from switchc.backends.common.verify import write_program
from switchc.backends.jax.program import generate as generate_jax
from switchc.backends.torch.program import generate as generate_torch

from switchc.spec import load_spec

LOSS_RTOL = 1e-5
GRAD_TOLERANCE = 1e-4  # of each gradient's largest element
# Small shapes keep XLA's compile short: one block per stack, each with a Switch layer.
SMALL = [
    "train.batch_size=4",
    "train.inputs_length=32",
    "train.targets_length=8",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.d_model=64",
    "model.d_ff=128",
    "model.num_heads=4",
    "model.d_kv=16",
]
MOE_SMALL = ["moe.expert_every=1", "moe.num_experts=4", "moe.group_size=64", "moe.jitter_eps=0.0"]
SCALARS = ("cross_entropy", "aux_loss", "z_loss", "top1_gate")


@dataclass(frozen=True)
class Variant:
    name: str
    spec: str
    overrides: tuple[str, ...]
    exporter: str  # the backend whose init writes the weights file
    drops: bool = False  # the training capacity must drop some tokens


FAST = [
    Variant("dense", "dense-tiny", tuple(SMALL), exporter="torch"),
    Variant("switch top-1, z-loss", "switch-tiny", (*SMALL, *MOE_SMALL, "moe.z_loss_coef=0.001"), exporter="jax"),
    Variant("moe top-2", "switch-tiny", (*SMALL, *MOE_SMALL, "moe.top_k=2", "moe.capacity_factor.train=2.0"), "jax"),
    Variant(
        "top-1, tokens dropped",
        "switch-tiny",
        (*SMALL, *MOE_SMALL, "moe.capacity_factor.train=0.5", "moe.min_capacity=1"),
        exporter="jax",
        drops=True,
    ),
]
SLOW = [
    # switch-tiny's own shape: 2 + 2 blocks, a Switch layer in every other one
    Variant(
        "geglu, tied embeddings",
        "switch-tiny",
        ("train.batch_size=4", "moe.jitter_eps=0.0", "model.ffn_activation=geglu", "model.tie_embeddings=true"),
        exporter="torch",
    ),
    Variant(
        "swiglu top-2, batch-prioritized, tokens dropped",
        "switch-tiny",
        (
            *SMALL,
            *MOE_SMALL,
            "model.ffn_activation=swiglu",
            "moe.top_k=2",
            "moe.batch_prioritized_routing=true",
            "moe.capacity_factor.train=0.75",
            "moe.z_loss_coef=0.001",
        ),
        exporter="jax",
        drops=True,
    ),
]


@dataclass
class Step:
    """What one program computed for the batch."""

    loss: float
    metrics: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]


def _forget_program() -> None:
    for name in [n for n in sys.modules if n in ("model", "runtime") or n.startswith("runtime.")]:
        del sys.modules[name]


@contextmanager
def imported(program: Path) -> Iterator[ModuleType]:
    """The program's model module, with its own runtime package; forgotten again afterwards."""
    _forget_program()
    sys.path.insert(0, str(program))
    try:
        yield importlib.import_module("model")
    finally:
        sys.path.remove(str(program))
        _forget_program()


def _batch(config: Any) -> dict[str, np.ndarray]:
    """Random token ids with padding: the tail of one input row and of every target row."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(3, config.vocab_size, (config.batch_size, config.inputs_length), dtype=np.int32)
    targets = rng.integers(3, config.vocab_size, (config.batch_size, config.targets_length), dtype=np.int32)
    inputs[1, -5:] = 0
    targets[:, -2:] = 0
    return {"inputs": inputs, "targets": targets}


def export_jax(program: Path, path: Path, seed: int) -> None:
    with imported(program) as model:
        import jax
        from runtime import weights  # type: ignore[import-not-found]

        params = jax.jit(model.init_params)(jax.random.key(seed))  # jitted, as the programs' build does
        weights.save(path, {name: np.asarray(value) for name, value in params.items()}, model.PARAMS)


def export_torch(program: Path, path: Path, seed: int) -> None:
    with imported(program) as model:
        from runtime import layers, weights  # type: ignore[import-not-found]

        flat = layers.flat_params(model.build(seed))
        weights.save(path, {name: value.numpy() for name, value in flat.items()}, model.PARAMS)


def run_jax(program: Path, path: Path, batch: dict[str, np.ndarray]) -> Step:
    """The loss, metrics and gradients of jax.value_and_grad(loss_fn), jitted, on one device."""
    with imported(program) as model:
        import jax
        import jax.numpy as jnp
        from runtime import weights  # type: ignore[import-not-found]
        from runtime.parallel import ExpertParallel  # type: ignore[import-not-found]
        from runtime.sharding import Rules  # type: ignore[import-not-found]

        params = {name: jnp.asarray(value, model.DTYPE) for name, value in weights.load(path, model.PARAMS).items()}
        experts = ExpertParallel(None, Rules(model.RULES))
        arrays = {name: jnp.asarray(value) for name, value in batch.items()}

        def loss(p: Any) -> Any:
            return model.loss_fn(p, arrays, jax.random.key(1), train=True, experts=experts)

        (total, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return Step(
            float(total),
            {name: np.asarray(value) for name, value in metrics.items()},
            {name: np.asarray(value) for name, value in grads.items()},
        )


def run_torch(program: Path, path: Path, batch: dict[str, np.ndarray]) -> Step:
    """The same with autograd: the model in train mode, without noise (no jitter, no dropout)."""
    with imported(program) as model:
        import torch
        from runtime import layers, weights  # type: ignore[import-not-found]

        module = model.Transformer().to(model.DTYPE)
        layers.load_flat(module, weights.load(path, model.PARAMS))
        module.train()
        loss, metrics = module({name: torch.from_numpy(value).long() for name, value in batch.items()})
        loss.backward()
        return Step(
            float(loss.detach()),
            {name: torch.as_tensor(value).detach().numpy() for name, value in metrics.items()},
            {layers.ir_name(path): param.grad.numpy() for path, param in module.named_parameters()},
        )


def _compare(variant: Variant, tmp_path: Path) -> dict[str, float]:
    spec = load_spec(variant.spec, list(variant.overrides))
    if spec.moe is not None:
        assert spec.moe.jitter_eps == 0.0, "jitter cannot agree bit-wise: turn it off (see the docstring)"
    assert spec.model.dropout_rate == 0.0
    jax_program = write_program(generate_jax(spec), tmp_path / "jax")
    torch_program = write_program(generate_torch(spec), tmp_path / "torch")
    weights_file = tmp_path / "init.safetensors"
    exporter = export_jax if variant.exporter == "jax" else export_torch
    exporter(jax_program if variant.exporter == "jax" else torch_program, weights_file, seed=3)

    with imported(torch_program) as model:
        batch = _batch(model.CONFIG)
        names = list(model.PARAMS)
    torch_step = run_torch(torch_program, weights_file, batch)
    jax_step = run_jax(jax_program, weights_file, batch)

    assert sorted(jax_step.metrics) == sorted(torch_step.metrics)
    assert sorted(jax_step.grads) == sorted(torch_step.grads) == sorted(names)
    errors = {"loss": abs(torch_step.loss - jax_step.loss) / abs(jax_step.loss)}
    np.testing.assert_allclose(torch_step.loss, jax_step.loss, rtol=LOSS_RTOL, err_msg="loss")
    for key in SCALARS:
        if key in jax_step.metrics:
            want, got = jax_step.metrics[key], torch_step.metrics[key]
            errors[key] = float(abs(got - want) / max(abs(want), 1e-30))
            np.testing.assert_allclose(got, want, rtol=LOSS_RTOL, err_msg=key)
    for key, want in jax_step.metrics.items():  # routing decisions: identical
        if key.startswith(("tokens_per_expert", "dropped_fraction")):
            np.testing.assert_array_equal(torch_step.metrics[key], want, err_msg=key)
    if variant.drops:
        assert float(jax_step.metrics["dropped_fraction"]) > 0.0, "the variant was meant to drop tokens"
    worst = 0.0
    for name in names:
        want, got = jax_step.grads[name], torch_step.grads[name]
        scale = float(np.max(np.abs(want)))
        assert scale > 0.0, f"{name}: no gradient at all"
        error = float(np.max(np.abs(got - want))) / scale
        worst = max(worst, error)
        assert error <= GRAD_TOLERANCE, f"gradient of {name}: max error {error:.2e} of its largest element"
    errors["worst gradient"] = worst
    return errors


@pytest.mark.parametrize("variant", FAST, ids=[v.name for v in FAST])
def test_backends_agree(variant: Variant, tmp_path: Path) -> None:
    errors = _compare(variant, tmp_path)
    print(variant.name, {key: f"{value:.1e}" for key, value in errors.items()})


@pytest.mark.slow
@pytest.mark.parametrize("variant", SLOW, ids=[v.name for v in SLOW])
def test_backends_agree_on_more_variants(variant: Variant, tmp_path: Path) -> None:
    errors = _compare(variant, tmp_path)
    print(variant.name, {key: f"{value:.1e}" for key, value in errors.items()})


@pytest.mark.slow
def test_programs_export_and_start_from_weights(tmp_path: Path) -> None:
    """`train.py --export-init` writes init_params(seed)'s weights bit for bit, and `--init-from`
    trains from a file written by the other backend (the JAX program; the PyTorch loop's flag is
    wired separately). Both sides jit the init: run op by op it differs in the last bits without
    XLA's optimizations (tests run without them, tests/conftest.py)."""
    import subprocess

    spec = load_spec("switch-tiny", [*SMALL, *MOE_SMALL])
    jax_program = write_program(generate_jax(spec), tmp_path / "jax")
    torch_program = write_program(generate_torch(spec), tmp_path / "torch")
    exported, reference = tmp_path / "exported.safetensors", tmp_path / "reference.safetensors"
    command = [sys.executable, "train.py", "--export-init", str(exported), "--seed", "5"]
    subprocess.run(command, cwd=jax_program, check=True, capture_output=True, timeout=300)
    export_jax(jax_program, reference, seed=5)
    with imported(jax_program) as model:
        from runtime import weights  # type: ignore[import-not-found]

        got, want = weights.load(exported, model.PARAMS), weights.load(reference, model.PARAMS)
        assert weights.metadata(exported)["seed"] == "5"
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    from_torch = tmp_path / "torch.safetensors"
    export_torch(torch_program, from_torch, seed=5)
    command = [sys.executable, "train.py", "--init-from", str(from_torch), "--steps", "1", "--eval-every", "0"]
    result = subprocess.run(command, cwd=jax_program, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train step 1/1" in result.stdout


@pytest.mark.parametrize("trainer", ["jax", pytest.param("torch", marks=pytest.mark.slow)])  # 20 s each
def test_a_checkpoint_exported_by_one_backend_evaluates_alike_in_the_other(trainer: str, tmp_path: Path) -> None:
    """Train in one backend, evaluate in the other: `--export-init FILE --resume` writes the weights
    of the run's latest checkpoint (not the step-0 weights), and the other backend's program,
    started from FILE, evaluates them as the trainer did at that step. (Its learning rate is ~0, so
    its one step leaves the weights as they were; evaluation has no noise, and the held-out
    batches are the same in both programs.)"""
    from tests.backends.programs import compile_program, records, run_program

    other = "torch" if trainer == "jax" else "jax"
    small = ["train.batch_size=4", "train.inputs_length=32", "train.targets_length=8", "moe.group_size=32"]
    sets = [text for setting in small for text in ("--set", setting)]
    trained = compile_program(tmp_path / "trained", *sets, backend=trainer)
    frozen = compile_program(tmp_path / "frozen", *sets, "--set", "train.optimizer.learning_rate=1e-30", backend=other)
    run = run_program(trained, "--steps", "2", "--checkpoint-every", "2", "--eval-every", "2", "--out", "run")
    assert run.returncode == 0, run.stderr[-3000:]
    export = run_program(trained, "--export-init", str(tmp_path / "step2.safetensors"), "--resume", "--out", "run")
    assert export.returncode == 0, export.stderr[-3000:]
    assert f"wrote the step-2 weights (checkpoint {trained / 'run' / 'checkpoints' / '2'})" in export.stdout
    evaluated = run_program(frozen, "--init-from", str(tmp_path / "step2.safetensors"), "--steps", "1", "--out", "run")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "another model" not in evaluated.stdout  # another learning rate is the same architecture
    (want,) = records(trained / "run", "eval")
    (got,) = records(frozen / "run", "eval")
    for key in ("loss", "cross_entropy", "aux_loss", "dropped_fraction"):
        assert got[key] == pytest.approx(want[key], rel=LOSS_RTOL), key
