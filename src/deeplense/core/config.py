"""Config files: YAML loading, dotted ``--set`` overrides and errors that name the key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads ``3e-4`` and ``1E6`` as floats (YAML 1.2 does)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``3e-4``)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


__all__ = ["ConfigError", "load_yaml", "dump_yaml", "apply_overrides", "check_keys"]


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with the file name in any error."""
    path = Path(path)
    try:
        data = parse_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping at the top level")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def _parse_value(text: str) -> Any:
    return parse_yaml(text) if text.strip() else ""


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``key.sub=value`` overrides applied (values are YAML).

    Lists are indexed by position: ``lens.0.params.e1=0.2``. A key that does not exist is an
    error, so a typo cannot silently add a setting.
    """
    result = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override has the form key.sub=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        node: Any = result
        for depth, part in enumerate(parts):
            here = ".".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(here, f"no list entry {part!r}")
                key: Any = int(part)
            elif isinstance(node, dict):
                if part not in node:
                    raise ConfigError(here, f"unknown key; known keys: {sorted(node)}")
                key = part
            else:
                raise ConfigError(here, "cannot set a key below a plain value")
            if last:
                node[key] = _parse_value(text)
            else:
                node = node[key]
    return result


def check_keys(node: dict[str, Any], allowed: set[str] | dict[str, Any], where: str) -> None:
    """Raise naming the first key of ``node`` that is not in ``allowed``."""
    if not isinstance(node, dict):
        raise ConfigError(where, f"expected a mapping, got {type(node).__name__}")
    for key in node:
        if key not in allowed:
            prefix = f"{where}.{key}" if where else str(key)
            raise ConfigError(prefix, f"unknown key; expected one of {sorted(allowed)}")
