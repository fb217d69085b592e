"""Shared fixtures: tiny image envs and a weight file of a tiny timm model."""

from __future__ import annotations

import os

# Tiny models run fastest single-threaded, and 2-core CI must not oversubscribe (zoo tests start subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.envs import FakeImageEnv  # noqa: E402

from sb3_pretrained import weights  # noqa: E402

TINY_MODEL = "test_efficientnet"


class MaskedFakeImageEnv(FakeImageEnv):
    """FakeImageEnv with an ``action_masks`` method, for MaskablePPO."""

    def action_masks(self) -> np.ndarray:
        mask = np.ones(self.action_space.n, dtype=bool)
        mask[-1] = False
        return mask


def image_env(discrete: bool = True, size: int = 32, channels: int = 3, masked: bool = False) -> FakeImageEnv:
    """A channel-last uint8 image env (SB3 adds VecTransposeImage, as for real image envs)."""
    cls = MaskedFakeImageEnv if masked else FakeImageEnv
    return cls(action_dim=3 if discrete else 2, screen_height=size, screen_width=size, n_channels=channels, discrete=discrete)


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


def backbone_matches(backbone: torch.nn.Module, path, exact: bool = True) -> bool:
    """Whether every backbone tensor equals the checkpoint's: bit for bit, or to float32 rounding."""
    saved = torch.load(path, weights_only=True)
    if exact:
        return all(torch.equal(tensor.cpu(), saved[key]) for key, tensor in backbone.state_dict().items())
    return all(
        torch.allclose(tensor.cpu().double(), saved[key].double(), rtol=1e-6, atol=1e-7)
        for key, tensor in backbone.state_dict().items()
    )
