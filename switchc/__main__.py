"""`python -m switchc` is the `switchc` command."""

from switchc.command import run

run()
