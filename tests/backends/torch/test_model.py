"""The generated PyTorch model in process: weights by IR name, FLOP counting, the Switch layer
against a per-token reference, and the optimizers against optax."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from switchc.backends.common import routing
from switchc.backends.torch.program import generate
from switchc.backends.torch.runtime import layers, moe
from switchc.backends.torch.runtime.optim import Adafactor, optimizer, schedule
from torch.utils.flop_counter import FlopCounterMode

from switchc.spec import load_spec

SETTINGS = ["moe.group_size=128", "train.batch_size=4", "train.inputs_length=64", "train.targets_length=16"]


@pytest.fixture
def model_module(tmp_path: Path) -> Iterator[ModuleType]:
    """The generated model.py, imported with the program's own runtime/ package."""
    for relative, text in generate(load_spec("switch-tiny", SETTINGS)).items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("model")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "model" or n == "runtime" or n.startswith("runtime.")]:
            del sys.modules[name]


def _batch(config: object, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(3, 259, (config.batch_size, config.inputs_length), generator=generator)  # type: ignore[attr-defined]
    targets = torch.randint(3, 259, (config.batch_size, config.targets_length), generator=generator)  # type: ignore[attr-defined]
    targets[:, -3:] = 0  # padding carries no loss
    return {"inputs": inputs, "targets": targets}


def test_parameters_sit_at_their_ir_names(model_module: ModuleType) -> None:
    model = model_module.build(0)
    flat = layers.flat_params(model)
    assert list(flat) == list(model_module.PARAMS)  # the same names, in the table's order
    for name, (shape, _, std) in model_module.PARAMS.items():
        assert tuple(flat[name].shape) == shape, name
        if std == 0.0:
            assert torch.all(flat[name] == 1.0), name
        elif flat[name].numel() > 1000:
            assert float(flat[name].std()) == pytest.approx(std, rel=0.1), name


def test_load_flat_round_trips_and_checks(model_module: ModuleType) -> None:
    source, target = model_module.build(0), model_module.build(1)
    arrays = {name: value.numpy() for name, value in layers.flat_params(source).items()}
    layers.load_flat(target, arrays)
    batch = _batch(model_module.CONFIG)
    source.eval(), target.eval()
    assert torch.equal(source(batch)[0], target(batch)[0])
    with pytest.raises(KeyError, match="missing"):
        layers.load_flat(target, {k: v for k, v in arrays.items() if k != "shared/embedding"})
    arrays["shared/embedding"] = arrays["shared/embedding"][:, :3]
    with pytest.raises(ValueError, match="shared/embedding has shape"):
        layers.load_flat(target, arrays)


def test_flop_counter_sees_the_matmuls(model_module: ModuleType) -> None:
    model = model_module.build(0)
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = model(_batch(model_module.CONFIG), layers.Noise(0))
        loss.backward()
    config = model_module.CONFIG
    # At least the logits projection, forward and backward: 2 * tokens * d_model * vocab * 3.
    logits = 2 * config.batch_size * config.targets_length * config.d_model * config.vocab_size * 3
    assert counter.get_total_flops() > logits


def test_evaluation_has_no_noise_and_is_deterministic(model_module: ModuleType) -> None:
    model = model_module.build(0)
    batch = _batch(model_module.CONFIG)
    with torch.no_grad():
        train_losses = {float(model(batch, layers.Noise(seed, 0))[0]) for seed in (0, 1)}
    assert len(train_losses) == 2  # router jitter differs by seed
    model.eval()
    with torch.no_grad():
        assert float(model(batch, layers.Noise(0))[0]) == float(model(batch, layers.Noise(1))[0])


def test_dropout_keeps_no_mask_and_draws_it_again_for_the_gradient() -> None:
    """The backward pass zeroes the same units as the forward did (the mask is drawn again from
    the stream, not kept): what lets a block's recomputation under train.remat stop before it."""
    x = torch.randn(4, 8, 16, requires_grad=True)
    stream = layers.Stream((0, 1, 2))
    y = layers.dropout(x, 0.25, stream)
    keep = torch.rand(x.shape, generator=stream.generator(x.device)) >= 0.25
    assert 0 < int(keep.sum()) < keep.numel()
    torch.testing.assert_close(y, torch.where(keep, x / 0.75, 0.0))
    assert y.grad_fn is not None and len(y.grad_fn.saved_tensors) == 0
    grad = torch.randn_like(y)
    y.backward(grad)
    torch.testing.assert_close(x.grad, torch.where(keep, grad / 0.75, 0.0))


def _reference_switch(
    router: moe.Router, experts: moe.Experts, x: torch.Tensor, settings: routing.MoESettings
) -> torch.Tensor:
    """Token by token: the chosen experts' FFN outputs times their gates (no capacity limit)."""
    probs = torch.softmax(x.reshape(-1, x.shape[-1]) @ router.w, dim=-1)
    out = torch.zeros_like(x.reshape(-1, x.shape[-1]))
    for t, token in enumerate(x.reshape(-1, x.shape[-1])):
        gates, chosen = torch.topk(probs[t], settings.top_k)
        for gate, e in zip(gates, chosen, strict=True):
            hidden = layers.activate(token @ experts.wi_0[e], token @ experts.wi_1[e], settings.activation)
            out[t] += gate * (hidden @ experts.wo[e])
    return out.reshape(x.shape)


@pytest.mark.parametrize("top_k", [1, 2])
def test_switch_layer_matches_a_per_token_reference(top_k: int) -> None:
    torch.manual_seed(0)
    settings = routing.MoESettings(
        num_experts=4,
        top_k=top_k,
        capacity_factor=4.0,  # room for every token: nothing is dropped
        min_capacity=1,
        group_size=8,
        jitter_eps=0.0,
        router_dtype=torch.float32,
        batch_prioritized=False,
        expert_dropout_rate=0.0,
        activation="geglu",
    )
    router, experts = moe.Router(16, 4), moe.Experts(4, 16, 32, "geglu")
    for param in (*router.parameters(), *experts.parameters()):
        torch.nn.init.normal_(param, std=0.3)
    x = torch.randn(2, 8, 16)
    y, metrics = moe.switch(router, experts, x, settings)
    assert float(metrics["dropped_fraction"]) == 0.0
    torch.testing.assert_close(y, _reference_switch(router, experts, x, settings), rtol=1e-5, atol=1e-5)


def test_capacity_drops_late_tokens_through_the_residual() -> None:
    """All tokens pick expert 0, capacity 2: only the first two of each group get an output."""
    settings = routing.MoESettings(4, 1, 1.0, 2, 8, 0.0, torch.float32, False, 0.0, "relu")
    router, experts = moe.Router(4, 4), moe.Experts(4, 4, 8, "relu")
    with torch.no_grad():
        router.w.zero_()
        router.w[:, 0] = 1.0
        for param in experts.parameters():
            param.fill_(0.1)
    x = torch.ones(1, 8, 4)
    y, metrics = moe.switch(router, experts, x, settings)
    assert torch.all(y[0, :2] != 0) and torch.all(y[0, 2:] == 0)
    assert float(metrics["dropped_fraction"]) == pytest.approx(6 / 8)


# ---- optimizers against optax ----------------------------------------------------------------------

SHAPES = [(256, 128), (4, 128, 512), (128,), (32, 4)]  # factored, factored 3-d, and two unfactored


@pytest.mark.parametrize(("name", "beta1", "weight_decay"), [("adafactor", None, 0.0), ("adafactor", 0.9, 1e-3)])
def test_adafactor_matches_optax(name: str, beta1: float | None, weight_decay: float) -> None:
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(0)
    params = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    grads = [[rng.normal(size=shape).astype(np.float32) * 10.0**-i for shape in SHAPES] for i in range(4)]
    learning_rate = schedule("rsqrt", 0.01, 2, 10)

    tx = optax.adafactor(
        lambda step: 0.01 * jnp.sqrt(2 / jnp.maximum(step + 1, 2)),
        decay_rate=0.8,
        multiply_by_parameter_scale=False,
        momentum=beta1,
        weight_decay_rate=weight_decay or None,
    )
    expected = [jnp.asarray(p) for p in params]
    state = tx.init(expected)
    for step_grads in grads:
        updates, state = tx.update([jnp.asarray(g) for g in step_grads], state, expected)
        expected = optax.apply_updates(expected, updates)

    found = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = optimizer(name, found, beta1=beta1, beta2=None, weight_decay=weight_decay)
    assert isinstance(opt, Adafactor)
    for step, step_grads in enumerate(grads):
        for param, grad in zip(found, step_grads, strict=True):
            param.grad = torch.from_numpy(grad)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step)
        opt.step()
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_allclose(got.detach().numpy(), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_adam_matches_optax_adamw() -> None:
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(1)
    params = [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
    grads = [[rng.normal(size=shape).astype(np.float32) for shape in SHAPES] for _ in range(3)]
    tx = optax.adamw(1e-2, b1=0.9, b2=0.999, weight_decay=0.1)
    expected = [jnp.asarray(p) for p in params]
    state = tx.init(expected)
    for step_grads in grads:
        updates, state = tx.update([jnp.asarray(g) for g in step_grads], state, expected)
        expected = optax.apply_updates(expected, updates)
    found = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = optimizer("adam", found, beta1=None, beta2=None, weight_decay=0.1)
    for step_grads in grads:
        for param, grad in zip(found, step_grads, strict=True):
            param.grad = torch.from_numpy(grad)
        for group in opt.param_groups:
            group["lr"] = 1e-2
        opt.step()
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_allclose(got.detach().numpy(), np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rsqrt", "constant", "cosine"])
def test_schedules_match_the_jax_program(kind: str) -> None:
    pytest.importorskip("optax")
    from switchc.backends.jax.runtime.optim import schedule as jax_schedule

    expected = jax_schedule(kind, 0.01, 10, 50)
    found = schedule(kind, 0.01, 10, 50)
    for step in (0, 1, 5, 9, 10, 11, 30, 49, 50, 80):
        assert found(step) == pytest.approx(float(expected(step)), rel=1e-6, abs=1e-9), (kind, step)
    assert math.isclose(found(0), 0.0 if kind == "cosine" else 0.01)


def test_a_cosine_schedule_without_warm_up_starts_at_the_peak() -> None:
    """warmup_steps 0: the first step trains at the peak in both programs (it used to be a 1-step
    warm-up from 0, so step 1 logged lr 0)."""
    pytest.importorskip("optax")
    from switchc.backends.jax.runtime.optim import schedule as jax_schedule

    expected, found = jax_schedule("cosine", 0.01, 0, 50), schedule("cosine", 0.01, 0, 50)
    for step in (0, 1, 25, 49, 50, 80):
        assert found(step) == pytest.approx(float(expected(step)), rel=1e-6, abs=1e-9), step
    assert found(0) == pytest.approx(0.01) and found(50) == pytest.approx(0.0, abs=1e-12)
