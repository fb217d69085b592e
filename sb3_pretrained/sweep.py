"""``sb3-pretrained sweep``: variants x seeds of rl_zoo3 trainings on Ray Tune, resumable, with a report.

A sweep folder (``logs/sweeps/<name>/``) is both Ray Tune's experiment folder and a set of plain files:

- ``sweep.json``: the trials (:class:`sb3_pretrained.trial.TrialSpec`) and their resources;
- ``configs/``: the config file of each variant (copied, or derived for ``scratch``), so the folder is complete
  and can move: to another path or machine, even without Ray's own state (``experiment_state-*.json``,
  ``basic-variant-state-*.json``, ``tuner.pkl``, the trials' ``params.pkl``), ``--resume`` continues each trial
  from the checkpoint in its folder;
- ``<variant>_seed<k>/``: one folder per trial, Ray's files (``params.json``, ``progress.csv``, ...) beside the
  trial's own (:mod:`sb3_pretrained.trial`);
- ``results.csv``, ``summary.md``, ``curves.png`` (:mod:`sb3_pretrained.results`).

Without Ray, :func:`run_in_process` runs the same trials one after another in the calling process (``--no-ray``).

Ray knowledge lives here (checked against Ray 2.60): a function trainable reporting with ``tune.report``, one
trial per (variant, seed) from a ``grid_search`` over trial dicts, ``tune.with_resources`` for the per-trial
CPUs/GPUs, ``Tuner.restore(..., resume_errored=True)`` to resume. Trials resume from their own checkpoints (in the
trial folder, written atomically), not from Ray's: Ray saves its experiment state every few seconds, so after a kill
it may not know the latest checkpoint, while the trial folder always does. Trials write straight into the sweep
folder, so on a cluster it must be on a filesystem every node mounts (as Ray's ``storage_path`` must be).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from sb3_pretrained.atomic import write_atomic
from sb3_pretrained.scratch import variant_config
from sb3_pretrained.shifts import parse_shift
from sb3_pretrained.trial import VEC_ENVS, TrialSpec, run_trial
from sb3_pretrained.zoo import VARIANTS, ConfigError, config_entry, load_config, validate_config

SWEEP_FILE = "sweep.json"
#: Environment of every trial: weights come from the offline sources (pip packages, the local cache), never a download.
TRIAL_ENV_VARS = {"HF_HUB_OFFLINE": "1"}
#: Defaults, as fractions of a trial's env steps: 20 evaluations and 10 checkpoints per trial.
EVALUATIONS_PER_TRIAL = 20
CHECKPOINTS_PER_TRIAL = 10


class SweepError(ValueError):
    """A sweep that cannot start, resume or be reported; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What each trial gets from Ray: ``cpus`` (also its torch threads) and ``gpus`` (a fraction shares a GPU); at most
    ``max_concurrent`` trials run at once (0: as many as the cluster's resources allow)."""

    cpus: float = 1
    gpus: float = 0
    max_concurrent: int = 0


def plan_trials(
    algo: str,
    env_id: str,
    variants: Sequence[str],
    seeds: Sequence[int],
    folder: str | Path,
    n_timesteps: int | None = None,
    conf_files: dict[str, str] | None = None,
    hyperparams: Sequence[str] = (),
    eval_freq: int | None = None,
    eval_episodes: int = 5,
    final_eval_episodes: int | None = None,
    checkpoint_freq: int | None = None,
    n_eval_envs: int = 1,
    resources: Resources = Resources(),
    shifts: Sequence[str] = (),
    trust_config: bool = False,
    vec_env: str = "dummy",
) -> list[TrialSpec]:
    """Check every variant's config and write it into ``<folder>/configs/``; the trials, variant-major.

    :param algo: rl_zoo3 algorithm name
    :param env_id: gymnasium env id
    :param variants: shipped variants (:data:`sb3_pretrained.zoo.VARIANTS`) and names given a file in ``conf_files``
    :param seeds: one trial per variant and seed
    :param folder: the sweep folder
    :param n_timesteps: env steps per trial (default: each config's ``n_timesteps``)
    :param conf_files: variant -> your own config file (``scratch`` is derived from the ``frozen`` one when given)
    :param hyperparams: rl_zoo3 ``--hyperparams`` overrides for every trial
    :param eval_freq: env steps between evaluations (default: 1/20 of the trial's steps)
    :param eval_episodes: episodes per evaluation
    :param final_eval_episodes: episodes of the final evaluation (default: ``eval_episodes``)
    :param checkpoint_freq: env steps between checkpoints (default: 1/10 of the trial's steps)
    :param n_eval_envs: envs of each eval VecEnv
    :param resources: per-trial CPUs (torch threads) and GPUs
    :param shifts: held-out visual shifts each final agent is also evaluated under (:mod:`sb3_pretrained.shifts`)
    :param trust_config: the configs may run any code (see :func:`sb3_pretrained.zoo.validate_config`)
    :param vec_env: how each trial steps its envs (:data:`sb3_pretrained.trial.VEC_ENVS`)
    :raises ConfigError: a variant without a config, a config that would fail, a malformed shift or an unknown
        ``vec_env``
    """
    conf_files = dict(conf_files or {})
    if vec_env not in VEC_ENVS:
        raise ConfigError(f"Unknown vec env '{vec_env}': choose one of {', '.join(VEC_ENVS)}.")
    for variant in variants:
        if variant not in VARIANTS and variant not in conf_files:
            raise ConfigError(
                f"Unknown variant '{variant}'. Shipped variants: {', '.join(VARIANTS)}; for your own, give its config: "
                f"--conf-file {variant}=FILE.yml."
            )
    for shift in shifts:
        try:
            parse_shift(shift)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    configs = Path(folder) / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    trials = []
    for variant in variants:
        source = conf_files.get(variant) or (conf_files.get("frozen") if variant == "scratch" else None)
        path = variant_config(algo, variant, configs, source)
        if path.parent != configs:
            path = Path(shutil.copyfile(path, configs / f"{algo}_{variant}.yml"))
        validate_config(path, algo, env_id, overrides=hyperparams, trust=trust_config)
        steps = n_timesteps or int(config_entry(load_config(path), env_id, str(path))[1]["n_timesteps"])
        for seed in seeds:
            trials.append(
                TrialSpec(
                    algo=algo, env_id=env_id, variant=variant, seed=seed, config=str(path.relative_to(folder)),
                    n_timesteps=steps, eval_freq=eval_freq or max(steps // EVALUATIONS_PER_TRIAL, 1),
                    eval_episodes=eval_episodes, final_eval_episodes=final_eval_episodes or eval_episodes,
                    checkpoint_freq=checkpoint_freq or max(steps // CHECKPOINTS_PER_TRIAL, 1),
                    hyperparams=tuple(hyperparams), n_eval_envs=n_eval_envs, num_threads=max(int(resources.cpus), 1),
                    shifts=tuple(shifts), vec_env=vec_env,
                )
            )  # fmt: skip
    return trials


def save_sweep(folder: str | Path, trials: Sequence[TrialSpec], resources: Resources) -> None:
    """Write ``sweep.json``, what ``--resume`` reads."""
    data = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resources": dataclasses.asdict(resources),
        "trials": [dataclasses.asdict(trial) for trial in trials],
    }
    write_atomic(Path(folder) / SWEEP_FILE, json.dumps(data, indent=2) + "\n")


def load_sweep(folder: str | Path) -> tuple[list[TrialSpec], Resources]:
    """The trials and resources of a sweep folder.

    :raises SweepError: ``folder`` is not a sweep folder
    """
    path = Path(folder) / SWEEP_FILE
    if not path.is_file():
        raise SweepError(
            f"'{folder}' is not a sweep folder (it has no {SWEEP_FILE}). Give the folder `sb3-pretrained sweep` "
            "created, e.g. logs/sweeps/<name>."
        )
    data = json.loads(path.read_text())
    trials = [
        TrialSpec(**{**trial, "hyperparams": tuple(trial["hyperparams"]), "shifts": tuple(trial.get("shifts", ()))})
        for trial in data["trials"]
    ]
    return trials, Resources(**data["resources"])


def _trainable(config: dict[str, Any], folder: str) -> None:
    """Ray Tune's function trainable: one trial, in its folder inside the sweep folder."""
    from ray import tune

    spec = TrialSpec(**{**config["trial"], "hyperparams": tuple(config["trial"]["hyperparams"])})
    # Ray restores the trial dicts it saved; a --vec-env given on --resume is in sweep.json only
    vec_env = {trial.name: trial.vec_env for trial in load_sweep(folder)[0]}.get(spec.name, spec.vec_env)
    spec = dataclasses.replace(spec, config=str(Path(folder, spec.config)), vec_env=vec_env)
    run_trial(spec, Path(folder, spec.name), report=tune.report)


def set_vec_env(folder: str | Path, vec_env: str) -> None:
    """Make every trial of the sweep in ``folder`` step its envs with ``vec_env`` from its next start on (``--resume
    --vec-env``): the same run either way (:attr:`sb3_pretrained.trial.TrialSpec.vec_env`), for a sweep that moves
    to a machine with fewer or more cores.

    :raises SweepError: ``folder`` is not a sweep folder, or ``vec_env`` is unknown
    """
    if vec_env not in VEC_ENVS:
        raise SweepError(f"Unknown vec env '{vec_env}': choose one of {', '.join(VEC_ENVS)}.")
    trials, resources = load_sweep(folder)
    data = json.loads((Path(folder) / SWEEP_FILE).read_text())
    data["trials"] = [dataclasses.asdict(dataclasses.replace(trial, vec_env=vec_env)) for trial in trials]
    write_atomic(Path(folder) / SWEEP_FILE, json.dumps(data, indent=2) + "\n")


def run_in_process(folder: str | Path) -> list[str]:
    """Run (or resume) the sweep described by ``<folder>/sweep.json`` without Ray: its trials one after another in
    this process, each with every device this process sees; returns the failed trials' names.

    For a machine without Ray, or one trial per command (a sweep of one seed). The trial folders are the same as on
    Ray, so a sweep can start on Ray and go on here or the other way round: finished trials are kept, the others
    continue from their last checkpoint, failed ones are retried. Of ``sweep.json``'s resources only the CPUs
    apply (each trial's torch threads, set in this process); GPUs and ``max_concurrent`` are Ray's. A Ctrl-C stops
    the sweep (``KeyboardInterrupt``), not only the trial under way.
    """
    folder = Path(folder).resolve()
    trials, _ = load_sweep(folder)
    failed = []
    saved = {name: os.environ.get(name) for name in TRIAL_ENV_VARS}
    os.environ.update(TRIAL_ENV_VARS)
    try:
        for spec in trials:
            spec = dataclasses.replace(spec, config=str(folder / spec.config))
            try:
                run_trial(spec, folder / spec.name, report=partial(_print_evaluation, spec.name))
            except Exception as err:  # recorded in the trial's trial.json, as on Ray; the next trial runs
                print(f"{spec.name} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                failed.append(spec.name)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return sorted(failed)


def _print_evaluation(name: str, row: dict[str, float]) -> None:
    """One line per evaluation of an in-process trial (Ray prints its own table)."""
    print(
        f"{name}: {int(row['env_step'])} env steps, {row['wall_clock_s']:.0f} s, eval return "
        f"{row['eval_return_mean']:.1f} +- {row['eval_return_std']:.1f} ({int(row['eval_episodes'])} episodes)",
        flush=True,
    )


def _trial_name(trial: Any) -> str:
    """Ray's name and folder name of a trial: the trial folder's name, ``<variant>_seed<k>``."""
    return f"{trial.config['trial']['variant']}_seed{trial.config['trial']['seed']}"


def run(folder: str | Path, address: str | None = None, resume: bool = False) -> list[str]:
    """Run (or resume) the sweep described by ``<folder>/sweep.json`` on Ray Tune; returns the failed trials' names.

    :param folder: the sweep folder
    :param address: a Ray cluster to join (``auto``, ``ray://host:10001``, ...); default: a local Ray on this machine's
        cores, started and stopped here
    :param resume: continue an interrupted sweep: finished trials are kept, the others continue from their last
        checkpoint, failed ones are retried
    """
    import ray
    from ray import tune

    folder = Path(folder).resolve()
    trials, resources = load_sweep(folder)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, folder=str(folder)), {"cpu": resources.cpus, "gpu": resources.gpus}
    )
    runtime_env = {"env_vars": TRIAL_ENV_VARS}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)
    try:
        if resume and tune.Tuner.can_restore(folder):
            tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=True)
        else:  # a new sweep, or one killed before Ray saved any state (the trial folders hold the progress)
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([dataclasses.asdict(trial) for trial in trials])},
                tune_config=tune.TuneConfig(
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                    max_concurrent_trials=resources.max_concurrent or None,
                ),
                run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent)),
            )
        results = tuner.fit()
    finally:
        ray.shutdown()
    return sorted(_trial_name(results[i]) for i in range(len(results)) if results[i].error is not None)
