"""torchrun as `switchc train --backend torch` starts it: `python -m switchc.cli.torchrun ARGS` is
`torchrun ARGS`, but a signal that stops the job (Ctrl-C, SIGTERM) ends it with the shell's status
for that signal, 128 + its number, and a worker that fails ends it with that worker's status,
instead of the launcher's own traceback: by then the workers have said where training stopped and
which checkpoint continues it, or what went wrong (the launcher's log line names the failed rank
and its status). OMP_NUM_THREADS defaults to 1, as torchrun sets it for several processes, without
its banner saying so.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        torchrun()
    except SignalException as stop:
        sys.exit(128 + int(stop.sigval))
    except ChildFailedError as failed:  # the first failure's status: 3 for a NaN, 1 for an error
        _, first = failed.get_first_failure()
        status = first.exitcode
        sys.exit(status if 0 < status < 256 else 128 - status if status < 0 else 1)  # -N: killed by signal N


if __name__ == "__main__":
    main()
