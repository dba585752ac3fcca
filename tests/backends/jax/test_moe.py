"""The JAX Switch layer against a plain per-token reference, on one device and sharded meshes."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from switchc.backends.common.routing import MoESettings, expert_capacity, routing_group_size
from switchc.backends.jax.runtime.moe import switch_ffn
from switchc.backends.jax.runtime.parallel import ExpertParallel
from switchc.backends.jax.runtime.sharding import Rules


def settings(**overrides) -> MoESettings:
    base = dict(
        num_experts=8,
        top_k=1,
        capacity_factor=1.25,
        min_capacity=1,
        group_size=16,
        jitter_eps=0.0,
        router_dtype=jnp.float32,
        batch_prioritized=False,
        expert_dropout_rate=0.0,
        activation="relu",
    )
    base.update(overrides)
    return MoESettings(**base)


def collective_counts(hlo: str) -> dict[str, int]:
    kinds = ("all-to-all", "all-reduce", "all-gather", "reduce-scatter", "collective-permute")
    return {kind: len(re.findall(rf"^\s*(?:ROOT\s+)?%\S+ = .*\b{kind}\(", hlo, re.MULTILINE)) for kind in kinds}


def make_params(rng: np.random.Generator, d: int, f: int, e: int, gated: bool = False) -> dict:
    params = {"router": rng.normal(size=(d, e)).astype(np.float32)}
    names = ["wi_0", "wi_1"] if gated else ["wi"]
    for name in names:
        params[name] = (rng.normal(size=(e, d, f)) / np.sqrt(d)).astype(np.float32)
    params["wo"] = (rng.normal(size=(e, f, d)) / np.sqrt(f)).astype(np.float32)
    return params


def reference(params: dict, x: np.ndarray, s: MoESettings) -> np.ndarray:
    """Token by token, in order: route, queue, drop when the expert is full (top-k, no priority)."""
    batch, length, d = x.shape
    tokens = x.reshape(-1, d)
    group = routing_group_size(len(tokens), s.group_size)
    cap = expert_capacity(group, s.num_experts, s.top_k, s.capacity_factor, s.min_capacity)
    out = np.zeros_like(tokens)
    for start in range(0, len(tokens), group):
        chunk = tokens[start : start + group]
        logits = chunk @ params["router"]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        choices = np.argsort(-probs, axis=-1, kind="stable")[:, : s.top_k]
        load = np.zeros(s.num_experts, int)
        for choice in range(s.top_k):
            for i, row in enumerate(chunk):
                e = choices[i, choice]
                if load[e] >= cap:
                    continue
                load[e] += 1
                if "wi" in params:
                    hidden = np.maximum(row @ params["wi"][e], 0)
                else:
                    h = row @ params["wi_0"][e]
                    gelu = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
                    hidden = gelu * (row @ params["wi_1"][e])
                out[start + i] += probs[i, e] * (hidden @ params["wo"][e])
    return out.reshape(batch, length, d)


def test_capacity_and_group_size() -> None:
    assert expert_capacity(1024, 128, 1, 1.25, 4) == 10  # ceil(1024 / 128 * 1.25)
    assert expert_capacity(1024, 128, 2, 1.0, 4) == 16  # top-2 doubles the slots
    assert expert_capacity(64, 64, 1, 1.0, 4) == 4  # the floor
    assert expert_capacity(2, 1, 1, 2.0, 4) == 2  # never more than the group
    assert routing_group_size(4096, 1024) == 1024
    assert routing_group_size(96, 64) == 48  # largest divisor within the limit


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"top_k": 2, "capacity_factor": 2.0},
        {"capacity_factor": 0.5},  # many tokens dropped
        {"activation": "geglu"},
    ],
    ids=["top1", "top2", "dropping", "geglu"],
)
def test_matches_reference_on_one_device(overrides: dict) -> None:
    s = settings(**overrides)
    rng = np.random.default_rng(0)
    params = make_params(rng, 16, 32, 8, gated=s.activation == "geglu")
    x = rng.normal(size=(4, 8, 16)).astype(np.float32)
    y, metrics = jax.jit(lambda p, x: switch_ffn(p, x, s))(params, x)
    np.testing.assert_allclose(np.asarray(y), reference(params, x, s), rtol=2e-5, atol=2e-5)
    if overrides.get("capacity_factor") == 0.5:
        assert float(metrics["dropped_fraction"]) > 0.3
    assert float(metrics["tokens_per_expert"].sum()) == 32


def test_aux_loss_is_one_at_uniform_routing() -> None:
    s = settings(num_experts=4, group_size=8)
    params = {
        "router": np.zeros((4, 4), np.float32),  # every probability 1/E
        "wi": np.ones((4, 4, 4), np.float32),
        "wo": np.ones((4, 4, 4), np.float32),
    }
    x = np.eye(4, dtype=np.float32)[None].repeat(2, 0)  # [2, 4, 4]
    _, metrics = switch_ffn(params, jnp.asarray(x), s)
    np.testing.assert_allclose(float(metrics["aux_loss"]), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "axes, rules",
    [
        ({"data": 2, "expert": 4}, {"batch": ("data", "expert"), "experts": ("expert",)}),
        (
            {"data": 2, "expert": 2, "model": 2},
            {"batch": ("data", "expert"), "experts": ("expert",), "mlp": ("model",)},
        ),
        ({"expert": 8}, {"batch": ("expert",), "experts": ("expert",)}),
        ({"data": 8}, {"batch": ("data",)}),
    ],
    ids=["data x expert", "data x expert x model", "expert", "data"],
)
def test_sharded_matches_one_device(axes, rules) -> None:
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    rng = np.random.default_rng(1)
    params = make_params(rng, 16, 32, 8)
    x = rng.normal(size=(8, 8, 16)).astype(np.float32)  # 8 tokens per device: one group each
    s = settings(top_k=2, capacity_factor=1.0, group_size=8)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(tuple(axes.values())), tuple(axes))
    table = Rules(rules)
    placed = {
        "router": jax.device_put(params["router"], table.sharding(mesh, ("embed", None))),
        "wi": jax.device_put(params["wi"], table.sharding(mesh, ("experts", "embed", "mlp"))),
        "wo": jax.device_put(params["wo"], table.sharding(mesh, ("experts", "mlp", "embed"))),
    }
    x_placed = jax.device_put(x, table.sharding(mesh, ("batch", None, None)))
    experts = ExpertParallel(mesh, table)
    step = jax.jit(lambda p, x: experts.switch(p, x, s))
    y, metrics = step(placed, x_placed)
    y_ref, metrics_ref = switch_ffn(params, jnp.asarray(x), s)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    for key in ("aux_loss", "dropped_fraction", "tokens_per_expert"):
        np.testing.assert_allclose(np.asarray(metrics[key]), np.asarray(metrics_ref[key]), rtol=1e-5)
    hlo = step.lower(placed, x_placed).compile().as_text()
    collectives = collective_counts(hlo)
    # Routing stays on each device: the only bulk traffic is the dispatch/combine all-to-all pair,
    # never a gather of other devices' logits or tokens (all-reduces carry the scalar metrics and,
    # with a model axis, the partial sums of the experts' second matmul).
    assert collectives["all-to-all"] == (2 if "expert" in axes else 0)
    assert collectives["all-gather"] == 0


def test_gradients_flow_through_the_sharded_experts() -> None:
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    rng = np.random.default_rng(2)
    params = make_params(rng, 16, 32, 8)
    x = rng.normal(size=(8, 8, 16)).astype(np.float32)
    s = settings(group_size=8)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "expert"))
    experts = ExpertParallel(mesh, Rules({"batch": ("data", "expert"), "experts": ("expert",)}))

    def loss(p, layer):
        y, metrics = layer(p, jnp.asarray(x), s)
        return jnp.sum(y**2) + metrics["aux_loss"]

    grads = jax.jit(jax.grad(lambda p: loss(p, experts.switch)))(params)
    expected = jax.grad(lambda p: loss(p, switch_ffn))(params)
    for name in params:
        np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(expected[name]), rtol=1e-4, atol=1e-5)


def test_a_mesh_axis_splits_one_dim_of_a_tensor_in_the_irs_priority() -> None:
    """Two dims of one tensor whose rules name one mesh axis (batch and heads over model): the dim
    first in AXIS_PRIORITY takes it, as the IR's resolve_axes does, instead of a PartitionSpec
    that names the axis twice (XLA's DuplicateSpecError)."""
    from jax.sharding import PartitionSpec
    from switchc.backends.jax.runtime import sharding

    from switchc.ir.tensor import AXIS_PRIORITY

    assert sharding.AXIS_PRIORITY == AXIS_PRIORITY
    rules = Rules({"batch": ("data", "model"), "heads": ("model",), "kv": ()})
    assert rules.spec(("batch", "length", "heads", "kv")) == PartitionSpec("data", None, "model", None)
    assert rules.spec(("batch", "length")) == PartitionSpec(("data", "model"), None)
