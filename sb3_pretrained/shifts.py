"""Held-out visual shifts: the same task with other-looking frames, to measure how an agent generalizes.

A shift is named in a short spec, as on the command line (``sb3-pretrained sweep --shifts ...``):

- ``brightness=0.6``: every frame's pixels times 0.6 (40% darker), clipped to [0, 255];
- ``contrast=0.5``: each frame's deviation from its mean gray times 0.5;
- ``color=0.5``: each RGB frame blended halfway to its grayscale;
- ``env:key=value``: an env constructor argument, e.g. ``env:domain_randomize=true`` (CarRacing's random colours).

:class:`VisualShift` applies the pixel shifts to (H, W, C) uint8 observations, after the config's own env wrappers,
so the agent sees exactly its training observations, changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

PIXEL_SHIFTS = ("brightness", "contrast", "color")


@dataclasses.dataclass(frozen=True)
class Shift:
    """One held-out shift: a pixel change (:data:`PIXEL_SHIFTS` -> factor) or env keyword arguments.

    :param name: the spec it was parsed from (used as its label)
    :param pixels: pixel changes and their factors
    :param env_kwargs: env constructor arguments
    """

    name: str
    pixels: tuple[tuple[str, float], ...] = ()
    env_kwargs: tuple[tuple[str, Any], ...] = ()


def parse_shift(spec: str) -> Shift:
    """``"brightness=0.6"``, ``"contrast=0.5+color=0"``, ``"env:domain_randomize=true"`` -> :class:`Shift`."""
    pixels, env_kwargs = [], []
    for part in spec.split("+"):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ValueError(f"Shift {spec!r}: write name=value, e.g. brightness=0.6 or env:domain_randomize=true.")
        if key.startswith("env:"):
            env_kwargs.append((key[4:], yaml.safe_load(value)))
            continue
        if key not in PIXEL_SHIFTS:
            raise ValueError(f"Shift {spec!r}: unknown {key!r}; pixel shifts: {', '.join(PIXEL_SHIFTS)}, or env:<kwarg>.")
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not factor >= 0:
            raise ValueError(f"Shift {spec!r}: {key} takes a factor >= 0, got {value!r}.")
        pixels.append((key, factor))
    return Shift(spec, tuple(pixels), tuple(env_kwargs))


def shift_pixels(frame: np.ndarray, pixels: tuple[tuple[str, float], ...]) -> np.ndarray:
    """A (H, W, C) uint8 frame with the pixel changes applied, in order."""
    image = frame.astype(np.float32)
    for key, factor in pixels:
        if key == "brightness":
            image = image * factor
        elif key == "contrast":
            mean = image.mean()
            image = (image - mean) * factor + mean
        elif image.shape[-1] == 3:  # color
            gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            image = (image - gray[..., None]) * factor + gray[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class VisualShift(gym.ObservationWrapper):
    """Apply a :class:`Shift`'s pixel changes to (H, W, C) uint8 image observations.

    :param env: env with (H, W, C) uint8 observations (what the configs' wrappers give SB3)
    :param pixels: ``(("brightness", 0.6), ...)``, see :func:`parse_shift`
    """

    def __init__(self, env: gym.Env, pixels: tuple[tuple[str, float], ...]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or space.dtype != np.uint8 or len(space.shape) != 3:
            raise ValueError(f"VisualShift takes (H, W, C) uint8 image observations, got {space}.")
        self.pixels = tuple(pixels)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return shift_pixels(observation, self.pixels)
