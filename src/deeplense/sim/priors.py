"""Parameter declarations and priors, written in YAML as plain values or one-key nodes.

YAML forms of a prior::

    0.25                                  # fixed
    {uniform: [-0.35, 0.35]}
    {log_uniform: [1.0e3, 3.16e3]}        # uniform in log10
    {normal: [0.0, 0.05]}                 # mean, sigma
    {truncated_normal: [0.0, 0.05, -0.2, 0.2]}
    {choice: [1, 2, 4]}                   # equal probabilities
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from deeplense.core.config import ConfigError
from deeplense.core.registry import Registry

__all__ = [
    "PRIORS",
    "Param",
    "Prior",
    "Fixed",
    "Uniform",
    "LogUniform",
    "Normal",
    "TruncatedNormal",
    "Choice",
    "parse_prior",
]

#: Priors by their YAML key (``{uniform: [lo, hi]}``); a plain number is :class:`Fixed`.
PRIORS: Registry[type[Prior]] = Registry("prior")


@dataclass(frozen=True)
class Param:
    """A declared physical parameter: name, unit, valid range and default."""

    name: str
    unit: str
    low: float
    high: float
    default: float | None
    doc: str = ""


class Prior:
    """A distribution of one scalar parameter. ``arity``: how many numbers its YAML node takes
    (``None``: one or more)."""

    arity: int | None = None

    @classmethod
    def build(cls, numbers: list[float], where: str, name: str) -> Prior:
        """The prior of a YAML node's numbers, checked."""
        return cls(*numbers)

    def sample(self, rng: np.random.Generator) -> float:
        raise NotImplementedError

    def support(self) -> tuple[float, float]:
        """Smallest interval holding every value the prior can produce."""
        raise NotImplementedError

    def to_yaml(self) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Fixed(Prior):
    value: float

    def sample(self, rng):
        return self.value

    def support(self):
        return (self.value, self.value)

    def to_yaml(self):
        return self.value


@PRIORS.register("uniform")
@dataclass(frozen=True)
class Uniform(Prior):
    arity = 2

    @classmethod
    def build(cls, numbers: list[float], where: str, name: str) -> Prior:
        if not numbers[0] < numbers[1]:
            raise ConfigError(where, f"{name} needs low < high, got {numbers}")
        return cls(*numbers)

    low: float
    high: float

    def sample(self, rng):
        return float(rng.uniform(self.low, self.high))

    def support(self):
        return (self.low, self.high)

    def to_yaml(self):
        return {"uniform": [self.low, self.high]}


@PRIORS.register("log_uniform")
@dataclass(frozen=True)
class LogUniform(Prior):
    arity = 2

    @classmethod
    def build(cls, numbers: list[float], where: str, name: str) -> Prior:
        if not numbers[0] < numbers[1]:
            raise ConfigError(where, f"{name} needs low < high, got {numbers}")
        if numbers[0] <= 0:
            raise ConfigError(where, f"log_uniform needs positive bounds, got {numbers}")
        return cls(*numbers)

    low: float
    high: float

    def sample(self, rng):
        return float(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))

    def support(self):
        return (self.low, self.high)

    def to_yaml(self):
        return {"log_uniform": [self.low, self.high]}


@PRIORS.register("normal")
@dataclass(frozen=True)
class Normal(Prior):
    arity = 2

    @classmethod
    def build(cls, numbers: list[float], where: str, name: str) -> Prior:
        if numbers[1] <= 0:
            raise ConfigError(where, f"{name} needs sigma > 0, got {numbers[1]}")
        return cls(*numbers)

    mean: float
    sigma: float

    def sample(self, rng):
        return float(rng.normal(self.mean, self.sigma))

    def support(self):
        return (-math.inf, math.inf)

    def to_yaml(self):
        return {"normal": [self.mean, self.sigma]}


@PRIORS.register("truncated_normal")
@dataclass(frozen=True)
class TruncatedNormal(Prior):
    arity = 4

    @classmethod
    def build(cls, numbers: list[float], where: str, name: str) -> Prior:
        if numbers[1] <= 0:
            raise ConfigError(where, f"{name} needs sigma > 0, got {numbers[1]}")
        if not numbers[2] < numbers[3]:
            raise ConfigError(where, f"truncated_normal needs low < high, got {numbers[2:]}")
        return cls(*numbers)

    mean: float
    sigma: float
    low: float
    high: float

    def sample(self, rng):
        lo = special.ndtr((self.low - self.mean) / self.sigma)
        hi = special.ndtr((self.high - self.mean) / self.sigma)
        return float(self.mean + self.sigma * special.ndtri(rng.uniform(lo, hi)))

    def support(self):
        return (self.low, self.high)

    def to_yaml(self):
        return {"truncated_normal": [self.mean, self.sigma, self.low, self.high]}


@PRIORS.register("choice")
@dataclass(frozen=True)
class Choice(Prior):
    arity = None

    @classmethod
    def build(cls, numbers: list[float], where: str, name: str) -> Prior:
        return cls(tuple(numbers))

    values: tuple[float, ...]

    def sample(self, rng):
        return self.values[int(rng.integers(len(self.values)))]

    def support(self):
        return (min(self.values), max(self.values))

    def to_yaml(self):
        return {"choice": list(self.values)}


def _number(value: Any, where: str) -> float:
    if isinstance(value, str):  # PyYAML reads 1.0e12 (no sign in the exponent) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(where, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(where, f"expected a finite number, got {value!r}")
    return float(value)


def parse_prior(node: Any, where: str) -> Prior:
    """Build a prior from its YAML node; ``where`` is the dotted config key for errors."""
    if isinstance(node, Prior):
        return node
    if not isinstance(node, dict):
        return Fixed(_number(node, where))
    if len(node) != 1:
        raise ConfigError(where, f"a prior node has exactly one key out of {PRIORS.names()}, got {sorted(node)}")
    ((name, args),) = node.items()
    if name not in PRIORS:
        raise ConfigError(where, f"unknown prior {name!r}; expected one of {PRIORS.names()}")
    cls = PRIORS.get(name)
    arity = cls.arity
    if not isinstance(args, (list, tuple)) or (arity is not None and len(args) != arity) or not args:
        raise ConfigError(where, f"{name} takes a list of {arity or 'one or more'} numbers, got {args!r}")
    return cls.build([_number(a, f"{where}.{name}[{i}]") for i, a in enumerate(args)], where, name)
