"""Host memory settings of a training process. Runtime support, copied verbatim into every program
(runtime/host.py); standard library only.

A training step allocates and frees the same large host buffers every time (activations, gradients,
XLA's temporaries). glibc's malloc serves blocks over its mmap threshold with fresh mmaps, hands
them back to the kernel on free, and gives each thread that allocates its own arena, whose memory
it also trims back: so every step page-faults its working set in again, one 4 KiB zeroed page at a
time. On this project's 2-core benchmark machine that was 130,000-151,000 page faults and about
0.5-0.7 s of kernel time per PyTorch step, 281,000 faults and 0.75-0.9 s per JAX step
(`benchmarks/bench_step.py --host-memory` in the switchc repository: its 16-expert config).

`retain_freed_memory` tells glibc to keep freed memory in the process instead: one arena, no mmap
for large blocks, no trimming. The process's resident memory then stays at its high-water mark
(what a training process needs anyway); the same step faults no page after the first. It must run
before the framework starts its worker threads (a thread's arena is chosen at its first
allocation): each program's parse_args calls it, unless `--system-malloc` is given. torch's own
CPU launcher (`python -m torch.backends.xeon.run_cpu`) reaches for jemalloc or tcmalloc for the
same reason; this needs no library beside glibc.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def retain_freed_memory() -> bool:
    """Keep freed memory in this process (glibc only); False where it could not be applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = (
        (M_ARENA_MAX, 1),  # every thread allocates from the main arena, which is never unmapped
        (M_MMAP_MAX, 0),  # large blocks come from that arena too, not from mmap
        (M_TRIM_THRESHOLD, -1),  # and freed memory at its top is never given back to the kernel
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
