"""What the training itself logged, at fixed steps: the stochastic policy's training episodes, its entropy, and
how far each PPO update moved the policy.

The sweep's evaluations (``evaluations.csv``) show the deterministic policy; this reads each trial folder's SB3
TensorBoard logs (every start of a resumed run) and prints, every ``--every`` env steps and at the last step logged,
the last value logged at or before it of:

- ``ep_rew_mean``: SB3's ``rollout/ep_rew_mean``, the mean return of the last 100 training episodes (unnormalized);
- ``entropy``: the policy's mean entropy over the last update's minibatches (minus SB3's ``train/entropy_loss``;
  log 5 = 1.609 is uniform over CarRacing's 5 actions);
- ``approx_kl``, ``clip_fraction``: how far the update moved the policy on its own rollout (SB3's ``train/approx_kl``,
  the KL estimate of the last epoch; ``train/clip_fraction``, the share of samples whose probability ratio left
  ``1 +- clip_range``, over all epochs);
- ``explained_variance``: of the returns by the value function, before the update (``train/explained_variance``);
- ``backbone_grad_norm``: ``finetune/backbone_grad_norm`` where the backbone trains (after SB3's gradient clipping).

The TensorBoard logs stay under ``logs/`` (not committed); what this prints is small and is::

    python benchmarks/training_curves.py logs/sweeps/carracing-100k-*/*_seed* > docs/learning/carracing-100k-training.jsonl

``--table`` prints instead one Markdown row per trial: the mean over every update logged in each window of env steps
(``--windows``, default 0-40k, 40-70k, 70k-end) of the clip fraction and the approximate KL, and over the last window
of the entropy and the explained variance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TAGS = {
    "ep_rew_mean": ("rollout/ep_rew_mean", 1.0),
    "entropy": ("train/entropy_loss", -1.0),
    "approx_kl": ("train/approx_kl", 1.0),
    "clip_fraction": ("train/clip_fraction", 1.0),
    "explained_variance": ("train/explained_variance", 1.0),
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


def window_mean(values: dict[int, float], low: float, high: float) -> str:
    """Mean of the values logged at env steps in ``(low, high]``, or ``-`` where none was."""
    inside = [v for step, v in values.items() if low < step <= high]
    return f"{sum(inside) / len(inside):.3g}" if inside else "-"


def table(trials: list[Path], windows: list[int]) -> None:
    """One Markdown row per trial of window means (see the module's docstring)."""
    edges = [*windows, float("inf")]
    bounds = list(zip(edges, edges[1:], strict=False))
    spans = [f"{lo // 1000}k-{hi // 1000}k" if hi != float("inf") else f"{lo // 1000}k-end" for lo, hi in bounds]
    columns = [f"clip fraction {s}" for s in spans] + [f"approx. KL {s}" for s in spans]
    columns += [f"entropy {spans[-1]}", f"explained var. {spans[-1]}"]
    print("| trial | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for trial in trials:
        series = scalars(trial)
        cells = [window_mean(series[name], lo, hi) for name in ("clip_fraction", "approx_kl") for lo, hi in bounds]
        cells += [window_mean(series[name], *bounds[-1]) for name in ("entropy", "explained_variance")]
        print(f"| {trial.parent.name}/{trial.name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="+", type=Path, help="sweep trial folders (<sweep>/<variant>_seed<k>)")
    parser.add_argument("--every", type=int, default=10_000, help="env steps between rows (default 10000)")
    parser.add_argument("--table", action="store_true", help="print one Markdown row of window means per trial")
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 40_000, 70_000],
                        help="--table's window starts in env steps, increasing (default 0 40000 70000)")  # fmt: skip
    args = parser.parse_args()
    if args.table:
        if args.windows != sorted(set(args.windows)) or args.windows[0] < 0:
            parser.error(f"--windows must be increasing env steps from 0 up, got {args.windows}")
        table(args.trials, args.windows)
        return
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
