"""What Ray costs a sweep, and what running trials side by side gains, on this machine.

    python benchmarks/sweep_overhead.py                       # PPO, frozen, MiniGrid-Empty-5x5, 20,000 steps a trial
    python benchmarks/sweep_overhead.py --steps 4096 --trials 2

Each measurement runs in fresh processes, as a user runs the commands, and prints one JSON line:

- ``ray_init``: ``ray.init`` of a local Ray (this machine's cores, no dashboard) and ``ray.shutdown``;
- ``report``: seconds per ``tune.report`` call in a trainable that only reports;
- ``train``: ``sb3-pretrained train`` with the trial's config, steps and evaluation settings (the run alone);
- ``sweep_1``: ``sb3-pretrained sweep`` with that one trial: the command's wall-clock against the trial's own
  (``wall_clock_s`` in its trial.json, from the trial's start to its final evaluation);
- ``sweep_serial`` / ``sweep_parallel``: ``--trials`` seeds one at a time (``--max-concurrent 1``) and one per core.

Every run uses one torch thread (``--cpus-per-trial 1``): on a CPU that another process also uses, more threads than
free cores make each step wait for the slowest thread (measured: 85 s instead of 6 s for a 2,048-step trial with 2
threads on 2 cores beside a busy test run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = "MiniGrid-Empty-5x5-v0"


def timed(command: list[str], cwd: Path) -> float:
    """Wall-clock seconds of ``command`` (``python -m ...``), which must succeed."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


RAY_INIT = """
import os, time, ray
start = time.perf_counter(); ray.init(num_cpus=os.cpu_count(), include_dashboard=False); init = time.perf_counter() - start
start = time.perf_counter(); ray.shutdown(); print(init, time.perf_counter() - start)
"""

REPORT = """
import os, sys, time, ray
from ray import tune
def trainable(config):
    start = time.perf_counter()
    for i in range(config["n"]):
        tune.report({"i": i})
    tune.report({"per_report_s": (time.perf_counter() - start) / config["n"]})
ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
result = tune.Tuner(trainable, param_space={"n": 200}, run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0)).fit()
print(result[0].metrics["per_report_s"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per trial (default: 20000)")
    parser.add_argument("--trials", type=int, default=4, help="trials of the serial/parallel comparison (default: 4)")
    parser.add_argument("--eval-freq", type=int, default=2000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    machine = {"cores": cores, "load_before": os.getloadavg()[0]}
    work = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    evaluation = ["--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes)]

    out = subprocess.run([sys.executable, "-c", RAY_INIT], capture_output=True, text=True, check=True).stdout.split()
    print(json.dumps({"measure": "ray_init", "init_s": float(out[0]), "shutdown_s": float(out[1]), **machine}), flush=True)
    out = subprocess.run([sys.executable, "-c", REPORT, str(work / "report")], capture_output=True, text=True, check=True)
    print(json.dumps({"measure": "report", "per_report_s": float(out.stdout.split()[-1]), **machine}), flush=True)

    train = ["-m", "sb3_pretrained.cli", "train", "--variant", "frozen", "-n", str(args.steps), "--seed", "0", "--no-progress"]
    wall = timed([*train, *evaluation, "--num-threads", "1"], work)
    print(json.dumps({"measure": "train", "wall_s": wall, "steps": args.steps, **machine}), flush=True)

    sweep = ["-m", "sb3_pretrained.cli", "sweep", "--variants", "frozen", "-n", str(args.steps), "-f", str(work), *evaluation]
    for name, seeds, concurrent in (("sweep_1", 1, 1), ("sweep_serial", args.trials, 1), ("sweep_parallel", args.trials, 0)):
        wall = timed([*sweep, "--name", name, "--seeds", str(seeds), "--max-concurrent", str(concurrent)], work)
        trials = [json.loads(p.read_text()) for p in sorted((work / name).glob("*/trial.json"))]
        record = {"measure": name, "wall_s": wall, "trials": seeds, "max_concurrent": concurrent or cores, "steps": args.steps}
        record["trial_wall_s"] = [t["wall_clock_s"] for t in trials]
        print(json.dumps({**record, **machine, "load_after": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
