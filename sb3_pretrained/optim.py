"""Optimizers with one named param group per backbone stage, whose LR scales survive SB3's LR updates.

SB3 sets ``param_group["lr"]`` of every group to the scheduled LR at each ``train()``
(``utils.update_learning_rate``). A grouped optimizer takes that value as the base LR and, right before each
step, sets each group's LR to ``base * lr_scale * lr_factor``:

- ``lr_scale``: fixed per group (backbone LR scale, layer-wise decay), from the extractor's arguments;
- ``lr_factor``: set by callbacks (warmup).

All groups, frozen stages included, exist from construction, so a saved optimizer state always loads.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from torch.optim import Optimizer

#: Attribute set on each backbone parameter by TimmExtractor: (group name, lr scale).
GROUP_ATTR = "_sb3_pretrained_group"
HEAD_GROUP = "head"


def named_param_groups(params) -> list[dict[str, Any]]:
    """Split parameters into groups named by their extractor tag: ``head`` (everything untagged) first,
    then the backbone stages bottom to top, each with its ``lr_scale``."""
    groups: dict[str, dict[str, Any]] = {HEAD_GROUP: {"params": [], "name": HEAD_GROUP, "lr_scale": 1.0}}
    for param in params:
        name, scale = getattr(param, GROUP_ATTR, (HEAD_GROUP, 1.0))
        groups.setdefault(name, {"params": [], "name": name, "lr_scale": scale})["params"].append(param)
    for group in groups.values():
        group["lr_factor"] = 1.0
    return [g for g in groups.values() if g["params"]]


def base_lr(group: dict[str, Any]) -> float:
    """The base LR of a grouped param group: the LR SB3 (or a user) set since the last step, else the stored base."""
    return group["lr"] if group["lr"] != group.get("applied_lr") else group["base_lr"]


def group_lr(group: dict[str, Any]) -> float:
    """The LR the group's next step uses: ``base * lr_scale * lr_factor``."""
    return base_lr(group) * group["lr_scale"] * group["lr_factor"]


class GroupedOptimizer:
    """Mixin for a ``torch.optim.Optimizer`` subclass; see the module docstring."""

    #: Set by the ``Optimizer`` this mixin is combined with (declared for type checkers only).
    param_groups: list[dict[str, Any]]

    def __init__(self, params, *args, **kwargs) -> None:
        params = list(params)
        if params and isinstance(params[0], dict):
            raise TypeError(f"{type(self).__name__} builds its own param groups: pass parameters, not groups.")
        # The next class in the MRO is the Optimizer subclass, which mypy cannot see from the mixin.
        super().__init__(named_param_groups(params), *args, **kwargs)  # type: ignore[call-arg]
        #: Gradient norm of each group at the last step (tensors, converted when logged).
        self.grad_norms: dict[str, torch.Tensor] = {}

    def apply_group_lrs(self) -> None:
        """Set each group's LR to ``base * lr_scale * lr_factor``, taking a changed LR as the new base."""
        for group in self.param_groups:
            group["base_lr"] = base_lr(group)
            group["lr"] = group["applied_lr"] = group_lr(group)

    @torch.no_grad()
    def _record_grad_norms(self) -> None:
        for group in self.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
                self.grad_norms[group["name"]] = torch.linalg.vector_norm(norms)
            else:
                self.grad_norms.pop(group["name"], None)

    def step(self, closure=None):
        self.apply_group_lrs()
        self._record_grad_norms()
        return super().step(closure)


_GROUPED: dict[type, type] = {}


def grouped(optimizer_class: type[Optimizer]) -> type[Optimizer]:
    """The grouped version of ``optimizer_class`` (itself if it is grouped already).

    Use it as ``policy_kwargs=dict(optimizer_class=grouped(torch.optim.Adam), ...)``, or let any
    sb3_pretrained fine-tuning callback install it. The classes for Adam, AdamW, RMSprop, SGD and SB3's
    RMSpropTFLike are importable from this module (``GroupedAdam``, ...), so saved models unpickle by name.
    """
    if issubclass(optimizer_class, GroupedOptimizer):
        return optimizer_class
    if optimizer_class not in _GROUPED:
        name = f"Grouped{optimizer_class.__name__}"
        _GROUPED[optimizer_class] = type(name, (GroupedOptimizer, optimizer_class), {"__doc__": f"{name}: see grouped()."})
    return _GROUPED[optimizer_class]


GroupedAdam = grouped(torch.optim.Adam)
GroupedAdamW = grouped(torch.optim.AdamW)
GroupedRMSprop = grouped(torch.optim.RMSprop)
GroupedSGD = grouped(torch.optim.SGD)
GroupedRMSpropTFLike = grouped(RMSpropTFLike)
for _cls in (GroupedAdam, GroupedAdamW, GroupedRMSprop, GroupedSGD, GroupedRMSpropTFLike):
    _cls.__module__ = __name__


def model_optimizers(model) -> dict[str, Optimizer]:
    """Every optimizer of an SB3 model's policy by attribute path: ``policy`` (PPO, DQN, ...), or ``actor`` and
    ``critic`` (SAC, TD3, ...)."""
    found = {}
    for path, module in model.policy.named_modules():
        optimizer = module.__dict__.get("optimizer")
        if isinstance(optimizer, Optimizer):
            found[path or "policy"] = optimizer
    return found


def install_grouped_optimizers(model) -> bool:
    """Replace each of ``model``'s optimizers by its grouped version (keeping per-parameter state) and record
    the grouped class in ``model.policy_kwargs`` so that ``ALGO.load`` builds the same groups.

    :return: True when something was replaced (nothing is when the policy was built grouped)
    """
    changed = False
    for path, optimizer in model_optimizers(model).items():
        if isinstance(optimizer, GroupedOptimizer):
            continue
        params = [p for group in optimizer.param_groups for p in group["params"]]
        replacement = grouped(type(optimizer))(params, **optimizer.defaults)
        for param in params:
            if param in optimizer.state:
                replacement.state[param] = optimizer.state[param]
        owner = model.policy if path == "policy" else model.policy.get_submodule(path)
        owner.optimizer = replacement
        changed = True
    if changed:
        optimizer_class = grouped(model.policy.optimizer_class)
        model.policy.optimizer_class = optimizer_class
        model.policy_kwargs = dict(model.policy_kwargs, optimizer_class=optimizer_class)
    return changed
