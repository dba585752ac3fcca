"""Time one training step of switchc's generated JAX and PyTorch programs against Hugging Face's Switch Transformer.

    .venv/bin/pip install -c ci/constraints.txt torch==2.13.0 transformers   # for this benchmark only
    .venv/bin/python benchmarks/bench_step.py --json bench_step.json          # full run (11 min on 2 cores)
    .venv/bin/python benchmarks/bench_step.py --quick                         # smoke test of the pipeline (2-3 min)
    .venv/bin/python benchmarks/bench_step.py --rounds 2 --json bench.json    # every case twice, steps pooled (27 min)
    .venv/bin/python benchmarks/bench_step.py --host-memory                   # runtime/host.py on and off (5 min)

One run measures, on this CPU (its speed drifts 15% or more between runs, so only ratios within
one run mean anything):

1. the float32 matmul peak (numpy and jax.jit, square 2048 matrices, median of 7) and the copy
   bandwidth (256 MiB, read + write), at the start and again at the end of the run;
2. the generated JAX program's train step (forward + backward + Adam, jitted as
   runtime/loop.py builds it, one CPU device) for 1, 16 and 64 experts and a dense twin: the
   program is made by `switchc compile` from a spec written here, compiled once ahead of time,
   warmed up, then the median of --steps steps, each ended by block_until_ready;
3. transformers' SwitchTransformersForConditionalGeneration (and T5ForConditionalGeneration as the
   dense twin: HF's Switch config cannot express zero sparse layers) with the same sizes, in torch
   eager on all cores: zero_grad + forward + backward + torch.optim.Adam step, median of --steps;
4. the generated PyTorch program's train step for the same cases (`switchc compile --backend torch`
   from the same spec), in torch eager on all cores: runtime/loop.py's build() (model, placement on
   the one-process mesh, optimizer) and train_step() (forward + backward + gradient norm and
   NaN/Inf check + the optimizer step), exactly what the program's loop runs, median of --steps;
   at 16 experts also with the program's --compile (torch.compile: its warm-up steps compile).

The fixed config: d_model 512, d_ff 2048, 8 heads of d_kv 64, 4 + 4 blocks, a Switch layer in every
2nd block, ReLU, vocabulary 8192, batch 8 x (256 inputs + 64 targets) random tokens, float32,
dropout 0, Adam (lr 1e-3, betas 0.9/0.999) with a constant schedule.

MFU = FLOPs per step / step time / the measured peak. For both generated programs the FLOPs are
what the program executes, `flops.executed.train_step_per_device` of `switchc report` (experts over
all capacity slots, padding included: both dispatch into [groups, E, C, D] and run every slot);
XLA's own count from cost_analysis() is printed beside the JAX rows.
HF runs each expert on the tokens routed to it only (no padding), so its rows use switchc's
model FLOPs (`flops.model.train_step_per_device`). Both drop tokens over capacity, HF far more at
its default init, and an HF expert that no token reached gets no gradient and no Adam update, so
the table also shows each side's dropped share and experts hit. Each measurement runs in its own
subprocess (each program has its own `model` and `runtime` modules; memory is returned between cases),
and each HF case runs between its JAX and PyTorch twins, so every pair sees one machine speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SWITCHC = Path(sys.executable).parent / "switchc"
EXPERT_COUNTS = (1, 16, 64)
REFERENCE_EXPERTS = 16  # the HF row every ratio is taken against
STEP_SLOWDOWN_TARGET = 1.25  # issue: 16 experts at most 25% slower per step than 1
TORCH_SPEEDUP_TARGET = 1.2  # torch issue: the PyTorch program >= 1.2 x HF's tokens/s at 16 experts ...
TORCH_SPEEDUP_STRETCH = 1.4  # ... and 1.4 x as the stretch goal
TORCH_MFU_TARGET = 0.65  # ... at >= 65% of the matmul peak measured in the same run
HF_NO_DROP = "no-drop"  # HF at 16 experts with expert_capacity = the input length: no token dropped
HF_RETAIN = "retain"  # HF at 16 experts with the generated programs' malloc settings (runtime/host.py)
HF_SAME_INIT = "same-init"  # HF at 16 experts from the PyTorch program's initial weights (hf_weights.py)
TORCH_COMPILE = "compile"  # the PyTorch program at 16 experts with --compile (torch.compile)
HF_LABELS = {
    HF_NO_DROP: "HF Switch, no drops",
    HF_RETAIN: "HF Switch, host.py",
    HF_SAME_INIT: "HF Switch, switchc init",
}
# Untimed steps per case: glibc's heap (runtime/host.py keeps one arena, never trimmed) still grows, and
# page-faults in fresh memory, through the 3rd-4th step of the PyTorch program at 1 expert.
DEFAULT_WARMUP = 4
BYTES_PER_PARAM_STEP = 40  # float32: forward reads W, backward reads W and writes dW, Adam reads p g m v, writes p m v


@dataclass(frozen=True)
class Shape:
    """The benchmarked model and batch; the fields are the spec's names."""

    vocab_size: int = 8192
    d_model: int = 512
    d_ff: int = 2048
    d_kv: int = 64
    num_heads: int = 8
    encoder_layers: int = 4
    decoder_layers: int = 4
    expert_every: int = 2
    capacity_factor: float = 1.25  # switchc's training default (moe.capacity_factor.train)
    min_capacity: int = 4  # switchc's default (moe.min_capacity)
    batch_size: int = 8
    inputs_length: int = 256
    targets_length: int = 64

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * (self.inputs_length + self.targets_length)


FULL = Shape()
# --quick: the same pipeline on a model small enough to compile and run in seconds.
QUICK = Shape(
    vocab_size=512, d_model=64, d_ff=256, d_kv=16, num_heads=4, encoder_layers=2, decoder_layers=2, batch_size=2
)


# ---------------------------------------------------------------------------------------------
# The parent: write specs, compile programs, run every measurement in a subprocess, report.
# ---------------------------------------------------------------------------------------------


def spec_yaml(shape: Shape, num_experts: int | None) -> str:
    """A spec for the benchmark; no moe section when num_experts is None (the dense twin)."""
    moe = ""
    if num_experts is not None:
        moe = f"""
moe:
  num_experts: {num_experts}
  expert_every: {shape.expert_every}
  top_k: 1
  capacity_factor: {{train: {shape.capacity_factor}, eval: 2.0}}
  min_capacity: {shape.min_capacity}
"""
    return f"""# Written by benchmarks/bench_step.py; group_size is left at switchc's default.
model:
  vocab_size: {shape.vocab_size}
  d_model: {shape.d_model}
  d_ff: {shape.d_ff}
  d_kv: {shape.d_kv}
  num_heads: {shape.num_heads}
  encoder_layers: {shape.encoder_layers}
  decoder_layers: {shape.decoder_layers}
  ffn_activation: relu
  dropout_rate: 0.0
  dtype: float32
{moe}
mesh:
  axes: {{data: 1}}

train:
  batch_size: {shape.batch_size}
  inputs_length: {shape.inputs_length}
  targets_length: {shape.targets_length}
  optimizer: {{name: adam, learning_rate: 0.001, schedule: constant}}

data:  # not read: the benchmark feeds random tokens
  source: shakespeare
  tokenizer: byte
"""


def run_checked(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}{result.stderr}")
    return result.stdout


def prepare_case(workdir: Path, shape: Shape, num_experts: int | None) -> dict[str, Any]:
    """Spec -> `switchc compile` JAX and PyTorch program dirs and `switchc report` JSON for one case."""
    name = "dense" if num_experts is None else f"e{num_experts}"
    spec = workdir / f"bench-{name}.yaml"
    spec.write_text(spec_yaml(shape, num_experts), encoding="utf-8")
    program, torch_program = workdir / name, workdir / f"{name}-torch"
    run_checked([str(SWITCHC), "compile", str(spec), "-o", str(program)])
    run_checked([str(SWITCHC), "compile", str(spec), "--backend", "torch", "-o", str(torch_program)])
    report = json.loads(run_checked([str(SWITCHC), "report", str(spec), "--format", "json"]))
    case = {"experts": num_experts, "spec": spec, "program": program, "torch_program": torch_program, "report": report}
    if num_experts == REFERENCE_EXPERTS:  # the PyTorch program's seed-0 weights, for HF_SAME_INIT
        case["init"] = workdir / f"{name}-init.safetensors"
        run_checked([sys.executable, str(torch_program / "train.py"), "--export-init", str(case["init"])])
    return case


def run_worker(kind: str, config: dict[str, Any], xla_flags: str = "") -> dict[str, Any]:
    """Run one measurement in a fresh Python; a failure is recorded, not raised."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--worker-config", json.dumps(config)]
    name = " ".join(str(part) for part in (kind, config.get("label", ""), config.get("variant")) if part)
    print(f"  {name} ...", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        tail = (result.stdout + result.stderr)[-2000:]
        print(f"  {name}: FAILED (exit {result.returncode})\n{tail}", flush=True)
        return {"failed": True, "exit": result.returncode, "error_tail": tail, "wall_s": wall}
    measured = {**json.loads(lines[-1][len("RESULT ") :]), "wall_s": wall}
    if "step_s" in measured:
        faults = measured.get("page_faults_by_step", [])
        warm, timed = faults[: config["warmup"]], faults[config["warmup"] :]
        print(
            f"  {name}: median step {measured['step_s'] * 1e3:,.0f} ms; page faults by warm-up step "
            f"{' '.join(f'{n:,}' for n in warm) or '-'}, per timed step {min(timed, default=0):,}-"
            f"{max(timed, default=0):,}",
            flush=True,
        )
    return measured


def resolved_moe(program: Path) -> dict[str, Any]:
    """The moe section of the program's resolved spec.yaml (every default filled in by switchc)."""
    import yaml

    return yaml.safe_load((program / "spec.yaml").read_text(encoding="utf-8"))["moe"]


def hf_expert_capacity(shape: Shape, num_experts: int) -> int:
    """HF routes each sequence as its own group: switchc's capacity formula (eq. 3) on one input sequence."""
    capacity = math.ceil(shape.inputs_length / num_experts * shape.capacity_factor)
    return min(max(capacity, shape.min_capacity), shape.inputs_length)


def timing_tasks(cases: dict[str, dict[str, Any]], shape: Shape, steps: int, warmup: int) -> list[tuple[str, dict]]:
    """(worker, config) per row: per case JAX, HF, PyTorch, so each program runs right next to its HF
    twin and a pair sees one machine speed."""
    tasks: list[tuple[str, dict]] = []
    for experts in (REFERENCE_EXPERTS, 1, 64, None):
        case = cases["dense" if experts is None else f"e{experts}"]
        label = "dense" if experts is None else str(experts)
        common = {"experts": experts, "label": label, "steps": steps, "warmup": warmup}
        tasks.append(("jax", {**common, "program": str(case["program"])}))
        hf = {**common, "shape": asdict(shape)}
        if experts is not None:
            hf["expert_capacity"] = hf_expert_capacity(shape, experts)
        tasks.append(("hf", hf))
        tasks.append(("torch", {**common, "program": str(case["torch_program"])}))
        if experts == REFERENCE_EXPERTS:  # the program's --compile; its warm-up steps compile
            tasks.append(("torch", {**common, "program": str(case["torch_program"]), "variant": TORCH_COMPILE}))
        if experts == REFERENCE_EXPERTS:
            # Three more HF rows at the reference size, to read the targets' ratios against: every
            # token computed (capacity = the sequence), the programs' host malloc settings, and the
            # programs' initial weights (so HF routes as they do at the start).
            tasks.append(("hf", {**hf, "variant": HF_NO_DROP, "expert_capacity": shape.inputs_length}))
            tasks.append(("hf", {**hf, "variant": HF_RETAIN, "retain_from": str(case["torch_program"])}))
            tasks.append(("hf", {**hf, "variant": HF_SAME_INIT, "init_from": str(case["init"])}))
    return tasks


def pool(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's measurements from every round as one: the median of all timed steps; kernel time
    and page faults averaged; the rest (loss, routing, setup) from the last round that ran. A round
    that failed is left out; the case fails only if every round did."""
    ran = [result for result in measured if not result.get("failed")]
    if not ran:
        return measured[-1]
    if len(measured) == 1:
        return ran[0]
    times = [time for result in ran for time in result["times_s"]]
    pooled = {**ran[-1], "times_s": times, "step_s": statistics.median(times)}
    pooled["round_step_s"] = [result["step_s"] if not result.get("failed") else None for result in measured]
    for key in ("sys_s_per_step", "page_faults_per_step"):
        pooled[key] = statistics.fmean(result[key] for result in ran)
    return pooled


def make_row(kind: str, config: dict[str, Any], result: dict[str, Any], case: dict[str, Any], shape: Shape) -> dict:
    """One table row: the measurement plus the FLOPs it is divided by (see the module docstring)."""
    experts = config["experts"]
    if kind in ("jax", "torch"):
        label = "switchc JAX" if kind == "jax" else "switchc PyTorch"
        if config.get("variant") == TORCH_COMPILE:
            label += " --compile"
        flops = case["report"]["flops"]["executed"]["train_step_per_device"]
    else:
        label = HF_LABELS.get(
            config.get("variant"), "HF SwitchTransformers" if experts is not None else "HF T5 (dense twin)"
        )
        flops = case["report"]["flops"]["model"]["train_step_per_device"]
    row = {
        "kind": kind,
        "variant": config.get("variant"),
        "label": label,
        "experts": experts,
        "experts_label": config["label"],
        **result,
    }
    if not row.get("failed"):
        row["flops"] = float(flops)
        row["tokens_per_s"] = shape.tokens_per_step / row["step_s"]
    return row


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_state() -> str:
    """The commit benchmarked, and whether the generator had uncommitted edits."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "switchc", "backends").splitlines()
    return f"{head}" + (f" + uncommitted edits in {len(dirty)} file(s) of switchc/ and backends/" if dirty else "")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("switchc", "jax", "jaxlib", "optax", "numpy", "torch", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_load(load: tuple[float, float, float]) -> str:
    return f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)"


@dataclass(frozen=True)
class CpuClock:
    """The whole machine's CPU time and this benchmark's own (its process and every finished
    worker), so that what other processes took in between can be told apart from ours."""

    wall_s: float
    busy_s: float | None  # every core's non-idle time since boot (/proc/stat; None where there is none)
    steal_s: float | None  # time the hypervisor gave this VM's cores to someone else
    own_s: float

    @classmethod
    def now(cls) -> CpuClock:
        own = os.times()
        busy = steal = None
        try:
            fields = Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0].split()
            user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(v) for v in fields[1:9])
            hertz = os.sysconf("SC_CLK_TCK")
            busy, steal = (user + nice + system + irq + softirq) / hertz, stolen / hertz
        except (OSError, ValueError):
            pass
        return cls(time.perf_counter(), busy, steal, own.user + own.system + own.children_user + own.children_system)

    def others_since(self, start: CpuClock) -> dict[str, float] | None:
        """Shares of all cores' time from `start` to here: what other processes used, and steal."""
        if self.busy_s is None or start.busy_s is None or self.steal_s is None or start.steal_s is None:
            return None
        capacity = (self.wall_s - start.wall_s) * (os.cpu_count() or 1)
        others = (self.busy_s - start.busy_s) - (self.own_s - start.own_s)
        return {"others": max(others, 0.0) / capacity, "steal": (self.steal_s - start.steal_s) / capacity}


BUSY_WARNING = 0.10  # other processes' share of the cores above which the timings are not worth much


def other_work_before(seconds: float = 3.0) -> dict[str, float] | None:
    """What other processes use of the cores now, sampled over `seconds`; prints a warning when the
    machine is busy (the same step measured here ran 4x slower under load)."""
    start = CpuClock.now()
    time.sleep(seconds)
    shares = CpuClock.now().others_since(start)
    print(f"other work before: {fmt_shares(shares)}")
    if shares is not None and shares["others"] > BUSY_WARNING:
        print(
            f"WARNING: other processes are using {shares['others']:.0%} of the cores: the timings will be slow and "
            "noisy. Stop them and run again; the run goes on."
        )
    return shares


def fmt_shares(shares: dict[str, float] | None) -> str:
    if shares is None:
        return "unknown (no /proc/stat)"
    return f"other processes {shares['others']:.1%} of the cores' time, hypervisor steal {shares['steal']:.1%}"


def print_table(rows: list[dict[str, Any]], reference: dict[str, Any] | None, peak: float) -> None:
    header = (
        f"{'implementation':<25} {'experts':>7} {'step ms':>9} {'tokens/s':>9} {'vs HF-16':>8} "
        f"{'GFLOP/step':>10} {'XLA GFLOP':>9} {'MFU':>6} {'setup s':>8} {'dropped':>7} {'experts hit':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.get("failed"):
            print(f"{row['label']:<25} {row['experts_label']:>7}  failed (exit {row['exit']})")
            continue
        ratio = row["tokens_per_s"] / reference["tokens_per_s"] if reference else float("nan")
        xla = f"{row['xla_flops'] / 1e9:9.1f}" if row.get("xla_flops") else f"{'-':>9}"
        mfu = row["flops"] / row["step_s"] / peak
        step_ms, tokens = row["step_s"] * 1e3, fmt_rate(row["tokens_per_s"])
        dropped = f"{row['dropped_fraction']:7.1%}" if "dropped_fraction" in row else f"{'-':>7}"
        used = row.get("experts_used")
        hit = f"{min(used)}-{max(used)}/{row['experts']}" if used else "-"
        print(
            f"{row['label']:<25} {row['experts_label']:>7} {step_ms:9.1f} {tokens:>9} {ratio:8.2f} "
            f"{row['flops'] / 1e9:10.1f} {xla} {mfu:6.1%} {row['setup_s']:8.1f} {dropped} {hit:>11}"
        )


def routing_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    experts = report["spec"]["num_experts"]
    for group in report["spec"]["routing"]:
        tokens = group["tokens_per_group"]
        lines.append(
            f"    {group['stack']:<8} {group['groups_per_device']} group(s) of S = {tokens} tokens: "
            f"S/E = {tokens / experts:g} tokens per expert on average, capacity C = {group['capacity']}, "
            f"E*C = {experts * group['capacity']} slots"
        )
    return lines


def print_semantics(cases: dict[str, dict[str, Any]], shape: Shape) -> None:
    moe = resolved_moe(cases[f"e{REFERENCE_EXPERTS}"]["program"])
    factor = moe["capacity_factor"]["train"]
    print(
        f"switchc: default moe.group_size = {moe['group_size']} (a routing group is the largest divisor of a "
        "stack's tokens up to that);"
    )
    print(
        f"  capacity C = min(max(ceil(S / E * {factor}), {moe['min_capacity']}), S) slots per expert and group "
        "of S tokens (eq. 3); every expert runs on all its C slots, filled or not:"
    )
    for experts in EXPERT_COUNTS:
        print(f"  E = {experts}:")
        for line in routing_lines(cases[f"e{experts}"]["report"]):
            print(line)
    capacities = ", ".join(f"{hf_expert_capacity(shape, e)} (E={e})" for e in EXPERT_COUNTS)
    print(
        "HF: capacity counts per sequence (cumsum over the sequence axis) with one expert_capacity for encoder and "
        f"decoder: min(max(ceil({shape.inputs_length} / E * {shape.capacity_factor}), {shape.min_capacity}), "
        f"{shape.inputs_length}) = {capacities}; each expert runs on its routed tokens only"
    )
    print(
        f"HF: torch eager, torch.set_num_threads({os.cpu_count()}) (all cores), torch.optim.Adam defaults "
        "(for-loop implementation on CPU), loss with router z- and aux losses (output_router_logits=True)"
    )
    print(
        "HF: its own init (router normal(0, 1); switchc: std sqrt(0.1 / d_model)); the scale does not change "
        "which expert a token picks (argmax), so routing balance comes from the hidden states"
    )
    print(
        f"switchc PyTorch: torch eager, torch.set_num_threads({os.cpu_count()}), the program's own runtime on its "
        "one-process mesh: loop.build (model.build(0), parallel.parallelize, optim.optimizer_for) and "
        "loop.train_step per step (forward with router jitter, backward, gradient norm and NaN/Inf check, "
        "optimizer step); like the JAX program it dispatches into [G, E, C, D] and runs every capacity slot"
    )


def explain_many_experts(
    cases: dict[str, dict[str, Any]], rows: dict[int | None, dict], shape: Shape, peak: float, bandwidth: float
) -> list[str]:
    """Why the 64-expert step is slow: tiny matmuls per expert and parameter traffic, in numbers."""
    report, row = cases["e64"]["report"], rows[64]
    params, expert_params = report["params"]["total"], report["params"]["experts"]
    d, f = shape.d_model, shape.d_ff
    balance = peak / bandwidth
    lines = [f"64 experts, arithmetic (peak {peak / 1e9:.1f} GFLOP/s, copy bandwidth {bandwidth / 1e9:.1f} GB/s):"]
    lines += routing_lines(report)
    for group in report["spec"]["routing"]:
        c = group["capacity"]
        # One expert's first matmul on its C slots: [C, D] x [D, F], float32 weights and activations.
        intensity = 2 * c * d * f / (4 * (d * f + c * d + c * f))
        # A whole step per expert weight: 6 FLOPs per slot (fwd, bwd data, bwd weight) over its bytes moved.
        per_weight = 6 * c / BYTES_PER_PARAM_STEP
        lines.append(
            f"    {group['stack']} expert matmul [C={c}, {d}] x [{d}, {f}]: 2CDF / 4(DF + CD + CF) B = "
            f"{intensity:.1f} FLOP/B; whole step per expert weight: 6C FLOP / {BYTES_PER_PARAM_STEP} B = "
            f"{per_weight:.1f} FLOP/B; machine balance peak / bandwidth = {balance:.1f} FLOP/B"
        )
    traffic = BYTES_PER_PARAM_STEP * params
    lines += [
        f"    parameters {params / 1e6:.1f}M, experts {expert_params / 1e6:.1f}M ({expert_params * 4 / 2**30:.2f} GiB "
        "float32); gradients and Adam's two moments add 3x that",
        f"    parameter traffic ~ {BYTES_PER_PARAM_STEP} B/param/step (fwd reads W; bwd reads W, writes dW; Adam reads "
        f"p g m v, writes p m v) = {traffic / 1e9:.1f} GB = {traffic / bandwidth * 1e3:.0f} ms at the copy bandwidth",
        f"    compute: {row['flops'] / 1e9:.1f} GFLOP executed = {row['flops'] / peak * 1e3:.0f} ms at peak; "
        f"measured step {row['step_s'] * 1e3:.0f} ms",
    ]
    reference = rows.get(REFERENCE_EXPERTS)
    if reference is not None and not reference.get("failed"):
        extra_params = params - cases[f"e{REFERENCE_EXPERTS}"]["report"]["params"]["total"]
        extra_flops = row["flops"] - reference["flops"]
        predicted = BYTES_PER_PARAM_STEP * extra_params / bandwidth + extra_flops / peak
        lines.append(
            f"    64 vs 16 experts: +{extra_params / 1e6:.0f}M parameters -> +{predicted * 1e3:.0f} ms predicted "
            f"(traffic at bandwidth, +{extra_flops / 1e9:.1f} GFLOP at peak); measured "
            f"{(row['step_s'] - reference['step_s']) * 1e3:+.0f} ms"
        )
    return lines


def print_targets(
    jax_rows: dict[int | None, dict],
    torch_rows: dict[int | None, dict],
    reference: dict[str, Any] | None,
    peak: float,
    compiled: dict[str, Any],
) -> dict[str, bool]:
    """Print the issues' targets; the PyTorch program's two are read for its --compile row too
    (`compiled`; JSON keys with a `_compile` suffix)."""
    results: dict[str, bool] = {}
    jax16, jax1 = jax_rows[REFERENCE_EXPERTS], jax_rows[1]
    print("targets:")
    if reference is None or jax16.get("failed"):
        print("  [----] generated JAX >= HF tokens/s at 16 experts: not measured")
    else:
        ok = results["jax_ge_hf_at_16"] = jax16["tokens_per_s"] >= reference["tokens_per_s"]
        print(
            f"  [{'PASS' if ok else 'MISS'}] generated JAX >= HF tokens/s at 16 experts: "
            f"{fmt_rate(jax16['tokens_per_s'])} vs {fmt_rate(reference['tokens_per_s'])} tokens/s "
            f"(x{jax16['tokens_per_s'] / reference['tokens_per_s']:.2f})"
        )
    if jax16.get("failed") or jax1.get("failed"):
        print(f"  [----] JAX step with 16 experts <= {STEP_SLOWDOWN_TARGET} x with 1 expert: not measured")
    else:
        slowdown = jax16["step_s"] / jax1["step_s"]
        ok = results["jax_16_within_25pct_of_1"] = slowdown <= STEP_SLOWDOWN_TARGET
        print(
            f"  [{'PASS' if ok else 'MISS'}] JAX step with 16 experts <= {STEP_SLOWDOWN_TARGET} x with 1 expert: "
            f"{jax16['step_s'] * 1e3:.0f} ms / {jax1['step_s'] * 1e3:.0f} ms = {slowdown:.2f}"
        )
    for suffix, row in (("", torch_rows[REFERENCE_EXPERTS]), ("_compile", compiled)):
        results.update(_torch_targets(row, reference, peak, suffix))
    return results


def _torch_targets(row: dict[str, Any], reference: dict[str, Any] | None, peak: float, suffix: str) -> dict[str, bool]:
    """The PyTorch program's two targets for one of its rows (eager, or --compile: `suffix`)."""
    results: dict[str, bool] = {}
    program = "generated PyTorch" + (" --compile" if suffix else "")
    speedup_target = f"{program} >= {TORCH_SPEEDUP_TARGET} x HF tokens/s at {REFERENCE_EXPERTS} experts"
    if reference is None or row.get("failed"):
        print(f"  [----] {speedup_target}: not measured")
    else:
        speedup = row["tokens_per_s"] / reference["tokens_per_s"]
        ok = results[f"torch_ge_1.2x_hf_at_16{suffix}"] = speedup >= TORCH_SPEEDUP_TARGET
        stretch = results[f"torch_ge_1.4x_hf_at_16{suffix}"] = speedup >= TORCH_SPEEDUP_STRETCH
        print(
            f"  [{'PASS' if ok else 'MISS'}] {speedup_target}: {fmt_rate(row['tokens_per_s'])} vs "
            f"{fmt_rate(reference['tokens_per_s'])} tokens/s (x{speedup:.2f}; stretch x{TORCH_SPEEDUP_STRETCH}: "
            f"{'reached' if stretch else 'not reached'})"
        )
    mfu_target = f"{program} >= {TORCH_MFU_TARGET:.0%} MFU"
    if row.get("failed"):
        print(f"  [----] {mfu_target}: not measured")
    else:
        mfu = row["flops"] / row["step_s"] / peak
        ok = results[f"torch_mfu_ge_65pct{suffix}"] = mfu >= TORCH_MFU_TARGET
        print(
            f"  [{'PASS' if ok else 'MISS'}] {mfu_target}: {mfu:.1%} at {REFERENCE_EXPERTS} experts "
            f"({row['flops'] / 1e9:.1f} GFLOP executed / {row['step_s'] * 1e3:.0f} ms / "
            f"{peak / 1e9:.1f} GFLOP/s peak)"
        )
    return results


def round_ratios(
    jax_rows: dict[int | None, dict],
    torch_rows: dict[int | None, dict],
    reference: dict[str, Any] | None,
    compiled: dict[str, Any],
) -> list[str]:
    """The targets' ratios within each round (the pooled ones above are what the targets read)."""
    pairs = [("JAX 16 / 1 expert step", jax_rows[REFERENCE_EXPERTS], jax_rows[1], False)]
    if reference is not None:
        pairs += [
            ("JAX tokens/s vs HF-16", jax_rows[REFERENCE_EXPERTS], reference, True),
            ("PyTorch tokens/s vs HF-16", torch_rows[REFERENCE_EXPERTS], reference, True),
            ("PyTorch --compile tokens/s vs HF-16", compiled, reference, True),
        ]
    lines = ["the same ratios within each round (pooled above):"]
    for name, top, bottom, inverse in pairs:
        if top.get("failed") or bottom.get("failed"):
            continue
        ratios = [
            (b / t if inverse else t / b) if t and b else None
            for t, b in zip(top["round_step_s"], bottom["round_step_s"], strict=True)
        ]
        lines.append(f"  {name}: " + ", ".join("failed" if r is None else f"{r:.2f}" for r in ratios))
    return lines


def like_for_like(
    jax_rows: dict[int | None, dict],
    torch_rows: dict[int | None, dict],
    hf_variants: dict[str, dict],
    compiled: dict[str, Any],
) -> list[str]:
    """The programs at 16 experts against the HF variants (not targets: context for them)."""
    lines = [f"the programs at {REFERENCE_EXPERTS} experts against HF variants (context, not targets):"]
    for variant, why in (
        (HF_NO_DROP, "HF computing every token, as the programs compute every capacity slot"),
        (HF_RETAIN, "HF with the programs' malloc settings"),
        (HF_SAME_INIT, "HF from the programs' initial weights, routing as they do"),
    ):
        row = hf_variants.get(variant)
        if row is None or row.get("failed"):
            lines.append(f"  {HF_LABELS[variant]}: not measured")
            continue
        ratios = []
        programs = (("JAX", jax_rows[REFERENCE_EXPERTS]), ("PyTorch", torch_rows[REFERENCE_EXPERTS]))
        for name, program in (*programs, ("PyTorch --compile", compiled)):
            if not program.get("failed"):
                ratios.append(f"{name} x{program['tokens_per_s'] / row['tokens_per_s']:.2f}")
        lines.append(f"  vs {HF_LABELS[variant]} ({why}): {', '.join(ratios) or 'not measured'}")
    return lines


def print_peaks(peak_start: dict[str, Any], peak_end: dict[str, Any]) -> tuple[float, float]:
    """Both measurements, and the mean of start and end used for MFU and the arithmetic."""
    measured = [p for p in (peak_start, peak_end) if not p.get("failed")]
    for name, p in (("start", peak_start), ("end", peak_end)):
        if p.get("failed"):
            print(f"matmul peak ({name}): failed")
            continue
        print(
            f"matmul peak ({name}): numpy {p['numpy_flops'] / 1e9:.1f}, jax {p['jax_flops'] / 1e9:.1f} GFLOP/s "
            f"(float32 {p['matmul_size']}^3, median of {p['repeats']}); "
            f"copy bandwidth {p['copy_bandwidth'] / 1e9:.1f} GB/s"
        )
    if not measured:
        raise SystemExit("the matmul peak could not be measured")
    peak = statistics.mean(p["peak_flops"] for p in measured)
    bandwidth = statistics.mean(p["copy_bandwidth"] for p in measured)
    print(f"peak used for MFU: {peak / 1e9:.1f} GFLOP/s (mean of start and end, each the faster library's median)")
    return peak, bandwidth


def main_parent(args: argparse.Namespace) -> None:
    shape = QUICK if args.quick else FULL
    steps = args.steps if args.steps is not None else (2 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else DEFAULT_WARMUP)
    rounds = args.rounds if args.rounds is not None else 1
    # --quick checks the pipeline only: XLA skips its backend optimizations to compile faster.
    xla_flags = "--xla_backend_optimization_level=0" if args.quick else ""
    load_before = os.getloadavg()
    mode = f" --quick (small sizes, XLA_FLAGS={xla_flags}: the timings mean nothing)" if args.quick else ""
    rounds_note = f", in each of {rounds} rounds (pooled: the median of every round's steps)" if rounds > 1 else ""
    print(f"bench_step{mode}: {steps} timed steps after {warmup} warm-up steps per case{rounds_note}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(f"source: {source_state()}")
    print(f"load average before: {fmt_load(load_before)}")
    busy_before = other_work_before()
    clock_start = CpuClock.now()
    print(f"config: {asdict(shape)}; {shape.tokens_per_step} tokens/step")

    print("measuring matmul peak and copy bandwidth (start)", flush=True)
    peak_start = run_worker("peak", {"quick": args.quick, "label": "start"})
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        cases = {("dense" if e is None else f"e{e}"): prepare_case(Path(tmp), shape, e) for e in (*EXPERT_COUNTS, None)}
        print_semantics(cases, shape)
        print("timing, one case at a time, each in its own process (compile, warm up, timed steps):", flush=True)
        tasks = timing_tasks(cases, shape, steps, warmup)
        by_round = []
        for number in range(rounds):
            # Every other round runs the cases in reverse, so a steady drift of the machine's speed
            # slows each case about equally once the rounds are pooled.
            sequence = list(range(len(tasks)))[:: -1 if number % 2 else 1]
            if rounds > 1:
                print(f" round {number + 1} of {rounds}", flush=True)
            done = {
                i: run_worker(tasks[i][0], tasks[i][1], xla_flags if tasks[i][0] == "jax" else "") for i in sequence
            }
            by_round.append([done[i] for i in range(len(tasks))])
        results = [pool([measured[i] for measured in by_round]) for i in range(len(tasks))]
    print("measuring matmul peak and copy bandwidth (end)", flush=True)
    peak_end = run_worker("peak", {"quick": args.quick, "label": "end"})
    load_after, clock_end = os.getloadavg(), CpuClock.now()
    busy_during, elapsed = clock_end.others_since(clock_start), clock_end.wall_s - clock_start.wall_s

    rows = []
    for (kind, config), result in zip(tasks, results, strict=True):
        case = cases["dense" if config["experts"] is None else f"e{config['experts']}"]
        rows.append(make_row(kind, config, result, case, shape))
    jax_rows = {row["experts"]: row for row in rows if row["kind"] == "jax"}
    torch_rows = {row["experts"]: row for row in rows if row["kind"] == "torch" and row["variant"] is None}
    compiled = next(row for row in rows if row["variant"] == TORCH_COMPILE)
    hf_rows = {row["experts"]: row for row in rows if row["kind"] == "hf" and row["variant"] is None}
    hf_variants = {row["variant"]: row for row in rows if row["kind"] == "hf" and row["variant"] is not None}
    reference = hf_rows[REFERENCE_EXPERTS] if not hf_rows[REFERENCE_EXPERTS].get("failed") else None

    print()
    peak, bandwidth = print_peaks(peak_start, peak_end)
    print()
    order = (None, *EXPERT_COUNTS)
    table = [rows[e] for rows in (jax_rows, torch_rows, hf_rows) for e in order]
    print_table(table + [compiled] + [hf_variants[v] for v in HF_LABELS if v in hf_variants], reference, peak)
    print(
        "GFLOP/step: switchc JAX and PyTorch = flops.executed (all capacity slots); HF = flops.model (routed tokens "
        "only). XLA GFLOP = compiled.cost_analysis()['flops']. setup s = JAX init + ahead-of-time compile, PyTorch "
        "loop.build (init, placement, optimizer), HF model build. tokens/s counts inputs + targets. dropped: tokens "
        "over capacity (switchc: the last timed step; HF: one more forward pass after it), mean over Switch layers; "
        "experts hit: experts that got a token, fewest-most over Switch layers."
    )
    optimizers = sorted({row["optimizer"] for row in torch_rows.values() if "optimizer" in row})
    if optimizers:
        print(f"PyTorch program's optimizer: {'; '.join(optimizers)}")
    updated = [(e, hf_rows[e].get("expert_params_updated")) for e in EXPERT_COUNTS]
    if any(share is not None for _, share in updated):
        shares = ", ".join(f"E={e}: {share:.0%}" for e, share in updated if share is not None)
        print(f"HF expert weights with a gradient in the last step (torch's Adam skips the others): {shares}")
    print()
    targets = print_targets(jax_rows, torch_rows, reference, peak, compiled)
    if rounds > 1:
        print("\n".join(round_ratios(jax_rows, torch_rows, reference, compiled)))
    print("\n".join(like_for_like(jax_rows, torch_rows, hf_variants, compiled)))
    if not jax_rows[64].get("failed"):
        print()
        print("\n".join(explain_many_experts(cases, jax_rows, shape, peak, bandwidth)))
    print()
    print(f"load average after: {fmt_load(load_after)}")
    print(f"other work during the run: {fmt_shares(busy_during)}")
    if busy_during is not None and busy_during["others"] > BUSY_WARNING:
        print("WARNING: other processes ran beside this benchmark: its timings are not comparable with a quiet run's")
    print(f"total wall time {elapsed:.0f} s")

    if args.json is not None:
        payload = {
            "command": " ".join(sys.argv),
            "source": source_state(),
            "quick": args.quick,
            "steps": steps,
            "warmup": warmup,
            "rounds": rounds,
            "shape": asdict(shape),
            "versions": versions(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "other_work_before": busy_before,
            "other_work_during": busy_during,
            "peak_start": peak_start,
            "peak_end": peak_end,
            "peak_flops_used": peak,
            "copy_bandwidth_used": bandwidth,
            "hf_expert_capacity": {e: hf_expert_capacity(shape, e) for e in EXPERT_COUNTS},
            "routing": {key: case["report"]["spec"].get("routing") for key, case in cases.items()},
            "rows": rows,
            "targets": targets,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


# ---------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one `RESULT {json}` line.
# ---------------------------------------------------------------------------------------------


def time_steps(run_once: Any, steps: int, warmup: int) -> tuple[float, list[float], dict[str, Any]]:
    """median_time of `steps` steps after `warmup` ones, and this process's kernel CPU time and minor
    page faults per timed step (getrusage: every thread; the warm-up steps are left out, as they
    also fault in memory that stays: optimizer state, XLA's buffers), and the faults of every
    step, warm-up ones first, which show whether the warm-up was long enough."""
    import resource

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    by_step = []

    def counted() -> None:
        before = faults()
        run_once()
        by_step.append(faults() - before)

    for _ in range(warmup):
        counted()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    median, times = median_time(counted, steps, 0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    return (
        median,
        times,
        {
            "sys_s_per_step": (after - before) / steps,
            "page_faults_per_step": sum(by_step[warmup:]) / steps,
            "page_faults_by_step": by_step,
        },
    )


def median_time(run_once: Any, steps: int, warmup: int) -> tuple[float, list[float]]:
    """Median wall time of `steps` calls after `warmup` untimed ones; run_once must block until done."""
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def random_batch(shape: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Token ids in [1, vocab): no padding (0), so every position counts in both implementations."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab, batch = shape["vocab_size"], shape["batch_size"]
    return {
        "inputs": rng.integers(1, vocab, (batch, shape["inputs_length"]), dtype=np.int32),
        "targets": rng.integers(1, vocab, (batch, shape["targets_length"]), dtype=np.int32),
    }


def worker_peak(config: dict[str, Any]) -> dict[str, Any]:
    """float32 matmul FLOP/s (numpy's BLAS and XLA's dot) and copy bandwidth: medians of several reps."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    size, repeats, mebibytes = (1024, 3, 64) if config["quick"] else (2048, 7, 256)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    numpy_s, _ = median_time(lambda: a @ b, repeats, warmup=1)

    matmul = jax.jit(jnp.dot)
    ja, jb = jax.device_put(a), jax.device_put(b)
    jax_s, _ = median_time(lambda: matmul(ja, jb).block_until_ready(), repeats, warmup=1)

    src = np.ones(mebibytes * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    copy_s, _ = median_time(lambda: np.copyto(dst, src), repeats, warmup=1)

    flops = 2 * size**3
    numpy_flops, jax_flops = flops / numpy_s, flops / jax_s
    return {
        "matmul_size": size,
        "repeats": repeats,
        "numpy_flops": numpy_flops,
        "jax_flops": jax_flops,
        "peak_flops": max(numpy_flops, jax_flops),
        "copy_bandwidth": 2 * src.nbytes / copy_s,  # every byte read once and written once
    }


class JaxProgramStep:
    """A generated JAX program's jitted train step (runtime/loop.py build()) on one CPU device,
    compiled ahead of time for a random batch; each call runs one step and blocks until it is done.

    runtime/host.py is applied first, as the program's parse_args does (unless `system_malloc`,
    the program's --system-malloc), before XLA starts its threads.
    """

    def __init__(self, program: str, system_malloc: bool = False) -> None:
        sys.path.insert(0, program)
        from runtime import host  # type: ignore[import-not-found]  # the generated program's runtime package

        self.retained = not system_malloc and host.retain_freed_memory()
        import jax
        import model  # type: ignore[import-not-found]  # the generated program's model.py
        from runtime import loop  # type: ignore[import-not-found]

        setup_start = time.perf_counter()
        state = loop.build(model, seed=0)
        self.params, self.opt_state = state["params"], state["opt_state"]
        cfg = model.CONFIG
        shape = {name: getattr(cfg, name) for name in ("vocab_size", "batch_size", "inputs_length", "targets_length")}
        self.batch = {k: jax.device_put(v, state["batch_sharding"][k]) for k, v in random_batch(shape).items()}
        self.rng = jax.random.key(1)
        self.compiled = state["step"].lower(self.params, self.opt_state, self.batch, self.rng).compile()
        self.setup_s = time.perf_counter() - setup_start
        self.metrics: dict[str, Any] = {}
        self.steps_run = 0

    def __call__(self) -> None:
        import jax

        rng = jax.random.fold_in(self.rng, self.steps_run)
        self.params, self.opt_state, self.metrics, _ = self.compiled(self.params, self.opt_state, self.batch, rng)
        jax.block_until_ready((self.params, self.opt_state, self.metrics))
        self.steps_run += 1


def worker_jax(config: dict[str, Any]) -> dict[str, Any]:
    """The generated program's jitted train step (runtime/loop.py build()) on one CPU device."""
    step = JaxProgramStep(config["program"], bool(config.get("system_malloc")))  # first: host.py before XLA
    import jax

    cost = step.compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0]
    step_s, times, costs = time_steps(step, config["steps"], config["warmup"])
    return {
        "step_s": step_s,
        **costs,
        "times_s": times,
        "setup_s": step.setup_s,
        "xla_flops": float(cost.get("flops", 0.0)),
        "retain_freed_memory": step.retained,
        "loss": float(step.metrics["loss"]),
        "devices": len(jax.devices()),
        **program_routing(step.metrics),
    }


def worker_torch(config: dict[str, Any]) -> dict[str, Any]:
    """The generated PyTorch program's train step on one CPU process: runtime/loop.py's build() and
    train_step(), as its training loop calls them (the loop's batch and noise, seed 0)."""
    sys.path.insert(0, config["program"])
    from runtime import host  # the generated program's runtime package

    # as the program's parse_args does (unless --system-malloc), before torch starts its threads
    retained = not config.get("system_malloc") and host.retain_freed_memory()
    import model  # the generated program's model.py
    import torch
    from runtime import loop, parallel
    from runtime.layers import Noise  # type: ignore[import-not-found]
    from runtime.optim import schedule  # type: ignore[import-not-found]

    torch.set_num_threads(os.cpu_count() or 1)
    cfg = model.CONFIG
    setup_start = time.perf_counter()
    # The one-process path of the program's run(): no process group, a mesh of size 1.
    mesh, device = parallel.init_distributed(model.MESH_AXES, 120.0, "cpu")
    compiled = config.get("variant") == TORCH_COMPILE
    placed, opt = loop.build(model, 0, mesh, device, compile=compiled)
    learning_rate = schedule(cfg.schedule, cfg.learning_rate, cfg.warmup_steps, cfg.steps)
    setup_s = time.perf_counter() - setup_start
    shape = {name: getattr(cfg, name) for name in ("vocab_size", "batch_size", "inputs_length", "targets_length")}
    # As the loop's _local_batch makes it: int64 ids and the target count each shard's loss divides by.
    batch = {name: torch.from_numpy(value).long().to(device) for name, value in random_batch(shape).items()}
    batch["target_count"] = placed.mean_over_batch((batch["targets"] > 0).sum().float())
    rows = placed.batch_rows(cfg.batch_size)
    placed.module.train()
    index = 0
    last: dict[str, Any] = {}

    def step() -> None:
        nonlocal index
        # The loop's noise for step `index` with --seed 0 (router jitter; dropout is 0 here).
        noise = Noise(1, index, rows=rows, global_batch=cfg.batch_size, shard=placed.batch_shard)
        loss, metrics, _ = loop.train_step(
            placed, opt, batch, noise, learning_rate(index), cfg.clip_grad_norm, index + 1
        )
        last.update(metrics, loss=loss)
        index += 1

    step_s, times, costs = time_steps(step, config["steps"], config["warmup"])
    optimizer = f"{type(opt).__module__}.{type(opt).__name__}"
    options = {key: opt.defaults[key] for key in ("foreach", "fused") if key in opt.defaults}
    if options:
        optimizer += "(" + ", ".join(f"{key}={value}" for key, value in options.items()) + ")"
    return {
        "step_s": step_s,
        **costs,
        "times_s": times,
        "setup_s": setup_s,
        "loss": float(last["loss"]),
        "threads": torch.get_num_threads(),
        "optimizer": optimizer,
        "compile": compiled,
        "retain_freed_memory": retained,
        "params": sum(p.numel() for p in placed.model.parameters()),
        **program_routing(last),
    }


def program_routing(metrics: dict[str, Any]) -> dict[str, Any]:
    """A generated program's last step (JAX arrays or torch tensors, the same keys): the share of
    tokens over capacity, and the experts that got a token, per layer."""
    import numpy as np

    if "dropped_fraction" not in metrics:
        return {}
    counts = [np.asarray(value) for name, value in sorted(metrics.items()) if name.startswith("tokens_per_expert/")]
    return {
        "dropped_fraction": float(metrics["dropped_fraction"]),
        "experts_used": [int((count > 0).sum()) for count in counts],
    }


def hf_model(shape: dict[str, Any], experts: int | None, expert_capacity: int | None, **router: Any) -> Any:
    """HF's Switch Transformer with the benchmark's sizes; T5 (v1.1-style, ReLU) when experts is None.
    `router`: more SwitchTransformersConfig settings (its router_* keys; default: HF's)."""
    from transformers import (
        SwitchTransformersConfig,
        SwitchTransformersForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
    )

    common = {
        "vocab_size": shape["vocab_size"],
        "d_model": shape["d_model"],
        "d_kv": shape["d_kv"],
        "d_ff": shape["d_ff"],
        "num_layers": shape["encoder_layers"],
        "num_decoder_layers": shape["decoder_layers"],
        "num_heads": shape["num_heads"],
        "dropout_rate": 0.0,
        "tie_word_embeddings": False,  # switchc's default (T5 v1.1): a separate output projection
        "decoder_start_token_id": 0,
    }
    if experts is None:
        return T5ForConditionalGeneration(T5Config(**common, feed_forward_proj="relu"))
    assert expert_capacity is not None, "a Switch model needs its expert capacity"
    config = SwitchTransformersConfig(
        **common,
        num_experts=experts,
        expert_capacity=expert_capacity,
        # HF places a sparse block at i % (layers // sparse_layers) == 1: blocks 1 and 3 of 4, as expert_every 2.
        num_sparse_encoder_layers=shape["encoder_layers"] // shape["expert_every"],
        num_sparse_decoder_layers=shape["decoder_layers"] // shape["expert_every"],
        dense_act_fn="relu",
        **router,
    )
    return SwitchTransformersForConditionalGeneration(config)


def worker_hf(config: dict[str, Any]) -> dict[str, Any]:
    """HF in torch eager: zero_grad, forward (loss incl. router losses), backward, Adam step."""
    import torch

    retained = False
    if config.get("retain_from"):  # a generated program's runtime/host.py, as that program applies it
        sys.path.insert(0, config["retain_from"])
        from runtime import host  # type: ignore[import-not-found]

        retained = host.retain_freed_memory()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    shape, experts = config["shape"], config["experts"]
    setup_start = time.perf_counter()
    model = hf_model(shape, experts, config.get("expert_capacity"))
    if config.get("init_from"):  # a generated program's --export-init file
        from hf_weights import hf_state_dict
        from safetensors.numpy import load_file

        model.load_state_dict(hf_state_dict(load_file(config["init_from"])), strict=True)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    setup_s = time.perf_counter() - setup_start
    batch = {name: torch.from_numpy(value).long() for name, value in random_batch(shape).items()}
    extra = {"output_router_logits": True} if experts is not None else {}
    losses: list[float] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=batch["inputs"], labels=batch["targets"], **extra)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))

    step_s, times, costs = time_steps(step, config["steps"], config["warmup"])
    sparse = [
        i for i, block in enumerate(model.encoder.block) if getattr(block.layer[-1], "is_sparse", False)
    ]  # which encoder blocks hold experts
    # Expert weights that got a gradient in the last step: an expert no token reached has none,
    # and torch's Adam skips a parameter without a gradient.
    expert_weights = [p for name, p in model.named_parameters() if ".experts." in name]
    updated = sum(p.numel() for p in expert_weights if p.grad is not None)
    routing = hf_routing(model, batch) if experts is not None else {}
    return {
        "step_s": step_s,
        **costs,
        "times_s": times,
        "setup_s": setup_s,
        "loss": losses[-1],
        "threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation,
        "sparse_encoder_blocks": sparse,
        "params": sum(p.numel() for p in model.parameters()),
        "expert_params_updated": updated / max(sum(p.numel() for p in expert_weights), 1),
        "retain_freed_memory": retained,
        **routing,
    }


def hf_routing(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """One more forward pass after the timed steps, with hooks on the routers: the share of tokens
    over capacity (HF's router zeroes their one-hot row) and the experts that got a token, per layer."""
    import torch
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router

    routed, used = [], []

    def record(module: Any, inputs: Any, output: Any) -> None:
        expert_index = output[0]  # [batch, length, experts] one-hot, all zero where the token was dropped
        counts = expert_index.sum(dim=(0, 1))
        routed.append(float(counts.sum()) / (expert_index.shape[0] * expert_index.shape[1]))
        used.append(int((counts > 0).sum()))

    routers = [m for m in model.modules() if isinstance(m, SwitchTransformersTop1Router)]
    hooks = [router.register_forward_hook(record) for router in routers]
    with torch.no_grad():
        model(input_ids=batch["inputs"], labels=batch["targets"])
    for hook in hooks:
        hook.remove()
    return {"dropped_fraction": 1.0 - statistics.mean(routed), "experts_used": used}


WORKERS = {"peak": worker_peak, "jax": worker_jax, "torch": worker_torch, "hf": worker_hf}


def main_host_memory(args: argparse.Namespace) -> None:
    """--host-memory: the 16-expert programs' step with runtime/host.py's malloc settings and without
    (as with --system-malloc), alternating, so each pair sees one machine speed."""
    shape = QUICK if args.quick else FULL
    steps = args.steps if args.steps is not None else (2 if args.quick else 6)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else DEFAULT_WARMUP)
    print(f"bench_step --host-memory: {steps} timed steps after {warmup} warm-up steps, {args.rounds} round(s)")
    print(f"source: {source_state()}; load average before: {fmt_load(os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_step_") as tmp:
        case = prepare_case(Path(tmp), shape, REFERENCE_EXPERTS)
        for _ in range(args.rounds):
            for kind, program in (("jax", case["program"]), ("torch", case["torch_program"])):
                for system in (False, True):
                    config = {
                        "experts": REFERENCE_EXPERTS,
                        "label": str(REFERENCE_EXPERTS),
                        "variant": "system-malloc" if system else "host.py",
                        "steps": steps,
                        "warmup": warmup,
                        "program": str(program),
                        "system_malloc": system,
                    }
                    rows.append((kind, config["variant"], run_worker(kind, config)))
    print()
    header = f"{'program':<8} {'malloc':<14} {'step ms':>9} {'sys ms/step':>12} {'page faults/step':>17}"
    print(header)
    print("-" * len(header))
    for kind, variant, result in rows:
        if result.get("failed"):
            print(f"{kind:<8} {variant:<14}  failed (exit {result['exit']})")
            continue
        print(
            f"{kind:<8} {variant:<14} {result['step_s'] * 1e3:9.1f} {result['sys_s_per_step'] * 1e3:12.1f} "
            f"{result['page_faults_per_step']:17,.0f}"
        )
    print(
        "step ms: median of the timed steps; sys ms and page faults: the process's kernel CPU time and minor "
        "faults over the timed steps, per step. host.py: runtime/host.py's retain_freed_memory(), as "
        "the programs call it; system-malloc: glibc's defaults (the programs' --system-malloc)."
    )
    print(f"load average after: {fmt_load(os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 10; --quick 2)")
    parser.add_argument(
        "--warmup", type=int, default=None, help=f"untimed steps after compiling (default {DEFAULT_WARMUP}; --quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: smoke-test the pipeline in a few minutes")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every number here")
    parser.add_argument(
        "--host-memory",
        action="store_true",
        help="only the 16-expert programs, with and without runtime/host.py's malloc settings, alternating",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="run every case this many times, alternating its order, and pool the steps (default: 1; --host-memory: 2)",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        result = WORKERS[args.worker](json.loads(args.worker_config))
        print("RESULT " + json.dumps(result), flush=True)
        return
    for name in ("steps", "warmup"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "steps" else 0):
            parser.error(f"--{name} is too small")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.host_memory:
        args.rounds = 2 if args.rounds is None else args.rounds
        main_host_memory(args)
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
