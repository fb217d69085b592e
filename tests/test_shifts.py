"""Held-out visual shifts: parsing, the pixel changes, the wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_pretrained.shifts import VisualShift, parse_shift, shift_pixels
from tests.helpers import image_env


def test_parse_shift_specs():
    assert parse_shift("brightness=0.6").pixels == (("brightness", 0.6),)
    combined = parse_shift("contrast=0.5+color=0+env:domain_randomize=true")
    assert combined.pixels == (("contrast", 0.5), ("color", 0.0)) and combined.env_kwargs == (("domain_randomize", True),)
    for bad, match in (("brightness", "write name=value"), ("hue=0.1", "unknown 'hue'"), ("brightness=-1", "factor >= 0")):
        with pytest.raises(ValueError, match=match):
            parse_shift(bad)


def test_pixel_shifts():
    frame = np.array([[[100, 50, 200], [0, 255, 10]]], dtype=np.uint8)
    np.testing.assert_array_equal(shift_pixels(frame, (("brightness", 0.6),)), np.rint(frame * 0.6).astype(np.uint8))
    assert shift_pixels(frame, (("brightness", 2.0),)).max() == 255  # clipped
    flat = shift_pixels(frame, (("contrast", 0.0),))
    assert np.all(flat == flat.flat[0])
    gray = shift_pixels(frame, (("color", 0.0),))
    assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])


def test_visual_shift_wrapper_darkens_observations():
    env = image_env(size=16)
    shifted = VisualShift(image_env(size=16), (("brightness", 0.5),))
    env.observation_space.seed(0)
    shifted.observation_space.seed(0)
    original, _ = env.reset(seed=0)
    darker, _ = shifted.reset(seed=0)
    np.testing.assert_array_equal(darker, shift_pixels(original, (("brightness", 0.5),)))
