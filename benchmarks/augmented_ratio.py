"""How much a random shift alone moves a PPO agent's action probabilities and values: the part of PPO's ratio that
augmentation puts there.

With ``augment`` in an on-policy algorithm, the rollout's log-probabilities come from the acting observations (never
augmented) and the update's from augmented ones, so PPO's ratio ``pi(a | shift(o)) / pi(a | o)`` is not 1 before the
first gradient step. For each sweep trial folder, the final agent (the zoo's ``<algo>/<env>_<k>/<env>.zip`` of its
last start) plays ``--frames`` steps of its own stochastic policy in the env its config trains on; then, with the
agent's own augmentation off (eval mode), each observation is shifted ``--draws`` times as the study's ``shift: 4``
does (:class:`sb3_pretrained.augmentation.ImageAugmentation`: edge-padded, a random whole-pixel crop per sample,
the same for both stacked frames) and this prints one JSON line per trial:

- ``outside_clip``: the share of (observation, draw) pairs whose ratio for the action taken lies outside
  ``1 +- clip_range`` (the agent's own ``clip_range`` at the start of its schedule) before any update has moved the
  policy: PPO treats them as if the update had already moved the policy that far (its clipped objective gives them
  no gradient where the advantage pushes the ratio further out);
- ``mean_abs_log_ratio`` and ``median_abs_log_ratio``: ``|log pi(a | shift(o)) - log pi(a | o)|``;
- ``value_change``: the mean ``|V(shift(o)) - V(o)|`` over the standard deviation of ``V(o)`` over the frames.

:class:`sb3_pretrained.DrACPPO` (``--algo ppo_drac``) takes PPO's ratio on the plain observations instead. Agents
trained without augmentation are the control (how far an unseen shift moves them). The sweep folders stay
under ``logs/``; what this prints is small and is::

    python benchmarks/augmented_ratio.py logs/sweeps/carracing-100k-a/scratch_seed1 \\
        logs/sweeps/carracing-100k-scratch-s[23]/scratch_seed* logs/sweeps/carracing-100k-scratch_shift-s*/*_seed* \\
        logs/sweeps/carracing-100k-frozen-ln-s[12]/frozen_seed* logs/sweeps/carracing-100k-frozen-s3/frozen_seed3 \\
        logs/sweeps/carracing-100k-finetune*-s1/*_seed1 > docs/learning/carracing-100k-augmented-ratio.jsonl

(the finished runs of the study whose agents load: the old head's two frozen agents are refused by the extractor).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from backbone_drift import config_env, final_agent


def own_episodes(model: Any, entry: dict[str, Any], env_id: str, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` observations of the agent's own (stochastic) episodes, and the actions it took on them."""
    env = config_env(entry, env_id, seed)
    obs = env.reset()
    seen, taken = [], []
    while len(seen) < frames:
        action, _ = model.predict(obs, deterministic=False)
        seen.append(obs[0])
        taken.append(action[0])
        obs, _, _, _ = env.step(action)
    env.close()
    return np.stack(seen), np.stack(taken)


def ratios(trial: Path, frames: int, draws: int, shift: int, seed: int) -> dict[str, Any]:
    from sb3_pretrained.augmentation import ImageAugmentation

    spec, model, config = final_agent(trial)
    obs, actions = own_episodes(model, config, spec["env_id"], frames, seed)
    policy = model.policy
    policy.set_training_mode(False)  # the agent's own augmentation off: the shift below is the only one
    channels = model.observation_space.shape[0]
    shifter = ImageAugmentation(shift=shift, frame_channels=3 if channels % 3 == 0 else 1).train()
    torch.manual_seed(seed)
    clip_range = float(model.clip_range(1.0)) if callable(model.clip_range) else float(model.clip_range)
    with torch.no_grad():
        batch = policy.obs_to_tensor(obs)[0].float()  # channel-first as the policy reads it; raw pixel values
        taken = torch.as_tensor(actions, device=batch.device)
        values, log_prob, _ = policy.evaluate_actions(batch, taken)
        log_ratios, value_changes = [], []
        for _ in range(draws):
            # A whole-pixel shift commutes with the policy's scaling of pixels to [0, 1].
            shifted_values, shifted_log_prob, _ = policy.evaluate_actions(shifter(batch), taken)
            log_ratios.append(shifted_log_prob - log_prob)
            value_changes.append((shifted_values - values).abs().flatten())
    log_ratio = torch.cat(log_ratios).double()
    ratio = log_ratio.exp()
    return {
        "sweep": trial.parent.name,
        "trial": trial.name,
        "trained_with_augment": (model.policy_kwargs.get("features_extractor_kwargs") or {}).get("augment"),
        "frames": frames,
        "draws": draws,
        "shift": shift,
        "clip_range": clip_range,
        "outside_clip": round(float(((ratio - 1).abs() > clip_range).double().mean()), 4),
        "mean_abs_log_ratio": round(float(log_ratio.abs().mean()), 4),
        "median_abs_log_ratio": round(float(log_ratio.abs().median()), 4),
        "value_change": round(float(torch.cat(value_changes).mean() / values.std()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="+", type=Path, help="finished sweep trial folders of PPO agents")
    parser.add_argument("--frames", type=int, default=1024, help="observations of the agent's own episodes")
    parser.add_argument("--draws", type=int, default=4, help="random shifts of each observation")
    parser.add_argument("--shift", type=int, default=4, help="pixels of padding, as augment: {shift: N}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the shifts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for trial in args.trials:
        print(json.dumps(ratios(trial, args.frames, args.draws, args.shift, args.seed)), flush=True)


if __name__ == "__main__":
    main()
