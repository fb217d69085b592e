"""What one backbone pass costs inside PPO's loop, with and without sb3_pretrained's glibc malloc settings.

    python benchmarks/backbone_in_loop.py      # CarRacing-v3, 8 envs, efficientnet_lite0 at 224 px

For the frozen extractor and the fast path, each in a fresh process with ``SB3_PRETRAINED_MALLOC=0`` (glibc's
defaults) and without it (the settings of ``sb3_pretrained.allocator``): the mean wall, CPU and kernel (system)
milliseconds of one backbone pass of 8 frames (preprocessing included) over 768 PPO steps. JSON lines on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def measure(variant: str) -> dict:
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from throughput import backbone_encoders, build

    model = build(variant, "ppo", "carracing", 224, 8, "cpu", 1000, 32)
    encoder = backbone_encoders(model)[0]
    embed = encoder.embed
    wall, cpu, kernel = [], [], []

    def timed(images):
        start, start_cpu, start_os = time.perf_counter(), time.process_time(), os.times()
        features = embed(images)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        kernel.append(os.times().system - start_os.system)
        return features

    encoder.embed = timed
    model.learn(768)
    skip = 8  # the first rollout steps allocate for the first time either way
    # Means: process and kernel times tick in 10 ms steps on Linux, so only their averages are meaningful.
    return {name: round(float(np.mean(values[skip:])) * 1000, 1)
            for name, values in (("wall_ms", wall), ("cpu_ms", cpu), ("kernel_ms", kernel))}


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1])))
        return
    for variant in ("frozen", "fastpath"):
        for malloc in ("glibc defaults", "sb3_pretrained settings"):
            env = dict(os.environ, SB3_PRETRAINED_MALLOC="0" if malloc == "glibc defaults" else "1")
            done = subprocess.run([sys.executable, __file__, variant], env=env, capture_output=True, text=True, check=True)
            print(json.dumps({"variant": variant, "malloc": malloc, **json.loads(done.stdout.strip().splitlines()[-1])}),
                  flush=True)


if __name__ == "__main__":
    main()
