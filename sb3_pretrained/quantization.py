"""8-bit embeddings: the provable output range of a backbone, and linear quantization over it.

The fast path (:class:`~sb3_pretrained.FrozenBackboneEmbedding` with ``dtype="uint8"``) stores each embedding
component in one byte. The range it quantizes over is proven, not calibrated: :func:`output_range` traces one forward
pass and finds the bounded activation (ReLU6, sigmoid, tanh, ...) that produced the output.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from timm.layers import activations as timm_activations
from torch import nn

#: Modules whose output lies within the range of their input (eval mode): pooling, flattening, identity.
_RANGE_KEEPING = (
    nn.Identity, nn.Flatten, nn.Dropout, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
#: Activations with a bounded output, and their bounds (Hardtanh covers ReLU6).
_BOUNDED = {
    nn.Sigmoid: (0.0, 1.0), nn.Hardsigmoid: (0.0, 1.0), timm_activations.Sigmoid: (0.0, 1.0),
    timm_activations.HardSigmoid: (0.0, 1.0), nn.Tanh: (-1.0, 1.0), nn.Softsign: (-1.0, 1.0),
    timm_activations.Tanh: (-1.0, 1.0),
}


def output_range(model: nn.Module, example: torch.Tensor) -> tuple[float, float] | None:
    """Bounds that hold for every output of ``model`` (in eval mode), or None when none can be proven.

    One forward pass of ``example`` is traced: the output is followed back through pooling, flattening and
    identity modules to the module that produced it. Bounds exist when that module is a bounded activation
    (ReLU6 and Hardtanh, sigmoids, tanh), as at the end of EfficientNet-Lite and MobileNetV2. Anything else (an
    unbounded activation, a norm layer, arithmetic outside a module, an in-place change) gives None.
    """
    calls: list[tuple[nn.Module, object, object, int]] = []

    def record(module: nn.Module, args: tuple, output: object) -> None:
        calls.append((module, args[0] if args else None, output, getattr(output, "_version", -1)))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():  # not inference_mode: version counters reveal in-place changes made later
            target = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    for module, inputs, output, version in reversed(calls):
        if output is not target:
            continue
        if output._version != version:  # changed in place after the module returned it
            return None
        if isinstance(module, nn.Hardtanh):
            return float(module.min_val), float(module.max_val)
        bounds = next((b for kind, b in _BOUNDED.items() if isinstance(module, kind)), None)
        if bounds is not None:
            return bounds
        if not isinstance(module, _RANGE_KEEPING) or not isinstance(inputs, torch.Tensor):
            return None
        target = inputs
    return None


def check_feature_range(feature_range: Sequence[float]) -> tuple[float, float]:
    """``[low, high]`` as floats; raises unless both are finite and low < high."""
    low, high = (float(v) for v in feature_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"feature_range must be [low, high] with finite low < high, got {list(feature_range)!r}.")
    return low, high


class EmbeddingQuantizer:
    """Rows of embeddings <-> uint8 codes, each component linear over ``[low, high]`` in 256 levels.

    :param low: lowest embedding value (code 0)
    :param high: highest embedding value (code 255); values outside are clipped, with one warning
    :param rows: embeddings per observation (stacked frames)
    :param fusion: ``"flare"``: rows after the first are differences of consecutive embeddings and span
        ``[low - high, high - low]``
    :param device: where the codes are computed
    """

    def __init__(self, low: float, high: float, rows: int, fusion: str, device: torch.device) -> None:
        self.feature_range = (low, high)
        self.rows = rows
        self._low = torch.full((rows, 1), low, device=device)
        self._step = torch.full((rows, 1), (high - low) / 255.0, device=device)
        if fusion == "flare":
            self._low[1:], self._step[1:] = low - high, 2 * (high - low) / 255.0
        self._clipping_reported = False

    def quantize(self, stacked: torch.Tensor) -> torch.Tensor:
        """(N, rows * features) float embeddings -> (N, 1, rows, features) uint8 codes."""
        scaled = (stacked.view(len(stacked), self.rows, -1) - self._low) / self._step
        if not self._clipping_reported:  # checked until the first clip is reported
            clipped = (scaled < -0.5) | (scaled > 255.5)
            if bool(clipped.any()):
                self._clipping_reported = True
                warnings.warn(
                    f"FrozenBackboneEmbedding: {clipped.float().mean().item():.2%} of embedding values fall outside "
                    f"feature_range={list(self.feature_range)} and were clipped; widen it (shown once).",
                    stacklevel=3,
                )
        return scaled.round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)

    def dequantize(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, 1, rows, features) uint8 codes -> (N, rows * features) float32 embeddings."""
        codes = torch.as_tensor(codes, device=self._low.device)
        return (codes.squeeze(1).float() * self._step + self._low).flatten(1)
