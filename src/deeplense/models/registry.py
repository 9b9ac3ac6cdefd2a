"""Model registry: our own networks by name, and every timm model by its timm name.

``create_backbone(name, in_chans, img_size, pretrained, **kwargs)`` returns a module mapping
``(B, C, H, W)`` to features ``(B, num_features)``; :class:`deeplense.models.heads.LensNet` puts a
classification or regression head on it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeplense.core.registry import Registry

__all__ = ["MODELS", "create_backbone", "list_models", "load_weights", "PretrainedWeightsWarning"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


class PretrainedWeightsWarning(UserWarning):
    """Pretrained weights were asked for and are not available: random initialisation is used."""


@MODELS.register("small_cnn")
def _small_cnn(in_chans: int = 1, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """Small CNN (4 conv blocks, ~0.1 M parameters): the fast default on a 2-core CPU."""
    from deeplense.models.small_cnn import SmallCNN

    return SmallCNN(in_chans=in_chans, **kwargs)


@MODELS.register("d4_cnn")
def _d4_cnn(in_chans: int = 1, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """D4-equivariant CNN (exact group convolutions; ``group: d2`` for the half-turn-and-mirrors
    subgroup), invariant features."""
    from deeplense.models.equivariant import D4CNN

    model = D4CNN(in_chans=in_chans, **kwargs)
    if img_size is not None and img_size % (2**model.n_pools):
        warnings.warn(
            f"d4_cnn: image size {img_size} is not divisible by {2**model.n_pools}; the invariance is approximate",
            stacklevel=2,
        )
    return model


def list_models(pattern: str | None = None) -> dict[str, list[str]]:
    """Our networks and timm's model names (optionally filtered by a wildcard ``pattern``)."""
    import timm

    ours = [n for n in MODELS.names() if pattern is None or __import__("fnmatch").fnmatch(n, pattern)]
    return {"deeplense": ours, "timm": timm.list_models(pattern or "*")}


def _timm_backbone(
    name: str, in_chans: int, img_size: int | None, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise KeyError(f"unknown model {name!r}: not one of ours ({', '.join(MODELS.names())}) nor a timm model")
    base = dict(num_classes=0, in_chans=in_chans, pretrained=pretrained, **kwargs)
    if img_size is not None and "img_size" not in kwargs:
        try:  # transformers need the image size; CNNs do not accept it
            return timm.create_model(name, img_size=img_size, **base)
        except TypeError:
            pass
    return timm.create_model(name, **base)


def create_backbone(
    name: str, *, in_chans: int = 1, img_size: int | None = None, pretrained: bool | str = False, **kwargs: Any
) -> nn.Module:
    """Feature extractor ``name`` with ``num_features``.

    ``pretrained``: ``False``; ``True`` (timm's weights, which need the network or a local cache:
    without them a :class:`PretrainedWeightsWarning` says so and the weights stay random); or a
    path to a local ``.safetensors``/``.pth`` file.
    """
    local = pretrained if isinstance(pretrained, str | Path) and str(pretrained) not in ("", "False") else None
    source = "random"  # what the weights are, recorded as `weights_source` on the module
    unavailable = "random (pretrained weights asked for, none available)"
    if name in MODELS:
        model = MODELS.create(name, in_chans=in_chans, img_size=img_size, **kwargs)
        if pretrained is True:
            warnings.warn(
                f"{name}: no published weights exist for this network; using random initialisation",
                PretrainedWeightsWarning,
                stacklevel=2,
            )
            source = unavailable
    else:
        want_hub = pretrained is True
        if want_hub:
            try:
                model = _timm_backbone(name, in_chans, img_size, True, kwargs)
                source = "timm"
            except Exception as exc:  # noqa: BLE001 - offline, not cached, or no weights for this name
                offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
                warnings.warn(
                    f"{name}: pretrained weights are not available{offline}: {type(exc).__name__}; using random "
                    "initialisation. Give a local weight file with model.pretrained=PATH.",
                    PretrainedWeightsWarning,
                    stacklevel=2,
                )
                model = _timm_backbone(name, in_chans, img_size, False, kwargs)
                source = unavailable
        else:
            model = _timm_backbone(name, in_chans, img_size, False, kwargs)
    if local is not None:
        load_weights(model, local)
    model.weights_source = f"file:{local}" if local is not None else source
    return model


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local state dict (safetensors, or a torch file read with ``weights_only=True``) into a
    backbone: prefixes ``model.``/``backbone.``/``module.`` are stripped, a first convolution with a
    different number of input bands is adapted (timm's ``adapt_input_conv``), classifier weights
    and other mismatches are skipped and reported."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    own = model.state_dict()
    loaded, skipped = {}, []
    for key, value in state.items():
        name = key
        for prefix in ("module.", "model.", "backbone."):
            name = name.removeprefix(prefix)
        if name not in own:
            skipped.append(key)
            continue
        if own[name].shape != value.shape:
            if (
                value.ndim == 4
                and own[name].ndim == 4
                and value.shape[0] == own[name].shape[0]
                and value.shape[2:] == own[name].shape[2:]
            ):
                from timm.models import adapt_input_conv

                value = adapt_input_conv(own[name].shape[1], value)
            else:
                skipped.append(key)
                continue
        loaded[name] = value
    if not loaded:
        raise ValueError(f"{path}: none of its {len(state)} tensors match the model")
    model.load_state_dict(loaded, strict=False)
    missing = [k for k in own if k not in loaded]
    if skipped or missing:
        warnings.warn(
            f"{path}: loaded {len(loaded)} tensors, skipped {len(skipped)}, {len(missing)} left at initialisation",
            stacklevel=2,
        )
    return {"loaded": list(loaded), "skipped": skipped, "missing": missing}
