"""`switchc verify --backend jax`: hold the cost report against XLA's own compiled program.

The generated program compiles its train step (value_and_grad with every layer written out, so
XLA's counts are whole) on the spec's mesh with fake CPU devices and dumps the optimized HLO and
XLA's cost analysis (`train.py --dump-hlo`). This module compares:

- FLOPs: the report's executed FLOPs per device (matmuls only, by its convention) with the
  matmuls of XLA's optimized module (every `dot`, fusions included), less, under train.remat =
  full, the cross-attention key and value projections that XLA keeps rather than recomputes
  (`kept_cross_attention_flops`); and, with the optimizer
  update's elementwise FLOPs added (UPDATE_FLOPS_PER_PARAMETER per parameter element on the
  device) and the dropout masks' random bits (dropout_elements x dropout_flops_per_element,
  measured from the runtime's own dropout), with `compiled.cost_analysis()["flops"]`, which
  counts every elementwise op (norms, softmax, activations too): a few percent more, so that row
  gets a looser tolerance. The elements of XLA's converts are taken off its count: they do no
  arithmetic, and a bfloat16 program on XLA:CPU has a convert around almost every op (float
  normalization, below).
- Collectives, per kind and the mesh axes their replica groups span (data and model all-reduces of
  a data x model mesh are separate rows, though both groups have two devices): the all-to-all
  count exactly and bytes within the tolerance; all-reduce, all-gather and reduce-scatter by total
  bytes, since XLA combines many small gradient all-reduces into a few large ones. Reductions of
  at most SMALL_BYTES per call (the step's scalars) are listed but compared on neither side (the
  report's entries of that size are left out too); every all-to-all is compared.

XLA:CPU has no bfloat16 collectives: its all-reduce-promotion pass, and float normalization after
it, widen them to float32, so a bfloat16 program's optimized module here moves twice the bytes it
would on a GPU or TPU. The collectives are therefore read from XLA's dump of the module just before
that pass (`--xla_dump_hlo_pass_re`): partitioned, its collectives as the partitioner and the
passes before (combiners aside) left them, each in the element type the program sends. A row sent
in bfloat16 notes what the optimized module moves where the two differ. Without that dump (another XLA),
the optimized module is used.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.verify import (
    BYTES_TOLERANCE,
    FLOPS_TOLERANCE,
    TIMEOUT,
    TOTAL_FLOPS_TOLERANCE,
    Comparison,
    MeasurementFailed,
    collective_comparisons,
    collective_label,
    compared,
    measured_rows,
    write_program,
)
from .hlo import HloCollective, collectives, convert_elements, dot_flops


@dataclass(frozen=True)
class Verification:
    spec_name: str
    devices: int
    comparisons: tuple[Comparison, ...]
    xla_collectives: tuple[HloCollective, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)


# The XLA:CPU pass that widens bfloat16 collectives to float32, and the name of its dump of the
# train step's module just before it runs.
WIDENING_PASS = "all-reduce-promotion"
_BEFORE_WIDENING = f"*.jit_train_step.*.before_{WIDENING_PASS}.txt"
SENT_NAME = f"train_step.before_{WIDENING_PASS}.hlo.txt"  # where verify --keep keeps it, beside the optimized one


@dataclass(frozen=True)
class Dump:
    optimized: str  # the optimized HLO text: what runs
    cost: dict[str, float]  # XLA's cost analysis of it
    sent: str | None  # the module before WIDENING_PASS (None: not dumped)


def dump(program: Path, devices: int, out: Path, timeout: float = TIMEOUT["jax"]) -> Dump:
    """Run the program's --dump-hlo on `devices` fake CPU devices. XLA dumps the train step's
    module before WIDENING_PASS (with a thousand object files) into a scratch directory, whose
    path XLA_FLAGS can hold (no whitespace); that module is kept as out/SENT_NAME."""
    out = out.absolute()  # the program runs in its own directory
    command = [sys.executable, "train.py", "--devices", str(devices), "--dump-hlo", str(out)]
    what = f"the generated program's `train.py --devices {devices} --dump-hlo`"  # in a scratch directory
    with tempfile.TemporaryDirectory(prefix="switchc-xla-dump-") as passes:
        xla_flags = os.environ.get("XLA_FLAGS", "").split()
        if not any(character.isspace() for character in passes):
            xla_flags += [
                f"--xla_dump_to={passes}",
                "--xla_dump_hlo_module_re=^jit_train_step$",
                f"--xla_dump_hlo_pass_re=^{WIDENING_PASS}$",
                "--xla_dump_hlo_as_text",
            ]
        # A step loaded from the user's persistent compilation cache (JAX_COMPILATION_CACHE_DIR) is
        # not compiled, so XLA would dump no module: verify compiles it afresh.
        env = {**os.environ, "XLA_FLAGS": " ".join(xla_flags), "JAX_ENABLE_COMPILATION_CACHE": "false"}
        try:  # stdout and stderr as one text: a failure shows its last lines in the order they came
            result = subprocess.run(
                command,
                cwd=program,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:
            output = expired.output.decode(errors="replace") if isinstance(expired.output, bytes) else expired.output
            raise MeasurementFailed(f"{what} did not finish within {timeout:g}s", output or "", timeout) from None
        if result.returncode != 0:
            raise MeasurementFailed(f"{what} failed with exit status {result.returncode}", result.stdout)
        before = sorted(Path(passes).glob(_BEFORE_WIDENING))
        sent = before[-1].read_text() if before else None
    if sent is not None:
        (out / SENT_NAME).write_text(sent, encoding="utf-8")
    cost = json.loads((out / "cost_analysis.json").read_text())
    return Dump((out / "train_step.hlo.txt").read_text(), cost, sent)


# What XLA's cost analysis counts per parameter element of the optimizer update (measured with
# optax 0.2.8: adamw 15, adafactor 17 unfactored and 19 factored) and of the loop's global gradient
# norm (2): elementwise work that the report does not count as FLOPs. It is most of what
# cost_analysis adds on a small model or batch, where the update touches many parameters per token.
UPDATE_FLOPS_PER_PARAMETER = {"adam": 15 + 2, "adafactor": 17 + 2}
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


def update_flops(report: Mapping[str, Any]) -> float:
    """The optimizer update's elementwise FLOPs on one device, as XLA's cost analysis counts them."""
    elements = report["memory"]["params_bytes"] / _DTYPE_BYTES[report["spec"]["dtype"]]
    return elements * UPDATE_FLOPS_PER_PARAMETER[report["memory"]["optimizer"]]


# The loop dims of each op with dropout that its mask does not span (the mask is the shape of
# what it drops: the residual stream, the attention weights, an FFN's or an expert's hidden units).
_NOT_MASKED = {"Dropout": (), "Attention": ("embed", "kv"), "DenseFFN": ("embed",), "ExpertFFN": ("embed",)}


def dropout_elements(spec: Any) -> tuple[int, int]:
    """The elements per device per train step that the program draws a dropout mask for (its
    random bits: jax.random.bernoulli), for residual, attention-weight, FFN and expert dropout; and,
    under train.remat = full, those of them in blocks whose masks the backward draws again."""
    from switchc.analysis.common import local_sizes
    from switchc.analysis.memory import recomputation
    from switchc.ir.graph import all_ops, info, layout_of
    from switchc.passes import lower

    graph = lower(spec)
    mesh = info(graph).mesh
    again = recomputation(graph) if spec.train.remat == "full" else {}
    drawn = again_drawn = 0
    for op in all_ops(graph):
        rate = getattr(op, "rate", None) if op.kind == "Dropout" else getattr(op, "dropout_rate", 0.0)
        if op.kind not in _NOT_MASKED or not rate:
            continue
        n = local_sizes(op, layout_of(graph, op.name), mesh)
        elements = 1
        for dim in op.loop():
            if dim.name not in _NOT_MASKED[op.kind]:
                elements *= n(dim.name)
        drawn += elements
        again_drawn += elements if again.get(op.name, "none") != "none" else 0
    return drawn, again_drawn


_RNG_ELEMENTS = 1 << 16


@functools.cache
def dropout_flops_per_element() -> tuple[float, float]:
    """What XLA's cost analysis counts per element of the runtime's own dropout (runtime/moe.py
    `dropout`: threefry's random bits, the Bernoulli draw and the scaling), measured on this
    machine over _RNG_ELEMENTS float32 elements, less converts: (forward and backward, as the train
    step runs it; the forward alone, as a remat block's recompute runs it again). 60 and 51 with
    jax 0.10. The report counts none of it: it is elementwise work."""
    import jax
    import jax.numpy as jnp

    from .runtime.moe import dropout

    def forward(x: Any, cotangent: Any, key: Any) -> Any:
        return dropout(x, 0.1, key)

    def forward_and_backward(x: Any, cotangent: Any, key: Any) -> Any:
        y, pull = jax.vjp(lambda x: dropout(x, 0.1, key), x)
        return y, pull(cotangent)

    def per_element(step: Any) -> float:
        ones = jnp.ones((_RNG_ELEMENTS,), jnp.float32)
        compiled: Any = jax.jit(step).lower(ones, ones, jax.random.key(0)).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return (float(cost["flops"]) - convert_elements(compiled.as_text())) / _RNG_ELEMENTS

    return per_element(forward_and_backward), per_element(forward)


def kept_cross_attention_flops(spec: Any) -> int:
    """train.remat = full: the forward FLOPs per device of every cross-attention's key and value
    projections of the encoder output, which the report counts as recomputed (as the PyTorch
    program recomputes them) and XLA keeps from the forward pass instead (docs/verify.md)."""
    if spec.train.remat != "full":
        return 0
    from switchc.analysis.common import local_sizes
    from switchc.analysis.memory import recomputation
    from switchc.ir import ops
    from switchc.ir.graph import all_ops, info, layout_of
    from switchc.passes import lower

    graph = lower(spec)
    again, mesh = recomputation(graph), info(graph).mesh
    kept = 0
    for op in all_ops(graph):
        if isinstance(op, ops.Attention) and op.cross and again.get(op.name) == "all":
            n = local_sizes(op, layout_of(graph, op.name), mesh)
            kept += 2 * 2 * n("batch") * n("kv_length") * n("embed") * n("heads") * n("kv")  # k and v
    return kept


def _widened_notes(
    sent: list[HloCollective], optimized: list[HloCollective], mesh: Mapping[str, int]
) -> dict[str, str]:
    """Per row (collective_label) whose collectives the program sends in bfloat16, where XLA:CPU's
    optimized module moves more bytes than the program sends: it widens them to float32. A row
    sent in float32 gets no note: its optimized module may move a little more (the combiner packs
    the step's scalars, not compared, into a large all-reduce), but nothing is widened."""
    sends, moves = measured_rows(_measured(sent), mesh), measured_rows(_measured(optimized), mesh)
    narrow = {
        collective_label(c.kind, c.group, mesh)
        for c in sent
        if "bf16" in c.dtypes and c.group is not None and compared(c.kind, c.bytes_per_device)
    }
    return {
        row: f"; XLA:CPU widens bfloat16 to float32 and moves {moved:,}"
        for row, (_, moved) in moves.items()
        if row in narrow and moved > 1.02 * sends.get(row, (0, 0))[1]
    }


def _measured(found: list[HloCollective]) -> list[tuple[str, tuple[int, ...] | None, int]]:
    """(kind, group, bytes per device) of each collective, as collective_comparisons takes them."""
    return [(c.kind, c.group, c.bytes_per_device) for c in found]


def compare(
    report: Mapping[str, Any],
    hlo: str,
    cost: Mapping[str, float],
    *,
    flops_tolerance: float,
    total_flops_tolerance: float,
    bytes_tolerance: float,
    kept: int = 0,
    sent: str | None = None,
    dropout: tuple[tuple[int, int], tuple[float, float]] = ((0, 0), (0.0, 0.0)),
) -> tuple[list[Comparison], list[HloCollective]]:
    """`kept`: FLOPs XLA does not recompute under remat that the report does (kept_cross_attention_flops);
    `sent`: the module before WIDENING_PASS, whose collectives are compared (else those of `hlo`);
    `dropout`: the elements the step draws dropout masks for, and draws again under remat
    (dropout_elements), and XLA's FLOPs per element of each (dropout_flops_per_element), added to
    the report's side of the all-FLOPs row."""
    found = collectives(hlo) if sent is None else collectives(sent)
    notes = {} if sent is None else _widened_notes(found, collectives(hlo), report["spec"]["mesh"])
    executed = float(report["flops"]["executed"]["train_step_per_device"]) - kept
    per_parameter = UPDATE_FLOPS_PER_PARAMETER[report["memory"]["optimizer"]]
    converts = convert_elements(hlo)
    dots = "every dot" + (f"; report less the {kept:,} of cross-attention keys and values XLA keeps" if kept else "")
    (masked, again), (per_element, per_again) = dropout
    rng = round(masked * per_element + again * per_again)
    redrawn = f" + {again:,} drawn again x {per_again:.0f}" if again else ""
    drawn = f" + dropout masks ({masked:,} elements x {per_element:.0f}{redrawn}: {rng:,})" if masked else ""
    results = [
        Comparison("matmul FLOPs per device (train step)", executed, dot_flops(hlo), flops_tolerance, dots),
        Comparison(
            "all FLOPs per device (cost_analysis)",
            executed + update_flops(report) + rng,
            float(cost["flops"]) - converts,
            total_flops_tolerance,
            f"report: + optimizer update ({per_parameter}/parameter){drawn}; XLA adds other elementwise work"
            f" (less its {converts:,} converts)",
        ),
    ]
    results += collective_comparisons(
        report, _measured(found), bytes_tolerance=bytes_tolerance, source="XLA's HLO", notes=notes
    )
    return results, found


def verify(
    spec: Any,
    report: Mapping[str, Any],
    *,
    flops_tolerance: float = FLOPS_TOLERANCE["jax"],
    total_flops_tolerance: float = TOTAL_FLOPS_TOLERANCE,
    bytes_tolerance: float = BYTES_TOLERANCE,
    keep: Path | None = None,
    timeout: float = TIMEOUT["jax"],
    files: Mapping[str, str] | None = None,
) -> Verification:
    """Generate the spec's program (`files`: its files, when the caller has them already), dump its
    compiled step, and compare it with `report`."""
    from .program import generate

    devices = spec.mesh.num_devices
    with tempfile.TemporaryDirectory(prefix="switchc-verify-") as scratch:
        work = keep or Path(scratch)
        program = write_program(files if files is not None else generate(spec), work / "program")
        dumped = dump(program, devices, work / "hlo", timeout)
    comparisons, found = compare(
        report,
        dumped.optimized,
        dumped.cost,
        flops_tolerance=flops_tolerance,
        total_flops_tolerance=total_flops_tolerance,
        bytes_tolerance=bytes_tolerance,
        kept=kept_cross_attention_flops(spec),
        sent=dumped.sent,
        dropout=(masked, dropout_flops_per_element())
        if (masked := dropout_elements(spec))[0]
        else ((0, 0), (0.0, 0.0)),
    )
    return Verification(spec.name, devices, tuple(comparisons), tuple(found))
