"""The fast path with stored feature maps, learning: PPO on MiniGrid-Empty-5x5-v0's 56x56 RGB view embedded by
``FrozenBackboneEmbedding(feature_index=2)`` (frozen ImageNet efficientnet_lite0, map 2: 40x7x7 floats per step,
computed once per env step), with the main job's hyperparameters (8 envs, n_steps 64, batch 256, 4 epochs, lr 5e-4,
ent_coef 0.01, 20k steps). The policy reads the stored maps either as a plain ``MlpPolicy`` (``mlp``) or through
``FeatureMapExtractor`` (``map_head``: the spatial head of the in-policy extractor). Each final agent: 30
deterministic episodes (eval seed 0) on normal frames and on frames at 0.6 brightness.

    python benchmarks/fast_path_maps.py --seeds 0 1 2 > docs/learning/fast_path_maps.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import minigrid  # noqa: F401  (registers the envs)
import torch
from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_pretrained import FeatureMapExtractor, FrozenBackboneEmbedding
from sb3_pretrained.shifts import VisualShift

ENV = "MiniGrid-Empty-5x5-v0"


def embedded_env(n_envs: int, seed: int, brightness: float | None = None) -> FrozenBackboneEmbedding:
    def wrap(env: gym.Env) -> gym.Env:
        env = ImgObsWrapper(RGBImgPartialObsWrapper(env, tile_size=8))
        return VisualShift(env, (("brightness", brightness),)) if brightness is not None else env

    venv = make_vec_env(ENV, n_envs=n_envs, seed=seed, wrapper_class=wrap)
    return FrozenBackboneEmbedding(venv, "efficientnet_lite0", input_size="native", feature_index=2, amp=False)


def run(variant: str, seed: int, steps: int) -> dict:
    env = embedded_env(8, seed)
    kwargs = {}
    if variant == "map_head":
        kwargs = {"features_extractor_class": FeatureMapExtractor,
                  "features_extractor_kwargs": {"feature_shape": list(env.encoder.feature_shape)}}
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=256, n_epochs=4, learning_rate=5e-4, ent_coef=0.01,
                seed=seed, device="cpu", policy_kwargs=kwargs)
    start = time.perf_counter()
    model.learn(steps)
    wall = time.perf_counter() - start
    record = {"variant": variant, "seed": seed, "env_steps": model.num_timesteps, "train_s": round(wall, 1)}
    for name, brightness in (("return", None), ("return_at_brightness_0.6", 0.6)):
        mean, _ = evaluate_policy(model, embedded_env(1, 0, brightness), n_eval_episodes=30, deterministic=True)
        record[name] = round(float(mean), 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        for variant in ("mlp", "map_head"):
            print(json.dumps(run(variant, seed, args.steps)), flush=True)


if __name__ == "__main__":
    main()
