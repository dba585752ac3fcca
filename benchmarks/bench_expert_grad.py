"""The JAX program's expert matmuls on XLA:CPU: forward, input gradient and weight gradient.

    .venv/bin/python benchmarks/bench_expert_grad.py [--repeats 15]

bench_step's encoder Switch layer at 16 experts: slots [E=16, C=160, D=512] times weights
[E, D, F=2048]. Autodiff of the forward einsum `ecd,edf->ecf` gives the weight gradient
`ecd,ecf->edf`, which contracts the slots (dimension 1 of both operands); XLA:CPU hands that dot to
its own emitter rather than YNNPACK (`profile_jax_step.py`: the `dot` rows). The script times, in
alternation, the forward, the input gradient, the weight gradient as autodiff writes it, and the
same weight gradient with the slots transposed to the minor dimension first (behind an
optimization barrier, or XLA folds the transpose back into the dot), which YNNPACK takes; it
checks the two weight gradients agree and prints each one's median and GFLOP/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

EXPERTS, SLOTS, D_MODEL, D_FF = 16, 160, 512, 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each (default 15)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((EXPERTS, SLOTS, D_MODEL), dtype=np.float32))
    g = jnp.asarray(rng.standard_normal((EXPERTS, SLOTS, D_FF), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((EXPERTS, D_MODEL, D_FF), dtype=np.float32))
    barrier = jax.lax.optimization_barrier
    cases: dict[str, tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]] = {
        "forward ecd,edf->ecf": (jax.jit(lambda x, w: jnp.einsum("ecd,edf->ecf", x, w)), (x, w)),
        "input gradient ecf,edf->ecd": (jax.jit(lambda g, w: jnp.einsum("ecf,edf->ecd", g, w)), (g, w)),
        "weight gradient ecd,ecf->edf": (jax.jit(lambda x, g: jnp.einsum("ecd,ecf->edf", x, g)), (x, g)),
        "weight gradient, slots minor": (
            jax.jit(lambda x, g: jnp.einsum("edc,ecf->edf", barrier(jnp.swapaxes(x, 1, 2)), g)),
            (x, g),
        ),
    }
    results = {name: jax.block_until_ready(function(*operands)) for name, (function, operands) in cases.items()}
    difference = float(
        jnp.max(jnp.abs(results["weight gradient, slots minor"] - results["weight gradient ecd,ecf->edf"]))
    )
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (function, operands) in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(function(*operands))
            times[name].append(time.perf_counter() - start)
    flops = 2 * EXPERTS * SLOTS * D_MODEL * D_FF
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"{name:32s} {median * 1e3:7.2f} ms  {flops / median / 1e9:6.1f} GFLOP/s")
    print(f"the two weight gradients differ by at most {difference:.3g}")


if __name__ == "__main__":
    main()
