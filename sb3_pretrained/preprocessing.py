"""The backbone's own input preprocessing, run batched on the policy's device."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "area": "area", "random": "bilinear"}


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_size(size: object) -> tuple[int, int] | None:
    """``224`` -> ``(224, 224)``; ``[3, 224, 224]`` or ``[224, 224]`` -> ``(224, 224)``; None stays None.

    :raises ValueError: naming the value, for anything else (a float or a string is not silently truncated or split)
    """
    if size is None:
        return None
    dims: tuple[Any, ...] = ()
    if _is_int(size):
        dims = (size, size)
    elif isinstance(size, Sequence) and not isinstance(size, str):
        dims = tuple(size)[-2:] if len(size) == 3 else tuple(size)
    if len(dims) != 2 or not all(_is_int(d) and d >= 1 for d in dims):
        raise ValueError(
            f"input_size must be an int or [height, width] of ints >= 1 (or 'native': the observation's own size), "
            f"got {size!r} ({type(size).__name__})."
        )
    return int(dims[0]), int(dims[1])


class BackbonePreprocess(nn.Module):
    """Resize and normalize a batch of [0, 1] float images (N, C, H, W) the way the backbone was trained.

    :param input_size: (height, width) the backbone sees; None keeps the observation's size
    :param interpolation: timm name: ``bicubic``, ``bilinear``, ``nearest``, ``area``
    :param mean: per-channel mean of the pretraining data (RGB)
    :param std: per-channel standard deviation of the pretraining data (RGB)
    :param gray_to_rgb: repeat a single channel to three before normalizing
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        input_size: tuple[int, int] | None,
        interpolation: str,
        mean: Sequence[float],
        std: Sequence[float],
        gray_to_rgb: bool = False,
    ) -> None:
        super().__init__()
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}.")
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean and std need one value per channel and std > 0, got mean={mean}, std={std}.")
        self.input_size = input_size
        self.mode = _INTERPOLATIONS[interpolation]
        self.gray_to_rgb = gray_to_rgb
        # Not persistent: they follow from the constructor arguments, so saved models stay loadable
        # when a user overrides mean/std.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Channel-last views (SB3's VecTransposeImage, HWC envs) resize up to twice as slowly as contiguous NCHW.
        images = images.float().contiguous()
        if self.gray_to_rgb:
            images = images.expand(-1, 3, -1, -1)
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            smooth = self.mode in ("bilinear", "bicubic")
            images = F.interpolate(
                images,
                size=self.input_size,
                mode=self.mode,
                align_corners=False if smooth else None,
                antialias=smooth,
            )
            if self.mode == "bicubic":
                images = images.clamp(0.0, 1.0)  # bicubic overshoots; PIL clamps too
        return (images - self.mean) / self.std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the normalization: what the backbone sees, as [0, 1] RGB for display."""
        return (images * self.std + self.mean).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, mode={self.mode}, gray_to_rgb={self.gray_to_rgb}"
