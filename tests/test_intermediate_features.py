"""Intermediate feature maps (timm's forward_intermediates): frozen, fine-tuned and in the fast path."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_pretrained import (
    BackboneEncoder,
    FeatureMapExtractor,
    FrozenBackboneEmbedding,
    GradualUnfreezing,
    TimmExtractor,
)
from sb3_pretrained.policies import (
    FeatureMapActorCriticPolicy,
    FeatureMapDQNPolicy,
    FeatureMapQRDQNPolicy,
    FeatureMapSACPolicy,
    TimmActorCriticPolicy,
)
from tests.helpers import TINY_MODEL, image_env


def test_intermediate_features_are_the_feature_map_of_the_full_model(tiny_weights):
    encoder = BackboneEncoder((3, 32, 32), TINY_MODEL, pretrained=str(tiny_weights), input_size="native",
                              feature_index=2, channels_last=False, amp=False)
    full = timm.create_model(TINY_MODEL, num_classes=0)
    full.load_state_dict(torch.load(tiny_weights, weights_only=True), strict=False)
    full.eval()
    info = full.feature_info[2]
    assert encoder.feature_shape == (info["num_chs"], 32 // info["reduction"], 32 // info["reduction"])
    obs = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        expected = full.forward_intermediates(encoder.preprocess(obs), indices=[2], intermediates_only=True)[0]
        torch.testing.assert_close(encoder(obs), expected.flatten(1), rtol=1e-5, atol=1e-6)
    # The layers above the feature map are gone: never computed, never trained.
    assert sum(p.numel() for p in encoder.backbone.parameters()) < sum(p.numel() for p in full.parameters())


def test_bad_feature_index_lists_the_levels():
    with pytest.raises(ValueError, match=r"feature_index must be an int in \[0, \d\].*channels at 1/"):
        BackboneEncoder((3, 32, 32), TINY_MODEL, pretrained=False, feature_index=9)


def test_intermediate_features_train_frozen_and_fine_tuned_and_reload(tmp_path):
    model = PPO(TimmActorCriticPolicy, image_env(), n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_kwargs=dict(
                    model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=32, feature_index=2,
                    frame_stack=1, features_dim=64)))
    extractor = model.policy.features_extractor
    assert extractor.head[1].in_channels == extractor.encoder.feature_shape[0]  # the 1x1 conv reads the map
    model.learn(64, callback=GradualUnfreezing({32: "all"}))
    assert extractor.trainable_stages == len(extractor.stages)
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    after, _ = PPO.load(tmp_path / "model.zip", device="cpu").predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)


def test_fast_path_stores_the_feature_map():
    venv = DummyVecEnv([lambda: image_env()] * 2)
    wrapper = FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, input_size="native", feature_index=2,
                                      frame_stack=2, dtype="uint8", feature_range=[-8, 8])
    channels, height, width = wrapper.encoder.feature_shape
    assert wrapper.observation_space.shape == (1, 2, channels * height * width)
    assert wrapper.reset().nbytes == 2 * 2 * channels * height * width  # one byte per value, per frame, per env
    with pytest.raises(ValueError, match="feature_range"):
        FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, feature_index=2, dtype="uint8")


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_spatial_head_gives_the_policy_unit_scale_features_whatever_the_maps_scale(scale):
    # Pretrained maps can have a standard deviation near 10 (efficientnet_lite0's map 2 on CarRacing): a head that
    # passed their scale on saturated the policy's Tanh MLP. Features leave the head in [-1, 1], about unit scale.
    extractor = TimmExtractor(spaces.Box(0, 255, (3, 32, 32), np.uint8), TINY_MODEL, pretrained=False, frozen=True,
                              input_size=32, feature_index=2, frame_stack=1, features_dim=64)
    obs = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        features = extractor.head(extractor.encoder(obs) * scale)
    assert features.abs().max() <= 1.0
    assert 0.3 < features.std() < 1.0


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_fast_path_feature_maps_get_the_spatial_head_in_the_policy(dtype, tmp_path):
    venv = DummyVecEnv([lambda: image_env()] * 2)
    wrapper = FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, input_size="native", feature_index=2,
                                      frame_stack=2, dtype=dtype, feature_range=[-8, 8] if dtype == "uint8" else None)
    shape = list(wrapper.encoder.feature_shape)
    model = PPO("MlpPolicy", wrapper, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu", policy_kwargs=dict(
        features_extractor_class=FeatureMapExtractor, features_extractor_kwargs=dict(feature_shape=shape)))
    extractor = model.policy.features_extractor
    assert extractor.head[0].unflattened_size == (2 * shape[0], shape[1], shape[2])  # both frames' maps, spatial
    model.learn(64)
    obs = wrapper.reset()
    with torch.no_grad():
        features = model.policy.extract_features(model.policy.obs_to_tensor(obs)[0], extractor)
    assert features.abs().max() <= 1.0  # unit scale for the policy's Tanh MLP, whatever the map's scale
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    after, _ = PPO.load(tmp_path / "model.zip", device="cpu").predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("algo, policy, kwargs", [
    (PPO, FeatureMapActorCriticPolicy, dict(n_steps=16, batch_size=16, n_epochs=1)),
    (A2C, FeatureMapActorCriticPolicy, dict(n_steps=8)),
    (DQN, FeatureMapDQNPolicy, dict(learning_starts=8, buffer_size=64, batch_size=8)),
    (QRDQN, FeatureMapQRDQNPolicy, dict(learning_starts=8, buffer_size=64, batch_size=8)),
    (SAC, FeatureMapSACPolicy, dict(learning_starts=8, buffer_size=64, batch_size=8)),
], ids=["ppo", "a2c", "dqn", "qrdqn", "sac"])
def test_feature_map_policies_read_stored_maps_through_the_spatial_head(algo, policy, kwargs, tmp_path):
    # The policies a config names for the fast path with feature maps: only feature_shape is given, as plain data.
    discrete = algo is not SAC
    venv = DummyVecEnv([lambda: image_env(discrete=discrete)] * 2)
    wrapper = FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, input_size="native", feature_index=2,
                                      dtype="uint8", feature_range=[-8, 8])
    shape = list(wrapper.encoder.feature_shape)
    model = algo(policy, wrapper, seed=0, device="cpu", **kwargs,
                 policy_kwargs=dict(features_extractor_kwargs=dict(feature_shape=shape, features_dim=32)))
    extractors = [m for m in model.policy.modules() if isinstance(m, FeatureMapExtractor)]
    assert extractors and all(e.head[0].unflattened_size == tuple(shape) for e in extractors)
    model.learn(32)
    obs = wrapper.reset()
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    after, _ = algo.load(tmp_path / "model.zip", device="cpu").predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)


def test_feature_map_policies_say_what_feature_shape_is_when_it_is_missing():
    wrapper = FrozenBackboneEmbedding(DummyVecEnv([image_env]), TINY_MODEL, pretrained=False, input_size="native",
                                      feature_index=2)
    with pytest.raises(ValueError, match=r"needs feature_shape=\[C, H, W\].*encoder.feature_shape"):
        PPO(FeatureMapActorCriticPolicy, wrapper, device="cpu")


def test_feature_map_extractor_refuses_a_shape_that_does_not_fit():
    space = spaces.Box(-np.inf, np.inf, (2 * 40 * 7 * 7,), np.float32)
    with pytest.raises(ValueError, match=r"not whole feature maps of shape \[40, 12, 12\].*encoder.feature_shape"):
        FeatureMapExtractor(space, feature_shape=[40, 12, 12])
    with pytest.raises(ValueError, match=r"feature_shape must be \[C, H, W\]"):
        FeatureMapExtractor(space, feature_shape=1960)


def test_a_model_saved_with_the_old_relu_head_is_refused_not_loaded_silently(tmp_path):
    model = PPO(TimmActorCriticPolicy, image_env(), n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=False, frozen=True,
                                                                  input_size=32, feature_index=2, features_dim=64)))
    state = model.policy.state_dict()
    for key in [k for k in state if k.startswith("features_extractor.head.5.")]:
        del state[key]  # what a model saved before 57de850 holds: no LayerNorm after the Linear
    with pytest.raises(ValueError, match="feature-map head of sb3-pretrained before commit 57de850"):
        model.policy.load_state_dict(state, strict=False)  # SB3's lenient reload would have taken it
