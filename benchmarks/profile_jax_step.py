"""Where a generated JAX program's train step spends its time: XLA:CPU's ops, from a jax.profiler trace.

    .venv/bin/python benchmarks/profile_jax_step.py                       # bench_step's config, 1 and 16 experts
    .venv/bin/python benchmarks/profile_jax_step.py --experts 16 64 --top 30

For each expert count it writes bench_step.py's spec (d_model 512, 4 + 4 blocks, a Switch layer in
every 2nd block, batch 8 x (256 + 64), Adam), runs `switchc compile`, and then, in a fresh
process, builds the program's train step as bench_step.py does (bench_step.JaxProgramStep:
runtime/loop.py build(), one CPU device, runtime/host.py applied), compiles it ahead of time,
warms it up and traces --steps steps with jax.profiler. It prints, per step and side by side for
the expert counts:

- the time of each kind of XLA op: the op's HLO name without its `.N` suffix (`ynn_fusion`: a
  matmul handed to YNNPACK; `dot`: one left to XLA's own emitter; `multiply_add_fusion`: mostly
  Adam's elementwise update; `wrapped_reduce-window`: a reduction XLA:CPU tiles into windows);
- the slowest single ops, with their output shape and the JAX operation they came from.

Times are thread time: XLA:CPU runs independent ops at once on its worker threads, so the ops of
a step add up to more than the step's wall time, which is printed too. Run it alone on the
machine: an op's time stretches with whatever else runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_step  # noqa: E402  # the benchmark's spec and batch, so the profile is of the same step

# Trace events that are not one XLA op: Python frames, the executor's own spans, jit dispatch.
NOT_AN_OP = ("$", "ThunkExecutor", "SlinkyThreadPool", "end:", "PjitFunction")


def op_kind(name: str) -> str:
    """`ynn_fusion.137` -> `ynn_fusion`."""
    return re.sub(r"\.\d+$", "", name)


def hlo_ops(hlo: str) -> dict[str, tuple[str, str]]:
    """Every instruction of the optimized HLO: name -> (output shape, the JAX op_name it came from)."""
    ops = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) [^\n]*", hlo, re.M):
        origin = re.search(r'op_name="([^"]*)"', match.group(0))
        ops[match.group(1)] = (match.group(2), origin.group(1) if origin else "")
    return ops


def op_times(trace: Path, steps: int) -> Counter[str]:
    """Milliseconds per step of each XLA op in a perfetto trace of `steps` steps."""
    with gzip.open(trace) as file:
        data = json.load(file)
    events = data["traceEvents"] if isinstance(data, dict) else data
    times: Counter[str] = Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(NOT_AN_OP):
            times[event["name"]] += event["dur"] / 1e3 / steps  # microseconds
    return times


def worker(program: Path, steps: int, warmup: int, out: Path) -> dict[str, Any]:
    """Trace `steps` train steps of the program; its ops' times and the steps' wall times."""
    step = bench_step.JaxProgramStep(str(program))  # first: it applies runtime/host.py before XLA starts
    import jax

    walls = []

    def timed() -> None:
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)

    for _ in range(warmup):
        timed()
    walls.clear()
    with jax.profiler.trace(str(out), create_perfetto_trace=True):
        for _ in range(steps):
            timed()
    (trace,) = out.glob("plugins/profile/*/perfetto_trace.json.gz")
    return {
        "wall_ms": [wall * 1e3 for wall in walls],
        "ops": op_times(trace, steps),
        "hlo": hlo_ops(step.compiled.as_text()),
    }


def profile(experts: int, steps: int, warmup: int, workdir: Path) -> dict[str, Any]:
    """Compile bench_step's spec with `experts` experts and trace it in a fresh process."""
    case = bench_step.prepare_case(workdir, bench_step.FULL, experts)
    out = workdir / f"trace-e{experts}"
    config = {"program": str(case["program"]), "steps": steps, "warmup": warmup, "out": str(out)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)]
    print(f"  {experts} expert(s): compile, warm up, trace {steps} steps ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"profiling {experts} expert(s) failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def print_profiles(profiles: dict[int, dict[str, Any]], top: int) -> None:
    counts = list(profiles)
    kinds: dict[int, Counter[str]] = {e: Counter() for e in counts}
    for e, found in profiles.items():
        for name, ms in found["ops"].items():
            kinds[e][op_kind(name)] += ms
    columns = "".join(f"{f'{e} expert(s)':>14}" for e in counts)
    print(
        f"\n{'step wall ms (median)':<34}"
        + "".join(f"{statistics.median(p['wall_ms']):14.0f}" for p in profiles.values())
    )
    print(f"{'all ops, thread ms per step':<34}" + "".join(f"{sum(k.values()):14.0f}" for k in kinds.values()))
    print(f"\nthread ms per step by op kind\n{'op kind':<34}{columns}")
    order = sorted({kind for k in kinds.values() for kind in k}, key=lambda kind: -max(k[kind] for k in kinds.values()))
    for kind in order[:top]:
        print(f"{kind:<34}" + "".join(f"{kinds[e][kind]:14.1f}" for e in counts))
    for e, found in profiles.items():
        print(f"\nslowest ops, {e} expert(s) (thread ms per step, output shape, JAX op)")
        for name, ms in Counter(found["ops"]).most_common(top):
            shape, origin = found["hlo"].get(name, ("?", ""))
            print(f"  {ms:8.1f}  {name:<28} {shape:<26} {origin[:70]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, nargs="+", default=[1, 16], help="expert counts (default: 1 16)")
    parser.add_argument("--steps", type=int, default=3, help="traced steps per expert count (default: 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untraced steps first (default: 3)")
    parser.add_argument("--top", type=int, default=20, help="rows of each table (default: 20)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        config = json.loads(args.worker)
        result = worker(Path(config["program"]), config["steps"], config["warmup"], Path(config["out"]))
        print("RESULT " + json.dumps(result), flush=True)
        return
    if min(args.experts) < 1 or args.steps < 1 or args.warmup < 0 or args.top < 1:
        parser.error("--experts and --steps must be >= 1, --warmup >= 0, --top >= 1")
    source = bench_step.source_state()
    print(f"profile_jax_step: bench_step's config, {args.steps} traced steps after {args.warmup}; source {source}")
    with tempfile.TemporaryDirectory(prefix="profile_jax_step_") as tmp:
        profiles = {e: profile(e, args.steps, args.warmup, Path(tmp)) for e in args.experts}
    print_profiles(profiles, args.top)


if __name__ == "__main__":
    main()
