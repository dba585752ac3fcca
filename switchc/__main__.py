"""`python -m switchc` is the `switchc` command."""

from switchc.cli import main

main()
