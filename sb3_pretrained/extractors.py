"""timm backbones as Stable-Baselines3 features extractors."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_pretrained.allocator import keep_cpu_buffers_mapped
from sb3_pretrained.backbones import Stage, backbone_stages, create_backbone
from sb3_pretrained.feature_cache import FeatureCache
from sb3_pretrained.optim import GROUP_ATTR
from sb3_pretrained.preprocessing import BackbonePreprocess, as_size
from sb3_pretrained.weights import PretrainedSpec

_SAVED_MODEL_LOADERS = {BaseAlgorithm.load.__func__.__code__, BasePolicy.load.__func__.__code__}


def _callers() -> Iterator[FrameType]:
    """Frames of the current call stack around the caller, innermost first (a few of our own included)."""
    frame = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back


def rebuilding_saved_model() -> bool:
    """Whether we are being built by SB3's ``load``, which overwrites every weight with the saved state
    dict right after: reading the pretrained weights then would be wasted work, and fails offline."""
    return any(frame.f_code in _SAVED_MODEL_LOADERS for frame in _callers())


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there bf16 inference beats fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


CPU_NATIVE_BF16 = _cpu_has_native_bf16()


def policy_under_construction() -> BaseModel | None:
    """The SB3 policy whose construction is building the caller, if any (found on the call stack)."""
    owners = (frame.f_locals.get("self") for frame in _callers())
    return next((owner for owner in owners if isinstance(owner, BaseModel)), None)


def shared_feature_cache(config: dict[str, Any], capacity: int) -> FeatureCache:
    """One FeatureCache for every extractor copy (actor, critics, targets) that a policy builds with ``config``;
    a new one outside a policy."""
    policy = policy_under_construction()
    if policy is None:
        return FeatureCache(capacity)
    caches = policy.__dict__.setdefault("_sb3_pretrained_feature_caches", {})
    return caches.setdefault(repr(sorted(config.items())), FeatureCache(capacity))


def _check_image_space(observation_space: spaces.Space, normalized_image: bool, what: str) -> tuple[int, int, int]:
    if isinstance(observation_space, spaces.Dict):
        raise ValueError(
            f"{what} takes a single image observation, got a Dict space with keys {list(observation_space.spaces)}. "
            "Use TimmMultiInputExtractor with MultiInputPolicy for Dict observations."
        )
    if not is_image_space(observation_space, check_channels=False, normalized_image=normalized_image):
        detail = (
            f"{type(observation_space).__name__} with shape {getattr(observation_space, 'shape', None)} "
            f"and dtype {getattr(observation_space, 'dtype', None)}"
        )
        raise ValueError(
            f"{what} needs an image observation space (Box, uint8 in [0, 255], shape (C, H, W)); got {detail}. "
            "For a float image already in [0, 1], pass normalized_image=True (and normalize_images=False in "
            "policy_kwargs); for vector observations use SB3's default MlpPolicy extractor."
        )
    return observation_space.shape


FRAME_MODES = ("per_frame", "channel")
FUSIONS = ("concat", "flare")


def frame_layout(shape: tuple[int, ...], frame_stack: int, frame_mode: str, model_name: str) -> int:
    """Channels per frame of a (C, H, W) observation holding ``frame_stack`` frames; raises with the options that
    would fit when the channel count fits no mode."""
    if frame_mode not in FRAME_MODES:
        raise ValueError(f"frame_mode must be one of {FRAME_MODES}, got {frame_mode!r}.")
    if isinstance(frame_stack, bool) or not isinstance(frame_stack, int) or frame_stack < 1:
        raise ValueError(f"frame_stack must be an int >= 1, got {frame_stack!r}.")
    channels = shape[0]
    if channels % frame_stack == 0 and channels // frame_stack in (1, 3):
        return channels // frame_stack
    if shape[-1] in (1, 3, 4) and channels > 12:
        raise ValueError(
            f"Observation shape {tuple(shape)} looks channel-last (H, W, C). SB3 transposes uint8 images inside a "
            "VecEnv automatically; otherwise wrap the env with VecTransposeImage."
        )
    fits = [f"frame_stack={channels // c} ({c}-channel frames)" for c in (3, 1) if channels % c == 0 and channels // c > 1]
    if channels in (1, 3):
        fits.insert(0, "frame_stack=1")
    raise ValueError(
        f"Observation shape {tuple(shape)} has {channels} channels, which is not frame_stack={frame_stack} frames of 1 "
        f"(grayscale) or 3 (RGB) channels for '{model_name}'. "
        + f"Options that fit: {', or '.join(fits)}."
    )


def fuse_frames(embeddings: torch.Tensor, fusion: str) -> torch.Tensor:
    """(N, k, F) per-frame embeddings, oldest first -> (N, k*F): concatenated, or FLARE (last + deltas)."""
    if fusion == "flare":
        deltas = embeddings[:, 1:] - embeddings[:, :-1]
        return torch.cat([embeddings[:, -1], deltas.flatten(1)], dim=1)
    return embeddings.flatten(1)


class TimmExtractor(BaseFeaturesExtractor):
    """Any timm model as a Stable-Baselines3 features extractor, pretrained weights kept intact.

    Usage::

        PPO("CnnPolicy", env, policy_kwargs=dict(
            features_extractor_class=TimmExtractor,
            features_extractor_kwargs=dict(model_name="efficientnet_lite0", frozen=True)))

    What it takes care of:

    - SB3's orthogonal init (PPO/A2C ``ortho_init=True``) never touches the backbone: :meth:`apply`
      skips it, so the weights stay equal to the checkpoint.
    - Observations arrive as SB3 hands them over (channel-first, uint8 scaled to [0, 1]); resizing and the
      backbone's own mean/std run batched on the policy's device.
    - ``frozen=True``: no gradients, no stored activations, BatchNorm and Dropout in eval mode whatever
      ``.train()`` is called with.
    - ``ALGO.load(path)`` rebuilds the extractor without reading the pretrained weights: the saved state dict
      is the source of truth, so loading works offline and without the weight package.
    - Pretrained weights are read once per process however many copies the algorithm builds.

    :param observation_space: image Box, channel-first, uint8 (or float in [0, 1] with ``normalized_image``)
    :param model_name: any ``timm.list_models()`` name
    :param pretrained: ``True`` (pip weight package, then timm's Hugging Face cache, then download),
        ``"package"`` or ``"timm"`` (that source only), a path to a ``.safetensors``/``.pth``/``.pt``/``.bin``
        file, or ``False`` (random init)
    :param frozen: train no backbone weight; the projection head still trains
    :param features_dim: size of the Linear+ReLU projection after pooling; ``None`` returns the pooled
        backbone features as they are (``backbone.num_features`` values)
    :param input_size: size the backbone sees, int or [height, width]; default the model's pretrained
        ``input_size``; ``"native"`` keeps the observation's size (fastest)
    :param interpolation: resize mode; default the model's (e.g. ``bicubic``)
    :param mean: normalization mean; default the model's pretrained config
    :param std: normalization std; default the model's pretrained config
    :param backbone_lr_scale: the backbone's (top stage's) LR as a fraction of the head's, in (0, 1]
    :param layer_decay: each stage below the top trains at this fraction of the stage above (timm's layer-wise
        LR decay), in (0, 1]; None for no decay. Scales take effect through a grouped optimizer
        (:func:`sb3_pretrained.optim.grouped`), which every sb3_pretrained fine-tuning callback installs.
    :param frame_stack: frames stacked along the channel axis (SB3's ``VecFrameStack``), oldest first
    :param frame_mode: ``"per_frame"``: one shared backbone embeds each frame, embeddings are fused by
        ``fusion``; ``"channel"``: the backbone's first conv takes all stacked channels, adapted from its
        pretrained RGB weights (timm's ``adapt_input_conv``)
    :param fusion: how per-frame embeddings are combined: ``"concat"``, or ``"flare"`` (last embedding plus the
        differences between consecutive embeddings)
    :param train_bn: let BatchNorm layers of trainable stages update their running statistics in
        ``train()`` mode. Default False: BN stays in eval mode, as in most fine-tuning practice
        (it also keeps PPO's rollout and update passes identical).
    :param normalized_image: the observation is already a float image in [0, 1] (SB3's name for it)
    :param channels_last: run the backbone in the channels_last memory format (on a 2-core CPU it took
        efficientnet_lite0 from about 35 to about 120 img/s at batch 8; on GPUs it enables tensor-core kernels)
    :param amp: run the backbone under bfloat16 autocast. None (default): on for CUDA inputs, and for a frozen
        backbone on CPUs that compute bf16 natively (AVX512-BF16/AMX; about 2x fp32's throughput for
        efficientnet_lite0 on the 2-core CI CPU), as timm's benchmark runs inference. bf16 keeps float32's exponent
        range, so no gradient scaler is needed when fine-tuning
    :param model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``drop_path_rate``)
    :param grad_checkpointing: recompute the backbone's activations in the backward pass instead of storing them
        (timm's ``set_grad_checkpointing``): less memory when fine-tuning, for about one more forward pass. With
        ``train_bn=True`` the recomputation updates BatchNorm statistics a second time
    :param feature_cache: while the backbone is frozen, keep the features of the last this many distinct inputs
        (single frames when ``frame_mode="per_frame"``) and compute each only once: PPO's epochs reuse the rollout's
        features, and the copies a policy builds (targets, critics, actor) share one cache, so a batch goes through
        the frozen backbone once. Rows of ``backbone.num_features`` floats (5 KB for efficientnet_lite0); 0 turns
        it off. Cleared when weights are loaded (``load_state_dict``, ``ALGO.load``, ``set_parameters``) or stages
        are unfrozen, and off for every copy while any copy trains (a frozen target network follows its unfrozen
        online network); after changing frozen weights in place by hand, call ``extractor.feature_cache.clear()``
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        model_name: str,
        pretrained: PretrainedSpec = True,
        frozen: bool = False,
        features_dim: int | None = 256,
        input_size: int | Sequence[int] | str | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        frame_stack: int = 1,
        frame_mode: str = "per_frame",
        fusion: str = "concat",
        train_bn: bool = False,
        normalized_image: bool = False,
        channels_last: bool = True,
        amp: bool | None = None,
        model_kwargs: dict[str, Any] | None = None,
        grad_checkpointing: bool = False,
        feature_cache: int = 32768,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "observation_space", "__class__")}
        config["observation_shape"] = observation_space.shape
        channels, height, width = _check_image_space(observation_space, normalized_image, type(self).__name__)
        frame_channels = frame_layout(observation_space.shape, frame_stack, frame_mode, model_name)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
        for label, scale in (("backbone_lr_scale", backbone_lr_scale), ("layer_decay", layer_decay)):
            if scale is not None and not 0.0 < scale <= 1.0:
                raise ValueError(f"{label} must be in (0, 1] (a fraction of the head's learning rate), got {scale}.")
        if features_dim is not None and features_dim < 1:
            raise ValueError(f"features_dim must be a positive int or None (raw pooled features), got {features_dim}.")
        if isinstance(feature_cache, bool) or not isinstance(feature_cache, int) or feature_cache < 0:
            raise ValueError(f"feature_cache must be a number of rows >= 0 (0 turns the cache off), got {feature_cache!r}.")
        super().__init__(observation_space, features_dim=1)

        self.model_name = model_name
        self.frame_stack, self.frame_mode, self.fusion = frame_stack, frame_mode, fusion
        self._frame_channels = frame_channels
        per_frame = frame_mode == "per_frame"
        loading = rebuilding_saved_model()
        self.backbone, self.weight_source = create_backbone(
            model_name, False if loading else pretrained, in_chans=3 if per_frame else channels, **(model_kwargs or {})
        )
        if loading:
            self.weight_source = "the saved model's state dict"
        if grad_checkpointing:
            try:
                self.backbone.set_grad_checkpointing(True)
            except (AssertionError, AttributeError, NotImplementedError) as err:
                raise ValueError(
                    f"timm's '{model_name}' does not support gradient checkpointing ({err or type(err).__name__}). "
                    "Use grad_checkpointing=False, or a smaller batch_size / input_size to save memory."
                ) from err
        cfg = self.backbone.pretrained_cfg
        if input_size == "native":
            size = (height, width)
        else:
            size = as_size(input_size) or as_size(cfg.get("input_size")) or (height, width)
        mean = tuple(mean or cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(std or cfg.get("std", (0.229, 0.224, 0.225)))
        if not per_frame:  # one normalization per input channel of the adapted first conv
            if frame_channels == 1:
                mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
            mean, std = mean * frame_stack, std * frame_stack
        self.preprocess = BackbonePreprocess(
            size,
            interpolation or cfg.get("interpolation", "bilinear"),
            mean,
            std,
            gray_to_rgb=per_frame and frame_channels == 1,
        )
        num_features = self.backbone.num_features * (frame_stack if per_frame else 1)
        if features_dim is None:
            self.head: nn.Module = nn.Identity()
            self._features_dim = num_features
        else:
            self.head = nn.Sequential(nn.Linear(num_features, features_dim), nn.ReLU())
            self._features_dim = features_dim

        self.stages: list[Stage] = backbone_stages(self.backbone)
        params = dict(self.backbone.named_parameters())
        for depth, stage in enumerate(reversed(self.stages)):
            scale = backbone_lr_scale * (layer_decay or 1.0) ** depth
            for name in stage.params:
                setattr(params[name], GROUP_ATTR, (f"backbone.{stage.name}", scale))
        self.train_bn = train_bn
        self.trainable_stages = 0
        self.channels_last, self.amp = channels_last, amp
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.feature_cache = shared_feature_cache(config, feature_cache) if feature_cache else None
        self.set_trainable_stages(0 if frozen else len(self.stages))

    @property
    def stage_names(self) -> list[str]:
        """Stage names, bottom (stem) to top."""
        return [s.name for s in self.stages]

    @property
    def frozen(self) -> bool:
        """True when no backbone parameter trains."""
        return self.trainable_stages == 0

    def set_trainable_stages(self, count: int) -> None:
        """Train the top ``count`` stages of the backbone and freeze the rest (0 freezes all)."""
        if not 0 <= count <= len(self.stages):
            raise ValueError(f"count must be in [0, {len(self.stages)}] (stages: {self.stage_names}), got {count}.")
        if self.feature_cache is not None and (count > 0) != (self.trainable_stages > 0):
            self.feature_cache.sharer_training(count > 0)
        self.trainable_stages = count
        params = dict(self.backbone.named_parameters())
        first_trainable = len(self.stages) - count
        for index, stage in enumerate(self.stages):
            for name in stage.params:
                params[name].requires_grad_(index >= first_trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> TimmExtractor:
        """Set train/eval mode, keeping frozen stages (and, unless ``train_bn``, all BatchNorm) in eval mode."""
        super().train(mode)
        if not mode:
            return self
        modules = dict(self.backbone.named_modules())
        first_trainable = len(self.stages) - self.trainable_stages
        for index, stage in enumerate(self.stages):
            for name in stage.modules:
                module = modules[name]
                if index < first_trainable:
                    module.eval()
                elif not self.train_bn:
                    for sub in module.modules():
                        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                            sub.eval()
        if self.trainable_stages == 0:
            self.backbone.eval()
        return self

    def apply(self, fn: Callable[[nn.Module], None]) -> TimmExtractor:
        """Apply ``fn`` to the head and this module, never to the backbone.

        SB3's PPO/A2C call ``extractor.apply(init_weights)`` (orthogonal init) on the extractor; a pretrained
        backbone must come out of that unchanged. To re-initialize the backbone on purpose, call
        ``extractor.backbone.apply(fn)``.
        """
        for name, module in self.named_children():
            if name != "backbone":
                module.apply(fn)
        fn(self)
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        if self.feature_cache is not None:  # new weights: cached features are stale
            self.feature_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def embeds_frames_one_by_one(self) -> bool:
        """Whether stacked frames go through the backbone one by one (per-frame mode with a stack)."""
        return self.frame_mode == "per_frame" and self.frame_stack > 1

    def backbone_inputs(self, observations: torch.Tensor) -> torch.Tensor:
        """The inputs the backbone embeds for a batch of observations: (N, k*C, H, W) -> (N*k, C, H, W) when frames
        go one by one (one shared backbone embeds every frame), the observations themselves otherwise."""
        if not self.embeds_frames_one_by_one:
            return observations
        return observations.reshape(len(observations) * self.frame_stack, self._frame_channels, *observations.shape[-2:])

    def forward_backbone(self, observations: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features for a batch of observations (frames fused), without the projection head."""
        batch = observations.shape[0]
        observations = self.backbone_inputs(observations)
        # Inference tensors cannot be kept for later training steps: no cache under inference_mode.
        if self.feature_cache is not None and self.feature_cache.active and not torch.is_inference_mode_enabled():
            features = self.feature_cache.features(observations, self._embed)
        else:
            features = self._embed(observations)
        if self.embeds_frames_one_by_one:
            features = fuse_frames(features.view(batch, self.frame_stack, -1), self.fusion)
        return features

    def _embed(self, observations: torch.Tensor) -> torch.Tensor:
        """Preprocess and run the backbone on a batch of single inputs: pooled float32 features."""
        if observations.device.type == "cpu":
            keep_cpu_buffers_mapped()
        images = self.preprocess(observations.float())
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        amp = self.amp
        if amp is None:
            amp = images.is_cuda or (CPU_NATIVE_BF16 and images.device.type == "cpu" and self.trainable_stages == 0)
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable_stages > 0),
            torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp),
        ):
            return self.backbone(images).float()

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_backbone(observations))

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, weights={self.weight_source!r}, "
            f"trainable_stages={self.trainable_stages}/{len(self.stages)}"
        )


class TimmMultiInputExtractor(BaseFeaturesExtractor):
    """Dict observations (``MultiInputPolicy``): every image key goes through one shared TimmExtractor (several
    cameras, one copy of the weights, one batched forward when their shapes agree); the other keys
    (proprioception) are flattened and concatenated after it, as R3M and MVP do.

    :param observation_space: Dict space with at least one image key
    :param model_name: timm model name
    :param image_keys: which keys are images (default: every key SB3 considers an image)
    :param normalized_image: image keys are already floats in [0, 1]
    :param timm_kwargs: every other :class:`TimmExtractor` argument (``pretrained``, ``frozen``, ``features_dim``,
        ``input_size``, ``frame_stack``, ...), shared by all cameras
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        model_name: str,
        image_keys: Sequence[str] | None = None,
        normalized_image: bool = False,
        **timm_kwargs: Any,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(
                f"TimmMultiInputExtractor takes a Dict observation space (MultiInputPolicy), got {observation_space}. "
                "Use TimmExtractor with CnnPolicy for a single image."
            )
        if image_keys is None:
            image_keys = [
                k for k, s in observation_space.spaces.items()
                if is_image_space(s, check_channels=False, normalized_image=normalized_image)
            ]
        unknown = [k for k in image_keys if k not in observation_space.spaces]
        if unknown or not image_keys:
            raise ValueError(
                f"No usable image keys ({unknown or 'none found'}) in the Dict observation {list(observation_space.spaces)}. "
                "Image keys must be uint8 Boxes of shape (C, H, W); name them with image_keys=[...]."
            )
        channels = {observation_space[k].shape[0] for k in image_keys}
        if len(channels) > 1:
            raise ValueError(f"All image keys must have the same channel count for one shared backbone; got {channels}.")
        super().__init__(observation_space, features_dim=1)
        self.image_keys = list(image_keys)
        self.vector_keys = [k for k in observation_space.spaces if k not in self.image_keys]
        for key in self.vector_keys:
            if not isinstance(observation_space[key], spaces.Box):
                raise ValueError(f"Non-image key '{key}' must be a Box (proprioception vector), got {observation_space[key]}.")
        self.images = TimmExtractor(
            observation_space[self.image_keys[0]], model_name, normalized_image=normalized_image, **timm_kwargs
        )
        shapes = {observation_space[k].shape for k in self.image_keys}
        self._batched = len(shapes) == 1  # same shape: all cameras in one backbone pass
        vector_dim = sum(int(np.prod(observation_space[k].shape)) for k in self.vector_keys)
        self._features_dim = len(self.image_keys) * self.images.features_dim + vector_dim

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._batched:
            stacked = torch.cat([observations[k] for k in self.image_keys])
            per_camera = self.images(stacked).chunk(len(self.image_keys))
        else:
            per_camera = [self.images(observations[k]) for k in self.image_keys]
        vectors = [observations[k].flatten(1).float() for k in self.vector_keys]
        return torch.cat([*per_camera, *vectors], dim=1)
