"""Bytes of observation data per stored replay-buffer transition (obs + next_obs), measured on SB3's own DQN
replay buffer for: native uint8 frames, an env-side 224 px resize, and fast-path fp32 / fp16 / 8-bit embeddings.

    python benchmarks/transition_bytes.py            # Atari Breakout (4-frame stack, single frames), CarRacing-v3

Sizes come from the buffer's arrays (``nbytes / buffer_size``), which do not depend on the buffer size; a
small buffer is enough to measure them. JSON lines on stdout.
"""

from __future__ import annotations

import json

import ale_py  # noqa: F401  (registers the ALE envs)
import gymnasium as gym
from stable_baselines3 import DQN
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_pretrained import TimmExtractor
from sb3_pretrained.wrappers import BackboneImage, FrozenBackboneEmbedding

gym.register_envs(ale_py)
BUFFER = 1000


def atari(resize=None, n_stack=4):
    def wrap(env):
        env = AtariWrapper(env)
        return env if resize is None else BackboneImage(env, resize=resize)

    venv = make_vec_env("BreakoutNoFrameskip-v4", n_envs=1, seed=0, wrapper_class=wrap)
    return VecFrameStack(venv, n_stack=n_stack) if n_stack > 1 else venv


def atari_single_frames(resize=None):
    return atari(resize, n_stack=1)


def carracing(resize=None):
    wrapper = None if resize is None else (lambda env: BackboneImage(env, resize=resize))
    return make_vec_env("CarRacing-v3", n_envs=1, seed=0, env_kwargs=dict(continuous=False), wrapper_class=wrapper)


def measure(setup: str, env_name: str, env, policy: str, policy_kwargs: dict) -> dict:
    model = DQN(policy, env, buffer_size=BUFFER, learning_starts=10**9, policy_kwargs=policy_kwargs, device="cpu")
    buffer = model.replay_buffer
    stored = buffer.observations.nbytes + buffer.next_observations.nbytes
    return {"env": env_name, "setup": setup, "obs_shape": list(buffer.obs_shape), "dtype": str(buffer.observations.dtype),
            "bytes_per_transition": stored // BUFFER, "gb_per_100k": round(stored / BUFFER * 1e5 / 1e9, 2)}


def main() -> None:
    lite0 = dict(features_extractor_class=TimmExtractor,
                 features_extractor_kwargs=dict(model_name="efficientnet_lite0", frozen=True))
    envs = (
        ("BreakoutNoFrameskip-v4 (4-frame stack)", atari, 4),
        ("BreakoutNoFrameskip-v4 (single frames)", atari_single_frames, 1),
        ("CarRacing-v3", carracing, 1),
    )
    for name, make, stack in envs:
        extractor = dict(lite0, features_extractor_kwargs=dict(lite0["features_extractor_kwargs"], frame_stack=stack))
        rows = [
            measure("native uint8 frames (resize on the device)", name, make(), "CnnPolicy", extractor),
            measure("env-side 224 px resize", name, make(resize=[224, 224]), "CnnPolicy", extractor),
        ]
        for dtype in ("float32", "float16", "uint8"):
            base = make()
            if stack > 1:  # embed single frames, stack the embeddings
                base = base.venv
            env = FrozenBackboneEmbedding(base, "efficientnet_lite0", frame_stack=stack, dtype=dtype, input_size=96)
            rows.append(measure(f"fast path, {dtype} embeddings", name, env, "MlpPolicy", {}))
        if stack > 1:
            env = FrozenBackboneEmbedding(make(), "efficientnet_lite0", frame_stack=stack, frame_mode="channel",
                                          dtype="float16", input_size=96)
            rows.append(measure("fast path, float16, channel mode (one embedding per stack)", name, env, "MlpPolicy", {}))
        native = rows[0]["bytes_per_transition"]
        for row in rows:
            row["vs_native"] = round(row["bytes_per_transition"] / native, 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
