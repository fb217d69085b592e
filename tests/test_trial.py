"""One trial without Ray: its final agent evaluated under held-out visual shifts, written to shifts.csv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from sb3_pretrained import zoo
from sb3_pretrained.machine import cpu_has_native_bf16
from sb3_pretrained.shifts import VisualShift
from sb3_pretrained.trial import TrialSpec, code_revision, read_evaluations, read_json, read_shifts, run_trial
from tests.helpers import record_eval_env_kwargs


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
    # The start records the code and machine it ran on.
    (start,) = read_json(tmp_path / spec.name / "trial.json")["starts"]
    assert start["env_step"] == 0 and start["torch"] and "cores" in start["cpu"] and isinstance(start["gpus"], list)
    assert start["cpu_native_bf16"] is cpu_has_native_bf16()  # what a frozen backbone's CPU precision followed
    assert start["commit"] == code_revision(Path(zoo.__file__).parent)["commit"]  # this checkout's, when run from one


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_revision_names_the_commit_and_changes_to_the_source_only(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    assert code_revision(tmp_path) == {"commit": None, "source_modified": None}  # not a git checkout
    git("init", "-q")
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "code.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("results\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD").strip()
    assert code_revision(tmp_path / "package") == {"commit": head, "source_modified": False}
    (tmp_path / "notes.md").write_text("new results\n")  # outside the source: not a change of the code
    (tmp_path / "package" / "scratch.txt").write_text("untracked\n")  # untracked: not part of the code
    assert code_revision(tmp_path / "package") == {"commit": head, "source_modified": False}
    (tmp_path / "package" / "code.py").write_text("x = 2\n")
    assert code_revision(tmp_path / "package") == {"commit": head, "source_modified": True}
    # an installed copy that the checkout does not track (site-packages of a .venv inside it) has no commit
    (tmp_path / ".venv" / "package").mkdir(parents=True)
    (tmp_path / ".venv" / "package" / "code.py").write_text("x = 3\n")
    assert code_revision(tmp_path / ".venv" / "package") == {"commit": None, "source_modified": None}


def test_eval_envs_get_the_configs_env_kwargs(tmp_path, monkeypatch):
    """rl_zoo3 gives its eval envs a config's env_kwargs only when they come from the command line (CarRacing's
    continuous: false would be lost, and the discrete agent would crash the continuous eval env)."""
    seen = record_eval_env_kwargs(monkeypatch)
    config = tmp_path / "ppo.yml"
    entry = zoo.load_config(zoo.config_path("ppo", "frozen"))["MiniGrid-Empty-5x5-v0"]
    config.write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": {**entry, "env_kwargs": {"max_steps": 9}}}))
    spec = TrialSpec(
        "ppo", "MiniGrid-Empty-5x5-v0", "frozen", 0, str(config), 64, 64, 1, 1, 64,
        hyperparams=("n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"), shifts=("brightness=0.5",),
    )  # fmt: skip
    run_trial(spec, tmp_path / spec.name, report=lambda row: None)
    assert seen and all(kwargs == {"max_steps": 9} for kwargs in seen)


#: 2 envs each: PPO trains two rollouts of 64 steps (to 128), DQN to 100; both evaluate and checkpoint at 96.
STOPPED_RUNS = {
    "ppo": ("n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"),
    "dqn": ("n_envs:2", "learning_starts:32", "buffer_size:200", "batch_size:8", "train_freq:2"),
}


@pytest.mark.parametrize("algo", sorted(STOPPED_RUNS))
def test_trial_stopped_in_its_final_evaluation_resumes_without_training(algo, tmp_path, monkeypatch):
    """Training ends at or past 100 steps, the last periodic evaluation and checkpoint are at 96: a start stopped in
    the final evaluation must not train again (from 96 it would train past the end a second time), but evaluate the
    agent training ended with. The end checkpoint leaves out DQN's replay buffer, which nothing would read."""
    from rl_zoo3.utils import ALGOS

    from sb3_pretrained import trial

    spec = TrialSpec(
        algo, "MiniGrid-Empty-5x5-v0", "frozen", 0, str(zoo.config_path(algo, "frozen")), 100, 96, 2, 3, 64,
        hyperparams=STOPPED_RUNS[algo],
    )  # fmt: skip
    folder = tmp_path / spec.name
    episode_returns = trial._episode_returns
    at_stop = {}

    def stopped(model, *args, **kwargs):
        at_stop.update(step=model.num_timesteps, weights={k: v.clone() for k, v in model.policy.state_dict().items()})
        raise KeyboardInterrupt("stopped in the final evaluation")

    monkeypatch.setattr(trial, "_episode_returns", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, folder, report=lambda row: None)
    checkpoint = read_json(folder / "checkpoint.json")
    assert checkpoint["env_step"] == at_stop["step"] >= 100
    assert not (folder / checkpoint["path"] / "replay_buffer.pkl").exists()

    monkeypatch.setattr(trial, "_episode_returns", episode_returns)
    final = run_trial(spec, folder, report=lambda row: None)
    state = read_json(folder / "trial.json")
    assert state["status"] == "finished" and [s["env_step"] for s in state["starts"]] == [0, at_stop["step"]]
    evaluations = [(row["env_step"], row["eval_episodes"]) for row in read_evaluations(folder)]
    assert evaluations == [(96, 2), (at_stop["step"], 3)] and final["env_step"] == at_stop["step"]
    saved = sorted((folder / algo).glob("MiniGrid-Empty-5x5-v0_*/MiniGrid-Empty-5x5-v0.zip"))[-1]
    evaluated = ALGOS[algo].load(saved, device="cpu").policy.state_dict()
    assert evaluated.keys() == at_stop["weights"].keys()
    assert all(torch.equal(evaluated[k], at_stop["weights"][k]) for k in evaluated)
