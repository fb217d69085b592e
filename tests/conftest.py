"""Shared fixtures: a fresh weight cache, an offline hub, and a weight file of a tiny timm model."""

from __future__ import annotations

import os

# Tiny models run fastest single-threaded, and 2-core CI must not oversubscribe (zoo tests start subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from sb3_pretrained import weights  # noqa: E402
from tests.helpers import TINY_MODEL  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_weight_cache():
    """Each test counts its own weight-file reads."""
    weights.clear_cache()
    yield
    weights.clear_cache()


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    """Tests never wait for Hugging Face: the hub counts as unreachable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_weights(tmp_path):
    """A .pth checkpoint of a randomly initialised tiny timm model (with its classifier, as timm saves it)."""
    torch.manual_seed(123)
    model = timm.create_model(TINY_MODEL)
    # Distinct BN statistics, so "unchanged" checks cannot pass by accident.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path
