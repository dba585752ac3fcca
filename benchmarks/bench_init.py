"""The JAX program's start: `loop.build` (mesh, init_params, optimizer state) with init_params
compiled by XLA:CPU with and without its backend optimizations.

    .venv/bin/python benchmarks/bench_init.py                          # switch-tiny, 3 rounds: ~1 min
    .venv/bin/python benchmarks/bench_init.py switch-base --set model.encoder_layers=2 --rounds 2

init_params runs once per run: its compile, not its run time, is what a program's start pays for
it. The runtime compiles it with `loop._RUN_ONCE_OPTIONS` on CPU (LLVM's optimizations off); the
`optimized` variant sets those options to {} (XLA's defaults), as the programs did before. Each
variant runs in a fresh process (no compiled code is shared, JAX's persistent cache is off), in
alternating order, round by round, on the spec's mesh (fake CPU devices when it has several).
Prints each process's seconds in `loop.build`, the medians and their ratio, and how many initial
weights differ between the variants and by how much.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = ("optimized", "run-once")

WORKER = """
import json, sys, time
program, variant, devices, weights = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, program)
from runtime.sharding import fake_cpu_devices
if devices > 1:
    fake_cpu_devices(devices)
import jax, numpy as np
import model
from runtime import loop
if variant == "optimized":
    loop._RUN_ONCE_OPTIONS = {}
start = time.perf_counter()
params = jax.block_until_ready(loop.build(model, 0)["params"])
build = time.perf_counter() - start
np.savez(weights, **{name.replace("/", "."): np.asarray(value) for name, value in params.items()})
print(json.dumps({"build_s": build}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", default="switch-tiny", help="a spec file or built-in name (switch-tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to switchc compile")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the order alternating (default: 3)")
    args = parser.parse_args()
    import numpy as np

    from switchc.spec import load_spec

    devices = load_spec(args.spec, args.set).mesh.num_devices
    with tempfile.TemporaryDirectory(prefix="bench_init-") as scratch:
        work = Path(scratch)
        program = work / "program"
        overrides = [text for setting in args.set for text in ("--set", setting)]
        command = [sys.executable, "-m", "switchc", "compile", args.spec, *overrides, "-o", str(program)]
        subprocess.run(command, check=True, capture_output=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION_CACHE")}
        times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        print(f"{args.spec}: {devices} device(s); seconds in loop.build", flush=True)
        for round_number in range(args.rounds):
            order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                weights = work / f"{variant}.npz"
                worker = [sys.executable, "-c", WORKER, str(program), variant, str(devices), str(weights)]
                result = subprocess.run(worker, check=True, capture_output=True, text=True, env=env)
                times[variant].append(json.loads(result.stdout.strip().splitlines()[-1])["build_s"])
                print(f"  round {round_number + 1}  {variant:9s}  {times[variant][-1]:6.2f}", flush=True)
        medians = {variant: statistics.median(runs) for variant, runs in times.items()}
        for variant, median in medians.items():
            print(f"median {variant:9s}  {median:6.2f}")
        print(f"run-once / optimized: {medians['run-once'] / medians['optimized']:.2f}")
        with np.load(work / "optimized.npz") as optimized, np.load(work / "run-once.npz") as run_once:
            total = sum(optimized[name].size for name in optimized.files)
            differing = sum(int(np.sum(optimized[name] != run_once[name])) for name in optimized.files)
            largest = max(float(np.max(np.abs(optimized[name] - run_once[name]))) for name in optimized.files)
        print(f"initial weights: {differing:,} of {total:,} differ ({differing / total:.1%}), by at most {largest:.3g}")


if __name__ == "__main__":
    main()
