"""Saves that cannot be half-written: atomic_path, SB3's save methods inside atomic_saves(), and a saving process
killed (SIGKILL) at many points."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_pretrained.atomic import atomic_path, write_atomic
from sb3_pretrained.runs import checkpoints, model_problem, newest_loadable
from sb3_pretrained.sb3_internals import atomic_saves


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "model.zip"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["model.zip"]
    write_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["model.zip"]


def test_the_next_write_removes_what_killed_writers_left(tmp_path):
    dead = multiprocessing.get_context("fork").Process(target=int)
    dead.start()
    dead.join()  # a pid that no longer runs
    path = tmp_path / "model.zip"
    killed = tmp_path / f".model.{dead.pid}-0.tmp.zip"
    running = tmp_path / f".model.{os.getppid()}-3.tmp.zip"  # a writer that may still finish
    other = tmp_path / f".other.{dead.pid}-0.tmp.zip"  # another destination's
    for leftover in (killed, running, other):
        leftover.write_text("half")
    write_atomic(path, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.zip", running.name, other.name])


def test_sb3_saves_go_through_a_temporary_file_inside_the_block_only(tmp_path, monkeypatch):
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1))
    ppo = PPO("MlpPolicy", env, n_steps=16, batch_size=16, device="cpu")
    dqn = DQN("MlpPolicy", "CartPole-v1", buffer_size=100, device="cpu")
    replaced = []
    monkeypatch.setattr(os, "replace", lambda src, dst, replace=os.replace: replaced.append(Path(dst)) or replace(src, dst))
    originals = (BaseAlgorithm.save, DQN.save_replay_buffer, VecNormalize.save)
    with atomic_saves():
        ppo.save(tmp_path / "rl_model_16_steps")  # SB3 adds .zip
        ppo.save(str(tmp_path / "final.zip"))
        dqn.save_replay_buffer(tmp_path / "replay_buffer")  # SB3 adds .pkl
        env.save(str(tmp_path / "vecnormalize.pkl"))
    assert (BaseAlgorithm.save, DQN.save_replay_buffer, VecNormalize.save) == originals
    names = ["rl_model_16_steps.zip", "final.zip", "replay_buffer.pkl", "vecnormalize.pkl"]
    assert replaced == [tmp_path / name for name in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary file left
    assert model_problem(tmp_path / "final.zip") is None and PPO.load(tmp_path / "rl_model_16_steps.zip").n_steps == 16
    ppo.save(tmp_path / "outside.zip")
    assert len(replaced) == 4


def _save_forever(model: PPO, venv: VecNormalize, folder: Path) -> None:
    """What a training run writes, as fast as it can: numbered checkpoints, the final model and VecNormalize
    statistics (both overwritten in place)."""
    with atomic_saves():
        for step in range(1, 1_000_000):
            model.save(folder / f"rl_model_{step}_steps")
            model.save(folder / "final")
            venv.save(str(folder / "vecnormalize.pkl"))


@pytest.mark.slow
def test_killed_saves_never_leave_a_half_written_file(tmp_path):
    """A process that saves continuously is killed with SIGKILL at 12 points in time after its first checkpoint:
    every file under a final name loads, the newest checkpoint included. Temporary files left behind show that kills
    did land mid-save (without atomic_saves, most of these kills leave a half-written file under its final name)."""
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1))
    model = PPO("MlpPolicy", venv, policy_kwargs=dict(net_arch=[1024, 1024]), device="cpu")  # 8 MB: saves take a while
    context = multiprocessing.get_context("fork")
    interrupted_saves = 0
    for kill in range(12):
        folder = tmp_path / f"kill{kill}"
        folder.mkdir()
        process = context.Process(target=_save_forever, args=(model, venv, folder))
        process.start()
        deadline = time.monotonic() + 30
        while not (folder / "rl_model_1_steps.zip").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02 * kill)  # then kill at a different point of the saves that follow
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert process.exitcode == -signal.SIGKILL
        saved = checkpoints(folder)
        final = folder / "final.zip"
        assert all(model_problem(path) is None for _, path in saved) and (not final.exists() or model_problem(final) is None)
        newest, skipped = newest_loadable([path for _, path in reversed(saved)])
        assert newest == saved[-1][1] and not skipped
        assert PPO.load(newest, device="cpu").policy.state_dict().keys() == model.policy.state_dict().keys()
        if (folder / "vecnormalize.pkl").exists():
            with (folder / "vecnormalize.pkl").open("rb") as file:
                assert isinstance(pickle.load(file), VecNormalize)
        interrupted_saves += any(p.name.startswith(".") for p in folder.iterdir())
    assert interrupted_saves >= 4
