"""Networks: our own (small CNN, D4-equivariant CNN) and every timm backbone, with task heads."""

from deeplense.models.heads import LensNet, build_network, channels_last
from deeplense.models.registry import MODELS, PretrainedWeightsWarning, create_backbone, list_models, load_weights

__all__ = [
    "MODELS",
    "LensNet",
    "channels_last",
    "build_network",
    "create_backbone",
    "list_models",
    "load_weights",
    "PretrainedWeightsWarning",
]
