"""Do frozen ImageNet features hold what driving CarRacing needs? A behaviour-cloning probe.

The frozen agents of the CarRacing study reach less than half of NatureCNN's return. Either the features lack what
the task needs, or PPO gets less out of them. This probe takes RL out: it clones a trained agent (the teacher, e.g.
the study's NatureCNN seed 1) into two students with the study's exact policies, trained the same way by supervised
learning on the same teacher data:

- ``frozen``: the frozen variant's policy (efficientnet_lite0 feature map 2, the spatial head, SB3's MLP);
- ``scratch``: SB3's ``CnnPolicy`` (NatureCNN), trained end to end from a random init.

Data: ``--steps`` observations of the teacher's own driving in the study's env (the config's wrappers, frame skip 2,
2 frames stacked), where with probability ``--noise`` a random action is taken instead (so the data shows recoveries;
the label is always the teacher's deterministic action). Students: Adam (``--lr``), ``--epochs`` over the data in
minibatches of 256, loss ``-log pi(teacher action | obs)``. Reported per student: held-out accuracy (the last 20% of
the steps) and the return of its deterministic policy over ``--episodes`` evaluation episodes (the trials' eval seed).
If the frozen student drives about as well as the NatureCNN student, the features hold what is needed and the gap is
in RL; if not, the features are short of it. Every model is also evaluated under the study's held-out shifts
(``--shifts``), which says whether the frozen features' robustness holds once the policy on them drives well. One
JSON line per model (the teacher first)::

    python benchmarks/bc_probe.py logs/sweeps/carracing-100k-a/scratch_seed1 --seed 0
    python benchmarks/bc_probe.py logs/sweeps/carracing-100k-scratch-s2/scratch_seed2 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from backbone_drift import config_env, final_model

from sb3_pretrained.trial import EVAL_SEED  # the trials' evaluations play these tracks

CONFIGS = Path(__file__).resolve().parent.parent / "docs" / "learning" / "configs"
FROZEN_CONFIG = CONFIGS / "ppo_carracing_frozen_map2.yml"
ENV_ID = "CarRacing-v3"


def teacher_data(teacher: Any, entry: dict[str, Any], steps: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    env = config_env(entry, ENV_ID, seed)
    obs = env.reset()
    observations, actions = [], []
    for _ in range(steps):
        action, _ = teacher.predict(obs, deterministic=True)
        observations.append(obs[0])
        actions.append(int(action[0]))
        if rng.random() < noise:
            action = np.array([rng.integers(env.action_space.n)])
        obs, _, _, _ = env.step(action)
    env.close()
    return np.stack(observations), np.array(actions)


def student(kind: str, entry: dict[str, Any], seed: int) -> Any:
    from stable_baselines3 import PPO

    env = config_env(entry, ENV_ID, seed)
    from rl_zoo3.utils import get_class_by_name

    # The config names the policy by its import path, which rl_zoo3 resolves with the same function.
    policy = get_class_by_name(entry["policy"]) if kind == "frozen" else "CnnPolicy"
    kwargs = entry.get("policy_kwargs", {}) if kind == "frozen" else {}
    return PPO(policy, env, policy_kwargs=kwargs, seed=seed, device="cpu")


def clone(model: Any, obs: np.ndarray, actions: np.ndarray, epochs: int, lr: float, seed: int) -> float:
    """Supervised training of the policy's action distribution on (obs, teacher action); returns seconds."""
    policy = model.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    policy.set_training_mode(True)
    for _ in range(epochs):
        order = rng.permutation(len(obs))
        for batch in np.array_split(order, max(1, len(order) // 256)):
            tensor = policy.obs_to_tensor(obs[batch])[0]
            _, log_prob, _ = policy.evaluate_actions(tensor, torch.as_tensor(actions[batch]))
            loss = -log_prob.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.set_training_mode(False)
    return time.perf_counter() - start


def accuracy(model: Any, obs: np.ndarray, actions: np.ndarray) -> float:
    predicted = np.concatenate([model.predict(obs[i : i + 256], deterministic=True)[0] for i in range(0, len(obs), 256)])
    return float(np.mean(predicted == actions))


def episode_returns(model: Any, entry: dict[str, Any], episodes: int, shift: str | None = None) -> list[float]:
    from stable_baselines3.common.evaluation import evaluate_policy

    env = config_env(entry, ENV_ID, EVAL_SEED, shift)
    env.seed(EVAL_SEED)
    returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True)
    env.close()
    return [float(r) for r in returns]


def evaluation(model: Any, entry: dict[str, Any], episodes: int, shifts: list[str]) -> dict[str, Any]:
    """Mean return (and every episode's) on the study's env and under each held-out shift, with its ratio."""
    returns = episode_returns(model, entry, episodes)
    row: dict[str, Any] = {"return_mean": round(float(np.mean(returns)), 1), "returns": [round(r, 1) for r in returns]}
    for shift in shifts:
        shifted = episode_returns(model, entry, episodes, shift)
        row[shift] = {"return_mean": round(float(np.mean(shifted)), 1), "returns": [round(r, 1) for r in shifted],
                      "ratio": round(float(np.mean(shifted) / np.mean(returns)), 3)}  # fmt: skip
    return row


def main() -> None:
    from rl_zoo3.utils import ALGOS

    from sb3_pretrained import zoo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path, help="a finished CarRacing sweep trial folder (<sweep>/<variant>_seed<k>)")
    parser.add_argument("--steps", type=int, default=8000, help="teacher observations (the last 20%% held out)")
    parser.add_argument("--noise", type=float, default=0.2, help="probability of a random action while collecting")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per student and the teacher")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shifts", nargs="*", default=["brightness=0.6", "env:domain_randomize=true"],
                        help="held-out shifts every model is also evaluated under (the study's)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    entry = zoo.load_config(FROZEN_CONFIG)[ENV_ID]
    teacher = ALGOS["ppo"].load(final_model(args.teacher, "ppo", ENV_ID), device="cpu")
    common = {"teacher": str(args.teacher), "steps": args.steps, "noise": args.noise, "epochs": args.epochs,
              "lr": args.lr, "episodes": args.episodes, "seed": args.seed}  # fmt: skip
    start = time.perf_counter()
    obs, actions = teacher_data(teacher, entry, args.steps, args.noise, args.seed)
    split = int(0.8 * len(obs))
    counts = np.bincount(actions, minlength=5).tolist()
    returns = evaluation(teacher, entry, args.episodes, args.shifts)
    collect_s = round(time.perf_counter() - start)
    print(json.dumps({**common, "model": "teacher", "action_counts": counts, "collect_s": collect_s, **returns}),
          flush=True)  # fmt: skip
    for kind in ("frozen", "scratch"):
        model = student(kind, entry, args.seed)
        seconds = clone(model, obs[:split], actions[:split], args.epochs, args.lr, args.seed)
        returns = evaluation(model, entry, args.episodes, args.shifts)
        fit = {"train_accuracy": round(accuracy(model, obs[:split], actions[:split]), 3),
               "heldout_accuracy": round(accuracy(model, obs[split:], actions[split:]), 3)}  # fmt: skip
        print(json.dumps({**common, "model": kind, "train_s": round(seconds), **fit, **returns}), flush=True)


if __name__ == "__main__":
    main()
