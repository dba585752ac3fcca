"""The PyTorch runtime's stacked q/k/v projection, forward and backward, against autograd's.

    .venv/bin/python benchmarks/bench_stacked_einsum.py [--repeats 40]

`layers.stacked_einsum` (backends/torch/runtime/layers.py) is a custom autograd Function: its
backward keeps x and the weights, where autograd through `torch.einsum(..., torch.stack(weights))`
keeps the stacked copy from the forward to the backward pass. This times both at bench_step's
self-attention shape (batch 8 x 256 tokens, d_model 512, 8 heads of 64, q/k/v), forward plus
backward, in alternation on all cores, after checking in float64 that their gradients agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from switchc.backends.torch.runtime import layers

BATCH, LENGTH, D_MODEL, HEADS, D_KV, PROJECTIONS = 8, 256, 512, 8, 64, 3
SUBSCRIPTS = "bld,dthk->tbhlk"


def inputs(dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    x = draw(BATCH, LENGTH, D_MODEL).requires_grad_()
    weights = [draw(D_MODEL, HEADS, D_KV).requires_grad_() for _ in range(PROJECTIONS)]
    return x, weights, draw(PROJECTIONS, BATCH, HEADS, LENGTH, D_KV)


def runtime(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    return layers.stacked_einsum(SUBSCRIPTS, x, *weights)


def autograd(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.einsum(SUBSCRIPTS, x, torch.stack(weights, dim=1))


Projection = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]


def gradients(projection: Projection, dtype: torch.dtype) -> list[torch.Tensor]:
    x, weights, grad = inputs(dtype)
    projection(x, weights).backward(grad)
    return [t.grad for t in (x, *weights) if t.grad is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=40, help="timed forward + backward passes of each")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    difference = max(
        (a - b).abs().max().item()
        for a, b in zip(gradients(runtime, torch.float64), gradients(autograd, torch.float64), strict=True)
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {SUBSCRIPTS} at {BATCH} x {LENGTH} x {D_MODEL}"
    )
    print(f"float64 gradients: largest difference {difference:.1e}")
    x, weights, grad = inputs(torch.float32)
    times: dict[str, list[float]] = {"layers.stacked_einsum": [], "autograd (einsum over torch.stack)": []}
    pairs: list[tuple[str, Projection]] = list(zip(times, (runtime, autograd), strict=True))
    for repeat in range(args.repeats + 4):
        for name, projection in pairs if repeat % 2 else pairs[::-1]:
            for tensor in (x, *weights):
                tensor.grad = None
            start = time.perf_counter()
            projection(x, weights).backward(grad)
            if repeat >= 4:  # the first passes warm the allocator
                times[name].append(time.perf_counter() - start)
    for name, measured in times.items():
        print(f"{name:<36} {statistics.median(measured) * 1e3:7.2f} ms (median of {len(measured)})")


if __name__ == "__main__":
    main()
