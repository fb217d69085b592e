"""The main job's saved agents on normal and on darkened frames: 30 deterministic episodes each (eval seed 0), on
MiniGrid-Empty-5x5-v0's RGB view as zoo_configs/ppo.yml builds it, and with every frame at 0.6 brightness
(:class:`sb3_pretrained.shifts.VisualShift`, as the sweep's held-out shifts).

    sb3-pretrained train && python benchmarks/main_job_shift.py logs/ppo/MiniGrid-Empty-5x5-v0_1/MiniGrid-Empty-5x5-v0.zip
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import minigrid  # noqa: F401  (registers the envs)
from rl_zoo3.utils import get_wrapper_class
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from sb3_pretrained import zoo
from sb3_pretrained.shifts import VisualShift

ENV_ID = "MiniGrid-Empty-5x5-v0"
BRIGHTNESS = 0.6
EPISODES = 30


def mean_return(model: PPO, brightness: float | None) -> float:
    wrapper = get_wrapper_class(zoo.load_config(zoo.config_path("ppo"))[ENV_ID])  # the main job's env_wrapper

    def make() -> gym.Env:
        env = wrapper(gym.make(ENV_ID))
        return VisualShift(env, (("brightness", brightness),)) if brightness is not None else env

    env = VecTransposeImage(DummyVecEnv([make]))
    env.seed(0)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=EPISODES, deterministic=True)
    return round(float(mean), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="saved PPO models (.zip) of the main job")
    for path in parser.parse_args().models:
        model = PPO.load(path, device="cpu")
        print(json.dumps({"model": path, "return": mean_return(model, None),
                          f"return_at_brightness_{BRIGHTNESS}": mean_return(model, BRIGHTNESS)}), flush=True)


if __name__ == "__main__":
    main()
