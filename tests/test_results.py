"""The sweep report from trial folders alone: results.csv holds every evaluation, summary.md the IQM and mean of the
final returns with stratified-bootstrap CIs, curves.png a line per variant; bad folders get clear errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

from sb3_pretrained import results
from sb3_pretrained.cli import main
from sb3_pretrained.trial import TrialSpec


def fake_trial(folder: Path, variant: str, seed: int, returns: list[float], status: str = "finished",
               error: str | None = None, starts: list[dict] | None = None) -> Path:  # fmt: skip
    """A trial folder as run_trial leaves it: evaluations every 100 env steps with the given mean returns."""
    spec = TrialSpec("ppo", "MiniGrid-Empty-5x5-v0", variant, seed, "configs/x.yml", 100 * len(returns), 100, 3, 3, 100)
    path = folder / spec.name
    path.mkdir(parents=True)
    state = {"spec": dataclasses.asdict(spec), "status": status, "error": error, "starts": starts or []}
    (path / "trial.json").write_text(json.dumps(state))
    rows = ["env_step,wall_clock_s,eval_return_mean,eval_return_std,eval_episodes"]
    rows += [f"{100 * (i + 1)},{2.0 * (i + 1)},{r},0.5,3" for i, r in enumerate(returns)]
    (path / "evaluations.csv").write_text("\n".join(rows) + "\n")
    return path


def reference_bootstrap(scores: list[float], statistic, reps: int = 20_000) -> tuple[float, float]:
    """A plain-Python percentile bootstrap over runs (one task), independent of results.bootstrap_ci."""
    rng = random.Random(1)
    values = sorted(statistic([rng.choice(scores) for _ in scores]) for _ in range(reps))
    return values[int(0.025 * reps)], values[int(0.975 * reps)]


def python_iqm(values: list[float]) -> float:
    values, cut = sorted(values), len(values) // 4
    middle = values[cut : len(values) - cut]
    return sum(middle) / len(middle)


def test_iqm_and_confidence_intervals():
    finals = [0.0, 1.0, 2.0, 10.0, 3.0, 4.0, 5.0, 6.0]
    point, low, high = results.bootstrap_ci(np.array([finals]).T, results.iqm)
    assert point == pytest.approx(python_iqm(finals)) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    ref_low, ref_high = reference_bootstrap(finals, python_iqm)
    assert (low, high) == pytest.approx((ref_low, ref_high), abs=0.3)
    mean, mean_low, mean_high = results.bootstrap_ci(np.array([finals]).T, np.mean)
    assert mean == pytest.approx(3.875)
    assert (mean_low, mean_high) == pytest.approx(reference_bootstrap(finals, lambda x: sum(x) / len(x)), abs=0.3)
    assert results.bootstrap_ci(np.full((5, 1), 0.7), results.iqm) == pytest.approx((0.7, 0.7, 0.7))
    # stratified: runs are resampled within each task, so a task's scores never mix with another's
    two_tasks = np.array([[0.0, 100.0], [0.0, 100.0], [0.0, 100.0]])
    assert results.bootstrap_ci(two_tasks, np.mean) == pytest.approx((50.0, 50.0, 50.0))


def test_report_from_trial_folders(tmp_path):
    finals = {"frozen": [0.9, 0.5, 0.8, 0.7], "scratch": [0.1, 0.3, 0.2, 0.6]}
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            fake_trial(tmp_path / "sweep", variant, seed, [0.0, final / 2, final])
    fake_trial(tmp_path / "sweep", "broken", 0, [], status="error", error="TypeError: bad env_kwargs")
    fake_trial(tmp_path / "sweep", "frozen", 7, [0.1], status="running")
    assert main(["sweep", "--report", str(tmp_path / "sweep")]) == 0

    with (tmp_path / "sweep" / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8 * 3 + 1
    assert [float(r["eval_return_mean"]) for r in rows if r["variant"] == "frozen" and r["seed"] == "1"] == [0.0, 0.25, 0.5]
    assert {r["status"] for r in rows if r["seed"] == "7"} == {"running"}

    summary = (tmp_path / "sweep" / "summary.md").read_text()
    table = {line.split("|")[3].strip(): [c.strip() for c in line.split("|")[4:-1]] for line in summary.splitlines()
             if line.startswith("| ppo |") and line.count("|") == 11}  # fmt: skip
    for variant, values in finals.items():
        runs, failed, unfinished, steps, iqm_ci, mean_ci, wall = table[variant]
        assert (runs, failed, steps, wall) == ("4", "0", "300", "6.0")
        assert iqm_ci.startswith(f"{python_iqm(values):.4g} [") and mean_ci.startswith(f"{np.mean(values):.4g} [")
    assert table["frozen"][2] == "1"  # the running seed 7
    assert table["broken"][:3] == ["0", "1", "0"]
    assert "## Failed trials" in summary and "TypeError: bad env_kwargs" in summary
    assert (tmp_path / "sweep" / "curves.png").stat().st_size > 10_000


def test_report_combines_machines_and_refuses_duplicates(tmp_path, capsys):
    fake_trial(tmp_path / "a", "frozen", 0, [0.5])
    fake_trial(tmp_path / "b", "frozen", 1, [0.7])
    assert main(["sweep", "--report", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "both")]) == 0
    summary = (tmp_path / "both" / "summary.md").read_text()
    assert "| ppo | MiniGrid-Empty-5x5-v0 | frozen | 2 | 0 | 0 | 100 | 0.6 [0.5, 0.7] |" in summary
    with pytest.raises(SystemExit):
        main(["sweep", "--report", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "give --output DIR" in capsys.readouterr().err
    fake_trial(tmp_path / "c", "frozen", 1, [0.2])
    assert main(["sweep", "--report", str(tmp_path / "b"), str(tmp_path / "c"), "-o", str(tmp_path / "bc")]) == 2
    assert "Seed 1 of frozen (ppo, MiniGrid-Empty-5x5-v0) is in both" in capsys.readouterr().err


def test_report_errors_name_the_fix(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["sweep", "--report", str(tmp_path / "empty")]) == 2
    assert "holds no trial (trial.json files): give a sweep folder or trial folders" in capsys.readouterr().err
    fake_trial(tmp_path / "killed", "frozen", 0, [0.1], status="running")
    assert main(["sweep", "--report", str(tmp_path / "killed")]) == 2
    err = capsys.readouterr().err
    assert "No finished trial" in err and "resume the sweep with --resume FOLDER" in err


def test_generalization_table_from_shift_files(tmp_path):
    for seed, (final, dark) in enumerate([(1.0, 0.5), (0.8, 0.2), (0.9, 0.9)]):
        path = fake_trial(tmp_path, "frozen", seed, [0.1, final])
        (path / "shifts.csv").write_text(
            "shift,env_step,eval_return_mean,eval_return_std,eval_episodes\n"
            f"brightness=0.6,200,{dark},0.1,3\ncolor=0,200,{final},0.0,3\n"
        )
    summary = results.summary_markdown(results.read_trials([tmp_path]), [tmp_path])
    assert "## Generalization" in summary
    dark_row = next(line for line in summary.splitlines() if "`brightness=0.6`" in line)
    # mean under the shift 0.5333, ratio to the unshifted mean 0.9: 0.593
    assert "| frozen | `brightness=0.6` | 3 |" in dark_row and "0.5333 [" in dark_row and "| 0.593 [" in dark_row
    color_row = next(line for line in summary.splitlines() if "`color=0`" in line)
    assert "| 1 [1, 1] |" in color_row


def test_no_ratio_for_agents_whose_return_is_not_positive(tmp_path):
    for seed, (final, shifted) in enumerate([(-40.0, -30.0), (-50.0, -35.0)]):
        path = fake_trial(tmp_path, "frozen", seed, [-45.0, final])
        (path / "shifts.csv").write_text(
            f"shift,env_step,eval_return_mean,eval_return_std,eval_episodes\nbrightness=0.6,200,{shifted},1,3\n"
        )
    summary = results.summary_markdown(results.read_trials([tmp_path]), [tmp_path])
    row = next(line for line in summary.splitlines() if "`brightness=0.6`" in line)
    assert row.split("|")[-2].strip() == "-" and "| -32.5 [" in row  # the returns are still shown


def test_return_at_a_quarter_half_and_all_of_the_budget(tmp_path):
    fake_trial(tmp_path, "frozen", 0, [1.0, 2.0, 3.0, 4.0])  # evaluations at 100, 200, 300, 400 env steps
    fake_trial(tmp_path, "frozen", 1, [3.0, 6.0, 9.0, 12.0])
    fake_trial(tmp_path, "scratch", 0, [5.0, 7.0, 9.0])  # 300 steps: a quarter (75) comes before any evaluation
    results.write_report([tmp_path], tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    section = summary.split("## Learning speed")[1].split("##")[0]
    rows = [[c.strip() for c in line.split("|")[3:-1]] for line in section.splitlines() if line.startswith("| ppo |")]
    assert [row[:4] for row in rows] == [
        ["frozen", "100", "100", "2"], ["frozen", "200", "200", "2"], ["frozen", "400", "400", "2"],
        ["scratch", "150", "100", "1"], ["scratch", "300", "300", "1"],
    ]  # fmt: skip
    assert rows[1][5].startswith("4 [2, 6]")  # the mean of 2 and 6, resampled over the two runs
    assert rows[2][5].startswith("8 [4, 12]") and rows[3][4].startswith("5 [5, 5]")


def test_runs_table_gives_each_start_with_its_commit(tmp_path):
    fake_trial(tmp_path, "frozen", 0, [0.5, 0.9], starts=[
        {"env_step": 0, "commit": "0123456789abcdef", "source_modified": False},
        {"env_step": 100, "commit": "fedcba9876543210", "source_modified": True},
    ])  # fmt: skip
    fake_trial(tmp_path, "frozen", 1, [0.5, 0.8], starts=[{"time": "2026-11-26T13:00:00+00:00", "env_step": 0}])
    assert main(["sweep", "--report", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    runs = summary.split("## Runs")[1].split("\n## ")[0]
    rows = {line.split("|")[4].strip(): line.split("|")[-2].strip()
            for line in runs.splitlines() if line.startswith("| ppo |")}  # fmt: skip
    assert rows == {"0": "0 @ 0123456, 100 @ fedcba9*", "1": "0 @ ?"}


def test_every_evaluation_of_every_run_is_in_the_report(tmp_path):
    fake_trial(tmp_path, "frozen", 0, [0.1, 0.5, 0.9])
    fake_trial(tmp_path, "scratch", 3, [0.2, 0.25], status="running")
    assert main(["sweep", "--report", str(tmp_path)]) == 0
    section = (tmp_path / "summary.md").read_text().split("## Every evaluation")[1].split("\n## ")[0]
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("|")]
    assert table[0] == ["variant", "seed", "status", "100", "200", "final"]
    # the finished run's last evaluation is its final one; the interrupted run has no final evaluation
    assert table[2:] == [["frozen", "0", "finished", "0.1", "0.5", "0.9"], ["scratch", "3", "running", "0.2", "0.25", ""]]
