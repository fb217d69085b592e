"""`sb3-pretrained sweep` on a local Ray: bad input stops before Ray starts; a tiny sweep killed mid-run resumes
(finished trials are not rerun, killed ones continue from their checkpoint), a broken trial fails alone, and the
report holds what the trials logged and can be rebuilt from their folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sb3_pretrained import zoo
from sb3_pretrained.cli import main

ENV = "MiniGrid-Empty-5x5-v0"
#: A tiny sweep: 512 env steps a trial, an evaluation and a checkpoint every 128.
TINY = ["-n", "512", "--eval-freq", "128", "--eval-episodes", "2", "--checkpoint-freq", "128",
        "-params", "n_envs:2", "n_steps:32", "batch_size:32", "n_epochs:1"]  # fmt: skip


def trial_state(folder: Path) -> dict:
    return json.loads((folder / "trial.json").read_text())


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_bad_input_stops_before_ray(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--variants", "scratch,frozne"]) == 2
    assert "Unknown variant 'frozne'" in capsys.readouterr().err
    assert main(["sweep", "--algo", "td3", "--env", "CarRacing-v3", "--variants", "frozen"]) == 2
    assert "ships no 'frozen' config for 'td3'" in capsys.readouterr().err
    assert main(["sweep", "--variants", "frozen", "-params", "n_step:8"]) == 2
    assert "unknown key 'n_step'" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is not a sweep folder (it has no sweep.json)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--conf-file", "my.yml"])
    assert "--conf-file takes VARIANT=FILE items" in capsys.readouterr().err
    assert not list(tmp_path.rglob("sweep.json"))


def test_existing_sweep_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text("{}")
    with pytest.raises(SystemExit):
        main(["sweep", "-f", str(tmp_path), "--name", "s"])
    assert f"continue it with --resume {tmp_path / 's'}" in capsys.readouterr().err


def start_sweep(args: list[str], log: Path) -> subprocess.Popen:
    """The sweep command in its own process group (the driver and the Ray processes it starts)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sb3_pretrained.cli", "sweep", *args]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the sweep ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < end, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def stat_fields(stat: Path) -> list[str] | None:
    """The fields of a ``/proc/<pid>[/task/<tid>]/stat`` after ``pid (comm)``: state, ppid, pgrp, session, ...;
    None when the process or thread has ended meanwhile."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_processes(session: int) -> set[int]:
    """The live processes of a session: the sweep's driver and every Ray process it started. Ray puts its workers in
    process groups of their own, so signalling the driver's process group alone leaves the trials running."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = stat_fields(stat)
        if fields is not None and int(fields[3]) == session and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def signal_session(session: int, sig: int) -> set[int]:
    """Send ``sig`` to every process of ``session`` until no new one appears (one may be starting meanwhile)."""
    signalled: set[int] = set()
    while new := session_processes(session) - signalled:
        for pid in new:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        signalled |= new
    return signalled


def wait_stopped(pids: set[int]) -> None:
    """Wait until every thread of ``pids`` has stopped (SIGSTOP is delivered after the system call under way, which
    can be the rename that writes a checkpoint) or ended."""
    end = time.monotonic() + 30
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            while (fields := stat_fields(stat)) is not None and fields[0] not in "TtZX":  # not ended or stopped
                assert time.monotonic() < end, f"process {pid} did not stop"
                time.sleep(0.01)


def kill_sweep_when(condition, process: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    """Kill the whole sweep (driver and Ray) at a moment ``condition`` holds. The trials write as they run, so the
    condition is checked again with every process stopped, and the sweep goes on when it no longer holds. Ray
    starts no process in a session of its own (no setsid in Ray 2.60), so the session holds all of them."""
    end = time.monotonic() + timeout
    try:
        while True:
            wait_for(condition, process, log, timeout=end - time.monotonic())
            wait_stopped(signal_session(process.pid, signal.SIGSTOP))
            if condition():
                break
            signal_session(process.pid, signal.SIGCONT)
    finally:  # killed whatever happened: on an error too, nothing is left running or stopped
        signal_session(process.pid, signal.SIGKILL)
    process.wait()
    gone = time.monotonic() + 60
    while session_processes(process.pid):
        assert time.monotonic() < gone, "the sweep's processes outlived SIGKILL"
        time.sleep(0.1)


#: Ray's own state in a sweep folder; without it ``--resume`` starts Ray afresh and the trials go on from their folders.
RAY_STATE = ("experiment_state-*.json", "basic-variant-state-*.json", "tuner.pkl", "*/params.pkl")


@pytest.mark.slow
def test_sweep_moved_to_another_folder_without_ray_state_resumes(tmp_path):
    """A sweep killed on one machine and carried to another (a different path, Ray's state left behind, as a git
    commit of the folder would carry it) continues its trial from the checkpoint it carried."""
    sweep = tmp_path / "machine-a" / "tiny"
    args = ["--variants", "scratch", "--seeds", "1", "-f", str(sweep.parent), "--name", "tiny", *TINY]
    process = start_sweep(args, tmp_path / "first.log")
    trial = sweep / "scratch_seed0"

    def checkpointed_mid_run() -> bool:
        found = trial / "checkpoint.json"
        return found.exists() and json.loads(found.read_text())["env_step"] < 512

    kill_sweep_when(checkpointed_mid_run, process, tmp_path / "first.log")
    carried = json.loads((trial / "checkpoint.json").read_text())["env_step"]
    moved = tmp_path / "machine-b" / "sweeps" / "tiny"
    shutil.copytree(sweep, moved)
    shutil.rmtree(sweep.parent)
    ray_state = [path for pattern in RAY_STATE for path in moved.glob(pattern)]
    for path in ray_state:
        path.unlink()
    assert "tuner.pkl" in {path.name for path in ray_state} and 0 < carried < 512  # Ray could have restored it; mid-run

    process = start_sweep(["--resume", str(moved)], tmp_path / "resume.log")
    assert process.wait(timeout=600) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    state = trial_state(moved / "scratch_seed0")
    assert state["status"] == "finished"
    assert [s["env_step"] for s in state["starts"]] == [0, carried]
    evaluations = csv_rows(moved / "scratch_seed0" / "evaluations.csv")
    assert [float(r["env_step"]) for r in evaluations] == [128, 256, 384, 512]
    walls = [float(r["wall_clock_s"]) for r in evaluations]
    assert walls == sorted(walls)


@pytest.mark.slow
def test_sweep_killed_resumes_and_reports(tmp_path):
    entry = yaml.safe_load((zoo.CONFIG_DIR / "ppo.yml").read_text())[ENV]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump({ENV: {**entry, "env_kwargs": {"no_such_argument": 1}}}))
    sweep = tmp_path / "sweeps" / "tiny"
    args = ["--variants", "scratch,frozen,broken", "--conf-file", f"broken={tmp_path / 'broken.yml'}", "--seeds", "2",
            "-f", str(tmp_path / "sweeps"), "--name", "tiny", *TINY]  # fmt: skip

    # Kill the whole sweep (driver and Ray) once a trial has finished and another has checkpointed.
    process = start_sweep(args, tmp_path / "first.log")
    states = lambda: {p.parent.name: trial_state(p.parent)["status"] for p in sweep.glob("*/trial.json")}  # noqa: E731
    checkpointed = lambda: [n for n, s in states().items() if s == "running" and (sweep / n / "checkpoint.json").exists()]  # noqa: E731
    # Running trials checkpointed before their last step only: one checkpointed at 512 is between its final save and
    # "finished", and would resume with nothing left to train.
    steps = lambda: [json.loads((sweep / n / "checkpoint.json").read_text())["env_step"] for n in checkpointed()]  # noqa: E731
    mid_run = lambda: (found := steps()) and max(found) < 512  # noqa: E731
    kill_sweep_when(lambda: "finished" in states().values() and mid_run(), process, tmp_path / "first.log")
    finished = sorted(n for n, s in states().items() if s == "finished")
    killed = sorted(n for n, s in states().items() if s == "running")
    resumed_at = {n: json.loads((sweep / n / "checkpoint.json").read_text())["env_step"] for n in checkpointed()}
    assert finished and resumed_at and all(0 < step < 512 for step in resumed_at.values())
    mtimes = {n: (sweep / n / "evaluations.csv").stat().st_mtime_ns for n in finished}

    process = start_sweep(["--resume", str(sweep)], tmp_path / "resume.log")
    assert process.wait(timeout=600) == 1, (tmp_path / "resume.log").read_text()[-3000:]  # 1: some trials failed
    good = [f"{v}_seed{s}" for v in ("scratch", "frozen") for s in (0, 1)]
    for name in finished:  # not rerun
        assert len(trial_state(sweep / name)["starts"]) == 1
        assert (sweep / name / "evaluations.csv").stat().st_mtime_ns == mtimes[name]
    for name in killed:  # continued from their checkpoint (or from 0 when they had none)
        starts = trial_state(sweep / name)["starts"]
        assert [s["env_step"] for s in starts] == [0, resumed_at.get(name, 0)]
    for name in good:
        state = trial_state(sweep / name)
        assert state["status"] == "finished", state
        evaluations = csv_rows(sweep / name / "evaluations.csv")
        assert [float(r["env_step"]) for r in evaluations] == [128, 256, 384, 512]
        walls = [float(r["wall_clock_s"]) for r in evaluations]
        assert walls == sorted(walls)  # a resumed trial's clock goes on from its checkpoint
        # The eval curve is what SB3's EvalCallback logged, over the trial's rl_zoo3 run folders (one per start).
        runs = sorted((sweep / name / "ppo").glob(f"{ENV}_*"))
        assert len(runs) == len(state["starts"])
        logged = {}
        for run in runs:
            if not (run / "evaluations.npz").exists():  # a start killed before its first evaluation
                continue
            npz = np.load(run / "evaluations.npz")
            logged.update({float(t): r for t, r in zip(npz["timesteps"], npz["results"], strict=True)})
        for row in evaluations:
            episodes = logged[float(row["env_step"])]
            assert float(row["eval_return_mean"]) == pytest.approx(np.mean(episodes))
            assert int(float(row["eval_episodes"])) == len(episodes) == 2
    for name in ("broken_seed0", "broken_seed1"):
        state = trial_state(sweep / name)
        assert state["status"] == "error" and "no_such_argument" in state["error"]

    # results.csv holds every trial's evaluations; summary.md their final returns and the failures.
    rows = csv_rows(sweep / "results.csv")
    for name in good:
        variant, seed = name.split("_seed")
        mine = [r for r in rows if r["variant"] == variant and r["seed"] == seed]
        assert [{k: float(r[k]) for k in ("env_step", "wall_clock_s", "eval_return_mean")} for r in mine] == [
            {k: float(r[k]) for k in ("env_step", "wall_clock_s", "eval_return_mean")}
            for r in csv_rows(sweep / name / "evaluations.csv")
        ]
    summary = (sweep / "summary.md").read_text()
    for variant in ("scratch", "frozen"):
        finals = [float(csv_rows(sweep / f"{variant}_seed{s}" / "evaluations.csv")[-1]["eval_return_mean"]) for s in (0, 1)]
        assert f"| ppo | {ENV} | {variant} | 2 | 0 | 0 | 512 | {np.mean(finals):.4g} [" in summary
    assert f"| ppo | {ENV} | broken | 0 | 2 | 0 |" in summary and "no_such_argument" in summary
    assert (sweep / "curves.png").stat().st_size > 10_000

    # scratch is SB3's NatureCNN on the same observations as frozen (the shipped entry: feature map 2)
    from stable_baselines3 import PPO

    scratch, frozen = (
        PPO.load(sorted((sweep / f"{v}_seed0" / "ppo").glob(f"{ENV}_*"))[-1] / f"{ENV}.zip") for v in ("scratch", "frozen")
    )
    assert type(scratch.policy.features_extractor).__name__ == "NatureCNN"
    assert type(frozen.policy.features_extractor).__name__ == "TimmExtractor"
    assert frozen.policy.features_extractor.encoder.feature_shape is not None
    assert scratch.observation_space == frozen.observation_space

    # The report from the trial folders alone, split as if they came from two machines.
    for machine, variant in (("a", "scratch"), ("b", "frozen")):
        for seed in (0, 1):
            shutil.copytree(sweep / f"{variant}_seed{seed}", tmp_path / machine / f"{variant}_seed{seed}")
    assert main(["sweep", "--report", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "report")]) == 0
    rebuilt = (tmp_path / "report" / "summary.md").read_text()
    table = [line for line in summary.splitlines() if line.startswith("| ppo |") and "broken" not in line]
    assert table == [line for line in rebuilt.splitlines() if line.startswith("| ppo |")]


@pytest.mark.slow
def test_sweep_without_ray_runs_in_process_and_subproc_envs_train_the_same_agent(monkeypatch, tmp_path, capsys):
    """``--no-ray`` runs the trials one after another in this process (Ray is not even importable here): a broken
    trial fails alone, finished ones are not rerun by ``--resume``; ``--vec-env subproc`` puts the training and eval
    envs in processes of their own and trains the very same agent (MiniGrid's int rewards included)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import SubprocVecEnv

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    subprocess_envs = []
    original_init = SubprocVecEnv.__init__

    def recording_init(self, env_fns, *args, **kwargs):
        subprocess_envs.append(len(env_fns))
        original_init(self, env_fns, *args, **kwargs)

    monkeypatch.setattr(SubprocVecEnv, "__init__", recording_init)
    entry = yaml.safe_load((zoo.CONFIG_DIR / "ppo.yml").read_text())[ENV]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump({ENV: {**entry, "env_kwargs": {"no_such_argument": 1}}}))
    agents = {}
    for vec_env in ("dummy", "subproc"):
        args = ["--variants", "broken,scratch", "--conf-file", f"broken={tmp_path / 'broken.yml'}", "--seeds", "1",
                "-f", str(tmp_path), "--name", vec_env, "--no-ray", "--vec-env", vec_env, "--n-eval-envs", "3",
                "--shifts", "brightness=0.6", *TINY]  # fmt: skip
        assert main(["sweep", *args]) == 1  # 1: a trial failed
        out, err = capsys.readouterr()
        assert "scratch_seed0: 512 env steps" in out and "broken_seed0 failed:" in err
        if vec_env == "dummy":
            assert "no_such_argument" in err and not subprocess_envs
        else:  # broken's training envs (they fail), scratch's training, eval and shifted eval envs
            assert "An env failed to start in its subprocess" in err and "--vec-env dummy" in err
            assert subprocess_envs == [2, 2, 3, 3]
        sweep = tmp_path / vec_env
        assert trial_state(sweep / "broken_seed0")["status"] == "error"
        state = trial_state(sweep / "scratch_seed0")
        assert state["status"] == "finished" and [s["env_step"] for s in state["starts"]] == [0]
        evaluations = csv_rows(sweep / "scratch_seed0" / "evaluations.csv")
        assert [float(r["env_step"]) for r in evaluations] == [128, 256, 384, 512]
        assert f"| ppo | {ENV} | scratch | 1 | 0 | 0 | 512 |" in (sweep / "summary.md").read_text()
        assert [r["shift"] for r in csv_rows(sweep / "scratch_seed0" / "shifts.csv")] == ["brightness=0.6"]
        (saved,) = (sweep / "scratch_seed0" / "ppo").glob(f"{ENV}_*/{ENV}.zip")
        agents[vec_env] = PPO.load(saved, device="cpu").policy.state_dict()
    assert agents["dummy"].keys() == agents["subproc"].keys()
    for name, weights in agents["dummy"].items():
        assert torch.equal(weights, agents["subproc"][name]), name

    # --resume can move a sweep to subprocess envs (the same run): sweep.json says so, the retried trial uses them
    mtime = (tmp_path / "dummy" / "scratch_seed0" / "evaluations.csv").stat().st_mtime_ns
    assert main(["sweep", "--resume", str(tmp_path / "dummy"), "--no-ray", "--vec-env", "subproc"]) == 1  # broken again
    assert {t["vec_env"] for t in json.loads((tmp_path / "dummy" / "sweep.json").read_text())["trials"]} == {"subproc"}
    assert subprocess_envs == [2, 2, 3, 3, 2]
    assert len(trial_state(tmp_path / "dummy" / "scratch_seed0")["starts"]) == 1
    assert (tmp_path / "dummy" / "scratch_seed0" / "evaluations.csv").stat().st_mtime_ns == mtime
    assert len(trial_state(tmp_path / "dummy" / "broken_seed0")["starts"]) == 2
    with pytest.raises(SystemExit):
        main(["sweep", "--resume", str(tmp_path / "dummy"), "--no-ray", "--address", "auto"])
    assert "--no-ray runs the trials in this process: drop --address" in capsys.readouterr().err
