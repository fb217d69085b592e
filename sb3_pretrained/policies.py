"""SB3 and sb3-contrib image policies with :class:`~sb3_pretrained.TimmExtractor` as their default extractor.

They let a config name the policy by its import path and give the extractor's options as plain data, which rl_zoo3
runs unchanged (it imports a dotted ``policy`` itself) and nothing evaluates::

    policy: sb3_pretrained.policies.TimmActorCriticPolicy
    policy_kwargs:
      features_extractor_kwargs: {model_name: efficientnet_lite0, frozen: true}

Each policy is its algorithm's ``CnnPolicy`` (or ``MultiInputPolicy``, with
:class:`~sb3_pretrained.TimmMultiInputExtractor`) and nothing else changes: ``features_extractor_class`` can still
be passed. The ``NatureCNN*Policy`` classes are the from-scratch baseline: SB3's NatureCNN with the same
training-batch augmentation option (``features_extractor_kwargs: {augment: {shift: 4}}``,
:class:`~sb3_pretrained.augmentation.AugmentedNatureCNN`). The ``FeatureMap*Policy`` classes are for the fast path
with stored feature maps (:class:`~sb3_pretrained.FrozenBackboneEmbedding` with ``feature_index``): the algorithm's
``MlpPolicy`` with :class:`~sb3_pretrained.FeatureMapExtractor`, the spatial head of the in-policy extractor::

    policy: sb3_pretrained.policies.FeatureMapActorCriticPolicy
    policy_kwargs:
      features_extractor_kwargs: {feature_shape: [40, 7, 7]}   # the wrapper's encoder.feature_shape
"""

from __future__ import annotations

from typing import Any

from sb3_contrib.common.maskable.policies import MaskableActorCriticCnnPolicy, MaskableMultiInputActorCriticPolicy
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticCnnPolicy
from sb3_contrib.qrdqn.policies import CnnPolicy as QRDQNCnnPolicy
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from sb3_contrib.tqc.policies import CnnPolicy as TQCCnnPolicy
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.dqn.policies import CnnPolicy as DQNCnnPolicy
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import CnnPolicy as SACCnnPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import CnnPolicy as TD3CnnPolicy
from torch import nn

from sb3_pretrained.augmentation import AugmentedNatureCNN
from sb3_pretrained.extractors import FeatureMapExtractor, TimmExtractor, TimmMultiInputExtractor
from sb3_pretrained.sb3_internals import nature_cnn_net_arch


def _with_default_extractor(base: type[BasePolicy], name: str, algos: str, extractor: type[nn.Module]) -> type:
    # SB3 gives NatureCNN itself, not a subclass, a policy without hidden layers: give the subclass the same.
    net_arch = nature_cnn_net_arch(base) if issubclass(extractor, NatureCNN) else None

    def __init__(self, *args: Any, features_extractor_class: type[nn.Module] = extractor, **kwargs: Any) -> None:
        if net_arch is not None and features_extractor_class is extractor and kwargs.get("net_arch") is None:
            kwargs["net_arch"] = list(net_arch)
        base.__init__(self, *args, features_extractor_class=features_extractor_class, **kwargs)

    doc = f"{algos}: SB3's ``{base.__name__}`` with ``features_extractor_class={extractor.__name__}`` by default."
    if net_arch is not None:
        doc += f" Without ``net_arch``, the one SB3 gives NatureCNN ({net_arch})."
    return type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__, "__qualname__": name})


TimmActorCriticPolicy = _with_default_extractor(ActorCriticCnnPolicy, "TimmActorCriticPolicy", "PPO, A2C, TRPO", TimmExtractor)
TimmMultiInputActorCriticPolicy = _with_default_extractor(
    MultiInputActorCriticPolicy, "TimmMultiInputActorCriticPolicy", "PPO, A2C, TRPO (Dict observations)",
    TimmMultiInputExtractor,
)
TimmRecurrentActorCriticPolicy = _with_default_extractor(
    RecurrentActorCriticCnnPolicy, "TimmRecurrentActorCriticPolicy", "RecurrentPPO", TimmExtractor
)
TimmMaskableActorCriticPolicy = _with_default_extractor(
    MaskableActorCriticCnnPolicy, "TimmMaskableActorCriticPolicy", "MaskablePPO", TimmExtractor
)
TimmMaskableMultiInputActorCriticPolicy = _with_default_extractor(
    MaskableMultiInputActorCriticPolicy, "TimmMaskableMultiInputActorCriticPolicy", "MaskablePPO (Dict observations)",
    TimmMultiInputExtractor,
)
TimmDQNPolicy = _with_default_extractor(DQNCnnPolicy, "TimmDQNPolicy", "DQN", TimmExtractor)
TimmQRDQNPolicy = _with_default_extractor(QRDQNCnnPolicy, "TimmQRDQNPolicy", "QR-DQN", TimmExtractor)
TimmSACPolicy = _with_default_extractor(SACCnnPolicy, "TimmSACPolicy", "SAC", TimmExtractor)
TimmTD3Policy = _with_default_extractor(TD3CnnPolicy, "TimmTD3Policy", "TD3, DDPG", TimmExtractor)
TimmTQCPolicy = _with_default_extractor(TQCCnnPolicy, "TimmTQCPolicy", "TQC", TimmExtractor)

# The from-scratch baseline with the same training-batch augmentation: SB3's NatureCNN + ``augment``.
NatureCNNActorCriticPolicy = _with_default_extractor(
    ActorCriticCnnPolicy, "NatureCNNActorCriticPolicy", "PPO, A2C, TRPO", AugmentedNatureCNN
)
NatureCNNDQNPolicy = _with_default_extractor(DQNCnnPolicy, "NatureCNNDQNPolicy", "DQN", AugmentedNatureCNN)
NatureCNNQRDQNPolicy = _with_default_extractor(QRDQNCnnPolicy, "NatureCNNQRDQNPolicy", "QR-DQN", AugmentedNatureCNN)
NatureCNNSACPolicy = _with_default_extractor(SACCnnPolicy, "NatureCNNSACPolicy", "SAC", AugmentedNatureCNN)

# The fast path with stored feature maps: the algorithm's MlpPolicy with the spatial head over the maps.
FeatureMapActorCriticPolicy = _with_default_extractor(
    ActorCriticPolicy, "FeatureMapActorCriticPolicy", "PPO, A2C, TRPO", FeatureMapExtractor
)
FeatureMapDQNPolicy = _with_default_extractor(DQNPolicy, "FeatureMapDQNPolicy", "DQN", FeatureMapExtractor)
FeatureMapQRDQNPolicy = _with_default_extractor(QRDQNPolicy, "FeatureMapQRDQNPolicy", "QR-DQN", FeatureMapExtractor)
FeatureMapSACPolicy = _with_default_extractor(SACPolicy, "FeatureMapSACPolicy", "SAC", FeatureMapExtractor)

__all__ = [
    "FeatureMapActorCriticPolicy",
    "FeatureMapDQNPolicy",
    "FeatureMapQRDQNPolicy",
    "FeatureMapSACPolicy",
    "NatureCNNActorCriticPolicy",
    "NatureCNNDQNPolicy",
    "NatureCNNQRDQNPolicy",
    "NatureCNNSACPolicy",
    "TimmActorCriticPolicy",
    "TimmDQNPolicy",
    "TimmMaskableActorCriticPolicy",
    "TimmMaskableMultiInputActorCriticPolicy",
    "TimmMultiInputActorCriticPolicy",
    "TimmQRDQNPolicy",
    "TimmRecurrentActorCriticPolicy",
    "TimmSACPolicy",
    "TimmTD3Policy",
    "TimmTQCPolicy",
]
