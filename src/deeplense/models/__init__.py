"""Networks: our own (small CNN, D4-equivariant CNN) and every timm backbone, and the heads tasks
put on them."""

from deeplense.models.heads import HEADS, GaussianHead, LinearHead, Network, build_network, channels_last
from deeplense.models.registry import MODELS, PretrainedWeightsWarning, create_backbone, list_models, load_weights

__all__ = [
    "MODELS",
    "HEADS",
    "Network",
    "LinearHead",
    "GaussianHead",
    "channels_last",
    "build_network",
    "create_backbone",
    "list_models",
    "load_weights",
    "PretrainedWeightsWarning",
]
