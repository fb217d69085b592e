"""BackboneEncoder's options: values that would silently ruin the features are refused at construction, each error
naming the value and the fix; the extractor and the fast-path wrapper share these checks."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_pretrained.encoder import BackboneEncoder
from sb3_pretrained.wrappers import FrozenBackboneEmbedding
from tests.helpers import TINY_MODEL, image_env


def _encoder(shape=(3, 32, 32), model_name=TINY_MODEL, **options) -> BackboneEncoder:
    return BackboneEncoder(shape, model_name, pretrained=False, **options)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(mean=[128] * 3, std=[64] * 3),
         r"mean must be finite numbers in \[0, 1\].*\[128, 128, 128\].*divide them by 255"),
        (dict(std=[float("nan")] * 3), r"std must be finite numbers in \(0, 1\].*\[nan, nan, nan\]"),
        (dict(mean=[0.5, float("inf"), 0.5]), r"mean must be finite numbers.*\[0.5, inf, 0.5\]"),
        (dict(std=[0.2, 0.0, 0.2]), r"std must be finite numbers in \(0, 1\].*\[0.2, 0.0, 0.2\]"),
        (dict(mean=[-0.1, 0.5, 0.5]), r"mean must be finite numbers in \[0, 1\].*\[-0.1, 0.5, 0.5\]"),
        (dict(mean=[]), r"mean must be a non-empty list of numbers.*got \[\]"),
        (dict(std=[]), r"std must be a non-empty list of numbers.*got \[\]"),
        (dict(mean="imagenet"), r"mean must be a non-empty list of numbers.*got 'imagenet'"),
        (dict(std=[0.2, "0.2", 0.2]), r"std must be a non-empty list of numbers.*\[0.2, '0.2', 0.2\]"),
        (dict(mean=[0.5, 0.5]), r"mean needs 3 values, one per channel.*got \[0.5, 0.5\]"),
        (dict(input_size=224.5), r"input_size must be an int or \[height, width\].*got 224.5 \(float\)"),
        (dict(input_size="224"), r"input_size must be an int.*got '224' \(str\)"),
        (dict(input_size=[64, 64.0]), r"input_size must be an int.*got \[64, 64.0\] \(list\)"),
        (dict(input_size=True), r"input_size must be an int.*got True \(bool\)"),
        (dict(input_size=[0, 64]), r"input_size must be an int or \[height, width\] of ints >= 1.*\[0, 64\]"),
        (dict(channels_last="false"), r"channels_last must be True or False, got 'false' \(str\)"),
        (dict(amp="true"), r"amp must be True, False or None, got 'true' \(str\)"),
        (dict(amp=1), r"amp must be True, False or None, got 1 \(int\)"),
        (dict(cuda_graphs=None), r"cuda_graphs must be True or False, got None \(NoneType\)"),
        (dict(model_kwargs="drop_path_rate=0.1"), r"model_kwargs must be a dict.*got 'drop_path_rate=0.1'"),
    ],
)
def test_options_that_would_ruin_the_features_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        _encoder(**options)


def test_valid_options_of_every_accepted_type_pass():
    encoder = _encoder(input_size=(np.int64(48), 40), mean=(0.5, 0.5, 0.5), std=[1, 1, 1], amp=None, channels_last=False)
    assert encoder.preprocess.input_size == (48, 40)
    assert encoder.preprocess.mean.flatten().tolist() == [0.5] * 3 and encoder.preprocess.std.flatten().tolist() == [1.0] * 3
    assert _encoder(input_size=[3, 36, 36]).preprocess.input_size == (36, 36)  # timm's (channels, height, width) too


def test_a_size_the_backbone_cannot_take_is_refused_with_the_sizes_that_work():
    # test_vit is built with dynamic_img_size=True: any multiple of its 16-pixel patches, not 56 (MiniGrid's view).
    with pytest.raises(ValueError) as info:
        _encoder((3, 56, 56), "test_vit", input_size="native")
    message = str(info.value)
    assert "'test_vit' cannot take 56x56 inputs (" in message
    assert "Sizes that work: input_size=[160, 160] (its pretrained size, the default), input_size=[48, 48], " \
           "input_size=[64, 64]." in message
    assert "dynamic_img_size" not in message  # it already has it
    assert _encoder((3, 56, 56), "test_vit", input_size=64).preprocess.input_size == (64, 64)

    # Built for one size: only that size works, and timm's dynamic size is offered.
    with pytest.raises(ValueError) as info:
        _encoder((3, 56, 56), "test_vit", input_size=64, model_kwargs=dict(dynamic_img_size=False))
    message = str(info.value)
    assert "'test_vit' cannot take 64x64 inputs" in message
    assert "Sizes that work: input_size=[160, 160] (its pretrained size, the default)." in message
    assert "model_kwargs={'dynamic_img_size': True} (sizes divisible by its patch size, 16)" in message


def test_the_fast_path_wrapper_shares_the_encoder_checks():
    venv = DummyVecEnv([lambda: image_env(size=32)])
    with pytest.raises(ValueError, match=r"mean must be finite numbers in \[0, 1\].*\[128, 128, 128\]"):
        FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, mean=[128] * 3)
    with pytest.raises(ValueError, match=r"channels_last must be True or False, got 'no'"):
        FrozenBackboneEmbedding(venv, TINY_MODEL, pretrained=False, channels_last="no")
    with pytest.raises(ValueError, match="'test_vit' cannot take 32x32 inputs.*input_size=\\[160, 160\\]"):
        FrozenBackboneEmbedding(venv, "test_vit", pretrained=False, input_size="native",
                                model_kwargs=dict(dynamic_img_size=False))
