"""Augmentation: DrQ's random shift and colour jitter on training batches only, for TimmExtractor and NatureCNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import PPO

from sb3_pretrained import TimmExtractor
from sb3_pretrained.augmentation import AugmentedNatureCNN, ImageAugmentation, build_augmentation
from sb3_pretrained.policies import NatureCNNActorCriticPolicy, TimmActorCriticPolicy
from tests.helpers import TINY_MODEL, image_env


def test_shift_is_a_whole_pixel_crop_of_the_edge_padded_image():
    torch.manual_seed(0)
    images = torch.rand(16, 6, 20, 24)  # two stacked RGB frames
    shifted = ImageAugmentation(shift=4).train()(images)
    padded = F.pad(images, (4, 4, 4, 4), mode="replicate")
    offsets = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.allclose(shifted[i], padded[i, :, dy:dy + 20, dx:dx + 24], atol=1e-5)]
        assert matches, i  # every sample is exactly a crop, the same for all its stacked channels
        offsets.add(matches[0])
    assert len(offsets) > 4  # per sample, not one offset for the batch


def test_colour_jitter_is_per_sample_and_the_same_for_every_frame_of_a_stack():
    torch.manual_seed(1)
    frame = torch.rand(8, 3, 10, 10) * 0.5 + 0.25
    stacked = torch.cat([frame, frame], dim=1)
    out = ImageAugmentation(brightness=0.5, contrast=0.5, saturation=0.5).train()(stacked)
    torch.testing.assert_close(out[:, :3], out[:, 3:])
    assert not torch.allclose(out, stacked)
    ratios = (out[:, :3].mean(dim=(1, 2, 3)) / frame.mean(dim=(1, 2, 3)))
    assert ratios.std() > 0.05 and out.min() >= 0 and out.max() <= 1
    gray = torch.rand(4, 2, 10, 10)
    assert ImageAugmentation(saturation=1.0, frame_channels=1).train()(gray).equal(gray)  # no colour to change


def test_nothing_changes_outside_training_mode():
    images = torch.rand(4, 3, 16, 16)
    augmentation = ImageAugmentation(shift=4, brightness=0.4).eval()
    assert augmentation(images) is images


def test_bad_augmentation_options_say_what_is_allowed():
    with pytest.raises(ValueError, match="Unknown augmentation 'rotate'"):
        build_augmentation({"rotate": 10}, 3)
    with pytest.raises(ValueError, match="shift must be a whole number of pixels"):
        build_augmentation({"shift": 2.5}, 3)
    with pytest.raises(ValueError, match=r"brightness must be a strength in \[0, 1\]"):
        build_augmentation({"brightness": 2}, 3)
    assert build_augmentation({"shift": 0}, 3) is None


def _ppo(policy, size=32, **extractor_kwargs) -> PPO:
    return PPO(policy, image_env(size=size), n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu",
               policy_kwargs=dict(features_extractor_kwargs=extractor_kwargs))


def test_extractor_augments_the_gradient_steps_and_never_the_acting():
    model = _ppo(TimmActorCriticPolicy, model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=32,
                 augment={"shift": 4, "brightness": 0.3})
    extractor = model.policy.features_extractor
    assert isinstance(extractor, TimmExtractor)
    seen: list[tuple[bool, torch.Tensor]] = []
    extractor.encoder.backbone.register_forward_pre_hook(lambda m, args: seen.append((extractor.training, args[0])))
    obs = torch.rand(4, 3, 32, 32)
    model.policy.set_training_mode(False)
    acting = model.policy.extract_features(obs, extractor)
    torch.testing.assert_close(acting, model.policy.extract_features(obs, extractor))  # deterministic while acting
    model.policy.set_training_mode(True)
    first, second = (model.policy.extract_features(obs, extractor) for _ in range(2))
    assert not torch.allclose(first, second)  # a new augmentation each gradient step
    model.learn(64)  # rollouts act in eval mode, PPO's epochs train in training mode
    assert {training for training, _ in seen} == {False, True}


def test_augmented_training_batches_bypass_the_feature_cache():
    model = _ppo(TimmActorCriticPolicy, model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=32,
                 augment={"shift": 4})
    extractor = model.policy.features_extractor
    model.policy.set_training_mode(True)
    with torch.no_grad():
        extractor(torch.rand(6, 3, 32, 32))
    assert len(extractor.encoder.feature_cache) == 0
    model.policy.set_training_mode(False)
    with torch.no_grad():
        extractor(torch.rand(6, 3, 32, 32))
    assert len(extractor.encoder.feature_cache) == 6


def test_nature_cnn_baseline_gets_the_same_augmentation():
    space = spaces.Box(0, 255, (6, 36, 36), "uint8")
    plain = AugmentedNatureCNN(space)
    assert plain.augment is None
    augmented = AugmentedNatureCNN(space, augment={"shift": 4, "saturation": 0.5})
    assert augmented.augment is not None and augmented.augment.frame_channels == 3
    obs = torch.rand(4, 6, 36, 36)
    augmented.train()
    assert not torch.allclose(augmented(obs), augmented(obs))
    augmented.eval()
    torch.testing.assert_close(augmented(obs), augmented(obs))
    model = _ppo(NatureCNNActorCriticPolicy, size=64, augment={"shift": 4})
    assert isinstance(model.policy.features_extractor, AugmentedNatureCNN)
    model.learn(64)
