"""Building a timm backbone with its weights, and naming its stages."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import timm
from timm.models import group_modules, group_parameters, parse_model_name
from torch import nn

from sb3_pretrained.weights import PACKAGED_WEIGHTS, PretrainedSpec, honouring_hub_offline, load_into, resolve_pretrained


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
    """Raise a ValueError that suggests close timm names when ``model_name`` is unknown.

    ``hf-hub:<owner>/<repo>`` names (timm's Hugging Face Hub models) pass: timm reads their architecture from the
    repo's ``config.json`` when the backbone is built (:func:`create_backbone`). ``local-dir:`` names are refused.
    """
    if not isinstance(model_name, str):
        raise ValueError(f"model_name must be a timm model name (a str), got {model_name!r} ({type(model_name).__name__}).")
    source, _ = parse_model_name(model_name)  # raises naming the fix for an unknown prefix or a bare repo id
    if source == "hf-hub":
        return
    if source == "local-dir":
        raise ValueError(
            f"'{model_name}': local-dir: model names are not supported. Pass the architecture named in the folder's "
            "config.json as model_name and its weight file as pretrained='<folder>/model.safetensors'."
        )
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

    :param model_name: any name from ``timm.list_models()``, or ``hf-hub:<owner>/<repo>`` (timm's Hugging Face Hub
        models: their config, and with ``pretrained=True`` their weights, come from the local Hugging Face cache, or
        are downloaded unless ``HF_HUB_OFFLINE`` is set)
    :param pretrained: see :func:`sb3_pretrained.weights.resolve_pretrained`
    :param in_chans: input channels; RGB weights are adapted to other counts as timm does
    :param model_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``)
    :return: the model (in eval mode) and a description of where its weights came from
    """
    check_model_name(model_name)
    source, model_id = parse_model_name(model_name)
    if source == "hf-hub":
        _fetch_hub_config(model_name, model_id)
    with honouring_hub_offline():  # timm reads an hf-hub: model's config.json through huggingface_hub
        model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans, **model_kwargs)
    loaded = resolve_pretrained(model_name, model, pretrained)
    if loaded is None:
        return model.eval(), "random initialization (pretrained=False)"
    load_into(model, loaded, in_chans)
    return model.eval(), loaded.source


def _fetch_hub_config(model_name: str, model_id: str) -> None:
    """Make sure the ``config.json`` that timm builds an ``hf-hub:`` model from is in the local Hugging Face cache
    (downloaded unless ``HF_HUB_OFFLINE`` is set), or raise naming the fix."""
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = model_id.partition("@")
    try:
        with honouring_hub_offline():
            hf_hub_download(repo_id, "config.json", revision=revision or None)
    except Exception as err:  # huggingface_hub raises many types: offline and not cached, no network, no such repo
        detail = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"'{model_name}': timm builds this model from the config.json of the Hugging Face repo '{repo_id}', which is "
            f"not in the local cache and could not be downloaded ({type(err).__name__}: {detail}). Fix: build it once "
            "with network access (HF_HUB_OFFLINE unset: the config, and with pretrained=True the weights, are cached "
            "for offline use), or use the architecture's timm name (timm.list_models()) with pretrained='<weight file>'."
        ) from err


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
