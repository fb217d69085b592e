"""glibc malloc settings for CPU backbones: applied once, the first time a backbone runs on the CPU, never over the
user's own allocator choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from sb3_pretrained import TimmExtractor, allocator
from tests.helpers import TINY_MODEL


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(allocator, "_done", False)
    for name in ("SB3_PRETRAINED_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    return fake


def test_first_cpu_forward_raises_both_thresholds_once(libc):
    extractor = TimmExtractor(spaces.Box(0, 255, (3, 32, 32), np.uint8), TINY_MODEL, pretrained=False, frozen=True)
    assert libc.calls == []  # nothing at construction: the device is not known yet
    with torch.no_grad():
        extractor(torch.rand(2, 3, 32, 32))
        extractor(torch.rand(2, 3, 32, 32))
    assert libc.calls == [(allocator.M_MMAP_THRESHOLD, 32 << 20), (allocator.M_TRIM_THRESHOLD, 1 << 30)]
    assert allocator.keep_cpu_buffers_mapped() is False  # once per process


@pytest.mark.parametrize(
    "variable,value",
    [("SB3_PRETRAINED_MALLOC", "0"), ("MALLOC_ARENA_MAX_", "2"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
     ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")],
)
def test_the_users_allocator_choices_are_left_alone(libc, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert allocator.keep_cpu_buffers_mapped() is False
    assert libc.calls == []


def test_other_c_libraries_are_left_alone(libc, monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_cpu_buffers_mapped() is False
    assert libc.calls == []
