"""Fine-tuning: the optimizer's actual learning rates during learn(), freezing, resume, TensorBoard tags."""

from __future__ import annotations

import math

import pytest
import torch
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_pretrained import GradualUnfreezing, LRWarmup, TimmExtractor
from sb3_pretrained.optim import GroupedOptimizer, model_optimizers
from tests.helpers import TINY_MODEL, image_env

OFF_POLICY = dict(learning_starts=32, buffer_size=300, batch_size=8, train_freq=8, gradient_steps=1)
ALGO_KWARGS = {
    PPO: dict(n_steps=64, batch_size=32, n_epochs=2),
    A2C: dict(n_steps=16),
    DQN: OFF_POLICY,
    QRDQN: OFF_POLICY,
    SAC: OFF_POLICY,
    TD3: dict(OFF_POLICY, policy_delay=1),
}


def build(algo, learning_rate=1e-3, tensorboard_log=None, **extractor_kwargs):
    kwargs = dict(model_name=TINY_MODEL, pretrained=False, input_size=32) | extractor_kwargs
    return algo("CnnPolicy", image_env(discrete=algo in (PPO, A2C, DQN, QRDQN)), learning_rate=learning_rate, seed=0,
                device="cpu", tensorboard_log=tensorboard_log, **ALGO_KWARGS[algo],
                policy_kwargs=dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))


class RecordLRs(BaseCallback):
    """At every optimizer step: timesteps, SB3's progress_remaining and each group's LR as used by that step."""

    def __init__(self):
        super().__init__()
        self.records: list[tuple[int, float, str, dict[str, float]]] = []

    def _init_callback(self) -> None:
        for path, optimizer in model_optimizers(self.model).items():
            optimizer.register_step_post_hook(lambda opt, args, kwargs, path=path: self.records.append((
                self.model.num_timesteps, self.model._current_progress_remaining, path,
                {g["name"]: g["lr"] for g in opt.param_groups})))

    def _on_step(self) -> bool:
        return True


def expected_scales(model, backbone_lr_scale, layer_decay):
    names = next(m for m in model.policy.modules() if isinstance(m, TimmExtractor)).stage_names
    scales = {"head": 1.0}
    for depth, name in enumerate(reversed(names)):
        scales[f"backbone.{name}"] = backbone_lr_scale * layer_decay**depth
    return scales


@pytest.mark.parametrize("algo", [PPO, A2C, DQN, QRDQN, SAC, TD3], ids=lambda a: a.__name__)
def test_lr_scales_hold_at_every_update(algo):
    """SB3 resets every group's LR at each train(); the per-stage scales still hold at every single step."""
    schedule = lambda progress: 1e-3 * progress  # noqa: E731 - SB3's own callable schedule form
    model = build(algo, learning_rate=schedule, backbone_lr_scale=0.1, layer_decay=0.5)
    recorder = RecordLRs()
    model.learn(128, callback=[GradualUnfreezing({0: "all"}), recorder])
    assert all(isinstance(o, GroupedOptimizer) for o in model_optimizers(model).values())
    scales = expected_scales(model, 0.1, 0.5)
    assert len(recorder.records) >= 4
    for _, progress, _, lrs in recorder.records:
        assert set(lrs) == set(scales)
        for name, lr in lrs.items():
            assert lr == pytest.approx(schedule(progress) * scales[name], rel=1e-12), name
    # The numbers themselves, at the last step: top stage at 0.1x, stem 0.5**7 lower still.
    _, progress, _, lrs = recorder.records[-1]
    assert lrs["backbone.stage5"] == pytest.approx(1e-4 * progress) and lrs["head"] == pytest.approx(1e-3 * progress)


@pytest.mark.parametrize("algo,shape", [(PPO, "linear"), (DQN, "cosine"), (SAC, "linear")], ids=["PPO", "DQN", "SAC"])
def test_warmup_lrs_during_learn(algo, shape):
    model = build(algo, learning_rate=5e-4, backbone_lr_scale=0.5)
    warmup = LRWarmup(steps=100, start_factor=0.1, shape=shape, restart_at=[192])
    recorder = RecordLRs()
    model.learn(256, callback=[warmup, recorder])

    def factor(t):
        origin = 192 if t >= 192 else 0
        p = min(1.0, (t - origin) / 100)
        p = (1 - math.cos(math.pi * p)) / 2 if shape == "cosine" else p
        return 0.1 + 0.9 * p

    timesteps_seen = set()
    for t, _, _, lrs in recorder.records:
        timesteps_seen.add(t)
        assert lrs["head"] == pytest.approx(5e-4 * factor(t), rel=1e-12)
        assert lrs["backbone.stem"] == pytest.approx(2.5e-4 * factor(t), rel=1e-12)
    # warmup, its end (factor 1), and the restart were all seen by real updates
    assert min(timesteps_seen) < 100 and any(100 <= t < 192 for t in timesteps_seen) and max(timesteps_seen) >= 192
    if algo is PPO:  # PPO updates at t=64, 128, 192, 256: hand-computed
        head = {t: lrs["head"] for t, _, _, lrs in recorder.records}
        assert head[64] == pytest.approx(5e-4 * (0.1 + 0.9 * 0.64))
        assert head[128] == pytest.approx(5e-4)
        assert head[192] == pytest.approx(5e-4 * 0.1)


def _snapshot(model):
    return {k: v.clone() for k, v in model.policy.features_extractor.backbone.state_dict().items()}


def _changed(before, after, keys):
    return {k for k in keys if not torch.equal(before[k], after[k])}


def test_gradual_unfreezing_trains_exactly_the_unfrozen_stages():
    model = build(PPO, learning_rate=1e-3, frozen=True)
    extractor = model.policy.features_extractor
    stages = extractor.stages
    start = _snapshot(model)
    weight_keys = {k for k in start if "running_" not in k and "num_batches" not in k}
    schedule = lambda: GradualUnfreezing({100: 1, 300: "all"})  # noqa: E731

    model.learn(64, callback=schedule())  # update at t=64: backbone frozen
    assert extractor.trainable_stages == 0 and _changed(start, _snapshot(model), start) == set()

    model.learn(192, callback=schedule(), reset_num_timesteps=False)  # updates at 128..256: top stage only
    assert extractor.trainable_stages == 1
    top_params = set(stages[-1].params)
    assert sum(p.requires_grad for p in extractor.backbone.parameters()) == len(top_params)
    changed = _changed(start, _snapshot(model), weight_keys)
    assert changed and changed <= top_params
    assert not any(m.training for m in extractor.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))

    model.learn(128, callback=schedule(), reset_num_timesteps=False)  # t=320, 384: everything
    end = _snapshot(model)
    assert extractor.trainable_stages == len(stages)
    assert "conv_stem.weight" in _changed(start, end, weight_keys)
    # BatchNorm stays in eval mode by default: running statistics never moved
    assert _changed(start, end, {k for k in start if "running_" in k}) == set()


def test_unfrozen_bn_trains_when_asked():
    model = build(PPO, frozen=True)
    start = _snapshot(model)
    model.learn(128, callback=GradualUnfreezing({0: 1}, train_bn=True))
    changed = _changed(start, _snapshot(model), [k for k in start if "running_mean" in k])
    top = model.policy.features_extractor.stages[-1].modules
    assert changed and all(any(k.startswith(m + ".") for m in top) for k in changed)


def test_resume_continues_freeze_state_warmup_and_scales(tmp_path):
    def callbacks():
        return [GradualUnfreezing({128: 1, 320: "all"}), LRWarmup(256, start_factor=0.2, restart_at=[128, 320])]

    continuous = build(PPO, frozen=True, backbone_lr_scale=0.25)
    reference = RecordLRs()
    continuous.learn(448, callback=callbacks() + [reference])

    model = build(PPO, frozen=True, backbone_lr_scale=0.25)
    model.learn(192, callback=callbacks())
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", env=image_env(), device="cpu")
    assert isinstance(loaded.policy.optimizer, GroupedOptimizer)  # groups rebuilt at load: optimizer state loaded
    assert loaded.policy.optimizer.state_dict()["state"], "Adam moments were restored"
    recorder = RecordLRs()
    loaded.learn(256, callback=callbacks() + [recorder], reset_num_timesteps=False)
    assert loaded.num_timesteps == 448
    resumed = {t: lrs for t, _, _, lrs in recorder.records}
    expected = {t: lrs for t, _, _, lrs in reference.records if t > 192}
    assert resumed.keys() == expected.keys()
    for t in expected:
        assert resumed[t] == pytest.approx(expected[t], rel=1e-12), t
    assert loaded.policy.features_extractor.trainable_stages == len(loaded.policy.features_extractor.stages)


def test_tensorboard_tags(tmp_path):
    model = build(PPO, tensorboard_log=str(tmp_path), frozen=True)
    model.learn(192, callback=[GradualUnfreezing({100: 2}), LRWarmup(100)], tb_log_name="ft")
    (run,) = list(tmp_path.iterdir())
    events = EventAccumulator(str(run)).Reload()
    tags = set(events.Tags()["scalars"])
    stage = model.policy.features_extractor.stage_names[-1]
    for tag in ["finetune/lr/policy/head", f"finetune/lr/policy/backbone.{stage}", "finetune/lr/policy/backbone.stem",
                "finetune/trainable_params", "finetune/unfrozen_stages", "finetune/backbone_grad_norm"]:
        assert tag in tags, tag
    unfrozen = [e.value for e in events.Scalars("finetune/unfrozen_stages")]
    assert unfrozen[0] == 0 and unfrozen[-1] == 2
    assert all(v > 0 for v in (e.value for e in events.Scalars("finetune/backbone_grad_norm")))


def test_unknown_stage_fails_before_training():
    model = build(PPO, frozen=True)
    with pytest.raises(ValueError, match=r"Unknown stage 'stage9'.*\['stem', 'stage1'"):
        model.learn(64, callback=GradualUnfreezing({10: "stage9"}))
    assert model.num_timesteps == 0


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: GradualUnfreezing({300: 1, 100: "all"}), "increasing order"),
        (lambda: GradualUnfreezing({100: 2, 300: 1}), "cannot go backwards"),
        (lambda: GradualUnfreezing({-5: 1}), "whole number of timesteps"),
        (lambda: GradualUnfreezing({}), "non-empty mapping"),
        (lambda: GradualUnfreezing({10: 1.5}), "number of top stages"),
        (lambda: LRWarmup(0), "positive number of timesteps"),
        (lambda: LRWarmup(-10), "whole number"),
        (lambda: LRWarmup(100, start_factor=1.5), r"start_factor must be in \[0, 1\]"),
        (lambda: LRWarmup(100, shape="step"), "'linear' or 'cosine'"),
        (lambda: LRWarmup(100, restart_at=[50, 20]), "increasing order"),
    ],
)
def test_bad_schedules_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kwargs", [dict(backbone_lr_scale=0.0), dict(backbone_lr_scale=1.5), dict(layer_decay=-0.1)])
def test_scales_outside_unit_interval(kwargs):
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        build(PPO, **kwargs)
