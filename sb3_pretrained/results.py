"""The report of a sweep, rebuilt from trial folders alone: ``results.csv``, ``summary.md`` and ``curves.png``.

Any set of trial folders will do (one sweep, several, or trials copied from other machines): each holds its
``trial.json`` and ``evaluations.csv`` (:mod:`sb3_pretrained.trial`). Runs are grouped by (algorithm, env, variant).
The final evaluation of each finished run is its score. Aggregates follow Agarwal et al. 2021 ("Deep RL at the Edge of
the Statistical Precipice"): interquartile mean (IQM) and mean, with 95% confidence intervals from a stratified
bootstrap over runs (percentile method), as ``rliable.library.get_interval_estimates`` computes them. The bootstrap is
implemented here with numpy, because rliable 1.2.0 does not import with pandas 3 (its dependency ``arch`` < 8 fails,
and ``arch`` 8 breaks rliable's bootstrap class).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from sb3_pretrained.atomic import write_atomic
from sb3_pretrained.trial import EVALUATION_COLUMNS, TRIAL_FILE, read_evaluations, read_shifts

#: Bootstrap resamples for the final scores (rliable's default) and for each point of the curves.
REPS = 50_000
CURVE_REPS = 2_000
CONFIDENCE = 0.95
#: Fractions of a run's env steps at which the report gives the return reached so far (25k/50k/100k of a 100k run).
BUDGETS = (0.25, 0.5, 1.0)
RESULTS_COLUMNS = ("algo", "env", "variant", "seed", "status", *EVALUATION_COLUMNS, "trial_folder")


class ReportError(ValueError):
    """Trial folders a report cannot be made from; the message says what to do."""


@dataclass
class Trial:
    """One trial as its folder records it."""

    folder: Path
    algo: str
    env_id: str
    variant: str
    seed: int
    status: str  # "finished", "error", "running" (interrupted) or "new"
    error: str | None
    evaluations: list[dict[str, float]]
    shifts: list[dict[str, Any]] = field(default_factory=list)
    n_timesteps: int | None = None  # the env steps the run was asked for (its spec)
    starts: list[dict[str, Any]] = field(default_factory=list)  # trial.json's starts: time, env step, code, machine

    @property
    def group(self) -> tuple[str, str, str]:
        return self.algo, self.env_id, self.variant

    @property
    def final(self) -> dict[str, float]:
        return self.evaluations[-1]


def _starts(trial: Trial) -> str:
    """Each start of a run as ``<env step> @ <commit>``, for the report's table of runs."""
    def code(start: dict[str, Any]) -> str:
        commit = start.get("commit")
        return "?" if not commit else commit[:7] + ("*" if start.get("source_modified") else "")

    return ", ".join(f"{int(start.get('env_step', 0))} @ {code(start)}" for start in trial.starts)


def read_trials(folders: Sequence[str | Path]) -> list[Trial]:
    """Every trial under ``folders`` (sweep folders or trial folders), sorted by group and seed.

    :raises ReportError: a folder holds no trial, or the same (algo, env, variant, seed) appears twice
    """
    trials: dict[tuple[str, str, str, int], Trial] = {}
    for folder in map(Path, folders):
        paths = sorted(folder.rglob(TRIAL_FILE))
        if not paths:
            raise ReportError(f"'{folder}' holds no trial ({TRIAL_FILE} files): give a sweep folder or trial folders.")
        for path in paths:
            data = json.loads(path.read_text())
            spec = data["spec"]
            trial = Trial(
                path.parent, spec["algo"], spec["env_id"], spec["variant"], spec["seed"], data["status"], data.get("error"),
                read_evaluations(path.parent), read_shifts(path.parent), spec.get("n_timesteps"), data.get("starts", []),
            )  # fmt: skip
            key = (*trial.group, trial.seed)
            if key in trials:
                raise ReportError(
                    f"Seed {trial.seed} of {trial.variant} ({trial.algo}, {trial.env_id}) is in both {trials[key].folder} "
                    f"and {trial.folder}: each run must appear once (give sweeps on other machines other --first-seed)."
                )
            trials[key] = trial
    return sorted(trials.values(), key=lambda t: (*t.group, t.seed))


def iqm(scores: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(scores, 0.25)``, as rliable)."""
    return stats.trim_mean(scores, 0.25, axis=axis)


def bootstrap_ci(
    scores: np.ndarray, statistic: Callable[..., np.ndarray], reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """Point estimate and 95% CI of ``statistic`` over runs, by rliable's stratified bootstrap (percentile method).

    :param scores: ``(runs, tasks)``; runs are resampled with replacement within each task (the strata)
    :param statistic: ``f(samples, axis)`` reducing the flattened run x task axis, e.g. :func:`iqm` or ``np.mean``
    :param reps: bootstrap resamples
    :param seed: of the resampling, so that a report is reproducible
    :return: (point estimate, lower, upper)
    """
    scores = np.asarray(scores, dtype=float)
    runs, tasks = scores.shape
    index = np.random.default_rng(seed).integers(0, runs, size=(reps, runs, tasks))
    samples = scores[index, np.arange(tasks)].reshape(reps, -1)
    low, high = np.percentile(statistic(samples, axis=1), [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return float(statistic(scores.reshape(-1), axis=None)), float(low), float(high)


def _curve(trials: list[Trial]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Env steps every run evaluated at, and the IQM with its 95% band over runs at each of them."""
    steps = sorted(set.intersection(*({row["env_step"] for row in t.evaluations} for t in trials)))
    returns = np.array([[row["eval_return_mean"] for row in t.evaluations if row["env_step"] in steps] for t in trials])
    index = np.random.default_rng(0).integers(0, len(trials), size=(CURVE_REPS, len(trials)))
    band = np.percentile(iqm(returns[index], axis=1), [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)], axis=0)
    return np.array(steps), iqm(returns, axis=0), band[0], band[1]


def results_csv(trials: Sequence[Trial]) -> str:
    """One row per evaluation of every trial (the last row of a finished trial is its final evaluation)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULTS_COLUMNS)
    for t in trials:
        for row in t.evaluations:
            writer.writerow([t.algo, t.env_id, t.variant, t.seed, t.status, *(row[k] for k in EVALUATION_COLUMNS), t.folder])
    return out.getvalue()


def _groups(trials: Sequence[Trial]) -> dict[tuple[str, str, str], list[Trial]]:
    groups: dict[tuple[str, str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault(t.group, []).append(t)
    return groups


def summary_markdown(trials: Sequence[Trial], sources: Sequence[str | Path]) -> str:
    """Per (algo, env, variant): final eval return as IQM and mean with 95% CIs, runs, env steps, wall-clock."""
    lines = [
        "# Sweep summary",
        "",
        f"From {len(trials)} trial folders under: {', '.join(str(s) for s in sources)}.",
        "Score of a run: its final evaluation (deterministic policy, fixed eval seeds). IQM and mean over runs with 95% "
        f"confidence intervals (stratified bootstrap over runs, percentile method, {REPS:,} resamples, as rliable's "
        "`get_interval_estimates`).",
        "",
        "| algo | env | variant | runs | failed | unfinished | env steps | final return IQM [95% CI] "
        "| final return mean [95% CI] | wall-clock per run (s) |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for (algo, env_id, variant), group in _groups(trials).items():
        done = [t for t in group if t.status == "finished"]
        failed = sum(t.status == "error" for t in group)
        row = f"| {algo} | {env_id} | {variant} | {len(done)} | {failed} | {len(group) - len(done) - failed} |"
        if done:
            scores = np.array([[t.final["eval_return_mean"]] for t in done])
            point, low, high = bootstrap_ci(scores, iqm)
            mean, mean_low, mean_high = bootstrap_ci(scores, np.mean)
            steps = sorted({int(t.final["env_step"]) for t in done})
            wall = np.mean([t.final["wall_clock_s"] for t in done])
            row += (
                f" {'/'.join(map(str, steps))} | {point:.4g} [{low:.4g}, {high:.4g}] | {mean:.4g} [{mean_low:.4g}, "
                f"{mean_high:.4g}] | {wall:.1f} |"
            )
        else:
            row += " | | | |"
        lines.append(row)
    lines += ["", "## Runs", "", "Starts: the env step each start of the run began at, and the commit of its code (`*`: with "
              "uncommitted changes to the package; `?`: unknown, i.e. not run from a git checkout of the package, or a "
              "trial from before starts recorded it).", "",
              "| algo | env | variant | seed | status | env steps | final return | wall-clock (s) | starts |"]
    lines.append("|---|---|---|---:|---|---:|---:|---:|---|")
    for t in trials:
        last = t.evaluations[-1] if t.evaluations else None
        numbers = f"{int(last['env_step'])} | {last['eval_return_mean']:.4g} | {last['wall_clock_s']:.1f}" if last else "| |"
        lines.append(f"| {t.algo} | {t.env_id} | {t.variant} | {t.seed} | {t.status} | {numbers} | {_starts(t)} |")
    lines += _budgets(trials)
    lines += _evaluations(trials)
    lines += _generalization(trials)
    errors = [t for t in trials if t.status == "error"]
    if errors:
        lines += ["", "## Failed trials", ""]
        lines += [f"- `{t.folder}`: {t.error}" for t in errors]
    return "\n".join(lines) + "\n"


def return_at(trial: Trial, step: float) -> tuple[float, float] | None:
    """(env step, return) of ``trial``'s last evaluation at or before ``step``; None if it has none."""
    rows = [row for row in trial.evaluations if row["env_step"] <= step]
    return (rows[-1]["env_step"], rows[-1]["eval_return_mean"]) if rows else None


def _periodic(trial: Trial) -> list[dict[str, float]]:
    """A run's evaluations every ``eval_freq`` steps: all but the final one of a finished run."""
    return trial.evaluations[:-1] if trial.status == "finished" else trial.evaluations


def _evaluations(trials: Sequence[Trial]) -> list[str]:
    """Every evaluation of every run, one row per run and one column per env step, a table per (algo, env): the
    curves as numbers. The final evaluation (after the last step, with its own episode count) is its own column."""
    lines = ["", "## Every evaluation", "",
             "Mean return of each evaluation (deterministic policy, fixed eval seeds), by env step; `final`: the "
             "evaluation after the last step."]  # fmt: skip
    tables = 0
    for algo, env_id in dict.fromkeys((t.algo, t.env_id) for t in trials):
        runs = [t for t in trials if (t.algo, t.env_id) == (algo, env_id) and t.evaluations]
        if not runs:
            continue
        steps = sorted({int(row["env_step"]) for t in runs for row in _periodic(t)})
        lines += ["", f"{algo}, {env_id}:", "",
                  "| variant | seed | status | " + " | ".join(map(str, steps)) + " | final |",
                  "|---|---:|---|" + "---:|" * (len(steps) + 1)]  # fmt: skip
        for t in runs:
            by_step = {int(row["env_step"]): f"{row['eval_return_mean']:.4g}" for row in _periodic(t)}
            final = f"{t.final['eval_return_mean']:.4g}" if t.status == "finished" else ""
            cells = [by_step.get(step, "") for step in steps] + [final]
            lines.append(f"| {t.variant} | {t.seed} | {t.status} | " + " | ".join(cells) + " |")
        tables += 1
    return lines if tables else []


def _budgets(trials: Sequence[Trial]) -> list[str]:
    """Per variant, the return reached after a quarter and half of each run's ``n_timesteps`` (:data:`BUDGETS`; its
    last evaluation at or before that step) and at its end (its final evaluation), IQM and mean over runs with 95%
    CIs."""
    lines = [
        "", "## Learning speed: the return reached at fixed budgets", "",
        "A quarter and half of each run's env steps: its last evaluation at or before that step (`evaluated at` gives "
        "the steps; evaluations come every `eval_freq` steps, so a budget between two uses the earlier one). All of "
        "them: its final evaluation.", "",
        "| algo | env | variant | budget (env steps) | evaluated at | runs | return IQM [95% CI] | return mean [95% CI] |",
        "|---|---|---|---:|---|---:|---|---|",
    ]  # fmt: skip
    rows = 0
    for (algo, env_id, variant), group in _groups(trials).items():
        done = [t for t in group if t.status == "finished"]
        for fraction in BUDGETS:
            budgets = [(t.n_timesteps or t.final["env_step"]) * fraction for t in done]
            if fraction == 1.0:
                reached = [(t.final["env_step"], t.final["eval_return_mean"]) for t in done]
            else:
                reached = [r for t, b in zip(done, budgets, strict=True) if (r := return_at(t, b)) is not None]
            if not reached:
                continue
            scores = np.array([[value] for _, value in reached])
            point, low, high = bootstrap_ci(scores, iqm)
            mean, mean_low, mean_high = bootstrap_ci(scores, np.mean)
            budget = "/".join(f"{b:.0f}" for b in sorted(set(budgets)))
            at = "/".join(f"{step:.0f}" for step in sorted({step for step, _ in reached}))
            lines.append(
                f"| {algo} | {env_id} | {variant} | {budget} | {at} | {len(reached)} | {point:.4g} [{low:.4g}, "
                f"{high:.4g}] | {mean:.4g} [{mean_low:.4g}, {mean_high:.4g}] |"
            )
            rows += 1
    return lines if rows else []


def _generalization(trials: Sequence[Trial]) -> list[str]:
    """Per variant and held-out shift: the final agents' return under the shift, and its ratio to their own final
    in-distribution return (IQM and mean over runs with 95% CIs; the ratio is the mean shifted return over the mean
    unshifted one, bootstrapped over runs)."""
    shifted = [t for t in trials if t.status == "finished" and t.shifts]
    if not shifted:
        return []
    lines = [
        "", "## Generalization: the final agents under held-out visual shifts", "",
        "Each run's final agent, evaluated with the same episodes count and seeds under a shift it never saw "
        "(`shifts.csv` in its folder). Ratio: mean return under the shift / mean final return without it; where that "
        "mean is not above 0 (an agent no better than the env's worst), a ratio says nothing and is left out (-).", "",
        "| algo | env | variant | shift | runs | return IQM [95% CI] | return mean [95% CI] | ratio to unshifted [95% CI] |",
        "|---|---|---|---|---:|---|---|---|",
    ]  # fmt: skip
    for (algo, env_id, variant), group in _groups(shifted).items():
        for name in dict.fromkeys(row["shift"] for t in group for row in t.shifts):
            runs = [(t.final["eval_return_mean"], row["eval_return_mean"]) for t in group for row in t.shifts
                    if row["shift"] == name]  # fmt: skip
            base, under = np.array([[b] for b, _ in runs]), np.array([[u] for _, u in runs])
            point, low, high = bootstrap_ci(under, iqm)
            mean, mean_low, mean_high = bootstrap_ci(under, np.mean)
            ratio, ratio_low, ratio_high = _ratio_ci(under[:, 0], base[:, 0])
            lines.append(
                f"| {algo} | {env_id} | {variant} | `{name}` | {len(runs)} | {point:.4g} [{low:.4g}, {high:.4g}] | "
                f"{mean:.4g} [{mean_low:.4g}, {mean_high:.4g}] | "
                + ("- |" if np.isnan(ratio) else f"{ratio:.3g} [{ratio_low:.3g}, {ratio_high:.3g}] |")
            )
    return lines


def _ratio_ci(under: np.ndarray, base: np.ndarray, reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """mean(under) / mean(base) over runs, with a 95% percentile bootstrap CI resampling runs (pairs kept)."""
    if base.mean() <= 0:  # a ratio of returns that are not positive means nothing (-40 -> -30 is no "0.75 kept")
        return float("nan"), float("nan"), float("nan")
    index = np.random.default_rng(seed).integers(0, len(base), size=(reps, len(base)))
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = under[index].mean(axis=1) / base[index].mean(axis=1)
    low, high = np.nanpercentile(samples, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return float(under.mean() / base.mean()), float(low), float(high)


def plot_curves(trials: Sequence[Trial], path: str | Path) -> None:
    """Eval return vs env steps, one line (IQM over runs) and 95% band per variant, one panel per (algo, env)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], dict[str, list[Trial]]] = {}
    for (algo, env_id, variant), group in _groups(trials).items():
        done = [t for t in group if t.status == "finished"]
        if done:
            panels.setdefault((algo, env_id), {})[variant] = done
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, ((algo, env_id), variants) in zip(axes[0], panels.items(), strict=True):
        for variant, done in variants.items():
            steps, center, low, high = _curve(done)
            axis.plot(steps, center, label=f"{variant} ({len(done)} runs)")
            axis.fill_between(steps, low, high, alpha=0.25)
        axis.set(title=f"{algo.upper()} {env_id}", xlabel="env steps", ylabel="eval return (IQM, 95% CI)")
        axis.legend()
    figure.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(path)


def write_report(folders: Sequence[str | Path], output: str | Path) -> list[Trial]:
    """Write ``results.csv``, ``summary.md`` and ``curves.png`` into ``output`` from the trial folders under ``folders``.

    :raises ReportError: no trial, or no finished trial, under ``folders``
    """
    trials = read_trials(folders)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / "results.csv", results_csv(trials))
    write_atomic(output / "summary.md", summary_markdown(trials, folders))
    if not any(t.status == "finished" for t in trials):
        raise ReportError(
            f"No finished trial under {', '.join(map(str, folders))} (statuses: "
            f"{', '.join(sorted({t.status for t in trials}))}); resume the sweep with --resume FOLDER."
        )
    plot_curves(trials, output / "curves.png")
    return trials
