"""torchrun as `switchc train --backend torch` starts it: `python -m switchc.cli.torchrun ARGS` is
`torchrun ARGS`, but a signal that stops the job (Ctrl-C, SIGTERM) ends it with the shell's status
for that signal, 128 + its number, instead of the launcher's own traceback: by then the workers
have said where training stopped and which checkpoint continues it. OMP_NUM_THREADS defaults to 1,
as torchrun sets it for several processes, without its banner saying so.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        torchrun()
    except SignalException as stop:
        sys.exit(128 + int(stop.sigval))


if __name__ == "__main__":
    main()
