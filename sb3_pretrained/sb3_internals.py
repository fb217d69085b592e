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

5. **A policy keeps ``normalize_images`` to itself** (its ``preprocess_obs`` scales uint8 images by 1/255 only when
   it is True) **and sets it in ``BaseModel.__init__`` before building any extractor.** :func:`policy_normalizes_images`
   reads it from the policy under construction, so the extractor refuses uint8 pixels that would reach the backbone
   unscaled. Checked: SB3 2.9.2 (``BaseModel.__init__``, ``ActorCriticPolicy``, DQN and SAC policies). Test:
   ``tests/test_extractors.py::test_normalize_images_false_on_uint8_pixels_is_refused``.
6. **``BaseAlgorithm.load`` restores the saved attributes (``model.__dict__.update(data)``), rebuilds the policy, then
   loads the optimizers' state through ``BaseAlgorithm.set_parameters``.** :func:`model_setting_parameters` finds
   that model on the call stack, so a grouped optimizer's ``load_state_dict`` can give the model back its saved
   fine-tuning state (stages that train). Checked: SB3 2.9.2. Test:
   ``tests/test_callbacks.py::test_load_without_callbacks_keeps_trained_stages_and_drops_the_warmup_factor``.
7. **Where SB3 writes a save**: ``BaseAlgorithm.save(path)`` and ``save_replay_buffer(path)`` open ``path`` with
   ``.zip`` / ``.pkl`` appended when it has no suffix (``save_util.open_path``) and accept an open file instead;
   ``VecNormalize.save(path)`` opens ``path`` as given. :func:`atomic_saves` makes all three write through
   :func:`sb3_pretrained.atomic.atomic_path`, only inside its ``with`` block. rl_zoo3 saves the final model, the
   checkpoints (SB3's ``CheckpointCallback``), the best model (``EvalCallback``) and VecNormalize statistics
   (``SaveVecNormalizeCallback``) through these three. Checked: SB3 2.9.2, rl_zoo3 2.9.2. Test:
   ``tests/test_atomic.py``.
8. **rl_zoo3's ``train()`` builds one ``ExperimentManager`` and calls its ``setup_experiment()``**, whose
   ``save_path`` is the run folder it trains into. :func:`recording_experiments` records the managers set up inside
   its ``with`` block, so ``sb3-pretrained train`` names the run it trained, not the newest folder. Checked: rl_zoo3
   2.9.2. Test: ``tests/test_cli.py::test_summary_names_the_run_this_process_trained``.

9. **rl_zoo3 gives its eval envs a config's ``env_kwargs`` only when they come from the command line**
   (``ExperimentManager.eval_env_kwargs`` is fixed in ``__init__``; ``read_hyperparameters`` updates it only for
   ``--env-kwargs``), so ``--eval-freq`` on discrete CarRacing (``env_kwargs: {continuous: false}`` in the config)
   evaluates on a continuous env and crashes. :func:`recording_experiments` also makes ``create_envs(eval_env=True)``
   use the config's ``env_kwargs`` when none were given for evaluation. Checked: rl_zoo3 2.9.2. Test:
   ``tests/test_cli.py::test_eval_envs_get_the_configs_env_kwargs``; sweep trials call
   :func:`give_eval_envs_the_config_kwargs` (``tests/test_trial.py``).

10. **A policy's default ``net_arch`` depends on ``features_extractor_class == NatureCNN``** (equality, not
    subclass): SB3 puts no hidden layer between NatureCNN and the action/value (or Q) heads, but a [64, 64] MLP
    after any other extractor (Tanh in ``ActorCriticPolicy`` and sb3-contrib's maskable policies, ReLU in DQN's and
    QR-DQN's; TD3 [256, 256] against [400, 300]; SAC does not single NatureCNN out). :func:`nature_cnn_net_arch`
    gives a NatureCNN subclass (:class:`~sb3_pretrained.augmentation.AugmentedNatureCNN`) the architecture NatureCNN
    gets, so the augmented scratch baseline differs from plain ``CnnPolicy`` in the augmentation only. Models of a
    ``NatureCNN*Policy`` saved before 57de850 kept SB3's [64, 64] and do not load since (unexpected
    ``mlp_extractor`` keys). Checked: SB3 2.9.2,
    sb3-contrib 2.9.2. Test: ``tests/test_scratch.py::test_augmented_nature_cnn_policy_has_cnn_policys_architecture``.

11. **What ``ActorCriticPolicy.evaluate_actions`` computes between the observations and its outputs**: features
    (a pair of them without ``share_features_extractor``), the ``mlp_extractor``'s latents,
    ``_get_action_dist_from_latent`` and ``value_net``; the distribution is the policy's one ``action_dist``
    object, which the next call fills anew. :func:`distribution_and_values` does the same and returns a copy of the
    distribution, which :class:`~sb3_pretrained.drac.DrACPPO` samples from and which ``evaluate_actions`` does not
    return. Checked: SB3 2.9.2. Test: ``tests/test_drac.py::test_distribution_and_values_match_evaluate_actions``.
12. **rl_zoo3 looks algorithms up by name in ``rl_zoo3.utils.ALGOS``** (``train``'s and ``enjoy``'s ``--algo``
    choices, built when they parse; ``ExperimentManager`` creates and loads models from it) and, for ``-optimize``,
    in ``rl_zoo3.hyperparams_opt``'s ``HYPERPARAMS_SAMPLER`` and ``HYPERPARAMS_CONVERTER``.
    :func:`register_zoo_algorithms` adds this package's (``ppo_drac``, with PPO's sampler and converter) when the
    package is imported, without replacing a name rl_zoo3 already has. Checked: rl_zoo3 2.9.2. Tests:
    ``tests/test_drac.py::test_ppo_drac_trains_from_a_zoo_config``, ``::test_ppo_drac_is_registered_like_ppo``.

13. **``SubprocVecEnv.step_wait`` stacks the rewards the envs return as they are** (``np.stack``: float64, or int64
    for an env that returns ints, as MiniGrid does before its goal), where ``DummyVecEnv`` keeps them in a float32
    buffer; on-policy algorithms add a truncated episode's bootstrapped value into that array in place
    (``OnPolicyAlgorithm.collect_rollouts``), which an int array truncates to an int, so the same envs trained
    another agent in subprocesses. :class:`Float32RewardsSubprocVecEnv` hands rewards over as float32, as
    ``DummyVecEnv`` does, and a sweep's ``--vec-env subproc`` uses it. Checked: SB3 2.9.2. Test:
    ``tests/test_sweep.py::test_sweep_without_ray_runs_in_process_and_subproc_envs_train_the_same_agent``.

Items 7, 8 and 9 replace library methods only inside a ``with`` block and put them back on exit. No other module of
this package walks the call stack or patches SB3; item 12 adds entries to rl_zoo3's registry and changes none.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize
from torch import nn

from sb3_pretrained.atomic import atomic_path
from sb3_pretrained.feature_cache import FeatureCache

_SAVED_MODEL_LOADERS = {BaseAlgorithm.load.__func__.__code__, BasePolicy.load.__func__.__code__}  # type: ignore[attr-defined]
_SET_PARAMETERS = BaseAlgorithm.set_parameters.__code__
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


def model_setting_parameters() -> BaseAlgorithm | None:
    """The SB3 model whose ``set_parameters`` (called by ``load``, item 6) is loading the caller's state, if any."""
    frame = next((frame for frame in _callers() if frame.f_code is _SET_PARAMETERS), None)
    return frame.f_locals.get("self") if frame is not None else None


def policy_under_construction() -> BaseModel | None:
    """The SB3 policy whose construction is building the caller, if any (found on the call stack)."""
    owners = (frame.f_locals.get("self") for frame in _callers())
    return next((owner for owner in owners if isinstance(owner, BaseModel)), None)


def policy_normalizes_images() -> bool | None:
    """The ``normalize_images`` of the SB3 policy under construction around the caller (item 5); None outside one."""
    policy = policy_under_construction()
    return None if policy is None else getattr(policy, "normalize_images", None)


def shared_feature_cache(config: dict[str, Any], capacity: int) -> FeatureCache:
    """One FeatureCache for every extractor copy that a policy builds with ``config`` (item 2); a new one outside
    a policy."""
    policy = policy_under_construction()
    if policy is None:
        return FeatureCache(capacity)
    caches = policy.__dict__.setdefault(_CACHES_ATTR, {})
    return caches.setdefault(repr(sorted(config.items())), FeatureCache(capacity))


def nature_cnn_net_arch(policy_class: type[BasePolicy]) -> list[int] | None:
    """The ``net_arch`` that ``policy_class`` picks by default for SB3's NatureCNN (item 10); None where it picks the
    same for every extractor."""
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    from sb3_contrib.qrdqn.policies import QRDQNPolicy
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.dqn.policies import DQNPolicy
    from stable_baselines3.td3.policies import TD3Policy

    if issubclass(policy_class, (ActorCriticPolicy, MaskableActorCriticPolicy, DQNPolicy, QRDQNPolicy)):
        return []
    if issubclass(policy_class, TD3Policy):
        return [256, 256]
    return None


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


@contextlib.contextmanager
def _replaced(owner: type, name: str, make: Callable[[Callable], Callable]) -> Iterator[None]:
    """``owner.name`` replaced by ``make(original)`` inside the block, put back on exit."""
    original = owner.__dict__[name]
    setattr(owner, name, functools.wraps(original)(make(original)))
    try:
        yield
    finally:
        setattr(owner, name, original)


def _writes_atomically(suffix: str | None) -> Callable[[Callable], Callable]:
    """A save method's replacement that writes a path through a temporary file; ``suffix`` is the one SB3 appends
    to a path without one (None: the path is used as given). Open files and folders go to the original."""

    def make(save: Callable) -> Callable:
        def atomic_save(self, path, *args, **kwargs):
            if isinstance(path, io.IOBase):
                return save(self, path, *args, **kwargs)
            final = Path(path)
            if suffix is not None and final.suffix == "":
                final = Path(f"{final}.{suffix}")
            if final.is_dir():
                return save(self, path, *args, **kwargs)
            with atomic_path(final) as tmp:
                return save(self, str(tmp) if suffix is None else tmp, *args, **kwargs)

        return atomic_save

    return make


@contextlib.contextmanager
def atomic_saves() -> Iterator[None]:
    """Inside the block, SB3 models, replay buffers and VecNormalize statistics saved to a path are written to a
    temporary file and renamed into place (item 7): a save that is killed leaves the previous file, or none, never
    a half-written one under the final name."""
    with (
        _replaced(BaseAlgorithm, "save", _writes_atomically("zip")),
        _replaced(OffPolicyAlgorithm, "save_replay_buffer", _writes_atomically("pkl")),
        _replaced(VecNormalize, "save", _writes_atomically(None)),
    ):
        yield


def give_eval_envs_the_config_kwargs(manager: Any) -> None:
    """Item 9: an rl_zoo3 ``ExperimentManager`` given no eval env kwargs of its own evaluates with the config's
    ``env_kwargs`` (call it after ``setup_experiment()`` has read the config)."""
    if manager._eval_env_kwargs_args is None:
        manager.eval_env_kwargs = dict(manager.env_kwargs)


@contextlib.contextmanager
def recording_experiments() -> Iterator[list[Any]]:
    """Inside the block, every rl_zoo3 ``ExperimentManager`` whose ``setup_experiment()`` runs is appended to the
    list this yields (item 8); its ``save_path`` is its run folder. Its eval envs get the config's ``env_kwargs``
    (item 9)."""
    from rl_zoo3.exp_manager import ExperimentManager

    managers: list[Any] = []

    def make(setup: Callable) -> Callable:
        def recording_setup(self, *args, **kwargs):
            managers.append(self)
            return setup(self, *args, **kwargs)

        return recording_setup

    def make_create_envs(create_envs: Callable) -> Callable:
        def create_envs_with_config_kwargs(self, n_envs, eval_env=False, no_log=False):
            if eval_env:
                give_eval_envs_the_config_kwargs(self)
            return create_envs(self, n_envs, eval_env=eval_env, no_log=no_log)

        return create_envs_with_config_kwargs

    with _replaced(ExperimentManager, "setup_experiment", make), _replaced(ExperimentManager, "create_envs", make_create_envs):
        yield managers


class Float32RewardsSubprocVecEnv(SubprocVecEnv):
    """Item 13: SB3's ``SubprocVecEnv`` with the rewards as float32, as ``DummyVecEnv`` hands them over. An env that
    fails to start in its subprocess raises an error that says so (SB3's is the pipe's ``EOFError``), and the
    processes already started are ended."""

    def __init__(self, env_fns: list[Callable[[], Any]], start_method: str | None = None) -> None:
        try:
            super().__init__(env_fns, start_method)
        except (EOFError, ConnectionError) as err:
            for process in getattr(self, "processes", []):
                process.terminate()
                process.join()
            raise RuntimeError(
                f"An env failed to start in its subprocess ({type(err).__name__} from its pipe); its own traceback is "
                "printed above, on stderr. Run with --vec-env dummy to get the error in this process."
            ) from err

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = super().step_wait()
        return obs, rewards.astype(np.float32), dones, infos


#: rl_zoo3's ``--vec-env`` names and the classes a sweep trial steps its envs with (item 13).
VEC_ENV_CLASSES: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": Float32RewardsSubprocVecEnv}


def apply_fixes() -> None:
    """Apply the fixes above that change library behaviour (called once when ``sb3_pretrained`` is imported)."""
    _trpo_skips_frozen_parameters()


def distribution_and_values(policy: ActorCriticPolicy, obs: Any) -> tuple[Distribution, Any]:
    """Item 11: the action distribution and the values (N, 1) of ``obs``, as ``evaluate_actions`` computes them."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    # A copy: SB3 fills the policy's one distribution object in place, the next call would overwrite this one.
    return copy.copy(policy._get_action_dist_from_latent(latent_pi)), policy.value_net(latent_vf)


def register_zoo_algorithms(algorithms: dict[str, tuple[type[BaseAlgorithm], str]]) -> None:
    """Item 12: make ``algorithms`` (name -> (class, the rl_zoo3 algorithm whose hyperparameter sampler and
    converter it shares)) known to rl_zoo3, leaving its own names alone."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    for name, (algorithm, like) in algorithms.items():
        ALGOS.setdefault(name, algorithm)
        if like in HYPERPARAMS_SAMPLER:
            HYPERPARAMS_SAMPLER.setdefault(name, HYPERPARAMS_SAMPLER[like])
        if like in HYPERPARAMS_CONVERTER:
            HYPERPARAMS_CONVERTER.setdefault(name, HYPERPARAMS_CONVERTER[like])
