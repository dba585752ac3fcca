"""The command-line flags every generated training program shares, and their checks. Runtime
support, copied verbatim into every program (runtime/flags.py).

It needs the standard library only: a program parses its flags before its framework starts (a
JAX program's --devices must take effect before jax is imported). Each backend's runtime/loop.py
builds its parser here, adds its own flags (JAX: --devices, --distributed, --dump-hlo,
--export-init; PyTorch: --device, --timeout), parses, and calls `check` before its own checks.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(
    description: str, default_steps: int, default_seed: int, *, resume_help: str, init_from_help: str
) -> argparse.ArgumentParser:
    """A parser with the shared flags. `resume_help` and `init_from_help` are the help texts of
    --resume and --init-from, whose details differ between the backends."""
    every = max(1, default_steps // 10)
    flags = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_argument("--steps", type=int, default=default_steps, help="train until this step (default: the spec's)")
    flags.add_argument("--seed", type=int, default=default_seed, help="seed for init, data and noise")
    flags.add_argument("--log-every", type=int, default=10, help="a train record every N steps (default: 10)")
    flags.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory: metrics.jsonl, tensorboard/ and checkpoints/ (default: none written)",
    )
    flags.add_argument(
        "--eval-every",
        type=int,
        default=every,
        metavar="N",
        help=f"evaluate on the held-out split every N steps and at the end; 0: never (default: {every})",
    )
    flags.add_argument("--eval-batches", type=int, default=10, help="batches per evaluation (default: 10)")
    flags.add_argument(
        "--checkpoint-every",
        type=int,
        default=every,
        metavar="N",
        help=f"with --out, save a checkpoint every N steps and at the end; 0: never (default: {every})",
    )
    flags.add_argument("--keep", type=int, default=3, metavar="K", help="keep the newest K checkpoints (default: 3)")
    flags.add_argument("--resume", action="store_true", help=resume_help)
    flags.add_argument("--init-from", type=Path, default=None, metavar="FILE", help=init_from_help)
    flags.add_argument(
        "--hardware",
        default=None,
        metavar="NAME",
        help="hardware profile for MFU (model.PEAK_FLOPS lists them; default: cpu on CPUs, else the device's)",
    )
    flags.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc as configured (default: keep freed memory in the process; runtime/host.py)",
    )
    return flags


def check(flags: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The shared flags' impossible values: a usage error (exit status 2) naming the flag."""
    if args.steps < 0:
        flags.error("--steps must be >= 0")
    for name in ("log_every", "eval_batches", "keep"):
        if getattr(args, name) < 1:
            flags.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("eval_every", "checkpoint_every"):
        if getattr(args, name) < 0:
            flags.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.resume and args.out is None:
        flags.error("--resume needs --out (the run directory whose checkpoints/ to resume from)")
