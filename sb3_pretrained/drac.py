"""PPO with DrAC's use of augmentation (Raileanu et al. 2021, "Automatic Data Augmentation for Generalization in
Reinforcement Learning"): PPO's loss on the observations the agent acted on, the augmentation as a regularizer.

With ``augment`` in its extractor, SB3's PPO computes its whole loss on augmented training batches, while the
rollout's log-probabilities (``old_log_prob``) come from the observations the agent acted on, which are never
augmented. The ratio ``pi(a | aug(o)) / pi(a | o)`` is then not 1 before the first gradient step, and PPO clips or
mis-weights the samples the augmentation alone moved: on CarRacing with ``shift: 4``, 11-12% of them for agents
trained with the shift (``benchmarks/augmented_ratio.py``, ``docs/learning.md``). :class:`DrACPPO`, per minibatch:

- computes PPO's clipped objective, value loss and entropy on the plain observations (the extractor's augmentation
  off, :func:`~sb3_pretrained.augmentation.augmentation_off`): the ratio is exactly 1 at the first minibatch, as
  PPO means it, and a frozen backbone's feature cache serves these passes;
- adds ``drac_coef * (G_pi + G_V)`` from one augmented pass: ``G_pi = -log pi(a' | aug(o))`` for actions ``a'``
  sampled from ``pi(. | o)`` (a one-sample estimate of ``KL(pi(. | o) || pi(. | aug(o)))`` up to a term without
  gradient) and ``G_V = 0.5 * (V(aug(o)) - V(o))**2`` with ``V(o)`` held fixed, as in the authors' code; their
  default ``drac_coef`` is 0.1.

It logs ``train/drac_policy_loss`` and ``train/drac_value_loss`` beside PPO's losses (``train/loss`` includes the
regularizer). Without augmentation in the policy it trains exactly as PPO (one warning says so); with augmentation
and ``drac_coef: 0`` it trains PPO on plain observations, the augmentation unused. Everything else (rollouts,
schedules, ``target_kl``, saving, loading) is PPO's. Costs: the augmented pass is a second forward and backward
pass through the extractor per minibatch, so while backbone stages train, about twice PPO's activation memory and
backbone compute (and BatchNorm statistics, with ``train_bn``, updated by both passes); with a frozen backbone the
plain pass is served by the feature cache and the augmented pass costs what PPO's augmented pass costs.

In rl_zoo3 configs and on the command line it is the algorithm ``ppo_drac`` (``sb3-pretrained train --algo ppo_drac
--conf-file ...``; configs are PPO's, plus ``drac_coef`` if wanted; rl_zoo3's ``-optimize`` samples PPO's
hyperparameters for it).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_pretrained.augmentation import augmentation_off, has_augmentation
from sb3_pretrained.sb3_internals import distribution_and_values

#: The name of :class:`DrACPPO` in rl_zoo3's algorithms (``--algo``), registered when the package is imported.
ZOO_NAME = "ppo_drac"


class DrACPPO(PPO):
    """PPO whose loss is taken on plain observations, with DrAC's augmentation regularizer (see the module docstring).

    :param drac_coef: weight of the regularizer ``G_pi + G_V`` (DrAC's ``alpha_r``), >= 0; 0 trains as PPO
    :param kwargs: PPO's arguments
    """

    def __init__(self, policy: Any, env: Any, *, drac_coef: float = 0.1, **kwargs: Any) -> None:
        self.drac_coef = _checked_coef(drac_coef)
        super().__init__(policy, env, **kwargs)

    def _setup_model(self) -> None:
        self.drac_coef = _checked_coef(self.drac_coef)  # also when load() set it (a saved model, custom_objects)
        super()._setup_model()
        if not has_augmentation(self.policy) and self.drac_coef > 0:
            warnings.warn(
                "DrACPPO: the policy augments nothing (no 'augment' in its features_extractor_kwargs), so it trains "
                "exactly as PPO.",
                stacklevel=2,
            )

    def drac_losses(self, observations: Any, distribution: Distribution, values: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """DrAC's two regularizers on one augmented pass of ``observations`` (the policy in training mode, its
        augmentation on), given the plain pass's ``distribution`` and ``values``: ``G_pi``, the mean of
        ``-log pi(a' | aug(o))`` for actions ``a'`` sampled from ``distribution`` (no gradient through the sample), and
        ``G_V``, the mean of ``0.5 * (V(aug(o)) - V(o))**2`` with ``values`` held fixed."""
        with th.no_grad():
            sampled = distribution.get_actions(deterministic=False).detach()
        augmented, augmented_values = distribution_and_values(self.policy, observations)
        policy_term = -augmented.log_prob(sampled).mean()
        value_term = 0.5 * (values.detach().flatten() - augmented_values.flatten()).pow(2).mean()
        return policy_term, value_term

    def train(self) -> None:  # noqa: C901  (SB3's PPO.train, with the two passes and the regularizer)
        """One PPO update on the rollout buffer, as SB3's ``PPO.train`` (checked: SB3 2.9.2) with DrAC's changes."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        regularize = self.drac_coef > 0 and has_augmentation(self.policy)

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        drac_policy_losses, drac_value_losses = [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()

                with augmentation_off(self.policy):
                    distribution, values = distribution_and_values(self.policy, rollout_data.observations)
                log_prob = distribution.log_prob(actions)
                entropy = distribution.entropy()
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                ratio = th.exp(log_prob - rollout_data.old_log_prob)  # 1 at the first minibatch: same inputs
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())

                if self.clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                if regularize:
                    drac_policy_loss, drac_value_loss = self.drac_losses(rollout_data.observations, distribution, values)
                    loss = loss + self.drac_coef * (drac_policy_loss + drac_value_loss)
                    drac_policy_losses.append(drac_policy_loss.item())
                    drac_value_losses.append(drac_value_loss.item())

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        if drac_policy_losses:
            self.logger.record("train/drac_policy_loss", np.mean(drac_policy_losses))
            self.logger.record("train/drac_value_loss", np.mean(drac_value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)


def _checked_coef(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"drac_coef must be a number >= 0 (DrAC's default is 0.1), got {value!r}.")
    return float(value)
