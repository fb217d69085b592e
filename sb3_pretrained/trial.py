"""One trial of a sweep: an ordinary rl_zoo3 training that evaluates itself, checkpoints, and resumes.

A trial knows nothing of Ray: :func:`run_trial` trains in the calling process and hands each evaluation to a
``report`` function (``ray.tune.report`` in a sweep). Everything it produces is a plain file in its folder, which
is the source of truth for resuming and for the report (:mod:`sb3_pretrained.results`):

- ``trial.json``: what was asked (:class:`TrialSpec`) and what happened (status, error, one entry per start, each
  with the code and machine it ran on: :func:`provenance`);
- ``evaluations.csv``: one row per evaluation (env step, wall-clock seconds, eval return mean/std, episodes);
- ``checkpoint.json`` -> ``checkpoints/<step>/``: the latest checkpoint, laid out as rl_zoo3's ``-i`` reads it
  (``model.zip``, ``replay_buffer.pkl`` for off-policy algorithms, ``<env>/vecnormalize.pkl`` with ``normalize``);
- ``<algo>/<env>_<k>/``: rl_zoo3's run folder, one per start (the zoo's convention when training continues from a
  saved agent): model, monitor files, saved hyperparameters, SB3's ``evaluations.npz``;
- ``tensorboard/``.

Resuming continues from the latest checkpoint with ``learn(remaining, reset_num_timesteps=False)``: the clock
(``num_timesteps``) goes on, so schedules and callbacks that are functions of it (``GradualUnfreezing``,
``LRWarmup``, learning-rate schedules) see the true step. Checkpoints are taken right after an evaluation, so
evaluations after a resume fall on the same env steps as in an uninterrupted run; the steps of a rollout under way
at a checkpoint count but are not trained on after a resume (the next rollout starts at the checkpoint). One more
checkpoint is taken when training ends, before the final evaluations, so a start stopped in them after training
reached ``n_timesteps`` resumes with nothing to train: it evaluates the agent that training ended with (that
checkpoint skips the replay buffer, which nothing would read). RNG states are not saved: a resumed run is a valid run,
not a bit-identical replay.

rl_zoo3 internals used here (checked against rl_zoo3 2.9.2): ``ExperimentManager`` built without ``train.py``'s
argument parser, ``setup_experiment()`` / ``create_envs()`` / ``save_trained_model()`` / ``callbacks`` /
``n_timesteps`` / ``save_path`` / ``env_name`` / ``env_kwargs`` / ``eval_env_kwargs`` / ``env_wrapper`` (its eval
envs get a config's ``env_kwargs`` only when they were given on the command line: see
:func:`sb3_pretrained.sb3_internals.give_eval_envs_the_config_kwargs`), and the checkpoint layout its
``trained_agent`` path loads.
``tests/test_sweep.py`` runs every one of them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from sb3_pretrained.atomic import write_atomic
from sb3_pretrained.machine import cpu_description, cpu_has_native_bf16, gpu_names
from sb3_pretrained.sb3_internals import VEC_ENV_CLASSES, atomic_saves, give_eval_envs_the_config_kwargs

#: Seed of the eval envs, the same for every trial and every evaluation (the same eval episodes throughout).
EVAL_SEED = 1_000_000
TRIAL_FILE = "trial.json"
EVALUATIONS_FILE = "evaluations.csv"
CHECKPOINT_FILE = "checkpoint.json"
EVALUATION_COLUMNS = ("env_step", "wall_clock_s", "eval_return_mean", "eval_return_std", "eval_episodes")
SHIFTS_FILE = "shifts.csv"
SHIFT_COLUMNS = ("shift", "env_step", "eval_return_mean", "eval_return_std", "eval_episodes")
#: rl_zoo3's ``--vec-env`` choices.
VEC_ENVS = tuple(VEC_ENV_CLASSES)


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """What one trial runs.

    :param algo: rl_zoo3 algorithm name
    :param env_id: gymnasium env id
    :param variant: the variant's name (``frozen``, ``scratch``, ... or your own)
    :param seed: training seed
    :param config: the rl_zoo3 config file (absolute path)
    :param n_timesteps: env steps to train
    :param eval_freq: evaluate every this many env steps (rounded down to a multiple of the number of envs)
    :param eval_episodes: episodes per evaluation
    :param final_eval_episodes: episodes of the evaluation after the last step
    :param checkpoint_freq: checkpoint at the first evaluation after every this many env steps
    :param hyperparams: rl_zoo3 ``--hyperparams`` overrides (``key:value``)
    :param n_eval_envs: envs of the eval VecEnv
    :param num_threads: torch threads (the trial's CPUs)
    :param shifts: held-out visual shifts (:func:`sb3_pretrained.shifts.parse_shift` specs) the final agent is also
        evaluated under, with ``final_eval_episodes`` episodes each; written to ``shifts.csv``
    :param vec_env: how the training and eval envs step (:data:`VEC_ENVS`, rl_zoo3's ``--vec-env``): ``dummy``, in
        the trial's process, or ``subproc``, a process per env (for machines with a core per env); the same envs,
        seeds and rewards (float32 either way: :data:`sb3_pretrained.sb3_internals.VEC_ENV_CLASSES`), the same run
    """

    algo: str
    env_id: str
    variant: str
    seed: int
    config: str
    n_timesteps: int
    eval_freq: int
    eval_episodes: int
    final_eval_episodes: int
    checkpoint_freq: int
    hyperparams: tuple[str, ...] = ()
    n_eval_envs: int = 1
    num_threads: int = 1
    shifts: tuple[str, ...] = ()
    vec_env: str = "dummy"

    @property
    def name(self) -> str:
        """The trial's folder name: ``<variant>_seed<seed>``."""
        return f"{self.variant}_seed{self.seed}"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def read_evaluations(folder: Path) -> list[dict[str, float]]:
    """The rows of a trial's ``evaluations.csv`` (numbers), in the order they were taken."""
    path = folder / EVALUATIONS_FILE
    if not path.is_file():
        return []
    with path.open() as file:
        return [{key: float(row[key]) for key in EVALUATION_COLUMNS} for row in csv.DictReader(file)]


def _write_evaluations(folder: Path, rows: list[dict[str, float]]) -> None:
    lines = [",".join(EVALUATION_COLUMNS)] + [",".join(repr(row[key]) for key in EVALUATION_COLUMNS) for row in rows]
    write_atomic(folder / EVALUATIONS_FILE, "\n".join(lines) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_revision(source: Path) -> dict[str, Any]:
    """The git commit that ``source`` (a directory of a git checkout) is at, and whether its files differ from that
    commit (``source_modified``: uncommitted changes under ``source`` only, so that edits elsewhere in the checkout,
    docs or results, do not count); both None when ``source`` is not tracked in a git checkout (or git is not
    installed)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=30,
                                  env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # never take the index lock
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None or not git("ls-files", "--", "."):  # not in a checkout, or a copy the checkout does not track
        return {"commit": None, "source_modified": None}  # (a non-editable install into a .venv inside the checkout)
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit.strip(), "source_modified": None if changes is None else bool(changes.strip())}


def provenance() -> dict[str, Any]:
    """What a start of a trial ran: the code (``sb3_pretrained``'s commit when it is installed from a git checkout,
    see :func:`code_revision`; its version; torch's) and the machine (CPU model and cores; whether it computes bf16
    natively, which decides a frozen backbone's default precision on CPU; its GPUs, whether the trial uses them or
    not)."""
    import torch

    import sb3_pretrained

    return {
        **code_revision(Path(sb3_pretrained.__file__).parent),
        "sb3_pretrained": sb3_pretrained.__version__,
        "torch": torch.__version__,
        "cpu": cpu_description(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "gpus": gpu_names(),
    }


class _TrialState:
    """``trial.json``: the spec, the status (running / finished / error) and the starts."""

    def __init__(self, folder: Path, spec: TrialSpec) -> None:
        self.path = folder / TRIAL_FILE
        self.data = read_json(self.path) or {"spec": dataclasses.asdict(spec), "status": "new", "starts": []}
        self.data["spec"] = dataclasses.asdict(spec)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        write_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def run_trial(spec: TrialSpec, folder: str | Path, report: Callable[[dict[str, float]], None]) -> dict[str, float]:
    """Train, evaluate and checkpoint one trial in ``folder``; resume it if it ran before; skip it if it finished.

    :param spec: what to train
    :param folder: the trial's folder (created); it may hold an earlier, interrupted start of the same trial
    :param report: called with each evaluation's row (see :data:`EVALUATION_COLUMNS`)
    :return: the final evaluation's row
    :raises Exception: whatever made the training fail, after recording it in ``trial.json``
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = _TrialState(folder, spec)
    if state.data["status"] == "finished":  # a finished trial whose end Ray had not recorded
        final = read_evaluations(folder)[-1]
        report(final)
        return final
    checkpoint = read_json(folder / CHECKPOINT_FILE)
    start_step = checkpoint["env_step"] if checkpoint else 0
    # Evaluations after the checkpoint belong to the lost part of the run; they are taken again.
    _write_evaluations(folder, [row for row in read_evaluations(folder) if row["env_step"] <= start_step])
    start = {"time": _now(), "env_step": start_step, **provenance()}
    state.update(status="running", error=None, starts=[*state.data["starts"], start])
    try:
        with atomic_saves():
            final = _train(spec, folder, checkpoint, report)
    except Exception as err:
        state.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        raise
    state.update(status="finished", env_steps=int(final["env_step"]), wall_clock_s=final["wall_clock_s"])
    return final


def _zoo_hyperparams(items: tuple[str, ...]) -> dict[str, Any] | None:
    """``--hyperparams key:value ...`` parsed exactly as ``rl_zoo3.train`` parses it."""
    from rl_zoo3.utils import StoreDict

    if not items:
        return None
    parser = argparse.ArgumentParser()
    parser.add_argument("--hyperparams", nargs="+", action=StoreDict)
    return parser.parse_args(["--hyperparams", *items]).hyperparams


def _train(
    spec: TrialSpec, folder: Path, checkpoint: dict[str, Any] | None, report: Callable[[dict[str, float]], None]
) -> dict[str, float]:
    import torch
    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import sync_envs_normalization

    started = time.perf_counter() - (checkpoint["wall_clock_s"] if checkpoint else 0.0)
    torch.set_num_threads(spec.num_threads)
    set_random_seed(spec.seed)
    trained_agent = str(folder / checkpoint["path"] / "model.zip") if checkpoint else ""
    # What rl_zoo3.train's parser would hold; the zoo saves it as args.yml in the run folder.
    args = argparse.Namespace(**dataclasses.asdict(spec), trained_agent=trained_agent)
    manager = ExperimentManager(
        args, spec.algo, spec.env_id, str(folder), tensorboard_log=str(folder / "tensorboard"),
        n_timesteps=spec.n_timesteps, eval_freq=-1, save_freq=-1, hyperparams=_zoo_hyperparams(spec.hyperparams),
        trained_agent=trained_agent, seed=spec.seed, verbose=0, config=spec.config, vec_env_type=spec.vec_env,
    )  # fmt: skip
    manager.vec_env_class = VEC_ENV_CLASSES[spec.vec_env]
    experiment = manager.setup_experiment()
    assert experiment is not None  # None only when rl_zoo3 optimizes hyperparameters
    model, _ = experiment
    give_eval_envs_the_config_kwargs(manager)  # CarRacing's continuous: false would be missing from evaluations
    eval_env = manager.create_envs(spec.n_eval_envs, eval_env=True)
    rows = read_evaluations(folder)
    last_checkpoint = checkpoint["env_step"] if checkpoint else 0

    def record(mean: float, std: float, episodes: int) -> dict[str, float]:
        row = {"env_step": float(model.num_timesteps), "wall_clock_s": time.perf_counter() - started,
               "eval_return_mean": mean, "eval_return_std": std, "eval_episodes": float(episodes)}  # fmt: skip
        rows[:] = [r for r in rows if r["env_step"] < row["env_step"]] + [row]
        _write_evaluations(folder, rows)
        report(row)
        eval_env.seed(EVAL_SEED)  # the next evaluation plays the same episodes
        return row

    def after_eval() -> None:
        nonlocal last_checkpoint
        results = evaluations.evaluations_results[-1]
        row = record(float(np.mean(results)), float(np.std(results)), len(results))
        if row["env_step"] - last_checkpoint >= spec.checkpoint_freq:
            _save_checkpoint(model, folder, manager.env_name, row)
            last_checkpoint = row["env_step"]

    eval_env.seed(EVAL_SEED)
    evaluations = EvalCallback(
        eval_env, n_eval_episodes=spec.eval_episodes, eval_freq=max(spec.eval_freq // manager.n_envs, 1),
        log_path=manager.save_path, deterministic=True, callback_after_eval=_AfterEvaluation(after_eval), verbose=0,
    )  # fmt: skip
    remaining = manager.n_timesteps - model.num_timesteps
    train_env = model.get_env()
    assert train_env is not None  # setup_experiment builds the model with its env
    try:
        if remaining > 0:
            model.learn(remaining, callback=[*manager.callbacks, evaluations], reset_num_timesteps=not checkpoint)
        if model.num_timesteps > last_checkpoint:  # a start stopped in the final evaluations only evaluates again
            done = model.num_timesteps >= manager.n_timesteps  # else a callback stopped training: a resume trains on
            _save_checkpoint(model, folder, manager.env_name,
                             {"env_step": model.num_timesteps, "wall_clock_s": time.perf_counter() - started},
                             replay_buffer=not done)  # fmt: skip
        if not rows or rows[-1]["env_step"] != model.num_timesteps or spec.final_eval_episodes != spec.eval_episodes:
            sync_envs_normalization(train_env, eval_env)
            returns = _episode_returns(model, eval_env, spec.final_eval_episodes)
            record(float(np.mean(returns)), float(np.std(returns)), len(returns))
        manager.save_trained_model(model)
        _evaluate_shifts(spec, folder, manager, model)
    finally:
        _close(train_env)
        _close(eval_env)
    return rows[-1]


def _close(env: Any) -> None:
    """Close a VecEnv; one whose subprocesses are already gone (a Ctrl-C reaches them too, a crashed env) is closed
    as far as it can be, without an error that would replace the one in flight."""
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionError):
        env.close()


def _episode_returns(model: Any, env: Any, episodes: int) -> list[float]:
    """Returns of ``episodes`` deterministic episodes on ``env``, seeded with :data:`EVAL_SEED`."""
    from stable_baselines3.common.evaluation import evaluate_policy

    env.seed(EVAL_SEED)
    returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True)
    return list(returns)  # type: ignore[arg-type]  # episode rewards are a list with return_episode_rewards


def _evaluate_shifts(spec: TrialSpec, folder: Path, manager: Any, model: Any) -> None:
    """The final agent on eval envs under each held-out shift: the config's env with the shift's env kwargs, its
    wrappers followed by :class:`~sb3_pretrained.shifts.VisualShift`; rows into ``shifts.csv``."""
    from stable_baselines3.common.vec_env import sync_envs_normalization

    from sb3_pretrained.shifts import VisualShift, parse_shift

    rows = []
    wrapper, env_kwargs = manager.env_wrapper, manager.eval_env_kwargs
    for spec_text in spec.shifts:
        shift = parse_shift(spec_text)

        def shifted(env: Any, pixels: Any = shift.pixels) -> Any:
            return VisualShift(wrapper(env) if wrapper is not None else env, pixels)

        manager.env_wrapper = shifted if shift.pixels else wrapper
        manager.eval_env_kwargs = {**env_kwargs, **dict(shift.env_kwargs)}
        try:
            env = manager.create_envs(spec.n_eval_envs, eval_env=True)
        finally:
            manager.env_wrapper, manager.eval_env_kwargs = wrapper, env_kwargs
        try:
            train_env = model.get_env()
            if train_env is not None:
                sync_envs_normalization(train_env, env)
            returns = _episode_returns(model, env, spec.final_eval_episodes)
        finally:
            _close(env)
        rows.append({"shift": spec_text, "env_step": model.num_timesteps, "eval_return_mean": float(np.mean(returns)),
                     "eval_return_std": float(np.std(returns)), "eval_episodes": len(returns)})  # fmt: skip
    if rows:
        lines = [",".join(SHIFT_COLUMNS)] + [",".join(str(row[c]) for c in SHIFT_COLUMNS) for row in rows]
        write_atomic(folder / SHIFTS_FILE, "\n".join(lines) + "\n")


def read_shifts(folder: Path) -> list[dict[str, Any]]:
    """The rows of a trial's ``shifts.csv`` (none when it has no shifts)."""
    path = Path(folder) / SHIFTS_FILE
    if not path.is_file():
        return []
    with path.open() as file:
        return [{k: (v if k == "shift" else float(v)) for k, v in row.items()} for row in csv.DictReader(file)]


class _AfterEvaluation(BaseCallback):
    """Calls ``function()`` each time ``EvalCallback`` has evaluated (its ``callback_after_eval``)."""

    def __init__(self, function: Callable[[], None]) -> None:
        super().__init__()
        self.function = function

    def _on_step(self) -> bool:
        self.function()
        return True


def _save_checkpoint(model: Any, folder: Path, env_name: Any, row: dict[str, float], replay_buffer: bool = True) -> None:
    """Save what resuming needs as rl_zoo3's ``-i`` reads it, then point ``checkpoint.json`` at it.

    :param replay_buffer: also save an off-policy algorithm's replay buffer (rl_zoo3 loads it when it is there); not
        needed when nothing is left to train
    """
    step = int(row["env_step"])
    name = f"checkpoints/{step:012d}"
    path = folder / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    model.save(path / "model.zip")
    if replay_buffer and getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(path / "replay_buffer.pkl")
    normalize = model.get_vec_normalize_env()
    if normalize is not None:
        (path / str(env_name)).mkdir()
        normalize.save(str(path / str(env_name) / "vecnormalize.pkl"))
    write_atomic(folder / CHECKPOINT_FILE, json.dumps({"env_step": step, "wall_clock_s": row["wall_clock_s"], "path": name}))
    for old in (folder / "checkpoints").iterdir():
        if old.name != path.name:
            shutil.rmtree(old)
