"""Quantization: provable output bounds of a backbone (what uint8 embeddings quantize over)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from sb3_pretrained.quantization import output_range


@pytest.mark.parametrize(
    "model_name,bounds",
    [("mobilenetv2_050", (0.0, 6.0)), ("efficientnet_lite0", (0.0, 6.0)), ("test_efficientnet", None),
     ("test_resnet", None), ("test_vit", None), ("test_convnext", None)],
)
def test_output_range_of_timm_models(model_name, bounds):
    model = timm.create_model(model_name, pretrained=False, num_classes=0).eval()
    size = model.pretrained_cfg["input_size"][1:] if "vit" in model_name else (64, 64)
    example = torch.randn(2, 3, *size)
    assert output_range(model, example) == bounds
    if bounds is not None:
        with torch.no_grad():
            out = model(example * 10)
        assert bounds[0] <= out.min() and out.max() <= bounds[1]


class Bounded(nn.Module):
    """conv -> activation -> pooling, with what happens after the activation chosen by ``after``."""

    def __init__(self, act: nn.Module, after: str = "pool"):
        super().__init__()
        self.conv, self.act, self.pool, self.after = nn.Conv2d(3, 4, 3), act, nn.AdaptiveAvgPool2d(1), after
        self.flatten = nn.Flatten()

    def forward(self, x):
        y = self.act(self.conv(x))
        if self.after == "inplace_add":
            y += 1.0
        if self.after == "functional_add":
            return self.pool(y) + 1.0
        return self.flatten(self.pool(y)) if self.after == "pool_flatten" else self.pool(y)


@pytest.mark.parametrize(
    "act,after,bounds",
    [
        (nn.ReLU6(inplace=True), "pool", (0.0, 6.0)),
        (nn.Hardtanh(-2.0, 3.0), "pool_flatten", (-2.0, 3.0)),
        (nn.Sigmoid(), "pool", (0.0, 1.0)),
        (nn.Tanh(), "pool", (-1.0, 1.0)),
        (nn.ReLU(), "pool", None),  # bounded below only
        (nn.ReLU6(), "inplace_add", None),  # changed in place after the activation
        (nn.ReLU6(), "functional_add", None),  # arithmetic outside any module
    ],
)
def test_output_range_follows_the_output_back_to_its_activation(act, after, bounds):
    assert output_range(Bounded(act, after).eval(), torch.randn(1, 3, 8, 8)) == bounds
