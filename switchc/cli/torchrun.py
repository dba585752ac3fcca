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


def _failed(failed: ChildFailedError) -> int:
    """The job's status when workers failed. A worker killed by a signal (the kernel's OOM killer,
    a `kill -9`) printed nothing, and the others fail on its closed connections with errors of
    their own: name it, and end with status 1, as for any failed rank. Otherwise the first failure's
    status: 3 for a NaN, 1 for an error."""
    killed = {rank: failure for rank, failure in sorted(failed.failures.items()) if failure.exitcode < 0}
    for rank, failure in killed.items():
        print(
            f"error: rank {rank} (pid {failure.pid}) was killed by {failure.signal_name()}: out of memory (the "
            "kernel's log says), or stopped from outside; the other ranks' errors follow from it",
            file=sys.stderr,
        )
    if killed:
        return 1
    _, first = failed.get_first_failure()
    return first.exitcode if 0 < first.exitcode < 256 else 1


if __name__ == "__main__":
    main()
