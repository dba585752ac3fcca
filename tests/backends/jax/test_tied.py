"""Tied embeddings on a mesh that splits the batch: the table's two uses (the lookup and the
logits) read per-shard copies of it (runtime/layers.py shard_copies), so that their gradients are
added on each device and all-reduced once, as the report counts; the numbers are the plain ones."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from switchc.backends.jax.runtime import layers

V, D, B, L, SHARDS = 64, 16, 4, 8, 2


def _loss(table: jax.Array, ids: jax.Array, copies: bool) -> jax.Array:
    if copies:
        tied = layers.shard_copies(table, SHARDS)
        x = layers.embed_copies(tied, ids)
        logits = layers.tied_logits(jnp.tanh(x), tied, D**-0.5)
    else:
        x = layers.embed(table, ids)
        logits = (jnp.tanh(x) * D**-0.5) @ table.T
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((V, D)).astype(np.float32), rng.integers(0, V, (B, L)).astype(np.int32)


def test_per_shard_copies_give_the_plain_loss_and_gradient() -> None:
    table, ids = _inputs()
    plain = jax.value_and_grad(_loss)(table, ids, False)
    copied = jax.value_and_grad(_loss)(table, ids, True)
    np.testing.assert_allclose(copied[0], plain[0], rtol=1e-6)
    np.testing.assert_allclose(copied[1], plain[1], rtol=1e-5, atol=1e-7)


def test_the_tied_gradient_is_all_reduced_once_over_the_batch_shards() -> None:
    """Read whole by both uses, XLA all-reduces each use's [V, D] partial gradient, then adds them."""
    mesh = Mesh(np.array(jax.devices()[:SHARDS]), ("data",))
    table, ids = _inputs()
    placed = (
        jax.device_put(table, NamedSharding(mesh, PartitionSpec())),
        jax.device_put(ids, NamedSharding(mesh, PartitionSpec("data"))),
    )

    def reduced_elements(copies: bool) -> int:
        step = jax.jit(jax.grad(lambda t, i: _loss(t, i, copies)), out_shardings=NamedSharding(mesh, PartitionSpec()))
        hlo = step.lower(*placed).compile().as_text()
        shapes = re.findall(r"= \(?(f32\[[0-9,]*\][^ ]*(?:, f32\[[0-9,]*\][^ ]*)*)\)? all-reduce\(", hlo)
        return sum(
            int(np.prod([int(n) for n in dims.split(",") if n]))
            for text in shapes
            for dims in re.findall(r"\[([0-9,]*)\]", text)
        )

    assert reduced_elements(copies=False) == 2 * V * D  # the check's own premise: two reductions of the table
    assert reduced_elements(copies=True) == V * D
