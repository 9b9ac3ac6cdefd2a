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


#: Most values a YAML document may expand to through anchors and aliases (a 554-byte "billion
#: laughs" document otherwise expands to hundreds of megabytes).
MAX_YAML_VALUES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int], visiting: set[int]) -> int:
    """Values ``node`` stands for with every alias expanded (memoised per node)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in visiting:
        raise ConfigError("", "the YAML refers to itself through an alias (a recursive anchor); refused")
    visiting.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, visiting) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, visiting) + _expanded_size(v, memo, visiting) for k, v in node.value)
    visiting.discard(key)
    memo[key] = size
    if size > MAX_YAML_VALUES:
        raise ConfigError("", f"the YAML's aliases expand to more than {MAX_YAML_VALUES} values; refused")
    return size


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``3e-4``); documents whose anchors and aliases
    expand beyond :data:`MAX_YAML_VALUES` values are refused before they are built."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


__all__ = ["ConfigError", "load_yaml", "dump_yaml", "apply_overrides", "check_keys", "whole_number", "parse_yaml"]


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
    except IsADirectoryError:
        raise ConfigError("", f"{path}: a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError("", f"{path}: {exc.message}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping at the top level")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def _parse_value(text: str, key: str) -> Any:
    try:
        return parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(key, f"the value {text!r} is not valid YAML ({reason}); quote it") from None


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
                node[key] = _parse_value(text, dotted.strip())
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


def whole_number(value: Any, where: str) -> int:
    """``value`` as an int when it is a whole number (``64``, ``64.0``); anything else (``31.5``,
    ``"64"``, ``true``) is a :class:`ConfigError` naming ``where``, never silently truncated."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(where, f"expected a whole number, got {value!r}")
    return int(value)
