"""The training configs shipped with deeplense (``deeplense configs list`` / ``show NAME``); in a
checkout, ``configs/`` at the top of the repository is the same folder."""

from __future__ import annotations

from pathlib import Path

from deeplense.core.config import ConfigError

__all__ = ["CONFIG_DIR", "available", "describe", "path_of"]

CONFIG_DIR = Path(__file__).parent


def available() -> list[str]:
    """Names of the shipped configs (file names without ``.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def path_of(name: str) -> Path:
    """The file of a shipped config, by name (with or without ``.yaml``)."""
    stem = name.removesuffix(".yaml")
    if stem not in available():
        raise ConfigError("config", f"no shipped config {name!r}; available: {available()}")
    return CONFIG_DIR / f"{stem}.yaml"


def describe(name: str) -> str:
    """The first comment line of a shipped config."""
    for line in path_of(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
