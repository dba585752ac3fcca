"""Routed-only expert matmul on XLA:CPU: jax.lax.ragged_dot against the capacity-padded einsum.

    .venv/bin/python benchmarks/bench_ragged_dot.py

The bench_step config's encoder Switch layer at 16 experts: 2,048 tokens, capacity 160 slots per
expert (E * C = 2,560 rows), d_model 512, d_ff 2048. The padded einsum multiplies every slot,
[16, 160, 512] x [16, 512, 2048]; ragged_dot multiplies only routed rows, here 120 per expert
(1,920 rows), against the same weights. Prints the median of 5 calls of each (forward only, and
ragged_dot's weight gradient), after one compile-and-run call each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EXPERTS, CAPACITY, ROUTED, D_MODEL, D_FF = 16, 160, 120, 512, 2048


def median_ms(fn: Callable[..., Any], *args: Any) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rng = np.random.default_rng(0)
    slots = jnp.asarray(rng.standard_normal((EXPERTS, CAPACITY, D_MODEL), np.float32))
    routed = jnp.asarray(rng.standard_normal((EXPERTS * ROUTED, D_MODEL), np.float32))
    weights = jnp.asarray(rng.standard_normal((EXPERTS, D_MODEL, D_FF), np.float32))
    sizes = jnp.full((EXPERTS,), ROUTED, jnp.int32)

    padded = jax.jit(lambda x, w: jnp.einsum("ecd,edf->ecf", x, w))
    ragged = jax.jit(jax.lax.ragged_dot)
    ragged_grad = jax.jit(jax.grad(lambda w, x, s: jax.lax.ragged_dot(x, w, s).sum()))
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
    shapes = f"x [{EXPERTS}, {D_MODEL}, {D_FF}]"
    rows = [
        (f"padded einsum [{EXPERTS}, {CAPACITY}, {D_MODEL}] {shapes}", padded, (slots, weights)),
        (f"ragged_dot [{EXPERTS * ROUTED}, {D_MODEL}] {shapes}", ragged, (routed, weights, sizes)),
        ("ragged_dot, gradient w.r.t. the weights", ragged_grad, (weights, routed, sizes)),
    ]
    for label, fn, args in rows:
        print(f"{label:<52} {median_ms(fn, *args):8.1f} ms")


if __name__ == "__main__":
    main()
