"""torchrun as `switchc train --backend torch` starts it: `python -m switchc.cli.torchrun ARGS` is
`torchrun ARGS`, but a signal that stops the job (Ctrl-C, SIGTERM) ends it with the shell's status
for that signal, 128 + its number, and a worker that fails ends it with that worker's status,
instead of the launcher's own traceback: by then the workers have said where training stopped and
which checkpoint continues it, or what went wrong (the launcher's log line names the failed rank
and its status; a rank killed by a signal, which says nothing itself, is named here).
OMP_NUM_THREADS defaults to 1, as torchrun sets it for several processes, without its banner
saying so.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        torchrun()
    except SignalException as stop:
        sys.exit(128 + int(stop.sigval))
    except ChildFailedError as failed:
        sys.exit(_failed(failed))


_GRACE_KILL_AFTER = 10  # seconds after the first failure: a SIGKILL then is torchrun's own (grace: 30 s)


def _failed(failed: ChildFailedError) -> int:
    """The job's status when workers failed. Once one fails, torchrun ends the others with SIGTERM,
    and lists them too (killed by it, or stopped by the program's handler with status 143): those
    are not what went wrong, nor is its SIGKILL, after its grace period, of a rank that outlasts
    that SIGTERM (a collective still waiting on the failed rank). Of the rest, a worker ended by a
    signal (SIGKILL from the kernel's OOM killer or from outside, a crash) printed nothing, while
    the others fail on its closed connections with errors of their own: it is named, and the job
    ends with status 1, as for any failed rank. Otherwise the earliest failure's status: 3 for a
    NaN, 2 for a flag, 1 for an error. Only SIGTERMs: the workers were stopped from outside (not
    through this launcher), 143."""
    own = (-signal.SIGTERM, 128 + signal.SIGTERM)
    real = {rank: failure for rank, failure in sorted(failed.failures.items()) if failure.exitcode not in own}
    if not real:
        return 128 + signal.SIGTERM
    # A rank that outlasts torchrun's grace period after its SIGTERM gets SIGKILL, well after the
    # first failure (timestamps are whole seconds; the grace, 30 s by default): torchrun's too. The
    # first failure itself is never torchrun's doing, SIGKILL or not: it kills only after one.
    first = min(failure.timestamp for failure in real.values())
    real = {
        rank: failure
        for rank, failure in real.items()
        if failure.exitcode != -signal.SIGKILL or failure.timestamp < first + _GRACE_KILL_AFTER
    }
    signalled = {rank: failure for rank, failure in real.items() if failure.exitcode < 0}
    for rank, failure in signalled.items():
        why = (
            ": out of memory (the kernel's log, dmesg, says so if it was), or killed from outside"
            if failure.exitcode == -signal.SIGKILL
            else ""
        )
        print(
            f"error: rank {rank} (pid {failure.pid}) was ended by {failure.signal_name()}{why}; the other ranks' "
            "errors follow from it",
            file=sys.stderr,
        )
    if signalled:
        return 1
    earliest = min(real.values(), key=lambda failure: failure.timestamp)
    return earliest.exitcode if earliest.exitcode < 256 else 1


if __name__ == "__main__":
    main()
