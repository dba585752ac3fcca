"""runtime/host.py: after retain_freed_memory, freeing and reallocating a large buffer faults no pages."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from switchc.backends.common import host

# A child process (the settings are process-wide and must precede the threads): malloc 64 MiB and
# write every page, free it, do it again, and print the page faults of the second round.
CHILD = """
import ctypes, resource, sys
sys.path.insert(0, {directory!r})
import host
if {retain}:
    assert host.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def fill():
    size = 64 * 2**20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # touch every page
    libc.free(block)
fill()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
fill()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


def second_round_faults(retain: bool) -> int:
    directory = str(host.__file__).rsplit("/", 1)[0]
    code = CHILD.format(directory=directory, retain=retain)
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@glibc_only
def test_freed_memory_is_reused_without_page_faults() -> None:
    pages = 64 * 2**20 // 4096
    assert second_round_faults(retain=False) > pages // 2  # glibc's default: mmap, munmap, fault again
    assert second_round_faults(retain=True) < pages // 100


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_programs_apply_it_unless_told_not_to(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchc.backends.common import program

    assert "host.py" in program.COMMON_MODULES
    if backend == "torch":
        pytest.importorskip("torch")
        from switchc.backends.torch.runtime import loop
    else:
        from switchc.backends.jax.runtime import loop
    calls: list[bool] = []
    monkeypatch.setattr(host, "retain_freed_memory", lambda: calls.append(True) or True)
    loop.parse_args(["--system-malloc"], "", 1, 0)
    assert calls == []
    loop.parse_args([], "", 1, 0)
    assert calls == [True]
