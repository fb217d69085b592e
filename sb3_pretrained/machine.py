"""What this machine is: its CPU (model, cores, instruction sets) and GPUs, read once from the system, for the
choices that depend on it (bfloat16 inference on CPU) and for the records of where a run ran (``trial.json``,
benchmark rows)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first ``field : value`` line of ``/proc/cpuinfo`` (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.split(":", 1)[0].strip() == field),
                        None)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``platform``'s processor or architecture where ``/proc/cpuinfo`` is not there)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_description() -> str:
    """``<model>, <n> cores``, as run records give the machine."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there bf16 inference beats fp32."""
    flags = (_cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_names() -> list[str]:
    """The machine's NVIDIA GPUs as ``nvidia-smi`` names them (no CUDA context is created); [] without it."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
