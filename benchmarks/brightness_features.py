"""Why a frozen ImageNet backbone's agent fails on darker frames: how far a brightness change moves its features,
compared with how far the agent's own moves (a different state) move them.

MiniGrid-Empty-5x5-v0's 56x56 RGB view, as the main job feeds it, or CarRacing-v3's 96x96 frames (``--env
carracing``, discrete, random actions as in the first rollouts; frozen efficientnet_lite0, input_size="native",
ImageNet mean/std). For 200 observations of a random walk, and the same frames at brightness 0.6 (40% darker):

- ``shift / state``: mean ||f(dark x) - f(x)|| over the mean ||f(x_i) - f(x_j)|| between different observations;
- ``cosine``: mean cosine similarity of f(x) and f(dark x);
- ``std``: the features' standard deviation (their scale, what the trainable head receives), and
  ``median_dim_std``: the median over feature dimensions of each one's standard deviation across the observations
  (about 0: most dimensions do not change from one observation to the next);
- the same for the preprocessed input itself (what the backbone receives) and for SB3's NatureCNN at init.

    python benchmarks/brightness_features.py > docs/learning/brightness_features.jsonl
    python benchmarks/brightness_features.py --env carracing > docs/learning/brightness_features_carracing.jsonl
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import minigrid  # noqa: F401  (registers the envs)
import numpy as np
import torch
from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
from stable_baselines3.common.torch_layers import NatureCNN

from sb3_pretrained import BackboneEncoder
from sb3_pretrained.shifts import shift_pixels

FACTOR = 0.6


def observations(env_name: str, count: int = 200) -> np.ndarray:
    if env_name == "carracing":
        # Every 2nd frame after CarRacing's 50-frame zoom-in (the shipped config skips 2; the zoom is not driving).
        env, actions, skip, settle = gym.make("CarRacing-v3", continuous=False), 5, 2, 50
    else:
        minigrid_env = RGBImgPartialObsWrapper(gym.make("MiniGrid-Empty-5x5-v0"), tile_size=8)
        env, actions, skip, settle = ImgObsWrapper(minigrid_env), 3, 1, 0
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(settle):
        obs, *_ = env.step(0)
    frames = []
    while len(frames) < count:
        frames.append(obs)
        for _ in range(skip):
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(actions)))
            if terminated or truncated:
                obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
                for _ in range(settle):
                    obs, *_ = env.step(0)
    return np.stack(frames)


def compare(name: str, embed, bright: torch.Tensor, dark: torch.Tensor, **extra) -> dict:
    with torch.no_grad():
        f, g = embed(bright).flatten(1).double(), embed(dark).flatten(1).double()
    shift = (g - f).norm(dim=1).mean().item()
    state = torch.cdist(f, f)[~torch.eye(len(f), dtype=torch.bool)].mean().item()
    cosine = torch.nn.functional.cosine_similarity(f, g).mean().item()
    return {"features": name, "brightness": FACTOR, "shift_over_state": round(shift / state, 3),
            "cosine": round(cosine, 4), "std": round(f.std().item(), 4),
            "median_dim_std": round(f.std(dim=0).median().item(), 5), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=["minigrid", "carracing"], default="minigrid")
    args = parser.parse_args()
    frames = observations(args.env)
    shape = (3, *frames.shape[1:3])
    dark_frames = np.stack([shift_pixels(f, (("brightness", FACTOR),)) for f in frames])
    bright = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    dark = torch.from_numpy(dark_frames).permute(0, 3, 1, 2).float() / 255
    encoder = BackboneEncoder(shape, "efficientnet_lite0", input_size="native", amp=False).eval()
    torch.manual_seed(0)
    cnn = NatureCNN(gym.spaces.Box(0, 255, shape, np.uint8)).eval()
    rows = [
        compare("pixels in [0, 1]", lambda x: x, bright, dark),
        compare("backbone input (ImageNet mean/std)", encoder.preprocess, bright, dark),
        compare("efficientnet_lite0 pooled (frozen, ImageNet)", encoder, bright, dark),
        compare("NatureCNN at init", cnn, bright, dark),
    ]
    for index in range(len(encoder.backbone.feature_info)):
        stage = BackboneEncoder(shape, "efficientnet_lite0", input_size="native", amp=False, feature_index=index)
        rows.append(compare(f"efficientnet_lite0 feature map {index}", stage.eval(), bright, dark,
                            shape=list(stage.feature_shape)))
    for row in rows:
        print(json.dumps({"env": args.env, **row}), flush=True)


if __name__ == "__main__":
    main()
