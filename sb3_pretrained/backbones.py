"""Building a timm backbone with its weights, and naming its stages."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import timm
from timm.models import group_modules, group_parameters
from torch import nn

from sb3_pretrained.weights import PACKAGED_WEIGHTS, PretrainedSpec, load_into, resolve_pretrained


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone, bottom (stem) to top, from timm's coarse ``group_matcher``.

    :param name: ``"stem"``, ``"stage1"``, ... ``"stageN"`` (N is the top stage)
    :param modules: names of the modules the stage holds (as in ``backbone.named_modules()``)
    :param params: names of its parameters (as in ``backbone.named_parameters()``)
    """

    name: str
    modules: tuple[str, ...]
    params: tuple[str, ...]


def check_model_name(model_name: str) -> None:
    """Raise a ValueError that suggests close timm names when ``model_name`` is unknown."""
    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(
        f"Unknown timm model '{model_name}'.{hint} List names with timm.list_models('*pattern*') "
        f"or `sb3-pretrained backbones`; models with offline weights here: {', '.join(sorted(PACKAGED_WEIGHTS))}."
    )


def create_backbone(
    model_name: str, pretrained: PretrainedSpec = True, in_chans: int = 3, **model_kwargs
) -> tuple[nn.Module, str]:
    """Create a timm model without classifier (pooled features out) and load its pretrained weights.

    :param model_name: any name from ``timm.list_models()``
    :param pretrained: see :func:`sb3_pretrained.weights.resolve_pretrained`
    :param in_chans: input channels; RGB weights are adapted to other counts as timm does
    :param model_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``)
    :return: the model (in eval mode) and a description of where its weights came from
    """
    check_model_name(model_name)
    model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans, **model_kwargs)
    loaded = resolve_pretrained(model_name, model, pretrained)
    if loaded is None:
        return model.eval(), "random initialization (pretrained=False)"
    load_into(model, loaded, in_chans)
    return model.eval(), loaded.source


def backbone_stages(model: nn.Module) -> list[Stage]:
    """The model's stages, bottom to top, from timm's coarse parameter grouping.

    Models without a ``group_matcher`` are one stage holding everything.
    """
    if not hasattr(model, "group_matcher"):
        params = tuple(n for n, _ in model.named_parameters())
        return [Stage("stage1", tuple(n for n, _ in model.named_children()), params)]
    # timm attributes: nn.Module.__getattr__ types them as Tensor | Module.
    group_matcher = cast(Callable[..., Any], model.group_matcher)
    matcher = group_matcher(coarse=True)
    module_groups = list(group_modules(model, matcher).values())
    param_groups = list(group_parameters(model, matcher).values())
    pretrained_cfg = cast(dict[str, Any], model.pretrained_cfg)
    first_conv = pretrained_cfg.get("first_conv") or ""
    first = first_conv if isinstance(first_conv, str) else first_conv[0]
    has_stem = len(param_groups) > 1 and any(p.startswith(first) for p in param_groups[0])
    stages = []
    for index, (modules, params) in enumerate(zip(module_groups, param_groups, strict=False)):
        name = "stem" if has_stem and index == 0 else f"stage{index + (0 if has_stem else 1)}"
        stages.append(Stage(name, tuple(modules), tuple(params)))
    return stages
