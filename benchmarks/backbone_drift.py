"""How far RL fine-tuning moved a trial's backbone from its pretrained weights, and what that did to its features.

For each sweep trial folder, the final agent (the zoo's ``<algo>/<env>_<k>/<env>.zip`` of the trial's last start)
against a fresh extractor built with the same kwargs (the pretrained weights, read offline) prints one JSON line:

- ``weight_change``: per backbone stage, ``||w - w0|| / ||w0||`` over the stage's parameters (0 for a frozen stage);
- ``weight_rms_change``: per stage, the root mean square of ``w - w0`` over its convolution weights (what one weight
  moved, to compare with the learning rate times the number of optimizer steps);
- ``bn_stats_change``: the same over the BatchNorm running statistics (0 unless ``train_bn``);
- ``feature_cosine`` / ``feature_rel_change``: over ``--frames`` observations of the agent's own episodes (its
  stochastic policy, the trial's config's env wrappers and frame stack), the mean cosine similarity between the
  agent's backbone output and the pretrained backbone's output, and the mean ``||f - f0|| / ||f0||``.

A frozen trial is the control: every number is 0 change, cosine 1. The sweep folders stay under ``logs/``; what this
prints is small and is::

    python benchmarks/backbone_drift.py logs/sweeps/carracing-100k-finetune*-s1/*_seed1 \\
        logs/sweeps/carracing-100k-frozen-ln-s1/frozen_seed1 > docs/learning/carracing-100k-drift.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def final_model(trial: Path, algo: str, env_id: str) -> Path:
    """The zoo's saved final agent of the trial's last start."""
    runs = sorted((trial / algo).glob(f"{env_id}_*"), key=lambda run: int(run.name.rpartition("_")[2]))
    saved = [run / f"{env_id}.zip" for run in runs if (run / f"{env_id}.zip").exists()]
    if not saved:
        raise SystemExit(f"{trial}: no final agent {algo}/{env_id}_<k>/{env_id}.zip (has the trial finished?)")
    return saved[-1]


def final_agent(trial: Path) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A finished sweep trial's spec (``trial.json``), its final agent (:func:`final_model`, loaded on the CPU) and
    the config entry it trained with (the config's entry with the sweep's ``-params`` overrides)."""
    from rl_zoo3.utils import ALGOS

    from sb3_pretrained import zoo
    from sb3_pretrained.trial import _zoo_hyperparams

    spec = json.loads((trial / "trial.json").read_text())["spec"]
    model = ALGOS[spec["algo"]].load(final_model(trial, spec["algo"], spec["env_id"]), device="cpu")
    config = {**zoo.load_config(spec["config"])[spec["env_id"]], **(_zoo_hyperparams(tuple(spec["hyperparams"])) or {})}
    return spec, model, config


def relative_change(now: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    change = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(now, before, strict=True))
    size = sum(float(b.double().pow(2).sum()) for b in before)
    return (change / size) ** 0.5 if size else 0.0


def config_env(entry: dict[str, Any], env_id: str, seed: int, shift: str | None = None) -> Any:
    """One env as a config entry builds it (its env_kwargs, env_wrapper and frame_stack); under a held-out shift
    (:func:`sb3_pretrained.shifts.parse_shift`'s syntax) as the sweep applies it: env kwargs added, pixel changes
    after the config's wrappers."""
    from rl_zoo3.utils import get_wrapper_class
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from sb3_pretrained.shifts import VisualShift, parse_shift

    wrapper = get_wrapper_class(entry)
    env_kwargs = dict(entry.get("env_kwargs") or {})
    if shift is not None:
        parsed = parse_shift(shift)
        env_kwargs.update(dict(parsed.env_kwargs))
        if parsed.pixels:

            def wrapper(env: Any, inner: Any = wrapper, pixels: Any = parsed.pixels) -> Any:
                return VisualShift(inner(env) if inner is not None else env, pixels)

    env = make_vec_env(env_id, n_envs=1, seed=seed, env_kwargs=env_kwargs, wrapper_class=wrapper)
    return VecFrameStack(env, entry["frame_stack"]) if entry.get("frame_stack") else env


def observations(model: Any, entry: dict[str, Any], env_id: str, frames: int, seed: int) -> np.ndarray:
    """``frames`` observations from the agent's own (stochastic) episodes, in the env its config trains on."""
    env = config_env(entry, env_id, seed)
    obs = env.reset()
    seen = []
    while len(seen) < frames:
        action, _ = model.predict(obs, deterministic=False)
        obs, _, _, _ = env.step(action)
        seen.append(obs[0])
    env.close()
    return np.stack(seen)


def drift(trial: Path, frames: int, seed: int) -> dict[str, Any]:
    from stable_baselines3.common.preprocessing import preprocess_obs

    spec, model, config = final_agent(trial)
    extractor = model.policy.features_extractor
    kwargs = model.policy_kwargs.get("features_extractor_kwargs", {})
    reference = type(extractor)(model.observation_space, **kwargs).eval()
    extractor.eval()

    tuned, pretrained = dict(extractor.backbone.named_parameters()), dict(reference.backbone.named_parameters())
    weight_change = {
        stage.name: relative_change([tuned[n].detach() for n in stage.params], [pretrained[n].detach() for n in stage.params])
        for stage in extractor.stages
    }
    stats = [
        (name, buffer)
        for name, buffer in extractor.backbone.named_buffers()
        if name.rpartition(".")[2] in ("running_mean", "running_var")
    ]
    reference_buffers = dict(reference.backbone.named_buffers())
    bn_change = relative_change([b for _, b in stats], [reference_buffers[n] for n, _ in stats])
    rms_change = {}
    for stage in extractor.stages:
        convs = [n for n in stage.params if tuned[n].dim() == 4]
        moved = sum(float((tuned[n].detach() - pretrained[n].detach()).double().pow(2).sum()) for n in convs)
        rms_change[stage.name] = (moved / max(1, sum(tuned[n].numel() for n in convs))) ** 0.5

    obs = observations(model, config, spec["env_id"], frames, seed)
    with torch.no_grad():
        batch = model.policy.obs_to_tensor(obs)[0]
        batch = preprocess_obs(batch, model.observation_space, normalize_images=model.policy.normalize_images)
        now = nn.Flatten()(extractor.forward_backbone(batch)).double()
        before = nn.Flatten()(reference.forward_backbone(batch)).double()
    cosine = nn.functional.cosine_similarity(now, before, dim=1)
    rel = (now - before).norm(dim=1) / before.norm(dim=1)
    return {
        "sweep": trial.parent.name,
        "trial": trial.name,
        "trainable_stages": extractor.trainable_stages,
        "weight_change": {name: round(value, 5) for name, value in weight_change.items()},
        "weight_rms_change": {name: float(f"{value:.3g}") for name, value in rms_change.items()},
        "bn_stats_change": round(bn_change, 6),
        "frames": frames,
        "feature_cosine": round(float(cosine.mean()), 4),
        "feature_cosine_min": round(float(cosine.min()), 4),
        "feature_rel_change": round(float(rel.mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="+", type=Path, help="sweep trial folders (<sweep>/<variant>_seed<k>)")
    parser.add_argument("--frames", type=int, default=256, help="observations the features are compared on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes the observations come from")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for trial in args.trials:
        print(json.dumps(drift(trial, args.frames, args.seed)), flush=True)


if __name__ == "__main__":
    main()
