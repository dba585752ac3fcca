"""Time building, sharding and analysing every spec in specs/ (issue: Switch-C well under a second).

    .venv/bin/python benchmarks/bench_analysis.py [--repeat N]

For each spec: graph nodes after sharding, then the best of N wall times of build (Spec -> graph),
lower (build + verify + shard + verify) and the full report (lower + every analysis), and the
same for Switch-C with 64 experts, to show the cost does not grow with the number of experts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from switchc.analysis import hardware, report_for
from switchc.ir import build_graph
from switchc.passes import lower
from switchc.spec import Spec, load_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"


def best_of(repeat: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    hw = hardware("tpuv3")
    cases: list[tuple[str, Spec]] = [(p.stem, load_spec(str(p))) for p in sorted(SPECS.glob("*.yaml"))]
    cases.append(
        (
            "switch-c (64 experts)",
            load_spec(str(SPECS / "switch-c.yaml"), ["moe.num_experts=64", "mesh.axes={expert: 64}"]),
        )
    )
    report_for(cases[0][1], hw)  # import and cache warm-up
    print(f"{'spec':24s} {'experts':>7s} {'nodes':>6s} {'build':>9s} {'lower':>9s} {'report':>9s}")
    for name, spec in cases:
        nodes = lower(spec).number_of_nodes()
        build = best_of(args.repeat, lambda spec=spec: build_graph(spec))
        lowered = best_of(args.repeat, lambda spec=spec: lower(spec))
        report = best_of(args.repeat, lambda spec=spec: report_for(spec, hw))
        experts = spec.moe.num_experts if spec.moe else 0
        print(f"{name:24s} {experts:7d} {nodes:6d} {build * 1e3:7.1f}ms {lowered * 1e3:7.1f}ms {report * 1e3:7.1f}ms")


if __name__ == "__main__":
    main()
