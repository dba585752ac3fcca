"""The `switchc` command: pyproject's console script and `python -m switchc` run `run`."""

from __future__ import annotations

import signal
import sys


def run() -> None:
    """Import the command line and run it. switchc's imports take about a second; a Ctrl-C among
    them ends as one during a command does (one line, status 130), not in Python's traceback."""
    try:
        from switchc.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("\nSIGINT: switchc stopped as it started.\n")
        sys.exit(128 + signal.SIGINT)
    main()
