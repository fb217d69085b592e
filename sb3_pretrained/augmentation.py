"""Image augmentation of training batches, on the device: DrQ's random shift and photometric jitter.

:class:`ImageAugmentation` changes a batch of [0, 1] images only while its module is in training mode, which SB3
sets for the gradient steps (``policy.set_training_mode(True)`` in ``train()``) and unsets while acting
(``collect_rollouts``, ``predict``, evaluation): acting observations are never augmented. Stacked frames of one
observation get the same shift and the same colour change, as DrQ applies its shift to the whole stack.

This is DrQ's and RAD's use of augmentation. In PPO it also enters the probability ratio: the update's
log-probabilities are of augmented inputs, the rollout's of plain ones, so the ratio is not 1 before the first
gradient step (``benchmarks/augmented_ratio.py``: about 11% of the samples outside the clip range on CarRacing with
``shift: 4``). :class:`~sb3_pretrained.drac.DrACPPO` (``--algo ppo_drac``) takes PPO's loss on plain inputs, with
:func:`augmentation_off`, and the augmentation as DrAC's regularizer.

:class:`AugmentedNatureCNN` is SB3's NatureCNN with the same augmentation, so that a from-scratch baseline can get
exactly what the pretrained extractor gets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

AUGMENTATIONS = ("shift", "brightness", "contrast", "saturation")


class ImageAugmentation(nn.Module):
    """Random shift and colour jitter of (N, C, H, W) images in [0, 1], in training mode only; identity otherwise.

    :param shift: pad every side by this many pixels (edge pixels repeated) and crop back at a random offset per
        sample (DrQ: 4 for 84 px frames); 0 turns it off
    :param brightness: multiply each sample by a factor drawn from [1 - brightness, 1 + brightness]
    :param contrast: scale each sample's deviation from its mean by a factor from [1 - contrast, 1 + contrast]
    :param saturation: blend each RGB frame with its grayscale by a factor from [1 - saturation, 1 + saturation]
        (grayscale frames are left alone)
    :param frame_channels: channels per stacked frame (1 or 3): colour changes apply per frame, the same for every
        frame of a sample
    """

    def __init__(
        self, shift: int = 0, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, frame_channels: int = 3
    ) -> None:
        super().__init__()
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ValueError(f"shift must be a whole number of pixels >= 0, got {shift!r}.")
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a strength in [0, 1] (factors drawn from [1 - s, 1 + s]), got {value!r}.")
        if frame_channels not in (1, 3):
            raise ValueError(f"frame_channels must be 1 or 3, got {frame_channels!r}.")
        self.shift = shift
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.frame_channels = frame_channels

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is configured."""
        return bool(self.shift or self.brightness or self.contrast or self.saturation)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.enabled or len(images) == 0:
            return images
        images = images.float()
        if self.brightness or self.contrast or self.saturation:
            images = self._jitter(images)
        if self.shift:
            images = self._shift(images)
        return images

    def _factors(self, count: int, strength: float, like: torch.Tensor) -> torch.Tensor:
        return 1.0 + strength * (2.0 * torch.rand(count, 1, 1, 1, 1, device=like.device) - 1.0)

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        count, channels, height, width = images.shape
        frames = images.reshape(count, channels // self.frame_channels, self.frame_channels, height, width)
        if self.brightness:
            frames = frames * self._factors(count, self.brightness, frames)
        if self.contrast:
            mean = frames.mean(dim=(2, 3, 4), keepdim=True)
            frames = (frames - mean) * self._factors(count, self.contrast, frames) + mean
        if self.saturation and self.frame_channels == 3:
            gray = (frames * frames.new_tensor([0.299, 0.587, 0.114]).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
            frames = (frames - gray) * self._factors(count, self.saturation, frames) + gray
        return frames.clamp(0.0, 1.0).reshape(count, channels, height, width)

    def _shift(self, images: torch.Tensor) -> torch.Tensor:
        """DrQ-v2's random shift: replicate-pad, then sample the original size at an integer offset per sample."""
        count, _, height, width = images.shape
        pad = self.shift
        padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
        # Sampling grid over the padded image, in its normalized coordinates, shifted by whole pixels.
        eps_h, eps_w = 1.0 / (height + 2 * pad), 1.0 / (width + 2 * pad)
        rows = torch.linspace(-1.0 + eps_h, 1.0 - eps_h, height + 2 * pad, device=images.device)[:height]
        cols = torch.linspace(-1.0 + eps_w, 1.0 - eps_w, width + 2 * pad, device=images.device)[:width]
        base = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        offsets = torch.randint(0, 2 * pad + 1, (count, 1, 1, 2), device=images.device).float()
        offsets *= torch.tensor([2.0 * eps_w, 2.0 * eps_h], device=images.device)
        return F.grid_sample(padded, base.unsqueeze(0) + offsets, padding_mode="zeros", align_corners=False)

    def extra_repr(self) -> str:
        return (
            f"shift={self.shift}, brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}"
        )


def has_augmentation(module: nn.Module) -> bool:
    """Whether any :class:`ImageAugmentation` inside ``module`` (a policy, an extractor) changes images."""
    return any(isinstance(m, ImageAugmentation) and m.enabled for m in module.modules())


@contextlib.contextmanager
def augmentation_off(module: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`ImageAugmentation` inside ``module`` passes images through unchanged, while
    every other module keeps its mode (a policy in training mode stays in it); their modes come back on exit. A
    frozen backbone's feature cache serves these plain passes."""
    augmentations = [m for m in module.modules() if isinstance(m, ImageAugmentation)]
    modes = [m.training for m in augmentations]
    for augmentation in augmentations:
        augmentation.train(False)
    try:
        yield
    finally:
        for augmentation, mode in zip(augmentations, modes, strict=True):
            augmentation.train(mode)


def build_augmentation(augment: Mapping[str, Any] | None, frame_channels: int) -> ImageAugmentation | None:
    """An :class:`ImageAugmentation` from a YAML-friendly mapping (``{shift: 4, brightness: 0.2}``), None for none."""
    if augment is None:
        return None
    if not isinstance(augment, Mapping):
        raise ValueError(f"augment must be a mapping such as {{'shift': 4, 'brightness': 0.3}}, got {augment!r}.")
    unknown = [key for key in augment if key not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation {unknown[0]!r}; augmentations: {', '.join(AUGMENTATIONS)}.")
    augmentation = ImageAugmentation(frame_channels=frame_channels, **augment)
    return augmentation if augmentation.enabled else None


class AugmentedNatureCNN(NatureCNN):
    """SB3's NatureCNN whose training batches are augmented like :class:`~sb3_pretrained.TimmExtractor`'s: the
    from-scratch baseline with the same augmentation.

    :param observation_space: image Box, channel-first
    :param features_dim: output size (512 as SB3's default)
    :param normalized_image: the observation is already a float image in [0, 1]
    :param augment: ``{shift: 4, brightness: 0.3, contrast: 0.3, saturation: 0.3}`` (see :class:`ImageAugmentation`);
        None for plain NatureCNN
    :param frame_channels: channels per stacked frame: 3 (RGB) when the channel count divides by 3, else 1
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        features_dim: int = 512,
        normalized_image: bool = False,
        augment: Mapping[str, Any] | None = None,
        frame_channels: int | None = None,
    ) -> None:
        super().__init__(observation_space, features_dim=features_dim, normalized_image=normalized_image)
        channels = observation_space.shape[0]
        self.augment = build_augmentation(augment, frame_channels or (3 if channels % 3 == 0 else 1))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            observations = self.augment(observations)
        return super().forward(observations)
