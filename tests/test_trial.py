"""One trial without Ray: its final agent evaluated under held-out visual shifts, written to shifts.csv."""

from __future__ import annotations

from sb3_pretrained import zoo
from sb3_pretrained.shifts import VisualShift
from sb3_pretrained.trial import TrialSpec, read_evaluations, read_shifts, run_trial


def test_final_agent_is_evaluated_under_each_shift(tmp_path, monkeypatch):
    seen = []
    shift_observation = VisualShift.observation
    monkeypatch.setattr(VisualShift, "observation", lambda self, obs: seen.append(self.pixels) or shift_observation(self, obs))
    spec = TrialSpec(
        "ppo", "MiniGrid-Empty-5x5-v0", "frozen", 0, str(zoo.config_path("ppo", "frozen")), 128, 128, 2, 2, 128,
        hyperparams=("n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"),
        shifts=("brightness=0.6", "contrast=0.5+color=0"),
    )  # fmt: skip
    final = run_trial(spec, tmp_path / spec.name, report=lambda row: None)
    rows = read_shifts(tmp_path / spec.name)
    assert [row["shift"] for row in rows] == ["brightness=0.6", "contrast=0.5+color=0"]
    assert all(row["env_step"] == final["env_step"] == 128 and row["eval_episodes"] == 2 for row in rows)
    assert read_evaluations(tmp_path / spec.name)[-1]["eval_return_mean"] == final["eval_return_mean"]
    # The shifted frames are what the agent saw, and only in those evaluations.
    assert set(seen) == {(("brightness", 0.6),), (("contrast", 0.5), ("color", 0.0))}
