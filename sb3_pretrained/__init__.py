"""Pretrained timm backbones for Stable-Baselines3: features extractors, fine-tuning callbacks, wrappers."""

from sb3_pretrained.backbones import Stage, backbone_stages, create_backbone
from sb3_pretrained.callbacks import GradualUnfreezing, LRWarmup
from sb3_pretrained.drac import ZOO_NAME as _DRAC_ZOO_NAME
from sb3_pretrained.drac import DrACPPO
from sb3_pretrained.encoder import BackboneEncoder
from sb3_pretrained.extractors import FeatureMapExtractor, TimmExtractor, TimmMultiInputExtractor
from sb3_pretrained.optim import grouped
from sb3_pretrained.sb3_internals import apply_fixes, register_zoo_algorithms
from sb3_pretrained.tensorboard import BackboneInputLogger
from sb3_pretrained.weights import PACKAGED_WEIGHTS, CheckpointMismatchError, WeightsNotFoundError
from sb3_pretrained.wrappers import BackboneImage, FrozenBackboneEmbedding

__version__ = "0.1.0"

apply_fixes()
register_zoo_algorithms({_DRAC_ZOO_NAME: (DrACPPO, "ppo")})

__all__ = [
    "PACKAGED_WEIGHTS",
    "BackboneEncoder",
    "BackboneImage",
    "BackboneInputLogger",
    "CheckpointMismatchError",
    "DrACPPO",
    "FeatureMapExtractor",
    "FrozenBackboneEmbedding",
    "GradualUnfreezing",
    "LRWarmup",
    "Stage",
    "TimmExtractor",
    "TimmMultiInputExtractor",
    "WeightsNotFoundError",
    "backbone_stages",
    "create_backbone",
    "grouped",
]
