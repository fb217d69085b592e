"""Fine-tune an ImageNet EfficientNet-Lite0 with PPO: frozen -> gradual unfreezing -> LR warmup.

    python examples/finetune_gradual_unfreeze.py --timesteps 40000
    tensorboard --logdir logs      # finetune/lr/policy/*, finetune/unfrozen_stages, ...

Schedule (timesteps): the backbone is frozen until 1/4 of the run, then its top stage trains, from 1/2 the top
three, from 3/4 everything. Each unfreezing restarts a linear LR warmup; the backbone trains at 0.1x the head's
LR with layer-wise decay 0.8 per stage going down.
"""

import argparse

from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_pretrained import GradualUnfreezing, LRWarmup, TimmExtractor


def rgb_view(env):
    return ImgObsWrapper(RGBImgPartialObsWrapper(env, tile_size=8))  # 56x56x3 uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=40_000)
    parser.add_argument("--env", default="MiniGrid-Empty-5x5-v0")
    args = parser.parse_args()

    quarter = args.timesteps // 4
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
            features_extractor_kwargs=dict(
                model_name="efficientnet_lite0",
                frozen=True,
                input_size="native",
                backbone_lr_scale=0.1,
                layer_decay=0.8,
            ),
        ),
    )
    unfreeze_at = [quarter, 2 * quarter, 3 * quarter]
    callbacks = [
        GradualUnfreezing({unfreeze_at[0]: 1, unfreeze_at[1]: 3, unfreeze_at[2]: "all"}, verbose=1),
        LRWarmup(steps=max(1, quarter // 4), start_factor=0.05, restart_at=unfreeze_at),
    ]
    model.learn(args.timesteps, callback=callbacks, progress_bar=True, tb_log_name="ppo_finetune")
    model.save("logs/ppo_finetune_lite0")


if __name__ == "__main__":
    main()
