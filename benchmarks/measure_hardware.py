"""Measure this machine for the built-in `cpu` hardware profile (switchc/analysis/hardware.yaml).

    .venv/bin/python benchmarks/measure_hardware.py

prints a YAML block to paste over the `cpu` profile. What it measures, and why each stands in
for the profile field it fills:

- peak float32 FLOP/s: the best of several numpy float32 matmuls (2 FLOPs per multiply-add), the
  same BLAS kind of kernel XLA:CPU calls for a dot. numpy has no bfloat16 matmul, and XLA:CPU
  computes bfloat16 dots in float32, so the bfloat16 figure is the float32 one.
- memory bandwidth: the best of several copies of a 256 MiB float32 array (bytes read + written).
- interconnect bandwidth: JAX's fake CPU devices (--xla_force_host_platform_device_count) are
  threads of one process, so a collective is a memory copy: the same copy bandwidth.
- memory capacity: the machine's physical memory (os.sysconf).
- latency: half a round trip between two Python threads (Event ping-pong), what one step of a
  collective's rendezvous costs at most here (XLA's own C++ rendezvous is faster).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import threading
import time

import numpy as np


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm up BLAS threads and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def copy_bandwidth(mebibytes: int = 256, repeats: int = 5) -> float:
    src = np.ones(mebibytes * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best  # every byte is read once and written once


def thread_latency(rounds: int = 2000) -> float:
    ping, pong = threading.Event(), threading.Event()

    def echo() -> None:
        for _ in range(rounds):
            ping.wait()
            ping.clear()
            pong.set()

    worker = threading.Thread(target=echo)
    worker.start()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        ping.set()
        pong.wait()
        pong.clear()
        samples.append(time.perf_counter() - start)
    worker.join()
    return statistics.median(samples) / 2


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    flops = matmul_flops()
    bandwidth = copy_bandwidth()
    latency = thread_latency()
    today = datetime.date.today().isoformat()
    cores = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"# measured {today} by `.venv/bin/python benchmarks/measure_hardware.py`")
    print("cpu:")
    print(f"  description: this machine ({platform.machine()}, {cores} cores), numpy {np.__version__}")
    print(f"  source: measured {today} by benchmarks/measure_hardware.py")
    print(f"  peak_flops: {{bfloat16: {flops:.3e}, float32: {flops:.3e}}}")
    print(f"  memory_bytes: {memory:.3e}")
    print(f"  memory_bandwidth: {bandwidth:.3e}")
    print(f"  interconnect_bandwidth: {bandwidth:.3e}")
    print(f"  latency: {latency:.3e}")


if __name__ == "__main__":
    main()
