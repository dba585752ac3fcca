"""Switch vs dense at equal FLOPs per token, trained on this machine.

(Fedus, Zoph & Shazeer 2022, "Switch Transformers": Sec. 3.1 and Fig. 4, the step-basis speedup;
Table 1 in Sec. 2.3, MoE top-2 and the capacity factors.)

The paper's headline, small: a dense T5 (examples/headline/dense.yaml) and FLOP-matched Switch
Transformers with 2, 4, 8 and 16 experts (top-1: each token goes through one expert as wide as
the dense FFN), MoE top-2 (twice the expert FLOPs), and Table 1's capacity-factor sweep (1.0,
1.25, 2.0 at 8 experts), all trained by `switchc train` on the same data for the same steps. It
reports eval quality at fixed steps and the step-basis speedup: dense's steps divided by the first
step (interpolated between evals) at which a sparse model reaches dense's final eval loss.

    python examples/headline/study.py                       # the default study (~25 min on 2 CPU cores)
    python examples/headline/study.py --seeds 0 1 2         # more seeds: trains only what is missing
    python examples/headline/study.py --steps 2000          # longer: every run resumes from its checkpoint
    python examples/headline/study.py --only dense switch-8 # trains a subset
    python examples/headline/study.py --set model.d_model=256 --out runs/headline-256   # other settings: a new OUT
    python examples/headline/study.py --report              # tabulate the runs in OUT, train nothing
    python examples/headline/study.py --report --seeds 0 --only dense switch-8   # ... only these

Every run lives in OUT/<variant>-seed<k>/ (the program, metrics.jsonl, TensorBoard events,
checkpoints), so an interrupted study resumes where it stopped and a finished run is kept. One OUT
holds one study's settings: a run there trained with other `--set` values is refused, not
retrained, so a study with other settings needs its own --out.

The study writes OUT/results.md (the tables) and OUT/headline.png (eval loss by step), read at
--steps. After training, they cover every run in OUT that has reached --steps and has this
study's settings, whatever --only and --seeds chose to train (a run with other settings is left
out, with a note). With --report they cover the runs in OUT that have reached --steps, of the
--only variants and --seeds given (default: every variant and every seed found), their settings
not checked. It runs unchanged on a GPU host: the generated programs use whatever devices JAX finds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from switchc.cli.train_commands import changed_settings
from switchc.runs import Run, curve, read_run
from switchc.spec import load_spec

HERE = Path(__file__).resolve().parent
BASE_SPEC = HERE / "dense.yaml"
SWITCH = ("moe.expert_every=2", "moe.top_k=1", "moe.group_size=4096")  # Switch-Base's layout, one group per batch


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: tuple[str, ...] = ()  # on top of dense.yaml; none = the dense baseline

    @property
    def settings(self) -> dict[str, str]:
        """The overrides as key -> value."""
        return dict(override.split("=", 1) for override in self.overrides)

    def sets(self, extra: Sequence[str] = ()) -> list[str]:
        """`--set` arguments: the variant's overrides, then the study's, a later value of a key winning.

        The study's `moe.*` and `layout.*` overrides skip the dense baseline (they would give it
        Switch layers).
        """
        merged = self.settings
        for override in extra:
            if self.overrides or not override.startswith(("moe.", "layout.")):
                key, _, value = override.partition("=")
                merged[key] = value
        return [arg for key, value in merged.items() for arg in ("--set", f"{key}={value}")]


def switch(experts: int, *more: str) -> tuple[str, ...]:
    """A Switch variant's overrides; `more` may replace the defaults above (a later key wins)."""
    return (f"moe.num_experts={experts}", *SWITCH, *more)


EXPERT_COUNTS = (2, 4, 8, 16)
VARIANTS = (
    Variant("dense", "dense (T5)"),
    *(Variant(f"switch-{n}", f"Switch, {n} experts", switch(n)) for n in EXPERT_COUNTS),
    Variant("moe-top2-8", "MoE top-2, 8 experts (2x expert FLOPs)", switch(8, "moe.top_k=2")),
    Variant("switch-8-cf1.0", "Switch, 8 experts, capacity 1.0", switch(8, "moe.capacity_factor.train=1.0")),
    Variant("switch-8-cf2.0", "Switch, 8 experts, capacity 2.0", switch(8, "moe.capacity_factor.train=2.0")),
)


def train(variant: Variant, seed: int, directory: Path, steps: int, eval_every: int, extra: Sequence[str]) -> None:
    """`switchc train` the variant to `steps`, resuming from its checkpoints when it has some."""
    command = [
        sys.executable,
        "-m",
        "switchc",
        "train",
        str(BASE_SPEC),
        *variant.sets([*extra, f"train.seed={seed}", f"train.steps={steps}"]),
        "--eval-every",
        str(eval_every),
        "--out",
        str(directory),
    ]
    if (directory / "checkpoints").is_dir():
        command.append("--resume")
    started = time.perf_counter()
    print(f"[{directory.name}] training to step {steps}", flush=True)
    log = directory.parent / f"{directory.name}.log"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"error: {directory.name} failed (exit {result.returncode}); see {log}")
    print(f"[{directory.name}] done in {time.perf_counter() - started:.0f}s", flush=True)


def other_settings(
    variant: Variant, seed: int, directory: Path, extra: Sequence[str]
) -> list[tuple[str, object, object]]:
    """How the settings a run was trained with differ from this study's (none: the same, or no spec written)."""
    written = directory / "program" / "spec.yaml"
    if not written.is_file():
        return []
    return changed_settings(
        written.read_text(encoding="utf-8"),
        load_spec(str(BASE_SPEC), variant.sets([*extra, f"train.seed={seed}"])[1::2]),
    )


def check_kept(variant: Variant, seed: int, directory: Path, extra: Sequence[str]) -> None:
    """A finished run the study keeps must have this study's settings, or its numbers answer another question.

    (A run the study resumes is checked by `switchc train --resume` itself.)
    """
    changes = other_settings(variant, seed, directory, extra)
    if changes:
        listed = "; ".join(f"{key}: {old} there, {new} here" for key, old, new in changes[:5])
        raise SystemExit(
            f"error: {directory} was trained with other settings ({listed}{'; ...' if len(changes) > 5 else ''})\n"
            "hint: give this study its own --out, or the --set values that run was trained with"
        )


def last_step(directory: Path) -> int:
    if not (directory / "metrics.jsonl").is_file():
        return 0
    return max((record.step for record in read_run(directory).records), default=0)


def read_to(directory: Path, steps: int) -> Run:
    """A run's records up to `steps`: a study reported at N steps reads a longer run as it stood at N."""
    run = read_run(directory)
    return Run(run.name, tuple(record for record in run.records if record.step <= steps))


def eval_curve(run: Run, key: str = "cross_entropy") -> list[tuple[int, float]]:
    found = curve(run, "eval", key)
    return list(zip(found.steps, found.values, strict=True)) if found else []


def first_step_reaching(points: Sequence[tuple[int, float]], target: float) -> float | None:
    """The step at which a curve first reaches `target`, interpolated linearly between evals."""
    previous: tuple[int, float] | None = None
    for step, value in points:
        if value <= target:
            if previous is None:
                return float(step)
            (s0, v0), (s1, v1) = previous, (step, value)
            return s0 + (v0 - target) / (v0 - v1) * (s1 - s0)
        previous = (step, value)
    return None


def _mean(values: Sequence[float], digits: int = 3, signed: bool = False) -> str:
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    sign = "+" if signed else ""
    return f"{statistics.mean(values):{sign}.{digits}f}{spread}"


def seed_of(run: Run) -> int:
    """The seed in a run directory's name, <variant>-seed<k>."""
    return int(Path(run.name).name.rsplit("-seed", 1)[1])


def _eval_steps_near(runs: dict[Variant, list[Run]], goals: Sequence[float]) -> tuple[int, ...]:
    """For each goal, the evaluated step (of any run) nearest to it: the columns a table can fill.

    (The goals themselves, rounded down, when no run has an eval yet.)
    """
    evaluated = sorted({step for group in runs.values() for run in group for step, _ in eval_curve(run)})
    if not evaluated:
        return tuple(int(goal) for goal in goals)
    return tuple(min(evaluated, key=lambda step: abs(step - goal)) for goal in goals)


def summarize(runs: dict[Variant, list[Run]], steps: int) -> str:
    """The study's table: eval cross-entropy at fixed steps, drops, and each model against dense.

    Comparisons with dense are paired by seed (the seed sets the init, the data order and the
    eval batches), over the seeds that both have: the final gap, and the step-basis speedup.
    """
    dense = {seed_of(run): eval_curve(run) for run in runs.get(VARIANTS[0], [])}
    shown = sorted(set(_eval_steps_near(runs, (steps / 4, steps / 2, steps))))
    lines = [
        "| model | seeds | "
        + " | ".join(f"eval CE @ {s}" for s in shown)
        + " | dropped @ end | vs dense @ end (same seeds) | speedup vs dense |",
        "|---|---|" + "---|" * len(shown) + "---|---|---|",
    ]
    for variant, group in runs.items():
        curves = [dict(eval_curve(run)) for run in group]
        cells = [_mean([c[s] for c in curves if s in c]) for s in shown]
        dropped = [found.values[-1] for run in group if (found := curve(run, "train", "dropped_fraction"))]
        drop_cell = f"{100 * statistics.mean(dropped):.1f}%" if dropped else "-"
        gap_cell = speed_cell = "-"
        paired = [(run, dense[seed_of(run)]) for run in group if dense.get(seed_of(run))]
        if variant is not VARIANTS[0] and paired:
            gaps = [eval_curve(run)[-1][1] - base[-1][1] for run, base in paired]
            gap_cell = f"{_mean(gaps, signed=True)} ({len(paired)})"
            reached = [first_step_reaching(eval_curve(run), base[-1][1]) for run, base in paired]
            found_steps = [r for r in reached if r is not None]
            speed_cell = (
                f"{steps / statistics.mean(found_steps):.2f}x" if len(found_steps) == len(reached) else "not reached"
            )
        lines.append(
            f"| {variant.label} | {', '.join(str(seed_of(run)) for run in group)} | {' | '.join(cells)} "
            f"| {drop_cell} | {gap_cell} | {speed_cell} |"
        )
    note = (
        "Eval cross-entropy in nats per target token on the held-out split (mean ± stdev over the seeds "
        "listed). Against dense, paired by seed over the seeds both have (their number in brackets): the "
        f"final gap (negative: better than dense), and the speedup, {steps} / the step (interpolated between "
        "evals) at which the model first reaches its seed's dense eval cross-entropy at the end."
    )
    return note + "\n\n" + "\n".join(lines)


def _late_mean(run: Run, key: str, steps: int) -> float | None:
    """Mean of a train metric over the last tenth of the steps (None where the run has none)."""
    found = curve(run, "train", key)
    late = [v for s, v in zip(found.steps, found.values, strict=True) if 0.9 * steps < s <= steps] if found else []
    return statistics.mean(late) if late else None


def paired(runs: dict[Variant, list[Run]], steps: int) -> str:
    """Each sparse model against dense of its seed through the second half of training.

    Per seed (in seed order): the eval gap at half, three quarters and all of the steps; how many
    evals from half-way on are below dense's; the training cross-entropy gap and the mean top-1
    router gate over the last tenth of the steps (against uniform routing's 1 / experts).
    """
    dense = {seed_of(run): run for run in runs.get(VARIANTS[0], [])}
    goals = _eval_steps_near(runs, (steps // 2, 3 * steps // 4, steps))
    sweep = {f"switch-{n}" for n in EXPERT_COUNTS}
    # the expert-count sweep's runs, pooled: gaps at the goals, evals ahead of all evals, train gaps
    pooled_goals: list[list[float]] = [[] for _ in goals]
    pooled_train: list[float] = []
    pooled_ahead = pooled_total = 0
    pooled_experts: list[int] = []
    lines = [
        "| model | seeds | "
        + " | ".join(f"gap @ {goal}" for goal in goals)
        + f" | evals ahead, steps {goals[0]}-{steps} "
        "| train CE gap, last 10% | top-1 gate, last 10% (uniform) |",
        "|---|---|" + "---|" * len(goals) + "---|---|---|",
    ]
    for variant, group in runs.items():
        pairs = [(run, dense[seed_of(run)]) for run in group if seed_of(run) in dense]
        if variant is VARIANTS[0] or not pairs:
            continue
        gaps: list[list[float | None]] = [[] for _ in goals]
        ahead, total, train_gaps, gates = 0, 0, [], []
        for run, base in pairs:
            mine, theirs = dict(eval_curve(run)), dict(eval_curve(base))
            for column, goal in zip(gaps, goals, strict=True):
                column.append(mine[goal] - theirs[goal] if goal in mine and goal in theirs else None)
            late = [step for step in mine if goals[0] <= step <= steps and step in theirs]
            ahead += sum(mine[step] < theirs[step] for step in late)
            total += len(late)
            ce, base_ce = _late_mean(run, "cross_entropy", steps), _late_mean(base, "cross_entropy", steps)
            if ce is not None and base_ce is not None:
                train_gaps.append(ce - base_ce)
            gate = _late_mean(run, "top1_gate", steps)
            if gate is not None:
                gates.append(f"{gate:.3f}")
        if variant.name in sweep:
            for pooled_column, column in zip(pooled_goals, gaps, strict=True):
                pooled_column.extend(gap for gap in column if gap is not None)
            pooled_train.extend(train_gaps)
            pooled_ahead, pooled_total = pooled_ahead + ahead, pooled_total + total
            pooled_experts.append(int(variant.settings["moe.num_experts"]))
        experts = variant.settings.get("moe.num_experts")
        uniform = f" ({1 / int(experts):.3f})" if experts else ""
        lines.append(
            f"| {variant.label} | {', '.join(str(seed_of(run)) for run, _ in pairs)} | "
            + " | ".join(", ".join("-" if gap is None else f"{gap:+.3f}" for gap in column) for column in gaps)
            + f" | {ahead} of {total} | {', '.join(f'{gap:+.3f}' for gap in train_gaps) or '-'} "
            f"| {', '.join(gates) or '-'}{uniform} |"
        )
    if len(lines) == 2:  # no sparse run has a dense run of its seed at these steps
        return (
            f"No sparse model against dense: no sparse run in the table above has a dense run of its seed that "
            f"reached step {steps} (train both, e.g. --only dense switch-8, to compare them)."
        )
    runs_pooled = len(pooled_goals[-1])
    pooled = len(pooled_experts) > 1  # one variant alone is its own row already
    if pooled:
        below = sum(gap < 0 for gap in pooled_goals[-1])
        counts = sorted(pooled_experts)
        if counts == sorted(EXPERT_COUNTS):
            span = f"{counts[0]}-{counts[-1]}"
        else:
            span = ", ".join(map(str, counts[:-1])) + " and " + str(counts[-1])
        lines.append(
            f"| Switch, {span} experts, every run pooled "
            f"| {runs_pooled} runs, {below} below dense at {steps} | "
            + " | ".join(_mean(column, signed=True) for column in pooled_goals)
            + f" | {pooled_ahead} of {pooled_total} | {_mean(pooled_train, signed=True)} | - |"
        )
    note = (
        "Each sparse model against dense of the same seed, one value per seed: the eval cross-entropy gap "
        "(negative: better than dense) at three steps, the evals from half-way on at which it is below dense, "
        "and over the last 10% of the steps the gap in train cross-entropy and the mean top-1 router gate "
        "(uniform routing in brackets)."
    )
    if pooled:
        note += (
            " The last row pools the expert-count sweep (top-1, capacity 1.25; every seed of each): "
            "mean ± stdev over its runs."
        )
    return note + "\n\n" + "\n".join(lines)


def plot(runs: dict[Variant, list[Run]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (variant, group) in enumerate(runs.items()):
        for k, run in enumerate(group):
            points = eval_curve(run)
            if points:
                steps, values = zip(*points, strict=True)
                style = ":" if "cf" in variant.name else "--" if "top2" in variant.name else "-"
                color = "black" if variant is VARIANTS[0] else colors[index % len(colors)]
                axis.plot(steps, values, style, color=color, label=variant.label if k == 0 else None)
    axis.set_xlabel("training step")
    axis.set_ylabel("eval cross-entropy (nats / target token)")
    axis.set_title("Dense vs Switch at equal FLOPs per token (switchc, Shakespeare, CPU)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def trained(args: argparse.Namespace, chosen: Sequence[Variant], seeds: Sequence[int], eval_every: int) -> None:
    """Brings every (variant, seed) run chosen to args.steps: trained, resumed or kept as it is."""
    for variant in chosen:
        for seed in seeds:
            directory = args.out / f"{variant.name}-seed{seed}"
            done = last_step(directory)
            if done < args.steps:
                train(variant, seed, directory, args.steps, eval_every, args.overrides)
            else:
                check_kept(variant, seed, directory, args.overrides)
                print(f"[{directory.name}] at step {done} already: kept", flush=True)


def finished(
    out: Path, chosen: Sequence[Variant], seeds: Sequence[int] | None, steps: int, extra: Sequence[str] | None = None
) -> dict[Variant, list[Run]]:
    """The runs in `out` of these variants and seeds (None: any seed) that reached `steps`, read to `steps`.

    With `extra` (the study's --set values), only the runs trained with the study's settings; the
    others are named on stdout and left out.
    """
    runs: dict[Variant, list[Run]] = {}
    for variant in chosen:
        found = []
        for directory in out.glob(f"{variant.name}-seed*/"):
            named = directory.name.removeprefix(f"{variant.name}-seed")
            if named.isdigit() and (seeds is None or int(named) in seeds) and last_step(directory) >= steps:
                found.append((int(named), directory))
        for seed, directory in sorted(found):
            if extra is not None and other_settings(variant, seed, directory, extra):
                print(f"[{directory.name}] trained with other settings: left out of the tables", flush=True)
                continue
            runs.setdefault(variant, []).append(read_to(directory, steps))
    if not runs:
        raise SystemExit(f"error: no run in {out} of the variants and seeds asked for has reached step {steps}")
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/headline"), help="study directory (default: runs/headline)"
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps per run (default: 400)")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: steps / 10)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train one run per variant and seed (default: 0); with --report, tabulate these seeds only "
        "(default: every seed found)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[v.name for v in VARIANTS],
        help="train these variants only; with --report, tabulate these only (default: all)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: tabulate and plot the runs in OUT that have reached --steps, of the --only "
        "variants and --seeds given (default: all); without --report the tables cover every run in OUT "
        "at --steps that has the study's settings",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="spec override for every run (moe.* and layout.* ones: the sparse runs only)",
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.eval_every is not None and args.eval_every < 1:
        parser.error("--eval-every must be >= 1")
    if any(seed < 0 for seed in args.seeds or ()):
        parser.error("--seeds must be >= 0 (train.seed's range)")
    eval_every = args.eval_every or max(1, args.steps // 10)
    chosen = [v for v in VARIANTS if args.only is None or v.name in args.only]
    began = time.perf_counter()
    if args.report:
        runs = finished(args.out, chosen, args.seeds, args.steps)
    else:
        trained(args, chosen, args.seeds or [0], eval_every)
        runs = finished(args.out, VARIANTS, None, args.steps, args.overrides)
    text = summarize(runs, args.steps) + "\n\n" + paired(runs, args.steps)
    print(text)
    (args.out / "results.md").write_text(text + "\n", encoding="utf-8")
    plot(runs, args.out / "headline.png")
    print(f"wrote {args.out / 'results.md'} and {args.out / 'headline.png'} ({time.perf_counter() - began:.0f}s)")


if __name__ == "__main__":
    main()
