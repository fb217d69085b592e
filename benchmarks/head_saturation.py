"""Why the frozen map-2 agents of the CarRacing study kept one constant action: the scale of what the policy's Tanh
MLP receives from each extractor, at initialization, on CarRacing frames.

The study's PPO policies (discrete CarRacing-v3, 2 stacked frames, 96 px, seed 0) built as its configs build them,
on 200 observations of random driving (``brightness_features.observations``, each stacked with the frame before):

- ``features_std`` / ``features_absmax``: the extractor's output (what the MLP, or NatureCNN's linear heads, read);
- ``pi_first_std`` / ``vf_first_std``: the pre-activations of the policy and value MLPs' first Linear layer, and
  ``pi_saturated`` / ``vf_saturated``: the share of them beyond |2|, where Tanh's gradient is below 0.07;
- ``entropy``: the initial policy's mean entropy (log 5 = 1.609 is uniform).

Variants: ``scratch`` (SB3's CnnPolicy: NatureCNN, no MLP), ``pooled`` (the final pooled vector), ``map2`` (the
study's ``feature_index: 2`` with the spatial head: 1x1 conv, Linear, LayerNorm, Tanh) and ``map2_relu_head`` (the same
with the head that ended in Linear+ReLU, before commit 57de850, which the first two frozen runs trained); and the
fast path's stored map 2 (``FrozenBackboneEmbedding(feature_index=2)``, float32: both frames' flat maps) read by
``MlpPolicy`` as it is (``fast_path_mlp``) or through ``FeatureMapExtractor`` (``fast_path_map_head``).

    python benchmarks/head_saturation.py > docs/learning/head_saturation_carracing.jsonl
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import torch
from brightness_features import observations
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from sb3_pretrained import BackboneEncoder, FeatureMapExtractor
from sb3_pretrained.policies import TimmActorCriticPolicy

BACKBONE = dict(model_name="efficientnet_lite0", frozen=True, input_size="native", frame_stack=2)


class StackedFrames(gym.Env):
    """Only a space: CarRacing's 2 stacked frames, channel-first (what VecFrameStack + VecTransposeImage give)."""

    observation_space = spaces.Box(0, 255, (6, 96, 96), np.uint8)
    action_space = spaces.Discrete(5)


class StoredMaps(gym.Env):
    """Only a space: the fast path's float32 observation, 2 frames of map 2 (40x12x12 each) flattened."""

    observation_space = spaces.Box(-np.inf, np.inf, (2 * 40 * 12 * 12,), np.float32)
    action_space = spaces.Discrete(5)


def policy(variant: str) -> torch.nn.Module:
    if variant.startswith("fast_path"):
        kwargs: dict = {}
        if variant == "fast_path_map_head":
            kwargs = {"features_extractor_class": FeatureMapExtractor,
                      "features_extractor_kwargs": {"feature_shape": [40, 12, 12]}}
        return PPO("MlpPolicy", DummyVecEnv([StoredMaps]), seed=0, device="cpu", policy_kwargs=kwargs).policy
    env = DummyVecEnv([StackedFrames])
    if variant == "scratch":
        return PPO("CnnPolicy", env, seed=0, device="cpu").policy
    kwargs = dict(BACKBONE, feature_index=2) if variant.startswith("map2") else BACKBONE
    model = PPO(TimmActorCriticPolicy, env, seed=0, device="cpu", policy_kwargs={"features_extractor_kwargs": kwargs})
    if variant == "map2_relu_head":
        head = model.policy.features_extractor.head  # Unflatten, Conv, ReLU, Flatten, Linear, LayerNorm, Tanh
        model.policy.features_extractor.head = nn.Sequential(*head[:5], nn.ReLU())
    return model.policy


def first_layer(net: nn.Module, features: torch.Tensor) -> dict:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return {}
    pre = linears[0](features)
    return {"std": round(pre.std().item(), 3), "saturated": round((pre.abs() > 2).float().mean().item(), 3)}


def main() -> None:
    torch.set_num_threads(1)
    frames = torch.from_numpy(observations("carracing", count=201)).permute(0, 3, 1, 2)
    stacked = torch.cat([frames[:-1], frames[1:]], dim=1)  # (200, 6, 96, 96) uint8: the frame before, then this one
    encoder = BackboneEncoder((3, 96, 96), "efficientnet_lite0", input_size="native", feature_index=2, amp=False).eval()
    with torch.no_grad():  # the fast path's observations: each frame's flat map, the frame before first
        maps = encoder(frames.float() / 255)
    stored = torch.cat([maps[:-1], maps[1:]], dim=1).numpy()
    for variant in ("scratch", "pooled", "map2", "map2_relu_head", "fast_path_mlp", "fast_path_map_head"):
        net = policy(variant).eval()
        inputs = stored if variant.startswith("fast_path") else stacked.numpy()
        with torch.no_grad():
            obs = net.obs_to_tensor(inputs)[0]
            features = net.extract_features(obs, net.pi_features_extractor)
            pi, vf = first_layer(net.mlp_extractor.policy_net, features), first_layer(net.mlp_extractor.value_net, features)
            entropy = net.get_distribution(obs).entropy().mean().item()
        record = {"variant": variant, "features_std": round(features.std().item(), 3),
                  "features_absmax": round(features.abs().max().item(), 2),
                  **{f"pi_first_{k}": v for k, v in pi.items()}, **{f"vf_first_{k}": v for k, v in vf.items()},
                  "entropy": round(entropy, 3)}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
