"""The JAX program's output head on XLA:CPU: logits matmul + token cross-entropy, forward and backward.

    .venv/bin/python benchmarks/bench_loss_head.py [--repeats 15]

bench_step's config: decoder output [8, 64, 512], lm_head [512, 8192]. Two ways to compute each
target token's cross-entropy from the logits, both under jax.value_and_grad with respect to the
decoder output and lm_head, jitted:

- `log_softmax`: -take_along_axis(log_softmax(logits), targets), what the runtime did up to
  session 5 (it materialises the [B, L, V] log-probabilities, and XLA:CPU runs their backward
  through full-vocabulary transposes);
- `runtime`: the generated program's `layers.token_cross_entropy` (logsumexp minus the target's
  logit, optax.softmax_cross_entropy_with_integer_labels).

The two are called in alternation, so both see one machine speed; the script prints each one's
median and the ratio, and checks that loss and gradients agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

BATCH, LENGTH, D_MODEL, VOCAB = 8, 64, 512, 8192


def log_softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def head_loss(cross_entropy: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[..., Any]:
    def loss(hidden: jax.Array, lm_head: jax.Array, targets: jax.Array) -> jax.Array:
        return jnp.mean(cross_entropy(hidden @ lm_head, targets))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each (default 15)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from backends.jax.runtime import layers  # the runtime the generated programs copy

    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.standard_normal((BATCH, LENGTH, D_MODEL), dtype=np.float32))
    lm_head = jnp.asarray(rng.standard_normal((D_MODEL, VOCAB), dtype=np.float32) * D_MODEL**-0.5)
    targets = jnp.asarray(rng.integers(1, VOCAB, (BATCH, LENGTH)))
    cases = {"log_softmax": head_loss(log_softmax_cross_entropy), "runtime": head_loss(layers.token_cross_entropy)}

    results = {name: jax.block_until_ready(fn(hidden, lm_head, targets)) for name, fn in cases.items()}
    (loss_a, grads_a), (loss_b, grads_b) = results.values()
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for a, b in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)

    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(hidden, lm_head, targets))
            times[name].append(time.perf_counter() - start)
    flops = 3 * 2 * BATCH * LENGTH * D_MODEL * VOCAB  # the logits matmul, forward and two backward
    print(f"head [{BATCH}, {LENGTH}, {D_MODEL}] x [{D_MODEL}, {VOCAB}], forward + backward: loss and gradients agree")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"  {name:<12} median {median * 1e3:7.1f} ms  ({flops / median / 1e9:5.1f} GFLOP/s of matmul work)")
    print(f"  log_softmax / runtime: {medians['log_softmax'] / medians['runtime']:.2f}")


if __name__ == "__main__":
    main()
