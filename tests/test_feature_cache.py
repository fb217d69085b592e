"""FeatureCache: a frozen backbone embeds each distinct input once (PPO epochs, extractor copies, frame stacks)."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

from sb3_pretrained import GradualUnfreezing, TimmExtractor
from sb3_pretrained.feature_cache import FeatureCache, row_keys
from tests.helpers import TINY_MODEL, image_env


class CountingFunction:
    """A fixed function of its input that records how many rows it was given."""

    def __init__(self) -> None:
        self.rows = 0
        self.projection = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.rows += len(batch)
        return batch.reshape(len(batch), -1) @ self.projection


def test_row_keys_are_exact_and_independent_of_the_batch():
    rows = torch.rand(6, 3, 2, 2)
    keys = row_keys(rows)
    assert len(set(keys)) == 6
    assert row_keys(rows[[4, 1]]) == [keys[4], keys[1]]
    assert row_keys(rows[2:3].clone()) == [keys[2]]
    nudged = rows[:1].clone()
    nudged[0, 1, 1, 0] = torch.nextafter(nudged[0, 1, 1, 0], torch.tensor(2.0))  # one ulp in one value
    assert row_keys(nudged) != [keys[0]]
    assert row_keys(torch.empty(0, 3, 2, 2)) == []


def test_row_keys_separate_images_that_differ_only_between_black_and_white():
    # 0.0 and 1.0 differ only in high bits: a plain linear hash of the bits would collide often.
    width = 3 * 16 * 16
    one_pixel = torch.eye(width)
    two_pixels = (torch.eye(width) + torch.eye(width).roll(1, dims=1)).clamp(max=1)
    keys = row_keys(torch.cat([one_pixel, two_pixels, torch.zeros(1, width)]))
    assert len(set(keys)) == 2 * width + 1


def test_cache_computes_each_distinct_row_once_and_returns_the_same_values():
    function, cache = CountingFunction(), FeatureCache(capacity=100)
    first = torch.rand(4, 12)
    torch.testing.assert_close(cache.features(first, function), function(first), rtol=0, atol=0)
    assert function.rows == 4 + 4  # the cache's call and the reference call
    mixed = torch.cat([first[[2, 0]], torch.rand(3, 12), first[[2]]])  # 3 seen rows, 3 new, one repeated
    function.rows = 0
    out = cache.features(mixed, function)
    assert function.rows == 3
    torch.testing.assert_close(out, mixed @ function.projection, rtol=1e-6, atol=1e-6)
    assert (cache.hits, cache.misses, len(cache)) == (3, 7, 7)


def test_cache_evicts_first_in_first_out():
    function, cache = CountingFunction(), FeatureCache(capacity=3)
    rows = torch.rand(5, 12)
    cache.features(rows[:3], function)
    cache.features(rows[3:5], function)  # evicts rows 0 and 1
    function.rows = 0
    cache.features(rows[2:5], function)
    assert function.rows == 0
    cache.features(rows[:1], function)
    assert function.rows == 1 and len(cache) == 3
    with pytest.raises(ValueError, match="positive number of rows"):
        FeatureCache(0)


@pytest.mark.parametrize(
    ("change", "trainable", "shared"),
    [("rounding", False, True), ("rounding", True, False), ("training step", False, False)],
)
def test_frozen_copies_differing_by_soft_update_rounding_share_and_others_do_not(change, trainable, shared):
    """One rounding step on some weights (what (1 - tau) * w + tau * w leaves) is the same function for frozen
    copies; a trainable copy or a real weight change is not."""
    online = torch.nn.Linear(12, 5).requires_grad_(False)
    target = torch.nn.Linear(12, 5).requires_grad_(trainable)
    with torch.no_grad():
        target.load_state_dict(online.state_dict())
        if change == "rounding":
            target.weight[0] = torch.nextafter(target.weight[0], torch.full_like(target.weight[0], 9.0))
        else:
            target.weight.add_(1e-3)
    cache, rows = FeatureCache(capacity=100), torch.rand(4, 12)
    with torch.no_grad():
        cache.features(rows, online, weights=online)
        assert cache.active and len(cache) == 4
        served = cache.features(rows, target, weights=target)
        if shared:
            assert cache.active and len(cache) == 4
            torch.testing.assert_close(served, online(rows), rtol=0, atol=0)  # the stored rows, not recomputed
            torch.testing.assert_close(served, target(rows), rtol=1e-5, atol=1e-6)
        else:
            assert not cache.active
            torch.testing.assert_close(served, target(rows), rtol=0, atol=0)


def test_small_weight_changes_cannot_add_up_and_other_dtypes_close_the_cache():
    online = torch.nn.Linear(12, 5).requires_grad_(False)
    target = torch.nn.Linear(12, 5).requires_grad_(False)
    cache, rows = FeatureCache(capacity=100), torch.rand(4, 12)
    with torch.no_grad():
        target.load_state_dict(online.state_dict())
        cache.features(rows, online, weights=online)
        target.weight.mul_(1 + 2e-6)  # within rounding of the weights the rows came from: they stay
        torch.testing.assert_close(cache.features(rows, target, weights=target), online(rows), rtol=0, atol=0)
        online.weight.mul_(1 + 4e-6)  # now no copy holds those weights: the rows are computed again
        torch.testing.assert_close(cache.features(rows, online, weights=online), online(rows), rtol=0, atol=0)
        assert cache.active
        double = torch.nn.Linear(12, 5).double().requires_grad_(False)
        double.load_state_dict(online.state_dict())
        cache.features(rows.double(), double, weights=double)
    assert not cache.active


class BackboneRows:
    """Counts the images that go through a backbone (a forward hook)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.rows = 0
        backbone.register_forward_hook(self._count)

    def _count(self, module, inputs, output) -> None:
        self.rows += len(inputs[0])


def _ppo(feature_cache: int, **kwargs) -> PPO:
    return PPO("CnnPolicy", image_env(), n_steps=32, batch_size=16, n_epochs=4, seed=0, device="cpu", policy_kwargs=dict(
        features_extractor_class=TimmExtractor,
        features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=32,
                                       feature_cache=feature_cache, **kwargs)))


def test_ppo_epochs_reuse_the_rollout_features():
    cached, uncached = _ppo(32768), _ppo(0)
    counts = {name: BackboneRows(m.policy.features_extractor.backbone) for name, m in [("on", cached), ("off", uncached)]}
    cached.learn(64)
    uncached.learn(64)
    # Without the cache: each step's observation, the bootstrap and truncated episodes' last observations,
    # then 4 epochs over the rollout's 32 observations, for 2 rollouts.
    collection = counts["off"].rows - 2 * 4 * 32
    assert collection >= 2 * (32 + 1)
    # With it: only the collection, each distinct observation once; the epochs reuse its features.
    assert counts["on"].rows <= collection
    obs = torch.rand(5, 3, 32, 32)
    extractor, reference = cached.policy.features_extractor, uncached.policy.features_extractor
    reference.load_state_dict(extractor.state_dict())
    torch.testing.assert_close(extractor.forward_backbone(obs), reference.forward_backbone(obs), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(extractor.forward_backbone(obs), reference.forward_backbone(obs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo,copies", [(DQN, 2), (SAC, 3)], ids=["DQN", "SAC"])
def test_extractor_copies_of_a_policy_share_one_cache(algo, copies, tiny_weights):
    def build():
        return _off_policy(algo, pretrained=str(tiny_weights))

    model = build()
    extractors = [m for m in model.policy.modules() if isinstance(m, TimmExtractor)]
    assert len(extractors) == copies and len({id(e.encoder.feature_cache) for e in extractors}) == 1
    other = [m for m in build().policy.modules() if isinstance(m, TimmExtractor)]
    assert other[0].encoder.feature_cache is not extractors[0].encoder.feature_cache  # never across models
    counts = [BackboneRows(e.backbone) for e in extractors]
    obs = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        first = extractors[0].forward_backbone(obs)
        others = [e.forward_backbone(obs) for e in extractors[1:]]
    assert [c.rows for c in counts] == [4] + [0] * (copies - 1)  # one backbone pass for every copy
    for features in others:
        torch.testing.assert_close(features, first, rtol=0, atol=0)
    model.learn(96)  # trains through the shared cache


def _off_policy(algo, **kwargs):
    return algo("CnnPolicy", image_env(discrete=algo is DQN), buffer_size=200, learning_starts=32, batch_size=16,
                train_freq=8, seed=0, device="cpu", policy_kwargs=dict(
                    features_extractor_class=TimmExtractor,
                    features_extractor_kwargs=dict(model_name=TINY_MODEL, frozen=True, input_size=32) | kwargs))


def test_copies_with_different_weights_never_share_features():
    """Random init gives SAC's actor and critic different backbones: the cache finds out and closes."""
    model = _off_policy(SAC, pretrained=False)
    actor, critic = model.actor.features_extractor, model.critic.features_extractor
    obs = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(actor.forward_backbone(obs), actor.encoder.embed(obs), rtol=0, atol=0)
        torch.testing.assert_close(critic.forward_backbone(obs), critic.encoder.embed(obs), rtol=0, atol=0)
    assert not critic.encoder.feature_cache.active


def test_frame_stack_embeds_each_new_frame_once():
    env = VecFrameStack(DummyVecEnv([lambda: image_env(channels=1)] * 2), n_stack=4)
    model = DQN("CnnPolicy", env, buffer_size=200, learning_starts=1000, seed=0, device="cpu", policy_kwargs=dict(
        features_extractor_class=TimmExtractor,
        features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=32, frame_stack=4)))
    count = BackboneRows(model.policy.q_net.features_extractor.backbone)
    model.learn(40)
    # 20 steps of 2 envs: each step brings one new frame per env (plus the reset frames), not four.
    assert count.rows <= 2 * 20 + 2 * 2


def test_cache_is_cleared_by_new_weights_and_skipped_once_unfrozen():
    model = _ppo(32768)
    extractor = model.policy.features_extractor
    obs = torch.rand(3, 3, 32, 32)
    before = extractor.forward_backbone(obs)
    assert len(extractor.encoder.feature_cache) == 3
    state = {k: v + 0.1 if v.is_floating_point() else v for k, v in extractor.state_dict().items()}
    model.policy.load_state_dict({f"features_extractor.{k}": v for k, v in state.items()} | {
        k: v for k, v in model.policy.state_dict().items() if not k.startswith("features_extractor.")})
    assert len(extractor.encoder.feature_cache) == 0
    assert not torch.allclose(extractor.forward_backbone(obs), before)

    model.learn(32, callback=GradualUnfreezing({0: "all"}))
    assert extractor.trainable_stages == len(extractor.stages) and len(extractor.encoder.feature_cache) == 0
    features = extractor.forward_backbone(obs)
    assert features.requires_grad and len(extractor.encoder.feature_cache) == 0


def test_a_frozen_target_following_an_unfrozen_online_copy_is_never_served_stale_features(tiny_weights):
    """Only SAC's online critic is unfrozen by hand; its frozen target follows it through polyak updates."""
    model = SAC("CnnPolicy", image_env(discrete=False), buffer_size=200, learning_starts=16, batch_size=16, tau=1.0,
                learning_rate=1e-2, seed=0, device="cpu", policy_kwargs=dict(
                    features_extractor_class=TimmExtractor,
                    features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), frozen=True,
                                                   input_size=32)))
    model.learn(32)
    target, actor = model.critic_target.features_extractor, model.actor.features_extractor
    obs = torch.as_tensor(model.replay_buffer.observations[:8, 0]).float() / 255
    with torch.no_grad():
        target.forward_backbone(obs)
    assert len(target.encoder.feature_cache) > 0 and target.encoder.feature_cache.active
    model.critic.features_extractor.set_trainable_stages(1)
    assert not target.encoder.feature_cache.active and len(target.encoder.feature_cache) == 0  # off for every copy
    model.learn(32, reset_num_timesteps=False)
    assert not backbones_equal(target.backbone, actor.backbone)  # the target moved with the online critic
    model.critic.features_extractor.set_trainable_stages(0)
    model.learn(32, reset_num_timesteps=False)
    with torch.no_grad():
        torch.testing.assert_close(target.forward_backbone(obs), target.encoder.embed(obs), rtol=0, atol=0)
        torch.testing.assert_close(actor.forward_backbone(obs), actor.encoder.embed(obs), rtol=0, atol=0)
    assert not target.encoder.feature_cache.active  # all frozen again, but the copies split: never cached again


def test_copies_unfrozen_and_frozen_again_are_served_their_own_features(tiny_weights):
    """DQN, both the online and the target copy unfrozen with the public method, trained, then frozen again."""
    model = _off_policy(DQN, pretrained=str(tiny_weights))
    online, target = model.q_net.features_extractor, model.q_net_target.features_extractor
    obs = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        online.forward_backbone(obs)
    for extractor in (online, target):
        extractor.set_trainable_stages(len(extractor.stages))
    model.learn(200)
    for extractor in (online, target):
        extractor.set_trainable_stages(0)
    assert not backbones_equal(online.backbone, target.backbone)
    with torch.no_grad():
        online_features, target_features = online.forward_backbone(obs), target.forward_backbone(obs)
        torch.testing.assert_close(target_features, target.encoder.embed(obs), rtol=0, atol=0)
        torch.testing.assert_close(online_features, online.encoder.embed(obs), rtol=0, atol=0)
    assert not torch.equal(online_features, target_features)


def test_loaded_copies_with_different_weights_never_share_features(tiny_weights, tmp_path):
    """A saved DQN whose online and target backbones differ: loaded frozen, each copy still gets its own features."""
    model = _off_policy(DQN, pretrained=str(tiny_weights), frozen=False)
    model.learn(200)
    model.save(tmp_path / "dqn.zip")
    loaded = DQN.load(tmp_path / "dqn.zip", device="cpu", custom_objects={"policy_kwargs": dict(
        features_extractor_class=TimmExtractor,
        features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), frozen=True, input_size=32))})
    online, target = loaded.q_net.features_extractor, loaded.q_net_target.features_extractor
    assert online.frozen and online.encoder.feature_cache is target.encoder.feature_cache
    assert not backbones_equal(online.backbone, target.backbone)
    obs = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(online.forward_backbone(obs), online.encoder.embed(obs), rtol=0, atol=0)
        torch.testing.assert_close(target.forward_backbone(obs), target.encoder.embed(obs), rtol=0, atol=0)


@pytest.mark.parametrize("edit", ["in_place", "load_state_dict", "both"])
def test_in_place_weight_edits_are_seen(edit, tiny_weights):
    extractor = _ppo(32768).policy.features_extractor
    obs = torch.rand(3, 3, 32, 32)
    before = extractor.forward_backbone(obs)
    with torch.no_grad():
        if edit != "load_state_dict":
            next(extractor.backbone.parameters()).add_(0.5)
        if edit != "in_place":
            extractor.backbone.load_state_dict({k: v * 1.01 for k, v in extractor.backbone.state_dict().items()})
    after = extractor.forward_backbone(obs)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, extractor.encoder.embed(obs), rtol=0, atol=0)


def backbones_equal(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=False))


def test_bad_feature_cache_argument():
    with pytest.raises(ValueError, match="feature_cache must be a number of rows >= 0"):
        _ppo(-1)


def test_a_saved_frozen_sac_shares_its_cache_again_after_loading(tmp_path, tiny_weights):
    """SB3's soft target update, (1 - tau) * w + tau * w, moves some of a frozen target backbone's weights by a
    rounding step; after saving and loading the copies must still share one cache, not run the backbone 4 times."""
    model = _off_policy(SAC, pretrained=str(tiny_weights))
    model.learn(160)  # 16 gradient steps of soft updates (tau 0.005)
    target, actor = model.critic_target.features_extractor, model.actor.features_extractor
    assert not backbones_equal(target.backbone, actor.backbone)  # the rounding drift this is about
    model.save(tmp_path / "sac.zip")
    loaded = SAC.load(tmp_path / "sac.zip", device="cpu")
    extractors = [loaded.actor.features_extractor, loaded.critic.features_extractor,
                  loaded.critic_target.features_extractor]
    counts = [BackboneRows(e.backbone) for e in extractors]
    obs = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        first = extractors[0].forward_backbone(obs)
        others = [e.forward_backbone(obs) for e in extractors[1:]]
    assert extractors[0].encoder.feature_cache.active
    assert [c.rows for c in counts] == [4, 0, 0]
    for extractor, features in zip(extractors[1:], others, strict=True):
        torch.testing.assert_close(features, first, rtol=0, atol=0)
        with torch.no_grad():  # what each copy's own weights give: the same up to the rounding drift
            torch.testing.assert_close(extractor.encoder.embed(obs), first, rtol=1e-5, atol=1e-6)
