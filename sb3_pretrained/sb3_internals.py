"""Everything that depends on Stable-Baselines3 / sb3-contrib behaviour that is not public API, in one place.

Each item, the version it was checked against, and the test that fails if a release changes it:

1. **``ALGO.load`` rebuilds the policy, then overwrites every weight with the saved state dict.**
   :func:`rebuilding_saved_model` finds ``BaseAlgorithm.load`` / ``BasePolicy.load`` on the call stack, so the
   extractor skips reading pretrained weights (wasted work, and it fails offline). Checked: SB3 2.9.2.
   Test: ``tests/test_algorithms.py::test_learn_save_load_predict`` (no weight read, weight file gone).
2. **A policy builds its extractor copies (actor, critics, targets) inside its own ``__init__``/``_build``.**
   :func:`shared_feature_cache` finds the policy under construction on the call stack and gives every copy
   built with the same arguments one :class:`~sb3_pretrained.feature_cache.FeatureCache`, never shared across
   models. Checked: SB3 2.9.2 (DQN, SAC, TD3 policies), sb3-contrib 2.9.2. Test:
   ``tests/test_feature_cache.py::test_extractor_copies_of_a_policy_share_one_cache``.
3. **sb3-contrib's TRPO differentiates the KL divergence with respect to every policy parameter**
   (``TRPO._compute_actor_grad``) and fails on a frozen one ("One of the differentiated Tensors does not require
   grad"). :func:`apply_fixes` makes it see only trainable parameters, unless its source already filters on
   ``requires_grad`` (then a future release fixed it and nothing is patched). Checked: sb3-contrib 2.9.2.
   Test: ``tests/test_algorithms.py::test_learn_save_load_predict[TRPO]`` and
   ``tests/test_sb3_internals.py``.
4. **PPO/A2C/TRPO (``ortho_init=True``) call ``features_extractor.apply(init_weights)``**, which would
   re-initialize a pretrained backbone. :class:`KeepsEncoderOnApply` skips the encoder. Checked: SB3 2.9.2
   (``ActorCriticPolicy._build``). Test: ``tests/test_extractors.py::test_ortho_init_leaves_backbone_untouched``.

No other module of this package walks the call stack or patches SB3.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BaseModel, BasePolicy
from torch import nn

from sb3_pretrained.feature_cache import FeatureCache

_SAVED_MODEL_LOADERS = {BaseAlgorithm.load.__func__.__code__, BasePolicy.load.__func__.__code__}  # type: ignore[attr-defined]
_CACHES_ATTR = "_sb3_pretrained_feature_caches"


def _callers() -> Iterator[FrameType]:
    """Frames of the current call stack around the caller, innermost first (a few of our own included)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back


def rebuilding_saved_model() -> bool:
    """Whether we are being built by SB3's ``load``, which overwrites every weight with the saved state dict
    right after (item 1 of the module docstring)."""
    return any(frame.f_code in _SAVED_MODEL_LOADERS for frame in _callers())


def policy_under_construction() -> BaseModel | None:
    """The SB3 policy whose construction is building the caller, if any (found on the call stack)."""
    owners = (frame.f_locals.get("self") for frame in _callers())
    return next((owner for owner in owners if isinstance(owner, BaseModel)), None)


def shared_feature_cache(config: dict[str, Any], capacity: int) -> FeatureCache:
    """One FeatureCache for every extractor copy that a policy builds with ``config`` (item 2); a new one outside
    a policy."""
    policy = policy_under_construction()
    if policy is None:
        return FeatureCache(capacity)
    caches = policy.__dict__.setdefault(_CACHES_ATTR, {})
    return caches.setdefault(repr(sorted(config.items())), FeatureCache(capacity))


class KeepsEncoderOnApply(nn.Module):
    """Mixin for a features extractor whose ``encoder`` child holds pretrained weights: ``apply(fn)`` reaches every
    other child and the module itself, never the encoder (item 4). To re-initialize the backbone on purpose, call
    ``extractor.encoder.backbone.apply(fn)``."""

    def apply(self, fn: Callable[[nn.Module], None]):
        for name, module in self.named_children():
            if name != "encoder":
                module.apply(fn)
        fn(self)
        return self


def trpo_filters_frozen_parameters(compute: Callable) -> bool:
    """Whether TRPO's ``_compute_actor_grad`` already skips parameters without gradients (a fixed release)."""
    try:
        return "requires_grad" in inspect.getsource(compute)
    except (OSError, TypeError):  # no source (zipped install): assume the checked behaviour
        return False


def _trpo_skips_frozen_parameters() -> None:
    """Item 3: TRPO sees only trainable parameters, which is what its own comment intends (frozen ones have no
    gradient to follow)."""
    try:
        from sb3_contrib import TRPO
    except ImportError:
        return
    compute = TRPO._compute_actor_grad
    if getattr(compute, "_skips_frozen", False) or trpo_filters_frozen_parameters(compute):
        return

    @functools.wraps(compute)
    def compute_actor_grad(self, kl_div, policy_objective):
        policy = self.policy
        every = type(policy).named_parameters
        policy.named_parameters = lambda *args, **kwargs: (
            (name, param) for name, param in every(policy, *args, **kwargs) if param.requires_grad
        )
        try:
            return compute(self, kl_div, policy_objective)
        finally:
            del policy.named_parameters

    compute_actor_grad._skips_frozen = True  # type: ignore[attr-defined]
    TRPO._compute_actor_grad = compute_actor_grad  # type: ignore[method-assign]


def apply_fixes() -> None:
    """Apply the fixes above that change library behaviour (called once when ``sb3_pretrained`` is imported)."""
    _trpo_skips_frozen_parameters()
