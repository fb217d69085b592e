"""Fixes for library behaviour that breaks frozen backbones, applied when ``sb3_pretrained`` is imported."""

from __future__ import annotations

import functools


def _trpo_skips_frozen_parameters() -> None:
    """sb3-contrib's TRPO differentiates the KL divergence with respect to every policy parameter and fails
    ("One of the differentiated Tensors does not require grad") on a frozen one. Make it see only the
    trainable parameters, which is what its own comment intends (frozen ones have no gradient to follow)."""
    try:
        from sb3_contrib import TRPO
    except ImportError:
        return
    compute = TRPO._compute_actor_grad
    if getattr(compute, "_skips_frozen", False):
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

    compute_actor_grad._skips_frozen = True
    TRPO._compute_actor_grad = compute_actor_grad


def apply_fixes() -> None:
    _trpo_skips_frozen_parameters()
