"""Helpers shared by the tests: tiny image envs, the tiny timm model's name, checkpoint comparison, event files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.envs import FakeImageEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY_MODEL = "test_efficientnet"


def _needs(module: str, pip: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {pip} (pip install '.[envs]')")


needs_atari = _needs("ale_py", "ale-py")
needs_box2d = _needs("Box2D", "box2d")
needs_minigrid = _needs("minigrid", "minigrid")
if importlib.util.find_spec("ale_py") is not None:
    gym.register_envs(__import__("ale_py"))
if importlib.util.find_spec("minigrid") is not None:
    gym.register_envs(__import__("minigrid"))


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


def backbone_matches(backbone: torch.nn.Module, path, exact: bool = True) -> bool:
    """Whether every backbone tensor equals the checkpoint's: bit for bit, or to float32 rounding."""
    saved = torch.load(path, weights_only=True)
    if exact:
        return all(torch.equal(tensor.cpu(), saved[key]) for key, tensor in backbone.state_dict().items())
    return all(
        torch.allclose(tensor.cpu().double(), saved[key].double(), rtol=1e-6, atol=1e-7)
        for key, tensor in backbone.state_dict().items()
    )


def read_events(folder: Path) -> EventAccumulator:
    """The single TensorBoard run under ``folder``, loaded with every image and text it holds."""
    (run,) = {p.parent for p in folder.rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    return events

