"""How much the fast path's storage dtypes and bf16 inference change efficientnet_lite0 embeddings of real frames.

    python benchmarks/embedding_error.py     # Breakout (AtariWrapper) and CarRacing-v3, 4 envs x 100 random steps

Reference: fp32 inference, fp32 storage. For each variant, JSON lines with the mean relative error of the embeddings
(``|x' - x| / |x|``) and the median relative error of consecutive-frame differences (``|dx' - dx| / |dx|``, the
motion the policy has to read), over the same frames.
"""

from __future__ import annotations

import json

import ale_py
import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env

from sb3_pretrained.wrappers import FrozenBackboneEmbedding

gym.register_envs(ale_py)
N_ENVS, STEPS = 4, 100


def frames(venv) -> np.ndarray:
    """(N_ENVS * (STEPS + 1), ...) observations under random actions, env-major."""
    rng = np.random.default_rng(0)
    observations = [venv.reset()]
    for _ in range(STEPS):
        observations.append(venv.step(rng.integers(venv.action_space.n, size=N_ENVS))[0])
    return np.stack(observations, 1).reshape(-1, *observations[0].shape[1:])


def errors(variant: torch.Tensor, reference: torch.Tensor) -> dict:
    variant, reference = variant.view(N_ENVS, STEPS + 1, -1), reference.view(N_ENVS, STEPS + 1, -1)
    motion = reference[:, 1:] - reference[:, :-1]
    moved = motion.norm(dim=-1) > 0
    motion_error = (variant[:, 1:] - variant[:, :-1] - motion).norm(dim=-1)[moved] / motion.norm(dim=-1)[moved]
    return {"embedding_rel_error": round(((variant - reference).norm(dim=-1) / reference.norm(dim=-1)).mean().item(), 4),
            "motion_rel_error": round(motion_error.median().item(), 4)}


def main() -> None:
    for env_id, kwargs in (("BreakoutNoFrameskip-v4", dict(wrapper_class=AtariWrapper)),
                           ("CarRacing-v3", dict(env_kwargs=dict(continuous=False)))):
        venv = make_vec_env(env_id, n_envs=N_ENVS, seed=0, **kwargs)
        images = frames(venv)
        wrapper = FrozenBackboneEmbedding(venv, "efficientnet_lite0", input_size="native", dtype="uint8", amp=False)
        fp32 = wrapper.embed(images)
        wrapper.encoder.amp = True
        bf16 = wrapper.embed(images)
        variants = {
            "fp32 inference, float16 storage": fp32.half().float(),
            "fp32 inference, uint8 storage": wrapper.dequantize(wrapper.quantize(fp32)),
            "bf16 inference, float32 storage": bf16,
            "bf16 inference, uint8 storage": wrapper.dequantize(wrapper.quantize(bf16)),
        }
        for name, variant in variants.items():
            print(json.dumps({"env": env_id, "variant": name, "feature_range": wrapper.feature_range,
                              **errors(variant, fp32)}), flush=True)


if __name__ == "__main__":
    main()
