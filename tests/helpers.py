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



def save_small_model(path: Path) -> Path:
    """Save a small SB3 model (PPO, MlpPolicy, CartPole) to ``path`` (a .zip) and return it."""
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, device="cpu", seed=0).save(path)
    return path


def write_run_folder(log_folder: Path, algo: str, env_id: str, run_id: int, model: bool = True) -> Path:
    """A run folder as rl_zoo3 leaves it (``<env>_<id>/`` with ``<env>/config.yml`` and ``args.yml``, written as
    rl_zoo3 writes them), with the final model when ``model``."""
    from collections import OrderedDict

    import yaml

    run = log_folder / algo / f"{env_id}_{run_id}"
    (run / env_id).mkdir(parents=True)
    config = OrderedDict([("n_envs", 1), ("n_timesteps", 1000.0), ("policy", "MlpPolicy"), ("train_freq", (1, "step"))])
    (run / env_id / "config.yml").write_text(yaml.dump(config))
    (run / env_id / "args.yml").write_text(yaml.dump(OrderedDict([("algo", algo), ("env", env_id), ("env_kwargs", None)])))
    if model:
        save_small_model(run / f"{env_id}.zip")
    return run


def record_eval_env_kwargs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A list that receives the ``eval_env_kwargs`` of every eval VecEnv rl_zoo3's ExperimentManager creates."""
    from rl_zoo3.exp_manager import ExperimentManager

    seen: list[dict] = []
    create_envs = ExperimentManager.create_envs

    def recording(self, n_envs, eval_env=False, no_log=False):
        if eval_env:
            seen.append(dict(self.eval_env_kwargs))
        return create_envs(self, n_envs, eval_env=eval_env, no_log=no_log)

    monkeypatch.setattr(ExperimentManager, "create_envs", recording)
    return seen
