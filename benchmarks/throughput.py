"""Env-steps/s of full ``learn()`` and peak memory: the naive recipe, NatureCNN, our frozen extractor, the frozen
fast path and fine-tuning, plus the env-only and backbone-only limits, measured in one run on one machine.

    python benchmarks/throughput.py                                   # CPU, PPO, CarRacing-v3, 224 px
    python benchmarks/throughput.py --algo dqn --env breakout --size 96
    python benchmarks/throughput.py --device cuda --n-envs 16 --env breakout --vec-env subproc
    python benchmarks/throughput.py --preset gpu --out $OUT/gpu.jsonl     # every variant in under 4 minutes

``--preset gpu`` (PPO, Breakout, 16 envs, 224 px, CUDA) runs each variant for a fixed time instead of a fixed step
count (``--seconds-per-variant``, whole rollouts), times the backbone alone eagerly and replayed from a CUDA graph, and
skips what would run past ``--deadline`` (240 s by default there): one 10-minute GPU session measures it with margin.
Each line is appended to ``--out`` as it is measured, so a run cut short keeps what it finished.

Each variant runs in its own subprocess (so peak memory is its own). Results are JSON lines on stdout (and
appended to ``--out``), with the seconds each variant spent stepping the envs (``env_s``) and in the backbone
(``backbone_s``, for our extractor and fast path), so the loop's own overhead shows whatever the machine's
speed. Single frames (no frame stack) for every variant: a stack multiplies the backbone's
work equally for all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("naive", "naturecnn", "frozen", "fastpath", "finetune", "naive_finetune", "frozen_compile")
SLOW = ("naive", "finetune", "naive_finetune")  # a rollout takes minutes on a CPU at 224 px
DQN_LEARNING_STARTS = 256  # DQN's steps before this are random actions: no network pass, no update
ENV_IDS = {"carracing": "CarRacing-v3", "breakout": "BreakoutNoFrameskip-v4"}
#: ``--preset gpu``: the GPU measurement of the GPU issue, sized to end within 4 minutes on an H100/H200.
PRESETS = {
    "gpu": dict(algo="ppo", env="breakout", n_envs=16, size=224, device="cuda", n_steps=128, seconds_per_variant=12.0,
                backbone_seconds=0.5, deadline=240.0, graphs=True),
}


def make_env(env: str, n_envs: int, vec_env: str = "dummy", seed: int = 0):
    """``n_envs`` copies of ``env`` stepped one after the other in this process (``vec_env="dummy"``) or each in its
    own process (``"subproc"``: the envs step in parallel, at the cost of sending observations between processes)."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    vec_env_cls = SubprocVecEnv if vec_env == "subproc" else DummyVecEnv
    if env == "breakout":
        import ale_py  # noqa: F401  (registers the ALE envs)

        return make_atari_env(ENV_IDS[env], n_envs=n_envs, seed=seed, vec_env_cls=vec_env_cls)  # 84x84x1 grayscale
    return make_vec_env(ENV_IDS[env], n_envs=n_envs, seed=seed, vec_env_cls=vec_env_cls,
                        env_kwargs=dict(continuous=False))  # 96x96x3


def naive_extractor_class():
    """A timm extractor written the way the SB3 custom-policy docs teach: resize and normalize in forward,
    ``requires_grad = False`` to freeze, nothing else."""
    import timm
    import torch as th
    import torch.nn.functional as F
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    from sb3_pretrained.weights import PACKAGED_WEIGHTS

    class NaiveTimmExtractor(BaseFeaturesExtractor):
        def __init__(self, observation_space, size: int = 224, frozen: bool = True):
            super().__init__(observation_space, features_dim=1280)
            self.model = timm.create_model("efficientnet_lite0", num_classes=0)
            checkpoint = th.load(PACKAGED_WEIGHTS["efficientnet_lite0"].path(), weights_only=True)
            self.model.load_state_dict(dict(zip(self.model.state_dict(), checkpoint.values(), strict=False)))
            if frozen:
                for p in self.model.parameters():
                    p.requires_grad = False
            self.size = size
            self.register_buffer("mean", th.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", th.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, observations):
            if observations.shape[1] == 1:
                observations = observations.repeat(1, 3, 1, 1)
            x = F.interpolate(observations, size=(self.size, self.size), mode="bilinear", align_corners=False)
            return self.model((x - self.mean) / self.std)

    return NaiveTimmExtractor


def build(variant: str, algo: str, env_name: str, size: int, n_envs: int, device: str, buffer_size: int, n_steps: int,
          grad_checkpointing: bool = False, vec_env: str = "dummy"):
    from stable_baselines3 import DQN, PPO

    from sb3_pretrained import TimmExtractor
    from sb3_pretrained.wrappers import FrozenBackboneEmbedding

    env = make_env(env_name, n_envs, vec_env)
    policy, policy_kwargs = "CnnPolicy", {}
    if variant in ("naive", "naive_finetune"):
        policy_kwargs = dict(
            features_extractor_class=naive_extractor_class(),
            features_extractor_kwargs=dict(size=size, frozen=variant == "naive"),
        )
    elif variant in ("frozen", "finetune", "frozen_compile"):
        policy_kwargs = dict(
            features_extractor_class=TimmExtractor,
            features_extractor_kwargs=dict(model_name="efficientnet_lite0", frozen=variant != "finetune", input_size=size,
                                           grad_checkpointing=grad_checkpointing and variant == "finetune"),
        )
        if variant == "frozen_compile":  # torch.compile's CUDA graphs instead of ours (issue 13 asks for both)
            policy_kwargs["features_extractor_kwargs"]["cuda_graphs"] = False
    elif variant == "fastpath":
        dtype = "uint8" if algo == "dqn" else "float16"  # as the shipped *_embedding.yml configs
        env = FrozenBackboneEmbedding(env, "efficientnet_lite0", input_size=size, device=device, dtype=dtype)
        policy = "MlpPolicy"
    if algo == "ppo":
        model = PPO(policy, env, n_steps=n_steps, batch_size=256, n_epochs=10, device=device,
                    policy_kwargs=policy_kwargs, seed=0)
    else:
        model = DQN(policy, env, buffer_size=buffer_size, learning_starts=DQN_LEARNING_STARTS, train_freq=4, batch_size=32,
                    target_update_interval=1000, device=device, policy_kwargs=policy_kwargs, seed=0)
    if variant == "frozen_compile":
        import torch

        for encoder in backbone_encoders(model):
            encoder.backbone.forward = torch.compile(encoder.backbone.forward, mode="reduce-overhead")
    return model


def peak_memory(device: str) -> dict:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited from the parent on Linux)."""
    import torch

    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    out = {"peak_rss_mb": round(hwm_kb / 1024, 1)}
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def backbone_encoders(model) -> list:
    """Our BackboneEncoders that ``model`` runs: those of the policy's extractor copies, or the fast path wrapper's."""
    from stable_baselines3.common.vec_env import unwrap_vec_wrapper

    from sb3_pretrained.callbacks import model_extractors
    from sb3_pretrained.wrappers import FrozenBackboneEmbedding

    wrapper = unwrap_vec_wrapper(model.get_env(), FrozenBackboneEmbedding)
    return [e.encoder for e in model_extractors(model)] + ([wrapper.encoder] if wrapper is not None else [])


def synchronize(device: str) -> None:
    """Wait for the work queued on a CUDA device, so that the clock sees it (nothing to wait for on a CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_spent_in(model, device: str) -> dict[str, float]:
    """Seconds spent, from now on, stepping the raw envs (``env_s``), in our backbones' preprocess + forward passes
    (``backbone_s`` over ``backbone_calls`` calls: the frozen extractor's cache misses, the fast path's wrapper) and
    in the feature cache around them (``cache_s``: hashing rows, gathering hits, storing misses; the misses'
    backbone time is in ``backbone_s`` only), accumulated in place. On CUDA the device is synchronized before and
    after each timed call, so a call is not charged for work queued before it."""

    totals: dict[str, float] = {"env_s": 0.0, "backbone_s": 0.0, "backbone_calls": 0, "cache_s": 0.0}

    def timed(owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        def run(*args, **kwargs):
            synchronize(device)
            start, backbone_before = time.perf_counter(), totals["backbone_s"]
            try:
                return original(*args, **kwargs)
            finally:
                synchronize(device)
                seconds = time.perf_counter() - start
                if key == "cache_s":  # the misses' backbone time counts as backbone time
                    seconds -= totals["backbone_s"] - backbone_before
                totals[key] += seconds
                if key == "backbone_s":
                    totals["backbone_calls"] += 1

        setattr(owner, name, run)

    timed(model.get_env().unwrapped, "step_wait", "env_s")
    caches = {}
    for encoder in backbone_encoders(model):
        timed(encoder, "embed", "backbone_s")
        if encoder.feature_cache is not None:
            caches[id(encoder.feature_cache)] = encoder.feature_cache
    for cache in caches.values():
        timed(cache, "features", "cache_s")
    return totals


def precision_choices(model) -> dict:
    """The precision each backbone chose by measurement (bf16 or not, with ms per call of fp32 and bf16, per
    encoder and input shape), for the record."""
    choices = {}
    for index, encoder in enumerate(backbone_encoders(model)):
        for key, chosen in encoder.precision.choices.items():
            timings = encoder.precision.timings[key]
            choices[f"encoder {index}, input {'x'.join(map(str, key[0]))}"] = {
                "bf16": chosen, "ms_fp32": round(timings[False] * 1e3, 3), "ms_bf16": round(timings[True] * 1e3, 3)
            }  # fmt: skip
    return {"precision": choices} if choices else {}


def run_variant(args) -> dict:

    model = build(args.variant, args.algo, args.env, args.size, args.n_envs, args.device, args.buffer_size, args.n_steps,
                  args.grad_checkpointing, args.vec_env)
    warmup_start = time.perf_counter()
    if args.warmup_steps:
        model.learn(args.warmup_steps)  # first rollout/compilation out of the timing
    warmup_s = time.perf_counter() - warmup_start
    spent = time_spent_in(model, args.device)
    synchronize(args.device)
    start, first_step = time.perf_counter(), model.num_timesteps
    if args.seconds_per_variant:
        # Whole rollouts (PPO) or chunks of 512 steps (DQN) until the time is up.
        chunk = args.n_steps * args.n_envs if args.algo == "ppo" else 512
        while time.perf_counter() - start < args.seconds_per_variant:
            model.learn(chunk, reset_num_timesteps=False)
    else:
        model.learn(args.timesteps, reset_num_timesteps=False)
    synchronize(args.device)
    seconds = time.perf_counter() - start
    steps = model.num_timesteps - first_step
    result = {"variant": args.variant, "steps": steps, "seconds": round(seconds, 2), "warmup_s": round(warmup_s, 2),
              "env_steps_per_s": round(steps / seconds, 2), **peak_memory(args.device),
              **{key: value if key.endswith("_calls") else round(value, 2) for key, value in spent.items()},
              **precision_choices(model)}
    if args.algo == "dqn":
        buffer = model.replay_buffer
        stored = buffer.observations.nbytes + (0 if buffer.optimize_memory_usage else buffer.next_observations.nbytes)
        result["bytes_per_transition_obs"] = stored // (buffer.buffer_size * buffer.n_envs)
        result["obs_shape"], result["obs_dtype"] = list(buffer.obs_shape), str(buffer.observations.dtype)
    return result


def env_only(args) -> dict:
    import numpy as np

    env = make_env(args.env, args.n_envs, args.vec_env)
    env.reset()
    actions = np.array([env.action_space.sample() for _ in range(args.n_envs)])
    steps = max(args.n_envs * 50, args.timesteps // 2)
    start = time.perf_counter()
    for _ in range(steps // args.n_envs):
        env.step(actions)
    seconds = time.perf_counter() - start
    env.close()
    return {"variant": "env_only", "env_steps_per_s": round(steps / seconds, 1)}


def backbone_only(args, batch_sizes) -> list[dict]:
    """Inference throughput as timm's benchmark.py measures it: eval, inference_mode, warm-up, then timed
    batches; fp32 and bf16, with and without channels_last (only channels_last with ``--graphs``, which adds each
    combination replayed from a CUDA graph: :func:`sb3_pretrained.cuda_graphs.capture_cuda_graph`, as the
    frozen extractor replays it)."""
    import timm
    import torch

    from sb3_pretrained.cuda_graphs import capture_cuda_graph

    cuda = args.device.startswith("cuda")
    modes = ("eager", "graph") if args.graphs and cuda else ("eager",)
    layouts = (True,) if args.graphs else (False, True)
    results = []
    for batch in batch_sizes:
        for channels_last in layouts:
            for dtype in ("float32", "bfloat16"):
                model = timm.create_model("efficientnet_lite0", num_classes=0).to(args.device).eval()
                model.requires_grad_(False)
                x = torch.rand(batch, 3, args.size, args.size, device=args.device)
                if channels_last:
                    model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
                autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=dtype == "bfloat16",
                                          cache_enabled=False)
                for mode in modes:
                    with torch.no_grad(), autocast:
                        if mode == "graph":
                            call = capture_cuda_graph(model, x)
                        else:
                            def call(model=model, x=x):
                                return model(x)
                        for _ in range(3):
                            call()
                        synchronize(args.device)
                        iterations, start = 0, time.perf_counter()
                        while time.perf_counter() - start < args.backbone_seconds:
                            call()
                            iterations += 1
                        synchronize(args.device)
                        seconds = time.perf_counter() - start
                    results.append({"variant": "backbone_only", "batch": batch, "channels_last": channels_last,
                                    "dtype": dtype, "mode": mode, "img_per_s": round(iterations * batch / seconds, 1),
                                    "ms_per_call": round(seconds / iterations * 1e3, 3)})
    return results


def final_readings_s(args: argparse.Namespace) -> float:
    """Seconds ``--deadline`` keeps for the env-only and backbone-only readings after the variants: each of the
    backbone's timed readings (2 dtypes, 1-2 layouts, 1-2 modes) plus about 1 s to build and warm it up, and 5 s of env."""
    readings = 2 * (1 if args.graphs else 2) * (2 if args.graphs and args.device.startswith("cuda") else 1)
    return 5.0 + readings * (args.backbone_seconds + 1.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a named set of the defaults below (flags given as well override it): " + "; ".join(
                            f"{name}: " + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                                                   for k, v in preset.items())
                            for name, preset in PRESETS.items()))
    parser.add_argument("--algo", choices=["ppo", "dqn"], default="ppo")
    parser.add_argument("--env", choices=sorted(ENV_IDS), default="carracing")
    parser.add_argument("--size", type=int, default=224, help="backbone input size in px")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--vec-env", choices=["dummy", "subproc"], default="dummy",
                        help="step the envs in this process one by one (dummy) or each in its own process (subproc: "
                        "faster where stepping the envs is the bottleneck and cores are free)")
    parser.add_argument("--n-steps", type=int, default=128, help="PPO rollout length per env (batch 256, 10 epochs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timesteps", type=int, default=2048, help="timed env steps per variant")
    parser.add_argument("--slow-timesteps", type=int, default=None,
                        help=f"timed steps for the slow variants {SLOW}, which then run without warm-up "
                        "(DQN: after its random-action steps)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps first (default: one rollout)")
    parser.add_argument("--grad-checkpointing", action="store_true", help="finetune variant: timm gradient checkpointing")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="DQN replay buffer size")
    parser.add_argument("--backbone-seconds", type=float, default=5.0)
    parser.add_argument("--seconds-per-variant", type=float, default=None,
                        help="run each variant this long (whole rollouts) instead of --timesteps/--slow-timesteps")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole run: a variant that would start after it is skipped, one still "
                        "running at it is stopped (each listed with the reason)")
    parser.add_argument("--graphs", action="store_true",
                        help="backbone alone: channels_last only, eager and replayed from a CUDA graph (on CUDA)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    preset, _ = parser.parse_known_args()
    if preset.preset:
        parser.set_defaults(**PRESETS[preset.preset])
    args = parser.parse_args()
    if args.warmup_steps is None:
        args.warmup_steps = args.n_steps * args.n_envs if args.algo == "ppo" else 512
    return args


def run_variants(args: argparse.Namespace, emit, started: float) -> None:
    """Each variant in its own subprocess (so peak memory is its own), within ``--deadline``."""
    for variant in args.variants.split(","):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        if variant in SLOW and (args.slow_timesteps or args.seconds_per_variant):
            # No warm-up rollout; DQN still skips its random-action steps, which would time no network at all.
            warmup = 0 if args.algo == "ppo" else DQN_LEARNING_STARTS
            command += ["--warmup-steps", str(warmup)]
            if args.slow_timesteps:
                command += ["--timesteps", str(args.slow_timesteps)]
        left = None if args.deadline is None else args.deadline - final_readings_s(args) - (time.perf_counter() - started)
        if left is not None and left < (args.seconds_per_variant or 0) + 5:
            emit({"variant": variant, "error": f"skipped: {left:.0f} s left of the {args.deadline:.0f} s deadline"})
            continue
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            emit({"variant": variant, "error": f"stopped at the {args.deadline:.0f} s deadline"})
            continue
        if done.returncode != 0:
            emit({"variant": variant, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        emit(json.loads(done.stdout.strip().splitlines()[-1]))


def summarize(lines: list[dict], args: argparse.Namespace, started: float) -> dict:
    """The ratios the docs quote: each variant against the limit (env alone + backbone alone), NatureCNN and the
    naive recipe; the backbone's time per call in the loop against the CUDA-graph backbone alone."""
    by_variant = {r["variant"]: r for r in lines if "env_steps_per_s" in r}
    env_rate = max(r["env_steps_per_s"] for r in lines if r["variant"] == "env_only")
    alone = [r for r in lines if r["variant"] == "backbone_only" and r["batch"] == args.n_envs]
    best = max(r["img_per_s"] for r in alone)
    limit = 1 / (1 / env_rate + 1 / best)
    summary = {"variant": "summary", "limit_env_steps_per_s": round(limit, 2), "env_only_steps_per_s": env_rate,
               "best_backbone_img_per_s": best, "seconds": round(time.perf_counter() - started, 1)}
    graphed = [r["ms_per_call"] for r in alone if r.get("mode") == "graph"]
    for name in ("fastpath", "frozen"):
        if graphed and by_variant.get(name, {}).get("backbone_calls"):
            # The backbone inside the loop against the best CUDA-graph backbone alone at the same batch.
            per_call = by_variant[name]["backbone_s"] / by_variant[name]["backbone_calls"] * 1e3
            summary[f"{name}_backbone_ms_per_call"] = round(per_call, 3)
            summary[f"{name}_backbone_over_graph_alone"] = round(per_call / min(graphed), 2)
    for name in ("fastpath", "frozen"):
        if name in by_variant:
            summary[f"{name}_over_limit"] = round(by_variant[name]["env_steps_per_s"] / limit, 3)
            for base in ("naive", "naturecnn"):
                if base in by_variant:
                    ratio = by_variant[name]["env_steps_per_s"] / by_variant[base]["env_steps_per_s"]
                    summary[f"{name}_over_{base}"] = round(ratio, 2)
    if "finetune" in by_variant and "naive_finetune" in by_variant:
        summary["finetune_over_naive_finetune"] = round(
            by_variant["finetune"]["env_steps_per_s"] / by_variant["naive_finetune"]["env_steps_per_s"], 2
        )
    return summary


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    if args.variant:
        print(json.dumps(run_variant(args)), flush=True)
        return

    context = {"preset": args.preset, "algo": args.algo, "env": ENV_IDS[args.env], "size": args.size,
               "n_envs": args.n_envs, "n_steps": args.n_steps, "vec_env": args.vec_env,
               "grad_checkpointing": args.grad_checkpointing, "device": args.device,
               "torch_threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None}
    lines: list[dict] = []

    def emit(record: dict) -> None:
        record = {**context, **record}
        lines.append(record)
        print(json.dumps(record), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")

    emit(env_only(args))
    batch_sizes = sorted({args.n_envs, 256 if args.algo == "ppo" else 32})
    for record in backbone_only(args, batch_sizes):
        emit(record)
    run_variants(args, emit, started)
    # The limit again after the variants: a shared or throttled CPU drifts; the faster reading is the limit.
    emit(env_only(args))
    for record in backbone_only(args, [args.n_envs]):
        emit(record)
    emit(summarize(lines, args, started))


if __name__ == "__main__":
    main()
