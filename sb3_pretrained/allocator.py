"""glibc malloc settings that keep a CPU backbone's activation buffers mapped between forward passes.

With glibc's defaults, a process that runs a backbone on the CPU between env steps can return the activation
buffers (megabytes each) to the kernel after every forward pass and fault them in again on the next one: on the
2-core benchmark machine, PPO's fast path spent 34 ms of each 81 ms efficientnet_lite0 pass (8 frames, 224 px) in
the kernel. Raising the mmap threshold to its maximum (32 MB) and the trim threshold to 1 GB keeps them mapped:
53 ms a pass, 0.1 ms in the kernel (``benchmarks/backbone_in_loop.py``, docs/benchmarks.md). Memory the process
frees stays with it, up to its peak.

:func:`keep_cpu_buffers_mapped` applies them once per process, the first time a backbone runs on the CPU. It does
nothing when ``SB3_PRETRAINED_MALLOC=0``, when the C library is not glibc, when another allocator is preloaded
(jemalloc, tcmalloc, mimalloc), or when the user set glibc's malloc options already (``MALLOC_*_`` variables or
``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 1 << 30

_done = False


def _left_to_the_user() -> str | None:
    """Why the settings are not ours to change, or None."""
    if os.environ.get("SB3_PRETRAINED_MALLOC", "1") == "0":
        return "SB3_PRETRAINED_MALLOC=0"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    preloaded = os.environ.get("LD_PRELOAD", "")
    if any(name in preloaded for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "another allocator is preloaded"
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return "glibc malloc options set by the user"
    return None


def keep_cpu_buffers_mapped() -> bool:
    """Apply the settings (once per process); True when they were applied by this call."""
    global _done
    if _done:
        return False
    _done = True
    if _left_to_the_user() is not None:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # Both or neither: an explicit mmap threshold alone leaves the trim threshold at 128 KB (worse than the
    # defaults), and a trim threshold alone stops glibc from raising its mmap threshold.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
