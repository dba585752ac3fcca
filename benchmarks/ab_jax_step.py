"""A/B of the generated JAX program's train step: this checkout against an earlier commit.

    .venv/bin/python benchmarks/ab_jax_step.py --against HEAD~1            # 16 and 1 experts, 2 rounds: ~10 min
    .venv/bin/python benchmarks/ab_jax_step.py --against 8ab05ba --experts 16 --rounds 3

For a change to the JAX program (its lowering or runtime), whose effect is smaller than this
machine's drift between runs: both programs are compiled from bench_step.py's spec (its fixed
config, one CPU device), the old one by the switchc of `--against` (extracted with `git archive`
and laid out as the installed package), and timed by bench_step.py's JAX worker (each in a fresh
process: ahead-of-time compile, warm-up steps, timed steps) in alternating order, round by round.
Prints each round's medians and ratio, then the pooled medians (all rounds' steps) and their ratio.
Quiet machine only: nothing else heavy may run meanwhile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import bench_step

ROOT = Path(__file__).resolve().parent.parent


def old_switchc(revision: str, into: Path) -> Path:
    """The switchc package of `revision`, laid out as installed (pyproject's package-dir): a folder
    to put first on PYTHONPATH."""
    archive = into / "source.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "switchc", "backends", "specs"], stdout=out, check=True
        )
    source = into / "source"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    package = into / "package"
    shutil.copytree(source / "switchc", package / "switchc")
    shutil.copytree(source / "backends", package / "switchc" / "backends")
    shutil.copytree(source / "specs", package / "switchc" / "specs")
    return package


def compile_program(spec: Path, out: Path, pythonpath: Path | None = None) -> Path:
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    command = [sys.executable, "-m", "switchc", "compile", str(spec), "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")
    return out


def main() -> None:
    flags = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_argument("--against", required=True, metavar="REV", help="the commit to compare with (git revision)")
    flags.add_argument("--experts", type=int, nargs="+", default=[16, 1], help="expert counts (default: 16 1)")
    flags.add_argument("--rounds", type=int, default=2, help="rounds, the order alternating (default: 2)")
    flags.add_argument("--steps", type=int, default=8, help="timed steps per program and round (default: 8)")
    flags.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling (default: 3)")
    args = flags.parse_args()
    with tempfile.TemporaryDirectory(prefix="ab_jax_step-") as scratch:
        work = Path(scratch)
        old_package = old_switchc(args.against, work)
        programs: dict[int, dict[str, Path]] = {}
        for experts in args.experts:
            spec = work / f"bench-e{experts}.yaml"
            spec.write_text(bench_step.spec_yaml(bench_step.FULL, experts), encoding="utf-8")
            programs[experts] = {
                "old": compile_program(spec, work / f"e{experts}-old", old_package),
                "new": compile_program(spec, work / f"e{experts}-new"),
            }
        times: dict[tuple[int, str], list[float]] = {}
        for round_number in range(args.rounds):
            print(f"round {round_number + 1} of {args.rounds}", flush=True)
            for experts, pair in programs.items():
                order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
                medians = {}
                for variant in order:
                    config = {"label": f"{experts} experts", "variant": variant, "program": str(pair[variant])}
                    result = bench_step.run_worker("jax", {**config, "steps": args.steps, "warmup": args.warmup})
                    if result.get("failed"):
                        raise SystemExit(f"the {variant} program failed at {experts} experts")
                    times.setdefault((experts, variant), []).extend(result["times_s"])
                    medians[variant] = result["step_s"]
                print(f"  {experts} experts: new / old {medians['new'] / medians['old']:.3f}", flush=True)
        print(f"pooled over {args.rounds} round(s) of {args.steps} timed steps (old = {args.against}, new = checkout):")
        for experts in programs:
            old = statistics.median(times[(experts, "old")])
            new = statistics.median(times[(experts, "new")])
            print(f"  {experts} experts: old {old * 1e3:,.0f} ms, new {new * 1e3:,.0f} ms, new / old {new / old:.3f}")


if __name__ == "__main__":
    main()
