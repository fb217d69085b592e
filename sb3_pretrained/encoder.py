"""The pretrained image encoder: a timm backbone and everything that turns a batch of observations into features.

:class:`BackboneEncoder` is what :class:`~sb3_pretrained.TimmExtractor` (inside a policy) and
:class:`~sb3_pretrained.FrozenBackboneEmbedding` (in the env, the fast path) both run: the data config (size,
interpolation, mean/std), preprocessing on the device, frame split and fusion, precision, memory format and the
optional feature cache. It knows nothing of Stable-Baselines3.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain
from typing import Any, cast

import torch
from timm.data import resolve_model_data_config
from torch import nn
from torch.func import functional_call

from sb3_pretrained.allocator import keep_cpu_buffers_mapped
from sb3_pretrained.augmentation import build_augmentation
from sb3_pretrained.backbones import create_backbone
from sb3_pretrained.cuda_graphs import GraphedForward
from sb3_pretrained.feature_cache import FeatureCache
from sb3_pretrained.machine import cpu_has_native_bf16
from sb3_pretrained.precision import FastestChoice
from sb3_pretrained.preprocessing import BackbonePreprocess, as_size
from sb3_pretrained.quantization import output_range
from sb3_pretrained.weights import PretrainedSpec

FRAME_MODES = ("per_frame", "channel")
FUSIONS = ("concat", "flare")
CPU_NATIVE_BF16 = cpu_has_native_bf16()  # bf16 inference on CPU only where it is native


def _synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU, whose work is done when a call returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_frame_options(frame_stack: int, frame_mode: str, fusion: str) -> None:
    """Raise a ValueError naming the options when a frame option is not one of them."""
    if frame_mode not in FRAME_MODES:
        raise ValueError(f"frame_mode must be one of {FRAME_MODES}, got {frame_mode!r}.")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
    if isinstance(frame_stack, bool) or not isinstance(frame_stack, int) or frame_stack < 1:
        raise ValueError(f"frame_stack must be an int >= 1, got {frame_stack!r}.")


def check_flags(nullable: Sequence[str] = (), **flags: Any) -> None:
    """Raise a ValueError naming the flag whose value is not a bool (or None, for the names in ``nullable``): a
    quoted ``'false'`` is a truthy string."""
    for name, value in flags.items():
        if isinstance(value, bool) or (value is None and name in nullable):
            continue
        allowed = "True, False or None" if name in nullable else "True or False"
        raise ValueError(
            f"{name} must be {allowed}, got {value!r} ({type(value).__name__}). In YAML write true/false without quotes."
        )


def check_normalization(mean: Any, std: Any) -> None:
    """Raise a ValueError naming the value when ``mean`` or ``std`` is given but is not a non-empty list of finite
    numbers on the [0, 1] pixel scale the backbone receives (std above 0)."""
    for name, values, low in (("mean", mean, "[0, 1]"), ("std", std, "(0, 1]")):
        if values is None:
            continue
        numbers_ok = (
            not isinstance(values, (str, bytes))
            and isinstance(values, Sequence)
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        )
        if not numbers_ok or not values:
            raise ValueError(
                f"{name} must be a non-empty list of numbers, one per RGB channel, got {values!r}. Leave it out (None) "
                "for the model's own pretrained value."
            )
        floats = [float(v) for v in values]
        if all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in floats) and (name == "mean" or min(floats) > 0.0):
            continue
        on_255_scale = max(floats) > 1.0 and all(0.0 <= v <= 255.0 for v in floats)
        hint = " They look like 0-255 pixel values: divide them by 255." if on_255_scale else ""
        raise ValueError(
            f"{name} must be finite numbers in {low} (images reach the backbone scaled to [0, 1]), got {values!r}.{hint} "
            "ImageNet's are mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]; None uses the model's own."
        )


def frame_layout(shape: tuple[int, ...], frame_stack: int, model_name: str) -> int:
    """Channels per frame of a (C, H, W) observation holding ``frame_stack`` frames; raises with the options that
    would fit when the channel count fits no mode."""
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


def data_config(
    backbone: nn.Module,
    image_size: tuple[int, int],
    input_size: int | Sequence[int] | str | None,
    interpolation: str | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> tuple[tuple[int, int], str, tuple[float, ...], tuple[float, ...]]:
    """(size, interpolation, mean, std) the backbone sees: each given value, else timm's
    ``resolve_model_data_config`` for the model; ``input_size="native"`` keeps the observation's ``image_size``."""
    timm_config = resolve_model_data_config(backbone)
    size = image_size if input_size == "native" else as_size(input_size) or as_size(timm_config["input_size"])
    assert size is not None  # timm always resolves an input size
    channels = len(timm_config["mean"])
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise ValueError(
                f"{name} needs {channels} values, one per channel the model was pretrained on "
                f"(its own: {tuple(timm_config[name])}), got {values!r}."
            )
    return (
        size,
        interpolation or timm_config["interpolation"],
        tuple(timm_config["mean"] if mean is None else mean),
        tuple(timm_config["std"] if std is None else std),
    )


def _forward_error(backbone: nn.Module, channels: int, size: tuple[int, int]) -> Exception | None:
    """What one forward pass of a (1, ``channels``, *``size``) input raises, or None: on the meta device (shapes
    only, nothing computed), else, for models whose forward needs real values, on the backbone's own device."""
    tensors = chain(backbone.named_parameters(), backbone.named_buffers())
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors}
    with torch.no_grad():
        try:
            functional_call(backbone, meta, (torch.empty(1, channels, *size, device="meta"),))
            return None
        except Exception:  # any failure on meta is retried with real tensors
            pass
        try:
            device = next(chain(backbone.parameters(), backbone.buffers())).device
            backbone(torch.zeros(1, channels, *size, device=device))
            return None
        except Exception as err:  # timm raises AssertionError, RuntimeError, ... for a size it cannot take
            return err


def check_input_size(backbone: nn.Module, channels: int, size: tuple[int, int], model_name: str) -> None:
    """Raise a ValueError when the backbone cannot take ``size`` inputs (a ViT's patch grid or position embedding, a
    Swin window), naming the sizes near it that work, instead of failing at the first forward inside ``learn()``."""
    error = _forward_error(backbone, channels, size)
    if error is None:
        return
    pretrained = cast(tuple[int, int], as_size(resolve_model_data_config(backbone)["input_size"]))
    patch = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)  # ViT-style models
    step = patch[0] if isinstance(patch, (tuple, list)) else patch if isinstance(patch, int) else 32  # a CNN's stride
    nearby = [tuple(max(step, round_(d / step) * step) for d in size) for round_ in (math.floor, math.ceil)]
    candidates = list(dict.fromkeys([pretrained, *nearby]))
    working = [c for c in candidates if _forward_error(backbone, channels, cast(tuple[int, int], c)) is None]
    works = ", ".join(f"input_size={list(c)}" + (" (its pretrained size, the default)" if c == pretrained else "")
                      for c in working)
    dynamic = "dynamic_img_size" in inspect.signature(type(backbone)).parameters
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise ValueError(
        f"'{model_name}' cannot take {size[0]}x{size[1]} inputs ({detail}). "
        + (f"Sizes that work: {works}." if working else "None of the sizes near it work either.")
        + (" timm also builds it for other sizes with model_kwargs={'dynamic_img_size': True} (sizes divisible by "
           f"its patch size, {step})." if dynamic and not getattr(backbone, "dynamic_img_size", False) else "")
    )


class BackboneEncoder(nn.Module):
    """A pretrained timm backbone that embeds batches of image observations: (N, C, H, W) floats in [0, 1] ->
    (N, :attr:`output_dim`) float32 features (the backbone's pooled features, frames fused).

    :param observation_shape: (C, H, W) of one observation; C holds ``frame_stack`` frames of 1 or 3 channels
    :param model_name: any ``timm.list_models()`` name
    :param pretrained: ``True`` (pip weight package, then timm's Hugging Face cache, then download),
        ``"package"`` or ``"timm"`` (that source only), a path to a ``.safetensors``/``.pth``/``.pt``/``.bin``
        file, or ``False`` (random init)
    :param input_size: size the backbone sees, int or [height, width]; default the model's pretrained
        ``input_size``; ``"native"`` keeps the observation's size (fastest). One forward pass at construction checks
        that the backbone takes it (on the meta device where the model allows)
    :param interpolation: resize mode; default the model's (e.g. ``bicubic``)
    :param mean: normalization mean, one value per channel in [0, 1] (images arrive scaled to [0, 1]); default the
        model's pretrained config
    :param std: normalization std, one value per channel in (0, 1]; default the model's pretrained config
    :param frame_stack: frames stacked along the channel axis (SB3's ``VecFrameStack``), oldest first
    :param frame_mode: ``"per_frame"``: one shared backbone embeds each frame, embeddings are fused by
        ``fusion``; ``"channel"``: the backbone's first conv takes all stacked channels, adapted from its
        pretrained RGB weights (timm's ``adapt_input_conv``)
    :param fusion: how per-frame embeddings are combined: ``"concat"``, or ``"flare"`` (last embedding plus the
        differences between consecutive embeddings)
    :param channels_last: run the backbone in the channels_last memory format (faster convolutions on CPU and GPU)
    :param amp: run the backbone under bfloat16 autocast. None (default): chosen per path. A frozen backbone on
        CUDA times float32 and bf16 at its first batch of an input shape (while acting: the envs' count) and keeps the
        faster for every batch after it (see
        :class:`~sb3_pretrained.precision.FastestChoice`; at the small batches of acting, launch-bound, float32 can
        win); a training backbone on CUDA uses bf16; on CPU, bf16 only for a frozen backbone on CPUs that compute
        it natively (AVX512-BF16/AMX), as timm's benchmark runs inference. bf16 keeps float32's exponent range, so
        no gradient scaler is needed when fine-tuning
    :param cuda_graphs: while the backbone is frozen (and in eval mode), replay CUDA graphs of preprocessing and
        backbone for CUDA inputs of up to 256 rows (see :class:`~sb3_pretrained.cuda_graphs.GraphedForward`): one
        launch instead of one per kernel, for the small batches an RL loop runs. Captured at first use per batch
        bucket (powers of two; batches are padded up), input shape, ``amp`` and ``channels_last``; re-captured when
        the weights change. Never on CPU or while the backbone trains. ``False`` always runs eagerly
    :param model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``drop_path_rate``)
    :param feature_index: take the backbone's feature map at this index of timm's ``feature_info`` (0 the stem, 1
        the first stage's output, ...; its ``reduction`` says how much smaller than the input it is) and keep it
        spatial, flattened, instead of the final global-pooled vector; the layers above it are removed (timm's
        ``prune_intermediate_layers``) and never computed. None (default): the final pooled features
    :param augment: augment training batches (see :class:`~sb3_pretrained.augmentation.ImageAugmentation`), e.g.
        ``{shift: 4, brightness: 0.3}``; only while this module is in training mode (SB3's gradient steps), never
        while acting. Augmented inputs are new inputs: the feature cache is skipped for them
    :param feature_cache: features of recent inputs while the backbone is frozen (see
        :class:`~sb3_pretrained.feature_cache.FeatureCache`), possibly shared with other encoders of the same
        configuration; None computes every input
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        model_name: str,
        pretrained: PretrainedSpec = True,
        input_size: int | Sequence[int] | str | None = None,
        interpolation: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        frame_stack: int = 1,
        frame_mode: str = "per_frame",
        fusion: str = "concat",
        channels_last: bool = True,
        amp: bool | None = None,
        cuda_graphs: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        feature_index: int | None = None,
        augment: dict[str, Any] | None = None,
        feature_cache: FeatureCache | None = None,
    ) -> None:
        super().__init__()
        check_frame_options(frame_stack, frame_mode, fusion)
        check_flags(("amp",), channels_last=channels_last, amp=amp, cuda_graphs=cuda_graphs)
        check_normalization(mean, std)
        if input_size != "native":
            as_size(input_size)  # raises for a malformed size before the backbone is built
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict of timm.create_model arguments, got {model_kwargs!r}.")
        shape = tuple(observation_shape)
        self.frame_channels = frame_layout(shape, frame_stack, model_name)
        self.observation_shape = shape
        self.model_name = model_name
        self.frame_stack, self.frame_mode, self.fusion = frame_stack, frame_mode, fusion
        per_frame = frame_mode == "per_frame"
        self.backbone, self.weight_source = create_backbone(
            model_name, pretrained, in_chans=3 if per_frame else shape[0], **(model_kwargs or {})
        )
        size, mode, mean, std = data_config(self.backbone, (shape[1], shape[2]), input_size, interpolation, mean, std)
        if not per_frame:  # one normalization per input channel of the adapted first conv
            if self.frame_channels == 1:
                mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
            mean, std = mean * frame_stack, std * frame_stack
        self.preprocess = BackbonePreprocess(size, mode, mean, std, gray_to_rgb=per_frame and self.frame_channels == 1)
        check_input_size(self.backbone, 3 if per_frame else shape[0], size, model_name)
        self.feature_index = feature_index
        #: (channels, height, width) of one input's feature map when ``feature_index`` is set, else None.
        self.feature_shape: tuple[int, int, int] | None = None
        if feature_index is None:
            self.num_features: int = cast(int, self.backbone.num_features)  # timm attribute, untyped on nn.Module
        else:
            self.feature_shape = self._keep_features_up_to(feature_index, 3 if per_frame else shape[0], size)
            self.num_features = self.feature_shape[0] * self.feature_shape[1] * self.feature_shape[2]
        #: Size of the features of one observation: one embedding per frame when frames go one by one.
        self.output_dim = self.num_features * (frame_stack if per_frame else 1)
        self.augment = build_augmentation(augment, self.frame_channels)
        self.channels_last, self.amp, self.cuda_graphs = channels_last, amp, cuda_graphs
        self.graphs = GraphedForward(self.backbone)
        #: The measured precision of frozen CUDA calls when ``amp`` is None (its ``choices`` and ``timings``).
        self.precision = FastestChoice()
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.feature_cache = feature_cache
        self.trains = False

    def _keep_features_up_to(self, index: int, in_chans: int, size: tuple[int, int]) -> tuple[int, int, int]:
        """Remove the backbone's layers above feature ``index``; the shape of its feature map for one input."""
        info = getattr(self.backbone, "feature_info", None)
        if not hasattr(self.backbone, "forward_intermediates") or not isinstance(info, list):
            raise ValueError(
                f"timm's '{self.model_name}' cannot return intermediate features (no forward_intermediates); use "
                "feature_index=None (the final pooled features) or another model (EfficientNet, ResNet, ConvNeXt, ...)."
            )
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(info):
            levels = ", ".join(f"{i}: {f['num_chs']} channels at 1/{f['reduction']}" for i, f in enumerate(info))
            raise ValueError(f"feature_index must be an int in [0, {len(info) - 1}] for '{self.model_name}' ({levels}); "
                             f"got {index!r}.")
        backbone: Any = self.backbone  # timm's methods, untyped on nn.Module
        backbone.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
        with torch.no_grad():
            blank = torch.zeros(1, in_chans, *size)
            example = backbone.forward_intermediates(blank, indices=[index], intermediates_only=True)[0]
        channels, height, width = example.shape[1:]
        return int(channels), int(height), int(width)

    def set_trains(self, trains: bool) -> None:
        """Whether any backbone weight trains: gradients flow, and the feature cache closes for good (this
        encoder's weights, and those of copies that follow it, may change from now on)."""
        if trains and self.feature_cache is not None:
            self.feature_cache.close()
        self.trains = trains

    @property
    def embeds_frames_one_by_one(self) -> bool:
        """Whether stacked frames go through the backbone one by one (per-frame mode with a stack)."""
        return self.frame_mode == "per_frame" and self.frame_stack > 1

    def backbone_inputs(self, observations: torch.Tensor) -> torch.Tensor:
        """The inputs the backbone embeds for a batch of observations: (N, k*C, H, W) -> (N*k, C, H, W) when frames
        go one by one (one shared backbone embeds every frame), the observations themselves otherwise."""
        if not self.embeds_frames_one_by_one:
            return observations
        return observations.reshape(len(observations) * self.frame_stack, self.frame_channels, *observations.shape[-2:])

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Features of a batch of observations (N, C, H, W) in [0, 1]: (N, :attr:`output_dim`), frames fused."""
        batch = observations.shape[0]
        # Off in eval mode, and in training mode under augmentation_off (DrACPPO's plain passes), which the cache serves.
        augment = self.augment if self.training and self.augment is not None and self.augment.training else None
        augmenting = augment is not None
        if augment is not None:
            observations = augment(observations)
        inputs = self.backbone_inputs(observations)
        cache = self.feature_cache
        # Inference tensors cannot be kept for later training steps: no cache under inference_mode. Augmented
        # inputs are new every time: caching them would only evict the acting observations.
        if (cache is not None and cache.active and not self.trains and not augmenting
                and not torch.is_inference_mode_enabled()):
            features = cache.features(inputs, self.embed, weights=self.backbone)
        else:
            features = self.embed(inputs)
        if self.embeds_frames_one_by_one:
            features = fuse_frames(features.view(batch, self.frame_stack, -1), self.fusion)
        return features

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Preprocess and run the backbone on a batch of single backbone inputs: float32 features (pooled, or the
        flattened feature map at ``feature_index``); replayed from CUDA graphs where ``cuda_graphs`` allows."""
        if inputs.device.type == "cpu":
            keep_cpu_buffers_mapped()
        inputs = inputs.float()
        amp = self.amp
        if amp is None and not self.trains and len(inputs) and self.precision.measures(inputs.device.type):
            amp = self._measured_precision(inputs)
        elif amp is None:
            amp = inputs.is_cuda or (CPU_NATIVE_BF16 and inputs.device.type == "cpu" and not self.trains)
        if not self.trains:
            return self._frozen_embed(inputs, amp)
        return self._embed(inputs, amp)

    def _measured_precision(self, inputs: torch.Tensor) -> bool:
        """Whether bf16 autocast is the faster for a frozen backbone on this input signature, measured at its first
        batch (see :mod:`sb3_pretrained.precision`); the slower one's CUDA graphs are then dropped."""
        key = (tuple(inputs.shape[1:]), inputs.device, self.channels_last, self.cuda_graphs)
        if key in self.precision.choices:
            return bool(self.precision.choices[key])
        amp = bool(self.precision.choose(key, partial(self._frozen_embed, inputs), partial(_synchronize, inputs.device)))
        self.graphs.discard((not amp, self.channels_last))
        return amp

    def _frozen_embed(self, inputs: torch.Tensor, amp: bool) -> torch.Tensor:
        """:meth:`embed` of a frozen backbone: replayed from a CUDA graph where ``cuda_graphs`` allows."""
        if self.cuda_graphs:
            return self.graphs(partial(self._embed, amp=amp), inputs, variant=(amp, self.channels_last))
        return self._embed(inputs, amp)

    def _embed(self, inputs: torch.Tensor, amp: bool) -> torch.Tensor:
        """:meth:`embed` of float32 inputs, eagerly, under bf16 autocast when ``amp``."""
        images = self.preprocess(inputs)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # Autocast caches casts of weights that require grad only; CUDA graph capture needs the cache off.
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and self.trains),
            torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=self.trains),
        ):
            if self.feature_index is None:
                return self.backbone(images).float()
            backbone: Any = self.backbone  # timm's forward_intermediates, untyped on nn.Module
            features = backbone.forward_intermediates(images, indices=[self.feature_index], intermediates_only=True)
            return features[0].float().flatten(1)

    def output_range(self) -> tuple[float, float] | None:
        """Bounds of every feature value when the backbone's last activation proves them (see
        :func:`sb3_pretrained.quantization.output_range`), else None (also for intermediate feature maps)."""
        if self.feature_index is not None:
            return None
        device = next(self.backbone.parameters()).device
        example = self.preprocess(self.backbone_inputs(torch.rand(1, *self.observation_shape, device=device)))
        if self.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        return output_range(self.backbone, example)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        if self.feature_cache is not None:  # new weights: stored features are stale (the cache also checks)
            self.feature_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, weights={self.weight_source!r}"


#: Arguments of :class:`BackboneEncoder` that the extractor and the fast-path wrapper pass through as they are.
ENCODER_OPTIONS = tuple(
    name for name in inspect.signature(BackboneEncoder).parameters if name not in ("observation_shape", "model_name",
                                                                                  "feature_cache")
)


def check_encoder_options(options: dict[str, Any], where: str, accepted: Sequence[str] = ENCODER_OPTIONS) -> None:
    """Raise a ValueError naming the accepted options when ``options`` holds another key."""
    for key in options:
        if key not in accepted:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where} has no option {key!r}.{hint} Encoder options: {', '.join(accepted)}.")


def with_encoder_options(accepted: Sequence[str] = ENCODER_OPTIONS) -> Callable[[type], type]:
    """Give ``cls`` (whose ``__init__`` passes ``**encoder_options`` to :class:`BackboneEncoder`) the signature it
    really has, each encoder option a keyword argument with its default: ``help()``, IDEs and config checkers see
    every option, while the options and their checks exist once, here."""

    def decorate(cls: type) -> type:
        own = list(inspect.signature(cls.__init__).parameters.values())[1:]  # type: ignore[misc]
        encoder = inspect.signature(BackboneEncoder).parameters
        options = [encoder[name].replace(kind=inspect.Parameter.KEYWORD_ONLY) for name in accepted]
        params = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
        cls.__signature__ = inspect.Signature(params + options)  # type: ignore[attr-defined]
        return cls

    return decorate
