"""What `switchc verify` does the same for every backend: write the spec's program to a scratch
directory, and hold the report's FLOPs and collectives against what the framework ran.

Each backend's verify.py measures its own way (JAX: XLA's optimized HLO and cost analysis; PyTorch:
FlopCounterMode and recorded torch.distributed calls) and compares through `Comparison` and
`collective_comparisons`. This module runs inside switchc; it is not copied into programs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The step's scalars (the loss divisor, gradient-norm partial sums, metrics), which the report lists
# in part or not at all: a reduction of at most this many bytes per call is compared on neither side.
SMALL_BYTES = 4096

# The defaults of switchc verify's options, which are also those of each backend's verify().
TIMEOUT = {"jax": 900.0, "torch": 300.0}  # seconds: XLA compiles the unrolled step; torch runs one step
FLOPS_TOLERANCE = {"jax": 0.05, "torch": 0.01}  # relative, matmul FLOPs (torch counts the same ops)
TOTAL_FLOPS_TOLERANCE = 0.10  # relative, against XLA's cost_analysis, which adds elementwise work (jax only)
BYTES_TOLERANCE = 0.02  # relative, each collective's bytes per device


class MeasurementFailed(Exception):
    """The program's step could not be measured: it failed (`output`: the end of what it printed)
    or ran past `timeout`. switchc verify says so in a few lines and exits 3."""

    def __init__(self, message: str, output: str = "", timeout: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.output = output
        self.timeout = timeout


@dataclass(frozen=True)
class Comparison:
    what: str  # "matmul FLOPs per device (train step)", "all-to-all over expert (2 devices): count", ...
    report: float
    measured: float  # what the framework ran: XLA's compiled step, or the PyTorch program's step
    tolerance: float  # relative; 0 means exact
    note: str = ""

    @property
    def relative_error(self) -> float:
        """|measured - report| / |report|; infinite where the report has none of what was measured."""
        if self.report == self.measured:
            return 0.0
        if self.report == 0:
            return math.inf
        return abs(self.measured - self.report) / abs(self.report)

    @property
    def ok(self) -> bool:
        return self.relative_error <= self.tolerance


def write_program(files: Mapping[str, str], directory: Path) -> Path:
    """The generated files under `directory`; returns it."""
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


def _by_key(items: Iterable[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    """(row, count, bytes each) -> per row: (count, total bytes)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, count, size in items:
        totals[row][0] += count
        totals[row][1] += count * size
    return {row: (count, size) for row, (count, size) in totals.items()}


def _over(axes: Sequence[str], devices: int, mesh: Mapping[str, int]) -> str:
    """How a row names the devices of a collective: "data (2 devices)", "data x expert (4 devices)",
    and "expert (2 of 4 devices)" for a group that spans part of its axes."""
    ordered = sorted(axes, key=list(mesh).index)
    full = 1
    for axis in ordered:
        full *= int(mesh[axis])
    count = f"{devices} devices" if devices == full else f"{devices} of {full} devices"
    return f"{' x '.join(ordered)} ({count})"


def group_axes(group: Sequence[int], mesh: Mapping[str, int]) -> tuple[str, ...]:
    """The mesh axes along which the devices of one group differ; devices are numbered in mesh
    order (row-major over the axes, as the programs lay out their meshes)."""
    shape = tuple(int(size) for size in mesh.values())
    coordinates = [index.tolist() for index in np.unravel_index(np.asarray(group, dtype=np.int64), shape)]
    return tuple(axis for axis, values in zip(mesh, coordinates, strict=True) if len(set(values)) > 1)


def collective_label(kind: str, group: Sequence[int], mesh: Mapping[str, int]) -> str:
    """The row a collective of `group` (device numbers) belongs to: "all-reduce over data (2 devices)"."""
    return f"{kind} over {_over(group_axes(group, mesh), len(group), mesh)}"


def compared(kind: str, size: int) -> bool:
    """Whether a collective of `size` bytes per device per call is held against the report: every
    all-to-all (each is an expert dispatch or combine, which the report lists one by one and whose
    count is compared exactly, however small the model), and a reduction or gather of more than
    SMALL_BYTES. The same test on both sides: the report's entries and the measured calls."""
    return kind == "all-to-all" or size > SMALL_BYTES


def measured_rows(
    measured: Iterable[tuple[str, Sequence[int] | None, int]], mesh: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """Row (collective_label) -> (count, total bytes per device) of the measured collectives that are
    compared: a readable group of two or more devices, and `compared`."""
    return _by_key(
        (collective_label(kind, group, mesh), 1, size)
        for kind, group, size in measured
        if group is not None and len(group) > 1 and compared(kind, size)
    )


def report_rows(report: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Row -> (count, total bytes per device) of the report's collectives that are compared: a group
    of two or more devices, and `compared` (as measured_rows)."""
    mesh = report["spec"]["mesh"]
    return _by_key(
        (
            f"{c['kind']} over {_over(c['mesh_axes'], int(c['group_size']), mesh)}",
            int(c["count"]),
            int(c["bytes_per_device"]),
        )
        for c in report["comm"]["collectives"]
        if int(c["group_size"]) > 1 and compared(c["kind"], int(c["bytes_per_device"]))
    )


def collective_comparisons(
    report: Mapping[str, Any],
    measured: Sequence[tuple[str, Sequence[int] | None, int]],
    *,
    bytes_tolerance: float,
    source: str,
    notes: Mapping[str, str] | None = None,
) -> list[Comparison]:
    """The report's collectives against the measured ones, per kind and the mesh axes they span.

    measured: (kind, the device numbers of the call's group, bytes per device) of every collective
    call; singleton groups (which move nothing) are left out, and so are, on both sides, the
    reductions of at most SMALL_BYTES per call (`compared`: the step's scalars; never an
    all-to-all); the calls whose group the measurement could not read (None) make a failing row
    of their own.
    The all-to-all count is exact; every kind's total bytes per device are compared within
    `bytes_tolerance`, since frameworks merge or bucket reductions. `source` names the measurement
    in the notes; `notes` adds a remark per kind ("all-reduce") or per row (collective_label).
    """
    predicted = report_rows(report)
    found = measured_rows(measured, report["spec"]["mesh"])
    unread = [size for kind, group, size in measured if group is None and compared(kind, size)]
    results = []
    remarks = notes or {}
    for label in sorted(set(predicted) | set(found)):
        kind = label.split(" over ")[0]
        want_count, want_bytes = predicted.get(label, (0, 0))
        got_count, got_bytes = found.get(label, (0, 0))
        if kind == "all-to-all":
            results.append(Comparison(f"{label}: count", want_count, got_count, 0.0))
        note = f"{want_count} in the report, {got_count} in {source}" + remarks.get(kind, "") + remarks.get(label, "")
        results.append(Comparison(f"{label}: bytes per device", want_bytes, got_bytes, bytes_tolerance, note))
    if unread:  # a spelling of its devices that verify does not read: a failing row, not a silent gap
        note = f"{len(unread)} in {source} whose devices verify could not read (keep them with --keep DIR)"
        results.append(Comparison("collectives over unread devices: bytes per device", 0, sum(unread), 0.0, note))
    return results
