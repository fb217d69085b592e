"""sb3_internals: the version guard of the TRPO fix, and call-stack detection outside SB3's load."""

from __future__ import annotations

from sb3_contrib import TRPO

from sb3_pretrained import sb3_internals


def test_trpo_fix_is_applied_to_the_checked_release():
    assert getattr(TRPO._compute_actor_grad, "_skips_frozen", False)


def test_trpo_fix_is_skipped_when_sb3_contrib_filters_frozen_parameters_itself(monkeypatch):
    def fixed_upstream(self, kl_div, policy_objective):
        return [p for _, p in self.policy.named_parameters() if p.requires_grad]

    def unfixed(self, kl_div, policy_objective):
        return list(self.policy.named_parameters())

    assert sb3_internals.trpo_filters_frozen_parameters(fixed_upstream)
    assert not sb3_internals.trpo_filters_frozen_parameters(unfixed)
    monkeypatch.setattr(TRPO, "_compute_actor_grad", fixed_upstream)
    sb3_internals.apply_fixes()
    assert TRPO._compute_actor_grad is fixed_upstream  # left alone
    monkeypatch.setattr(TRPO, "_compute_actor_grad", unfixed)
    sb3_internals.apply_fixes()
    assert TRPO._compute_actor_grad._skips_frozen and TRPO._compute_actor_grad.__wrapped__ is unfixed


def test_no_saved_model_and_no_policy_outside_sb3():
    assert not sb3_internals.rebuilding_saved_model()
    assert sb3_internals.policy_under_construction() is None
    assert sb3_internals.shared_feature_cache({"a": 1}, 8) is not sb3_internals.shared_feature_cache({"a": 1}, 8)
