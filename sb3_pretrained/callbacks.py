"""Fine-tuning callbacks: gradual unfreezing by backbone stage and LR warmup, on timesteps.

Both are pure functions of ``model.num_timesteps``, so after ``save``/``load`` and
``learn(..., reset_num_timesteps=False)`` they continue exactly where they were. Both install grouped
optimizers (:mod:`sb3_pretrained.optim`) and log under ``finetune/`` in TensorBoard:

- ``finetune/lr/<optimizer>/<group>``: the LR of each param group (``head``, ``backbone.stem``, ...)
- ``finetune/trainable_params``, ``finetune/unfrozen_stages``, ``finetune/backbone_grad_norm``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from stable_baselines3.common.callbacks import BaseCallback

from sb3_pretrained.extractors import TimmExtractor
from sb3_pretrained.optim import HEAD_GROUP, GroupedOptimizer, group_lr, install_grouped_optimizers, model_optimizers

ALL = "all"


def _timestep(value, what: str) -> int:
    """A non-negative whole number of timesteps (YAML may give ``1e5`` as a float or a string)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number >= 0 and number == int(number)):
        raise ValueError(f"{what} must be a whole number of timesteps >= 0, got {value!r}.")
    return int(number)


def _increasing(timesteps: Sequence[int], what: str) -> None:
    for earlier, later in zip(timesteps, timesteps[1:], strict=False):
        if later <= earlier:
            raise ValueError(
                f"{what} must be in increasing order of timesteps, got {list(timesteps)} ({later} after {earlier})."
            )


def model_extractors(model) -> list[TimmExtractor]:
    """Every TimmExtractor in the model's policy (all copies: actor, critics, targets)."""
    return [m for m in model.policy.modules() if isinstance(m, TimmExtractor)]


def log_finetune_state(model, logger) -> None:
    """Record the ``finetune/`` TensorBoard values for ``model``."""
    extractors = model_extractors(model)
    unique = {id(p): p for p in model.policy.parameters()}.values()
    logger.record("finetune/trainable_params", sum(p.numel() for p in unique if p.requires_grad))
    if extractors:
        logger.record("finetune/unfrozen_stages", extractors[0].trainable_stages)
    squared_norms = []
    for path, optimizer in model_optimizers(model).items():
        if not isinstance(optimizer, GroupedOptimizer):
            continue
        for group in optimizer.param_groups:
            logger.record(f"finetune/lr/{path}/{group['name']}", group_lr(group))
        squared_norms += [n.float() ** 2 for name, n in optimizer.grad_norms.items() if name != HEAD_GROUP]
    if squared_norms:
        logger.record("finetune/backbone_grad_norm", torch.stack(squared_norms).sum().sqrt().item())


class FinetuneCallback(BaseCallback):
    """Base of the fine-tuning callbacks: finds the extractors, installs grouped optimizers, applies the
    schedule at every step from ``num_timesteps`` and logs ``finetune/`` values at the end of each rollout."""

    def _init_callback(self) -> None:
        if not model_extractors(self.model):
            raise ValueError(
                f"{type(self).__name__} needs a policy built with TimmExtractor "
                "(policy_kwargs=dict(features_extractor_class=TimmExtractor, ...))."
            )
        install_grouped_optimizers(self.model)
        self._check_against_model()
        self._apply(self.model.num_timesteps)

    def _check_against_model(self) -> None:
        """Validate what needs the model (e.g. stage names) before training starts."""

    def _apply(self, timesteps: int) -> None:
        raise NotImplementedError

    def _on_step(self) -> bool:
        self._apply(self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        log_finetune_state(self.model, self.logger)


class GradualUnfreezing(FinetuneCallback):
    """Freeze the backbone, then unfreeze it from the top stage down at given timesteps.

    ``GradualUnfreezing({100_000: 1, 300_000: "all"})`` keeps the backbone frozen until 100k steps, trains the
    top stage from 100k and every stage from 300k. A value is a number of top stages, ``"all"``, or a stage
    name (that stage and every stage above it train; see ``TimmExtractor.stage_names``).

    Frozen stages get no gradient and keep BatchNorm in eval mode; trainable stages keep BatchNorm in eval
    mode too unless the extractor (or ``train_bn`` here) says otherwise.

    :param schedule: timestep -> what trains from then on; timesteps increasing, unfreezing never undone.
        Before the first timestep the backbone is frozen (use key 0 to start otherwise).
    :param train_bn: override the extractors' ``train_bn`` (None keeps theirs)
    """

    def __init__(self, schedule: Mapping[int, int | str], train_bn: bool | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if not isinstance(schedule, Mapping) or not schedule:
            raise ValueError(
                "schedule must be a non-empty mapping timestep -> stages, e.g. {100000: 1, 300000: 'all'}; "
                f"got {schedule!r}."
            )
        self.timesteps = [_timestep(t, "Each schedule key") for t in schedule]
        _increasing(self.timesteps, "The unfreezing schedule")
        self.targets = list(schedule.values())
        for target in self.targets:
            if isinstance(target, bool) or not isinstance(target, (int, str)) or (isinstance(target, int) and target < 0):
                raise ValueError(
                    f"Each schedule value must be a number of top stages >= 0, 'all' or a stage name; got {target!r}."
                )
        counts = [t for t in self.targets if isinstance(t, int)]
        if counts != sorted(counts):
            raise ValueError(f"Unfreezing cannot go backwards: stage counts {counts} must not decrease.")
        self.train_bn = train_bn
        self.counts: list[int] = []

    def _check_against_model(self) -> None:
        stage_names = model_extractors(self.model)[0].stage_names
        self.counts = []
        for target in self.targets:
            if target == ALL:
                self.counts.append(len(stage_names))
            elif isinstance(target, str):
                if target not in stage_names:
                    raise ValueError(
                        f"Unknown stage {target!r} in the unfreezing schedule. Stages, bottom to top: {stage_names}."
                    )
                self.counts.append(len(stage_names) - stage_names.index(target))
            elif target > len(stage_names):
                raise ValueError(f"Cannot unfreeze {target} stages: the backbone has {len(stage_names)} ({stage_names}).")
            else:
                self.counts.append(target)
        if self.counts != sorted(self.counts):
            raise ValueError(f"Unfreezing cannot go backwards: the schedule resolves to stage counts {self.counts}.")
        if self.train_bn is not None:
            for extractor in model_extractors(self.model):
                extractor.train_bn = self.train_bn

    def trainable_stages_at(self, timesteps: int) -> int:
        """How many top stages train at ``timesteps``."""
        reached = [count for start, count in zip(self.timesteps, self.counts, strict=False) if start <= timesteps]
        return reached[-1] if reached else 0

    def _apply(self, timesteps: int) -> None:
        count = self.trainable_stages_at(timesteps)
        changed = [e for e in model_extractors(self.model) if e.trainable_stages != count]
        for extractor in changed:
            extractor.set_trainable_stages(count)
        if changed and self.verbose:
            print(f"GradualUnfreezing: {count}/{len(changed[0].stages)} stages train from timestep {timesteps}")


class LRWarmup(FinetuneCallback):
    """Warm the learning rate up from ``start_factor`` times SB3's scheduled LR to the full LR.

    It multiplies whatever schedule the algorithm has (constant, an SB3 callable, rl_zoo3's ``lin_2.5e-4``)
    and the per-group LR scales; it leaves ``model.lr_schedule`` untouched, so saving is unaffected.
    The factor is updated at every environment step and takes effect at the next gradient step (for PPO/A2C:
    once per rollout, like SB3's own schedule).

    :param steps: warmup length in timesteps (> 0)
    :param start_factor: factor at the start of warmup, in [0, 1]
    :param shape: ``"linear"`` or ``"cosine"``
    :param restart_at: timesteps where the warmup starts again (e.g. the unfreezing timesteps)
    :param groups: ``"all"`` groups, or only the ``"backbone"`` ones
    """

    def __init__(
        self,
        steps: int,
        start_factor: float = 0.01,
        shape: str = "linear",
        restart_at: Sequence[int] = (),
        groups: str = ALL,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if isinstance(steps, bool) or _timestep(steps, "Warmup steps") <= 0:
            raise ValueError(f"Warmup steps must be a positive number of timesteps, got {steps!r}.")
        if not 0.0 <= float(start_factor) <= 1.0:
            raise ValueError(f"start_factor must be in [0, 1] (a fraction of the scheduled LR), got {start_factor!r}.")
        if shape not in ("linear", "cosine"):
            raise ValueError(f"shape must be 'linear' or 'cosine', got {shape!r}.")
        if groups not in (ALL, "backbone"):
            raise ValueError(f"groups must be 'all' or 'backbone', got {groups!r}.")
        self.steps = _timestep(steps, "Warmup steps")
        self.start_factor = float(start_factor)
        self.shape = shape
        self.restart_at = [_timestep(t, "Each restart_at entry") for t in restart_at]
        _increasing(self.restart_at, "restart_at")
        self.groups = groups

    def factor_at(self, timesteps: int) -> float:
        """The LR factor at ``timesteps``."""
        origin = max([0] + [t for t in self.restart_at if t <= timesteps])
        progress = min(1.0, (timesteps - origin) / self.steps)
        if self.shape == "cosine":
            progress = (1.0 - math.cos(math.pi * progress)) / 2.0
        return self.start_factor + (1.0 - self.start_factor) * progress

    def _apply(self, timesteps: int) -> None:
        factor = self.factor_at(timesteps)
        for optimizer in model_optimizers(self.model).values():
            for group in optimizer.param_groups:
                if self.groups == ALL or group["name"] != HEAD_GROUP:
                    group["lr_factor"] = factor
