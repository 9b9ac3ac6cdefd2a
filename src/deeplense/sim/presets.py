"""Named simulation presets shipped as YAML files in ``deeplense/sim/presets``."""

from __future__ import annotations

from importlib import resources
from typing import Any

from deeplense.core.config import ConfigError, parse_yaml

__all__ = ["list_presets", "load_preset"]


def _files():
    return resources.files("deeplense.sim") / "presets"


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in _files().iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw config of preset ``name`` (a fresh dict each call)."""
    if name not in list_presets():
        raise ConfigError("preset", f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return parse_yaml((_files() / f"{name}.yaml").read_text())
