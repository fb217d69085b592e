"""What a fine-tune run of the CarRacing study costs on the CPU, and where the time goes.

Two measurements, each a JSON line:

- ``rollout``: PPO with the study's fine-tune config (discrete CarRacing-v3, FrameSkip 2, 2 stacked frames, 8 envs,
  ``n_steps`` 256, batch 256, 4 epochs; efficientnet_lite0 cut at feature map 2, ``frozen: true``), timed over
  ``--rollouts`` rollouts of 2048 steps plus their epochs (no evaluation), with 0, 1 and 2 top stages training
  (``set_trainable_stages``, what ``GradualUnfreezing`` calls at 25k and 50k steps). ``seconds_per_100k`` scales it to
  the study's 100k steps.
- ``minibatch``: one minibatch of the epochs (256 observations, 2 frames each: 512 images at 96 px) split at each
  stage boundary: the forward pass of the frozen stages below it (``prefix_forward_s``, no gradient) and the forward
  and backward pass of the stages above it (``trainable_forward_backward_s``), run module by module through timm's
  EfficientNet trunk (``conv_stem``, ``bn1``, ``blocks[i]``; checked equal to ``forward_intermediates``). It says how
  much a cache of the frozen stages' output could save while only the top stages train.

``--augment`` also times the config with DrQ's random shift (``augment: {shift: 4}``), and ``--drac`` times that
config with :class:`sb3_pretrained.DrACPPO` in place of PPO (a plain pass for PPO's loss plus an augmented pass for
the regularizer, per minibatch); each row names its ``algo``. ``--amp`` times the unaugmented config twice instead,
in float32 (``amp: false``) and under bf16 autocast (``amp: true``: frozen and training stages alike), each row naming
its ``amp``: what bf16 saves on a CPU that computes it natively (AVX512-BF16, AMX); elsewhere autocast emulates it.

One torch thread (as the study's runs). The numbers in docs/learning.md ("What is left") come from:

    python benchmarks/finetune_cost.py --augment > docs/learning/finetune_cost_carracing.jsonl
    python benchmarks/finetune_cost.py --drac > docs/learning/finetune_cost_carracing_drac.jsonl
    python benchmarks/finetune_cost.py --amp > docs/learning/finetune_cost_carracing_amp.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch
from rl_zoo3.wrappers import FrameSkip
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack

from sb3_pretrained import DrACPPO
from sb3_pretrained.machine import cpu_description
from sb3_pretrained.policies import TimmActorCriticPolicy

EXTRACTOR = dict(model_name="efficientnet_lite0", frozen=True, input_size="native", frame_stack=2, feature_index=2,
                 backbone_lr_scale=0.1, layer_decay=0.8)
STAGES = ["stem", "stage1", "stage2", "stage3"]  # backbone_stages of efficientnet_lite0 cut at feature map 2


def rollouts(count: int, augment: bool, algo: type[PPO] = PPO, amp: bool | None = None) -> list[dict]:
    env = make_vec_env("CarRacing-v3", n_envs=8, seed=0, env_kwargs={"continuous": False}, wrapper_class=FrameSkip,
                       wrapper_kwargs={"skip": 2})
    extractor = dict(EXTRACTOR, **({"augment": {"shift": 4}} if augment else {}), **({} if amp is None else {"amp": amp}))
    model = algo(TimmActorCriticPolicy, VecFrameStack(env, 2), n_steps=256, batch_size=256, n_epochs=4, seed=0,
                 device="cpu", policy_kwargs={"features_extractor_kwargs": extractor})
    extractor_module = model.policy.features_extractor
    assert extractor_module.stage_names == STAGES, extractor_module.stage_names
    rows = []
    steps = model.n_steps * model.n_envs
    for trainable in (0, 1, 2):
        extractor_module.set_trainable_stages(trainable)
        start = time.perf_counter()
        model.learn(steps * count, reset_num_timesteps=False)
        seconds = (time.perf_counter() - start) / count
        rows.append({"measure": "rollout", "algo": algo.__name__, "augment_shift": augment, "amp": amp,
                     "trainable_stages": trainable,
                     "seconds_per_rollout": round(seconds, 1), "steps_per_rollout": steps,
                     "seconds_per_100k": round(seconds * 100_000 / steps)})
    env.close()
    return rows


def minibatch() -> list[dict]:
    backbone = timm.create_model("efficientnet_lite0", pretrained=False)
    backbone.prune_intermediate_layers(indices=[2], prune_norm=True, prune_head=True)
    backbone.eval().to(memory_format=torch.channels_last)
    trunk = [backbone.conv_stem, backbone.bn1, *backbone.blocks]  # stem = conv_stem + bn1, stage k = blocks[k - 1]
    images = torch.rand(512, 3, 96, 96).contiguous(memory_format=torch.channels_last)

    def run(modules: list, x: torch.Tensor) -> torch.Tensor:
        for module in modules:
            x = module(x)
        return x

    with torch.no_grad():
        expected = backbone.forward_intermediates(images, indices=[2], intermediates_only=True)[0]
        assert torch.equal(run(trunk, images), expected), "the trunk is not timm's forward path"
    rows = []
    for trainable in (1, 2, 3):
        split = len(trunk) - trainable  # trunk index of the first trainable stage's first module
        start = time.perf_counter()
        with torch.no_grad():
            boundary = run(trunk[:split], images)
        prefix = time.perf_counter() - start
        for index, module in enumerate(trunk):
            module.requires_grad_(index >= split)
        start = time.perf_counter()
        run(trunk[split:], boundary).sum().backward()
        trainable_time = time.perf_counter() - start
        backbone.zero_grad(set_to_none=True)
        rows.append({"measure": "minibatch", "images": len(images), "trainable_stages": trainable,
                     "trainable": STAGES[len(STAGES) - trainable:], "prefix_forward_s": round(prefix, 2),
                     "trainable_forward_backward_s": round(trainable_time, 2),
                     "prefix_share": round(prefix / (prefix + trainable_time), 2),
                     "boundary_floats_per_image": boundary[0].numel()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1, help="rollouts timed per stage count")
    parser.add_argument("--augment", action="store_true", help="also time the shift-augmented config")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--drac", action="store_true", help="only time the shift-augmented config with DrACPPO")
    only.add_argument("--amp", action="store_true", help="only time the unaugmented config in float32 and in bf16")
    args = parser.parse_args()
    if args.augment and (args.drac or args.amp):
        parser.error("--augment adds the shifted config to the default measurements; --drac and --amp time one set of "
                     "their own (--drac is the shifted config already). Give one of them.")
    torch.set_num_threads(1)
    machine = {"machine": cpu_description(), "torch": torch.__version__, "threads": 1}
    if args.amp:
        rows = rollouts(args.rollouts, augment=False, amp=False) + rollouts(args.rollouts, augment=False, amp=True)
    elif args.drac:
        rows = rollouts(args.rollouts, augment=True, algo=DrACPPO)
    else:
        rows = minibatch() + rollouts(args.rollouts, augment=False)
    if args.augment:
        rows += rollouts(args.rollouts, augment=True)
    for row in rows:
        print(json.dumps({**row, **machine}), flush=True)


if __name__ == "__main__":
    main()
