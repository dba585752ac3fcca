"""Step time: compute at a stated efficiency, plus the communication that is not hidden.

    compute   = executed FLOPs per device / (peak FLOP/s of the model dtype * efficiency)
    exposed   = forward + backward + recompute collectives   (activations wait for them)
              + max(0, gradient all-reduces - backward compute)   (they overlap the backward pass)
    step      = compute + exposed

Efficiency (`--mfu`, default 0.5) stands for everything between peak and achieved matmul rate:
kernel efficiency, elementwise ops and memory-bound work, which the FLOP count leaves out. It
applies to the executed FLOPs (capacity padding, the router, remat's recompute included), so it
is a hardware FLOPs utilization; the model FLOPs utilization that follows from the step time
(model FLOPs / step / peak, the usual MFU) is reported beside it and is lower.
Activation collectives are on the critical path (a layer cannot start before its all-to-all
lands); gradient reductions can start as soon as each layer's gradients exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchc.analysis.comm import CommReport
from switchc.analysis.flops import FlopsReport
from switchc.analysis.hardware import Hardware

DEFAULT_MFU = 0.5

OVERLAP_ASSUMPTION = (
    "forward, backward and recompute collectives are exposed; gradient all-reduces overlap the "
    "backward pass and only what exceeds the backward compute time is exposed"
)


@dataclass(frozen=True)
class TimeReport:
    hardware: str
    hardware_source: str
    peak_flops: float  # of the model dtype
    mfu: float
    compute_seconds: float
    forward_seconds: float
    backward_seconds: float
    recompute_seconds: float
    comm_seconds: float  # all collectives, as if none overlapped
    exposed_comm_seconds: float
    gradient_comm_seconds: float
    step_seconds: float
    sequences_per_second: float
    overlap: str
    model_flops_utilization: float  # model FLOPs per device / step / peak: the MFU this step time implies


def estimate_time(
    flops: FlopsReport, comm: CommReport, hw: Hardware, dtype: str, mfu: float, batch_size: int
) -> TimeReport:
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    rate = hw.profile.peak(dtype) * mfu
    executed = flops.executed
    forward = executed.forward_per_device / rate
    backward = executed.backward_per_device / rate
    recompute = executed.recompute_per_device / rate
    compute = forward + backward + recompute
    phases = comm.seconds_by_phase
    gradient = phases["gradient"]
    exposed = phases["forward"] + phases["backward"] + phases["recompute"] + max(0.0, gradient - backward - recompute)
    step = compute + exposed
    return TimeReport(
        hardware=hw.name,
        hardware_source=hw.profile.source,
        peak_flops=hw.profile.peak(dtype),
        mfu=mfu,
        compute_seconds=compute,
        forward_seconds=forward,
        backward_seconds=backward,
        recompute_seconds=recompute,
        comm_seconds=comm.seconds,
        exposed_comm_seconds=exposed,
        gradient_comm_seconds=gradient,
        step_seconds=step,
        sequences_per_second=batch_size / step if step > 0 else 0.0,
        overlap=OVERLAP_ASSUMPTION,
        model_flops_utilization=flops.model.train_step_per_device / (step * hw.profile.peak(dtype)) if step else 0.0,
    )
