"""What the training itself logged, at fixed steps: the stochastic policy's training episodes and its entropy.

The sweep's evaluations (``evaluations.csv``) show the deterministic policy; this reads each trial folder's SB3
TensorBoard logs (every start of a resumed run) and prints, every ``--every`` env steps and at the last step logged,
the last value logged at or before it of:

- ``ep_rew_mean``: SB3's ``rollout/ep_rew_mean``, the mean return of the last 100 training episodes (unnormalized);
- ``entropy``: the policy's mean entropy over the last update's minibatches (minus SB3's ``train/entropy_loss``;
  log 5 = 1.609 is uniform over CarRacing's 5 actions);
- ``backbone_grad_norm``: ``finetune/backbone_grad_norm`` where the backbone trains (after SB3's gradient clipping).

The TensorBoard logs stay under ``logs/`` (not committed); what this prints is small and is::

    python benchmarks/training_curves.py logs/sweeps/carracing-100k-*/*_seed* > docs/learning/carracing-100k-training.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TAGS = {
    "ep_rew_mean": ("rollout/ep_rew_mean", 1.0),
    "entropy": ("train/entropy_loss", -1.0),
    "backbone_grad_norm": ("finetune/backbone_grad_norm", 1.0),
}


def scalars(trial: Path) -> dict[str, dict[int, float]]:
    """Every logged value of ``TAGS`` by env step, over all event files of the trial's SB3 logs."""
    series: dict[str, dict[int, float]] = {name: {} for name in TAGS}
    files = sorted((trial / "tensorboard").rglob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"{trial}: no SB3 TensorBoard logs under {trial / 'tensorboard'} (is it a sweep trial folder?)")
    for file in files:
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        logged = set(events.Tags()["scalars"])
        for name, (tag, sign) in TAGS.items():
            if tag in logged:
                series[name].update({e.step: sign * e.value for e in events.Scalars(tag)})
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="+", type=Path, help="sweep trial folders (<sweep>/<variant>_seed<k>)")
    parser.add_argument("--every", type=int, default=10_000, help="env steps between rows (default 10000)")
    args = parser.parse_args()
    for trial in args.trials:
        variant, _, seed = trial.name.rpartition("_seed")
        series = scalars(trial)
        last = max((max(s) for s in series.values() if s), default=0)
        steps = list(range(args.every, last + 1, args.every))
        for step in steps + ([last] if not steps or steps[-1] != last else []):
            row: dict[str, object] = {"sweep": trial.parent.name, "variant": variant, "seed": int(seed), "step": step}
            for name, values in series.items():
                before = [s for s in values if s <= step]
                if before:
                    row[name] = round(values[max(before)], 4)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
