"""Env wrappers that turn image observations into backbone inputs, and the frozen fast path.

- :class:`BackboneImage` (gymnasium): channel order, grayscale -> RGB, crop, optional resize, uint8 [0, 255].
- :class:`FrozenBackboneEmbedding` (SB3 VecEnv): embeds every observation once per step, batched over all
  envs, with a frozen backbone; the agent sees vectors (a small MLP policy, small replay buffers).

All keyword arguments are YAML-friendly (lists, not tuples), for rl_zoo3's ``env_wrapper`` / ``vec_env_wrapper``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from PIL import Image
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_pretrained.encoder import (
    BackboneEncoder,
    check_encoder_options,
    check_frame_options,
    fuse_frames,
    with_encoder_options,
)
from sb3_pretrained.quantization import EmbeddingQuantizer, check_feature_range

EMBEDDING_DTYPES = ("float32", "float16", "uint8")
#: Encoder options the fast path passes through (its frames and fusion are its own arguments).
WRAPPER_ENCODER_OPTIONS = (
    "pretrained", "input_size", "interpolation", "mean", "std", "channels_last", "amp", "cuda_graphs", "model_kwargs",
    "feature_index",
)
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
}


def _image_layout(space: spaces.Space, where: str, channel_counts: Sequence[int] = (1, 3, 4), hint: str = "") -> str:
    """``"hw"``, ``"hwc"`` or ``"chw"`` for an image Box whose channel axis (last or first) holds one of
    ``channel_counts`` channels; raises for anything else, adding ``hint`` to a channel count that fits neither end."""
    if not isinstance(space, spaces.Box) or len(space.shape) not in (2, 3):
        raise ValueError(
            f"{where}: expected an image Box of shape (H, W), (H, W, C) or (C, H, W); got {space}. "
            "Only image observations can be turned into backbone inputs."
        )
    if space.dtype != np.uint8 and not (np.issubdtype(space.dtype, np.floating) and np.all(space.high <= 1.0)):
        raise ValueError(
            f"{where}: unsupported dtype {space.dtype} (bounds [{space.low.min()}, {space.high.max()}]). "
            "Images must be uint8 in [0, 255] or floats in [0, 1]."
        )
    if len(space.shape) == 2:
        return "hw"
    if space.shape[-1] in channel_counts:
        return "hwc"
    if space.shape[0] in channel_counts:
        return "chw"
    *rest, final = channel_counts
    counts = f"{', '.join(map(str, rest))} or {final}" if rest else str(final)
    raise ValueError(f"{where}: shape {space.shape} has no channel axis of {counts} channels at either end.{hint}")


class BackboneImage(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Make image observations what a pretrained backbone takes: (H, W, 3) or (H, W, 1) uint8 in [0, 255].

    The output stays channel-last uint8, so SB3 still treats it as an image (``VecTransposeImage`` is added and
    pixels are scaled by 1/255). Resizing to the backbone's size happens on the device, inside the extractor;
    ``resize`` here stores the resized frame in every buffer instead: a 96x96 frame resized to 224x224
    takes 5.4x the memory per stored observation (and twice that in a replay buffer: obs and next_obs).

    :param env: env with an image observation, or a Dict observation holding images
    :param keys: for Dict observations, the image keys to convert (default: every (H, W[, C]) Box)
    :param grayscale_to_rgb: repeat a single channel three times (the extractor can also do it on the device)
    :param crop: pixels to cut at [top, bottom, left, right]
    :param resize: [height, width] to resize to in the env (see the memory cost above)
    :param interpolation: ``area``, ``bilinear``, ``bicubic`` or ``nearest``, for ``resize``
    """

    def __init__(
        self,
        env: gym.Env,
        keys: Sequence[str] | None = None,
        grayscale_to_rgb: bool = False,
        crop: Sequence[int] | None = None,
        resize: Sequence[int] | None = None,
        interpolation: str = "area",
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, keys=keys, grayscale_to_rgb=grayscale_to_rgb, crop=crop, resize=resize, interpolation=interpolation
        )
        gym.ObservationWrapper.__init__(self, env)
        if crop is not None and (len(crop) != 4 or min(crop) < 0):
            raise ValueError(f"crop must be [top, bottom, left, right] pixels >= 0, got {crop!r}.")
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ValueError(f"resize must be [height, width], got {resize!r}.")
        if interpolation not in _PIL_RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_PIL_RESAMPLE)}, got {interpolation!r}.")
        self.grayscale_to_rgb = grayscale_to_rgb
        self.crop = list(crop) if crop is not None else None
        self.resize = list(resize) if resize is not None else None
        self.resample = _PIL_RESAMPLE[interpolation]

        space = env.observation_space
        #: Image keys of a Dict observation (None for a single image), and the layout of each image.
        self.keys: list[str] | None
        self.layouts: dict[str | None, str]
        if isinstance(space, spaces.Dict):
            candidates = [k for k, s in space.spaces.items() if isinstance(s, spaces.Box) and len(s.shape) in (2, 3)]
            self.keys = list(keys) if keys is not None else candidates
            unknown = [k for k in self.keys if k not in space.spaces]
            if unknown or not self.keys:
                raise ValueError(
                    f"Image keys {unknown or self.keys} not usable; the Dict observation has {list(space.spaces)}."
                )
            self.layouts = {k: _image_layout(space[k], f"BackboneImage key '{k}'") for k in self.keys}
            self.observation_space = spaces.Dict(
                {
                    k: self._out_space(cast(spaces.Box, s), self.layouts[k]) if k in self.layouts else s
                    for k, s in space.spaces.items()
                }
            )
        else:
            if keys is not None:
                raise ValueError(f"keys={keys!r} is only for Dict observations; this env observes {space}.")
            self.keys = None
            self.layouts = {None: _image_layout(space, "BackboneImage")}
            assert isinstance(space, spaces.Box)  # _image_layout raised otherwise
            self.observation_space = self._out_space(space, self.layouts[None])

    def _out_space(self, space: spaces.Box, layout: str) -> spaces.Box:
        height, width, channels = self._hwc(np.zeros(space.shape, dtype=space.dtype), layout).shape
        return spaces.Box(0, 255, (height, width, channels), np.uint8)

    def _hwc(self, image: np.ndarray, layout: str) -> np.ndarray:
        if layout == "hw":
            image = image[:, :, None]
        elif layout == "chw":
            image = np.transpose(image, (1, 2, 0))
        if image.dtype != np.uint8:
            image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        if image.shape[-1] == 4:
            image = image[:, :, :3]  # RGBA -> RGB
        if self.crop is not None:
            top, bottom, left, right = self.crop
            height, width = image.shape[:2]
            if top + bottom >= height or left + right >= width:
                raise ValueError(f"crop {self.crop} removes the whole {height}x{width} image.")
            image = image[top : height - bottom, left : width - right]
        if self.grayscale_to_rgb and image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if self.resize is not None:
            height, width = self.resize
            pil = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
            image = np.asarray(pil.resize((width, height), self.resample)).reshape(height, width, -1)
        return np.ascontiguousarray(image)

    def observation(self, observation):
        if self.keys is None:
            return self._hwc(observation, self.layouts[None])
        return {k: self._hwc(v, self.layouts[k]) if k in self.layouts else v for k, v in observation.items()}


@with_encoder_options(accepted=WRAPPER_ENCODER_OPTIONS)
class FrozenBackboneEmbedding(VecEnvWrapper):
    """The frozen fast path: embed every env's image observation once per step, batched, with a frozen backbone.

    The agent then sees embedding vectors: use ``MlpPolicy``; PPO epochs and every extractor copy (targets,
    critics) rerun only small MLPs, and buffers store vectors (``dtype="float16"`` halves them,
    ``dtype="uint8"`` quarters them) instead of images. Terminal observations in ``infos`` are embedded too, so
    off-policy algorithms get correct ``next_obs``. Frame stacks are stacked as embeddings (``frame_stack``), not as images.

    A saved agent reproduces its actions when this wrapper is built again with the same arguments (the backbone
    is not part of the saved model: keep ``pretrained`` pointing at the same weights).

    :param venv: VecEnv with (H, W, C) or (C, H, W) uint8 image observations (grayscale or RGB); with
        ``frame_mode="channel"``, stacks of ``frame_stack`` such frames (``VecFrameStack``: C is ``frame_stack`` or
        ``3 * frame_stack``)
    :param model_name: timm model name
    :param frame_stack: embeddings of the last ``frame_stack`` observations are fused (the episode's first
        observation fills the history at reset)
    :param fusion: ``"concat"`` or ``"flare"`` (last embedding plus consecutive differences)
    :param frame_mode: ``"per_frame"`` (default): the env gives single frames, this wrapper stacks
        ``frame_stack`` embeddings; ``"channel"``: the env gives ``frame_stack`` stacked images (VecFrameStack)
        and one embedding is computed per stack by a first conv adapted to the stacked channels (a quarter of
        the per-frame embeddings' size for a 4-frame stack)
    :param dtype: ``"float32"``, ``"float16"`` or ``"uint8"``: dtype of the observations the agent (and its
        buffers) get. ``"uint8"`` quantizes each component linearly to 256 levels over ``feature_range``
        (:class:`~sb3_pretrained.quantization.EmbeddingQuantizer`) and shapes the observation
        ``(1, frames, features)``, so that SB3 reads it as an image and scales it to [0, 1]
        (``normalize_images=True``, the default): the policy sees ``(x - low) / (high - low)``, and a replay buffer
        stores one byte per component. For FLARE the differences span ``[low - high, high - low]``.
    :param feature_range: ``[low, high]`` of the embeddings, for ``dtype="uint8"`` (values outside are clipped,
        with a warning). Default: the bounds of the backbone's last activation when they are provable
        (``[0, 6]`` for EfficientNet-Lite and MobileNetV2, which end in ReLU6); other backbones need it given.
    :param device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    :param encoder_options: options of :class:`~sb3_pretrained.encoder.BackboneEncoder`: ``pretrained``,
        ``input_size``, ``interpolation``, ``mean``, ``std``, ``channels_last``, ``amp``, ``cuda_graphs``, ``model_kwargs``,
        ``feature_index`` (the stored embedding is then the flattened feature map: ``encoder.num_features`` values,
        C x H x W of ``encoder.feature_shape``, per frame; give ``feature_range`` for ``dtype="uint8"``)
    """

    def __init__(
        self,
        venv: VecEnv,
        model_name: str,
        frame_stack: int = 1,
        fusion: str = "concat",
        frame_mode: str = "per_frame",
        dtype: str = "float32",
        feature_range: Sequence[float] | None = None,
        device: str = "auto",
        **encoder_options: Any,
    ) -> None:
        space = venv.observation_space
        check_frame_options(frame_stack, frame_mode, fusion)
        stacked_images = frame_mode == "channel"  # the env stacks images (VecFrameStack); one embedding per stack
        layout = _image_layout(
            space,
            "FrozenBackboneEmbedding",
            (frame_stack, 3 * frame_stack) if stacked_images else (1, 3, 4),
            hint=" A stack of k grayscale or RGB frames has k or 3k channels: pass frame_stack=k"
            + ("." if stacked_images else " with frame_mode='channel'."),
        )
        assert isinstance(space, spaces.Box)  # _image_layout raised otherwise
        if space.dtype != np.uint8:
            raise ValueError(
                f"FrozenBackboneEmbedding takes uint8 images; got {space.dtype}. Wrap each env with BackboneImage."
            )
        check_encoder_options(encoder_options, "FrozenBackboneEmbedding", WRAPPER_ENCODER_OPTIONS)
        self.channels_first = layout == "chw"
        height, width, channels = (space.shape[1], space.shape[2], space.shape[0]) if self.channels_first else (
            *space.shape[:2], space.shape[2] if layout == "hwc" else 1)
        if not stacked_images and channels not in (1, 3):
            raise ValueError(
                f"FrozenBackboneEmbedding embeds single frames of 1 or 3 channels; got {channels} (shape {space.shape}). "
                "Apply VecFrameStack after this wrapper (or use frame_stack here) to stack embeddings, or pass "
                f"frame_mode='channel', frame_stack={channels if channels % 3 else channels // 3} to embed the stacked "
                "images at once with an adapted first conv."
            )
        if dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"dtype must be one of {EMBEDDING_DTYPES}, got {dtype!r}.")
        if feature_range is not None and dtype != "uint8":
            raise ValueError(f"feature_range is the quantization range of dtype='uint8'; got dtype={dtype!r}. Drop it.")

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.encoder = BackboneEncoder(
            (channels, height, width),
            model_name,
            frame_stack=frame_stack if stacked_images else 1,
            frame_mode=frame_mode,
            fusion=fusion,
            **encoder_options,
        ).to(self.device).eval()
        self.encoder.backbone.requires_grad_(False)
        self.frame_stack, self.fusion = (1 if stacked_images else frame_stack), fusion
        self.numpy_dtype = np.dtype(dtype)
        self.embedding_dim = self.encoder.output_dim
        self.quantizer: EmbeddingQuantizer | None = None
        if dtype == "uint8":
            low, high = self._quantization_range(feature_range)
            self.quantizer = EmbeddingQuantizer(low, high, self.frame_stack, fusion, self.device)
            embedding_space = spaces.Box(0, 255, (1, self.frame_stack, self.embedding_dim), np.uint8)
        else:
            embedding_space = spaces.Box(-np.inf, np.inf, (self.embedding_dim * self.frame_stack,), self.numpy_dtype)
        super().__init__(venv, observation_space=embedding_space)
        self.history = torch.zeros(venv.num_envs, self.frame_stack, self.embedding_dim, device=self.device)

    @property
    def feature_range(self) -> tuple[float, float] | None:
        """The quantization range of ``dtype="uint8"`` (None for float dtypes)."""
        return None if self.quantizer is None else self.quantizer.feature_range

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """Pooled float32 embeddings of a batch of uint8 images in the wrapped env's layout."""
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        if batch.dim() == 3:  # (N, H, W) grayscale
            batch = batch.unsqueeze(1)
        elif not self.channels_first:
            batch = batch.permute(0, 3, 1, 2)
        return self.encoder(batch.float().div_(255.0))

    def _quantization_range(self, feature_range: Sequence[float] | None) -> tuple[float, float]:
        if feature_range is not None:
            return check_feature_range(feature_range)
        bounds = self.encoder.output_range()
        if bounds is None:
            raise ValueError(
                f"dtype='uint8' needs the range of {self.encoder.model_name}'s embeddings, and its last layer "
                "has no fixed bounds (only ReLU6/Hardtanh, sigmoid and tanh endings do). Pass "
                "feature_range=[low, high] (values outside are clipped), or use dtype='float16'."
            )
        return bounds

    def quantize(self, stacked: torch.Tensor) -> torch.Tensor:
        """(N, frames * features) float embeddings -> (N, 1, frames, features) uint8 codes (``dtype="uint8"``)."""
        return self._quantizer().quantize(stacked)

    def dequantize(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, 1, frames, features) uint8 codes -> (N, frames * features) float32 embeddings (``dtype="uint8"``)."""
        return self._quantizer().dequantize(codes)

    def _quantizer(self) -> EmbeddingQuantizer:
        if self.quantizer is None:
            raise ValueError(f"This FrozenBackboneEmbedding stores {self.numpy_dtype} embeddings; codes need dtype='uint8'.")
        return self.quantizer

    def _to_numpy(self, stacked: torch.Tensor) -> np.ndarray:
        if self.quantizer is not None:
            return self.quantizer.quantize(stacked).cpu().numpy()
        return stacked.to(torch.float16 if self.numpy_dtype == np.float16 else torch.float32).cpu().numpy()

    def _stacked(self, history: torch.Tensor) -> torch.Tensor:
        return fuse_frames(history, self.fusion) if self.frame_stack > 1 else history[:, -1]

    def reset(self) -> VecEnvObs:
        embeddings = self.embed(cast(np.ndarray, self.venv.reset()))  # image observations: one array
        self.history[:] = embeddings[:, None]
        return self._to_numpy(self._stacked(self.history))

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        observations = cast(np.ndarray, observations)  # image observations: one array
        terminal = [i for i, info in enumerate(infos) if dones[i] and info.get("terminal_observation") is not None]
        images = observations
        if terminal:  # one forward pass for the new observations and the episodes' last ones
            images = np.concatenate([observations, np.stack([infos[i]["terminal_observation"] for i in terminal])])
        embeddings = self.embed(images)
        current, last = embeddings[: len(observations)], embeddings[len(observations) :]
        self.history = torch.roll(self.history, -1, dims=1)
        self.history[:, -1] = current
        if terminal:
            ended = self.history[terminal].clone()
            ended[:, -1] = last
            for row, i in zip(self._to_numpy(self._stacked(ended)), terminal, strict=False):
                infos[i]["terminal_observation"] = row
        for index in np.flatnonzero(dones):
            self.history[index] = current[index]  # a new episode starts with a history of its first observation
        return self._to_numpy(self._stacked(self.history)), rewards, dones, infos
