"""timm backbones as Stable-Baselines3 features extractors: a :class:`~sb3_pretrained.encoder.BackboneEncoder`,
a projection head and stage freezing."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_pretrained.backbones import Stage, backbone_stages
from sb3_pretrained.encoder import BackboneEncoder, check_encoder_options, check_flags, with_encoder_options
from sb3_pretrained.optim import GROUP_ATTR
from sb3_pretrained.sb3_internals import (
    KeepsEncoderOnApply,
    policy_normalizes_images,
    rebuilding_saved_model,
    shared_feature_cache,
)


def _check_image_space(observation_space: spaces.Space, normalized_image: bool, what: str) -> tuple[int, ...]:
    """The (C, H, W) shape of an image space whose pixels reach the backbone in [0, 1]; raises naming the fix for
    anything else, including scalings that would feed it 0-255 values (the policy's ``normalize_images=False`` on
    uint8 pixels, or ``normalized_image=True`` on floats beyond [0, 1])."""
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
    box = cast(spaces.Box, observation_space)  # is_image_space: a Box
    if box.dtype == np.uint8 and policy_normalizes_images() is False:
        raise ValueError(
            f"{what}: the policy has normalize_images=False, so this uint8 observation would reach the backbone as "
            "0-255 pixel values instead of the [0, 1] images it was pretrained on. Fix: drop normalize_images=False "
            "from policy_kwargs (SB3 then scales the pixels), or give float images in [0, 1] with normalized_image=True."
        )
    if normalized_image and box.dtype != np.uint8 and not (np.all(box.low >= 0.0) and np.all(box.high <= 1.0)):
        raise ValueError(
            f"{what}: normalized_image=True says the observation is a float image in [0, 1], but its space's bounds are "
            f"[{box.low.min()}, {box.high.max()}]: values up to {box.high.max()} would reach the backbone unscaled. "
            "Fix: scale the images to [0, 1] in the env and declare Box(0.0, 1.0, ...), or give uint8 pixels "
            "(sb3_pretrained.wrappers.BackboneImage) with normalized_image=False."
        )
    return box.shape


def _is_number(value: object, integral: bool = False) -> bool:
    """Whether ``value`` is a real number (an integer with ``integral``), bools excluded."""
    return isinstance(value, numbers.Integral if integral else numbers.Real) and not isinstance(value, bool)


@with_encoder_options()
class TimmExtractor(KeepsEncoderOnApply, BaseFeaturesExtractor):
    """Any timm model as a Stable-Baselines3 features extractor, pretrained weights kept intact.

    Usage::

        PPO("CnnPolicy", env, policy_kwargs=dict(
            features_extractor_class=TimmExtractor,
            features_extractor_kwargs=dict(model_name="efficientnet_lite0", frozen=True)))

    What it takes care of:

    - SB3's orthogonal init (PPO/A2C ``ortho_init=True``) never touches the backbone: :meth:`apply`
      skips it, so the weights stay equal to the checkpoint.
    - Observations arrive as SB3 hands them over (channel-first, uint8 scaled to [0, 1]); resizing and the
      backbone's own mean/std run batched on the policy's device (:class:`~sb3_pretrained.encoder.BackboneEncoder`).
    - ``frozen=True``: no gradients, no stored activations, BatchNorm and Dropout in eval mode whatever
      ``.train()`` is called with.
    - ``ALGO.load(path)`` rebuilds the extractor without reading the pretrained weights: the saved state dict
      is the source of truth, so loading works offline and without the weight package.
    - Pretrained weights are read once per process however many copies the algorithm builds.

    :param observation_space: image Box, channel-first, uint8 (or float in [0, 1] with ``normalized_image``)
    :param model_name: any ``timm.list_models()`` name
    :param frozen: train no backbone weight; the projection head still trains
    :param features_dim: size of the Linear+ReLU projection after pooling (with ``feature_index``: a 1x1 conv to
        32 channels over the feature map, then Linear, LayerNorm and Tanh, see :func:`spatial_head`); ``None``
        returns the backbone features as they are (``encoder.output_dim`` values)
    :param backbone_lr_scale: the backbone's (top stage's) LR as a fraction of the head's, in (0, 1]
    :param layer_decay: each stage below the top trains at this fraction of the stage above (timm's layer-wise
        LR decay), in (0, 1]; None for no decay. Scales take effect through a grouped optimizer
        (:func:`sb3_pretrained.optim.grouped`), which every sb3_pretrained fine-tuning callback installs.
    :param train_bn: let BatchNorm layers of trainable stages update their running statistics in
        ``train()`` mode. Default False: BN stays in eval mode, as in most fine-tuning practice
        (it also keeps PPO's rollout and update passes identical).
    :param normalized_image: the observation is already a float image in [0, 1] (SB3's name for it); its space must
        say so (bounds within [0, 1]). Inside a policy, uint8 observations need the policy's ``normalize_images=True``
        (SB3's default), which scales them to [0, 1]
    :param grad_checkpointing: recompute the backbone's activations in the backward pass instead of storing them
        (timm's ``set_grad_checkpointing``): less memory when fine-tuning, for about one more forward pass. With
        ``train_bn=True`` the recomputation updates BatchNorm statistics a second time
    :param feature_cache: while the backbone is frozen, keep the features of the last this many distinct inputs
        (single frames when ``frame_mode="per_frame"``) and compute each only once: PPO's epochs reuse the rollout's
        features, and the copies a policy builds (targets, critics, actor) share one cache, so a batch goes through
        the frozen backbone once. Rows of ``backbone.num_features`` floats (5 KB for efficientnet_lite0); 0 turns
        it off. The cache checks the copies' weights itself and closes for good once any copy trains or the
        copies' weights differ (see :mod:`sb3_pretrained.feature_cache`)
    :param encoder_options: everything else is an option of :class:`~sb3_pretrained.encoder.BackboneEncoder`:
        ``pretrained``, ``input_size``, ``interpolation``, ``mean``, ``std``, ``frame_stack``, ``frame_mode``,
        ``fusion``, ``channels_last``, ``amp``, ``cuda_graphs``, ``model_kwargs``, ``feature_index`` (intermediate
        feature maps), ``augment`` (augmentation of training batches)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        model_name: str,
        frozen: bool = False,
        features_dim: int | None = 256,
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        train_bn: bool = False,
        normalized_image: bool = False,
        grad_checkpointing: bool = False,
        feature_cache: int = 32768,
        **encoder_options: Any,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "observation_space", "__class__", "encoder_options")}
        config.update(encoder_options, observation_shape=observation_space.shape)
        check_flags(frozen=frozen, train_bn=train_bn, normalized_image=normalized_image,
                    grad_checkpointing=grad_checkpointing)
        _check_image_space(observation_space, normalized_image, type(self).__name__)
        check_encoder_options(encoder_options, type(self).__name__)
        scales = (("backbone_lr_scale", backbone_lr_scale), ("layer_decay", 1.0 if layer_decay is None else layer_decay))
        for label, scale in scales:
            if not (_is_number(scale) and 0.0 < scale <= 1.0):
                raise ValueError(
                    f"{label} must be in (0, 1] (a number: a fraction of the head's learning rate), got {scale!r} "
                    f"({type(scale).__name__}). In YAML, 1e-1 without a dot is a string: write 0.1."
                )
        if features_dim is not None and not (_is_number(features_dim, integral=True) and features_dim >= 1):
            raise ValueError(
                f"features_dim must be a positive int or None (raw pooled features), got {features_dim!r} "
                f"({type(features_dim).__name__})."
            )
        if isinstance(feature_cache, bool) or not isinstance(feature_cache, int) or feature_cache < 0:
            raise ValueError(f"feature_cache must be a number of rows >= 0 (0 turns the cache off), got {feature_cache!r}.")
        super().__init__(observation_space, features_dim=1)

        loading = rebuilding_saved_model()
        if loading:
            encoder_options = dict(encoder_options, pretrained=False)
        self.encoder = BackboneEncoder(
            observation_space.shape,
            model_name,
            feature_cache=shared_feature_cache(config, feature_cache) if feature_cache else None,
            **encoder_options,
        )
        if loading:
            self.encoder.weight_source = "the saved model's state dict"
        if grad_checkpointing:
            try:
                set_grad_checkpointing = cast(Callable[[bool], None], self.backbone.set_grad_checkpointing)  # timm method
                set_grad_checkpointing(True)
            except (AssertionError, AttributeError, NotImplementedError) as err:
                raise ValueError(
                    f"timm's '{model_name}' does not support gradient checkpointing ({err or type(err).__name__}). "
                    "Use grad_checkpointing=False, or a smaller batch_size / input_size to save memory."
                ) from err
        if features_dim is None:
            self.head: nn.Module = nn.Identity()
            self._features_dim = self.encoder.output_dim
        elif self.encoder.feature_shape is not None:
            self.head = spatial_head(self.encoder.feature_shape, self.encoder.output_dim, features_dim)
            self._features_dim = features_dim
        else:
            self.head = nn.Sequential(nn.Linear(self.encoder.output_dim, features_dim), nn.ReLU())
            self._features_dim = features_dim

        self.stages: list[Stage] = backbone_stages(self.backbone)
        params = dict(self.backbone.named_parameters())
        for depth, stage in enumerate(reversed(self.stages)):
            scale = backbone_lr_scale * (layer_decay or 1.0) ** depth
            for name in stage.params:
                setattr(params[name], GROUP_ATTR, (f"backbone.{stage.name}", scale))
        self.train_bn = train_bn
        self.trainable_stages = 0
        self.set_trainable_stages(0 if frozen else len(self.stages))
        self._register_load_state_dict_pre_hook(_state_dict_before_the_encoder)
        if self.encoder.feature_shape is not None and features_dim is not None:
            self._register_load_state_dict_pre_hook(_refuse_the_old_spatial_head)

    @property
    def backbone(self) -> nn.Module:
        """The timm model (``encoder.backbone``)."""
        return self.encoder.backbone

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
        self.trainable_stages = count
        self.encoder.set_trains(count > 0)
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

    def forward_backbone(self, observations: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features for a batch of observations (frames fused), without the projection head."""
        return self.encoder(observations)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(observations))

    def extra_repr(self) -> str:
        return f"trainable_stages={self.trainable_stages}/{len(self.stages)}"


#: Channels of the 1x1 convolution that reads intermediate feature maps (as the small heads of PIE-G and DrQ).
SPATIAL_HEAD_CHANNELS = 32


def spatial_head(feature_shape: tuple[int, int, int], flat_size: int, features_dim: int) -> nn.Sequential:
    """The trainable head over flattened feature maps (one per frame, fused): back to (frames x C, H, W), a 1x1
    convolution to 32 channels that keeps the spatial layout, then Linear, LayerNorm and Tanh to ``features_dim``
    (the trunk of SAC-AE and DrQ-v2).

    The LayerNorm is there for the scale of pretrained feature maps: efficientnet_lite0's map 2 on CarRacing frames
    has a standard deviation near 10, and a head ending in Linear+ReLU passed values up to about 40 on to the
    policy's Tanh MLP, which then saturated (89% of its first layer's units beyond |2|, 1.5% with this head;
    ``benchmarks/head_saturation.py``): the policy and value nets could hardly learn. After LayerNorm+Tanh the
    features are in [-1, 1] with unit scale whatever the backbone and layer.
    """
    channels, height, width = feature_shape
    frames = flat_size // (channels * height * width)
    return nn.Sequential(
        nn.Unflatten(1, (frames * channels, height, width)),
        nn.Conv2d(frames * channels, SPATIAL_HEAD_CHANNELS, kernel_size=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(SPATIAL_HEAD_CHANNELS * height * width, features_dim),
        nn.LayerNorm(features_dim),
        nn.Tanh(),
    )


class FeatureMapExtractor(BaseFeaturesExtractor):
    """The policy's extractor for the fast path's stored feature maps (:class:`~sb3_pretrained.FrozenBackboneEmbedding`
    with ``feature_index``): the same spatial head as :class:`TimmExtractor` over a map (:func:`spatial_head`), on
    the flat embeddings the wrapper gives. Without it an ``MlpPolicy`` reads the raw map, whose scale (a standard
    deviation near 10 for efficientnet_lite0's map 2) saturates its Tanh MLP at initialization (measured on
    CarRacing; on MiniGrid it learned anyway, ``benchmarks/fast_path_maps.py``).

    :param observation_space: the wrapper's space: ``frames x C*H*W`` floats, or ``(1, frames, C*H*W)`` uint8 codes
        (SB3 scales those to [0, 1])
    :param feature_shape: ``[C, H, W]`` of one frame's map: the wrapper's ``encoder.feature_shape`` (efficientnet_lite0,
        level 2: ``[40, 7, 7]`` at 56 px, ``[40, 12, 12]`` at 96 px)
    :param features_dim: output size of the head
    """

    def __init__(
        self, observation_space: spaces.Box, feature_shape: Sequence[int] | None = None, features_dim: int = 256
    ) -> None:
        if feature_shape is None:
            raise ValueError(
                "FeatureMapExtractor needs feature_shape=[C, H, W], one frame's map as the FrozenBackboneEmbedding "
                "wrapper stores it (its encoder.feature_shape; efficientnet_lite0 at feature_index 2: [40, 7, 7] at "
                "56 px, [40, 12, 12] at 96 px). Give it in features_extractor_kwargs."
            )
        if not (
            isinstance(feature_shape, Sequence)
            and len(feature_shape) == 3
            and all(_is_number(v, integral=True) and v >= 1 for v in feature_shape)
        ):
            raise ValueError(
                f"feature_shape must be [C, H, W], three positive ints (the wrapper's encoder.feature_shape), "
                f"got {feature_shape!r}."
            )
        channels, height, width = (int(v) for v in feature_shape)
        flat_size = int(np.prod(observation_space.shape))
        if flat_size % (channels * height * width):
            raise ValueError(
                f"Observations of {flat_size} values are not whole feature maps of shape {list(feature_shape)} "
                f"({channels * height * width} values each). Give feature_shape as FrozenBackboneEmbedding's "
                "encoder.feature_shape, and use this extractor only on a wrapper built with feature_index."
            )
        super().__init__(observation_space, features_dim)
        self.flatten = nn.Flatten()
        self.head = spatial_head((channels, height, width), flat_size, features_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(observations))


def _refuse_the_old_spatial_head(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A spatial head saved before 57de850 ended in Linear+ReLU (no LayerNorm): loading it into today's head would
    leave an untrained LayerNorm and Tanh in place of ReLU, and SB3's lenient reload (``strict=False``) would do so
    silently. Refuse it."""
    if f"{prefix}head.4.weight" in state_dict and f"{prefix}head.5.weight" not in state_dict:
        raise ValueError(
            "This model was saved with the feature-map head of sb3-pretrained before commit 57de850 (1x1 conv, "
            "Linear, ReLU); the head now ends in Linear, LayerNorm, Tanh, so its weights cannot be loaded into it. "
            "Load it with the version that saved it, or train it again."
        )


def _state_dict_before_the_encoder(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Models saved before the encoder existed keep the backbone under ``<prefix>backbone.``: move it."""
    old = f"{prefix}backbone."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}encoder.backbone.{key[len(old):]}"] = state_dict.pop(key)


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
        channels = {cast(spaces.Box, observation_space[k]).shape[0] for k in image_keys}
        if len(channels) > 1:
            raise ValueError(f"All image keys must have the same channel count for one shared backbone; got {channels}.")
        super().__init__(observation_space, features_dim=1)
        self.image_keys = list(image_keys)
        self.vector_keys = [k for k in observation_space.spaces if k not in self.image_keys]
        for key in self.vector_keys:
            if not isinstance(observation_space[key], spaces.Box):
                raise ValueError(f"Non-image key '{key}' must be a Box (proprioception vector), got {observation_space[key]}.")
        self.images = TimmExtractor(
            cast(spaces.Box, observation_space[self.image_keys[0]]),
            model_name,
            normalized_image=normalized_image,
            **timm_kwargs,
        )
        shapes = {observation_space[k].shape for k in self.image_keys}
        self._batched = len(shapes) == 1  # same shape: all cameras in one backbone pass
        vector_dim = sum(int(np.prod(cast(spaces.Box, observation_space[k]).shape)) for k in self.vector_keys)
        self._features_dim = len(self.image_keys) * self.images.features_dim + vector_dim

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._batched:
            stacked = torch.cat([observations[k] for k in self.image_keys])
            per_camera = self.images(stacked).chunk(len(self.image_keys))
        else:
            per_camera = [self.images(observations[k]) for k in self.image_keys]
        vectors = [observations[k].flatten(1).float() for k in self.vector_keys]
        return torch.cat([*per_camera, *vectors], dim=1)
