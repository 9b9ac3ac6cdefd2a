"""Typed simulation components built from ``{kind: name, name: label, params: {...}}`` nodes.

A component declares its parameters as data (:class:`~deeplense.sim.priors.Param`); the
declarations drive config validation, prior sampling, metadata columns and the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from deeplense.core.config import ConfigError, check_keys, whole_number
from deeplense.sim.cosmology import LensingContext
from deeplense.sim.priors import Fixed, Param, Prior, parse_prior

__all__ = ["Column", "Component", "MassOrEinsteinRadius", "batch_params"]


@dataclass(frozen=True)
class Column:
    """One metadata column: every sampled scalar is stored under ``name`` with its unit."""

    name: str
    unit: str
    doc: str


class Component:
    """Base class: holds one prior per declared parameter and samples them per image."""

    kind: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: Extra non-sampled settings accepted under ``options`` (name -> default).
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, node: dict[str, Any], where: str, context: LensingContext):
        check_keys(node, {"kind", "name", "params", "options"}, where)
        self.name: str = str(node.get("name", self.kind))
        self.where = where
        self.context = context
        given = node.get("params") or {}
        check_keys(given, {p.name for p in self.params}, f"{where}.params")
        self.priors: dict[str, Prior] = {}
        for param in self.params:
            key = f"{where}.params.{param.name}"
            if param.name in given:
                prior = parse_prior(given[param.name], key)
            elif param.default is not None:
                prior = Fixed(param.default)
            else:
                continue
            lo, hi = prior.support()
            if lo < param.low or hi > param.high:
                raise ConfigError(
                    key, f"values must lie in [{param.low}, {param.high}] {param.unit}, prior spans [{lo}, {hi}]"
                )
            self.priors[param.name] = prior
        opts = dict(node.get("options") or {})
        check_keys(opts, set(self.options), f"{where}.options")
        for name, value in opts.items():
            default = self.options[name]
            if isinstance(default, int) and not isinstance(default, bool):  # counts are whole numbers
                whole_number(value, f"{where}.options.{name}")
        self.settings = {**self.options, **opts}
        self.validate()

    #: Two parameters of which exactly one must be given (e.g. amp or magnitude), or None.
    alternatives: ClassVar[tuple[str, str] | None] = None

    def validate(self) -> None:
        """Check combinations of parameters: exactly one of ``alternatives``, every other declared
        parameter given (by the config or its default)."""
        optional = self.alternatives or ()
        if optional and (optional[0] in self.priors) == (optional[1] in self.priors):
            raise ConfigError(f"{self.where}.params", f"give exactly one of {optional[0]} or {optional[1]}")
        for param in self.params:
            if param.name not in optional and param.name not in self.priors:
                raise ConfigError(f"{self.where}.params.{param.name}", "required parameter is missing")

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """One value per configured parameter, in declaration order (so streams are stable)."""
        return {name: prior.sample(rng) for name, prior in self.priors.items()}

    def columns(self) -> list[Column]:
        """The configured parameters (the ones ``sample`` returns), with units."""
        return [Column(f"{self.name}.{p.name}", p.unit, p.doc) for p in self.params if p.name in self.priors]

    def to_yaml(self) -> dict[str, Any]:
        node: dict[str, Any] = {"kind": self.kind, "name": self.name}
        node["params"] = {k: v.to_yaml() for k, v in self.priors.items()}
        if self.options:
            node["options"] = dict(self.settings)
        return node


class MassOrEinsteinRadius(Component):
    """Mixin for profiles normalised by ``theta_E`` (arcsec) or, alternatively, ``mass`` (M_sun).

    With ``mass`` given, ``theta_E`` follows from the context's cosmology and distance convention.
    """

    alternatives = ("theta_E", "mass")

    def columns(self):
        return [Column(f"{self.name}.{p.name}", p.unit, p.doc) for p in self.params]

    def sample(self, rng):
        values = super().sample(rng)
        if "mass" in values:
            values["theta_E"] = float(self.context.theta_E(values["mass"]))
        else:
            values["mass"] = float(self.context.mass(values["theta_E"]))
        return values


def batch_params(
    rows: list[dict[str, float]], names: list[str], dtype: torch.dtype, device: torch.device | str
) -> dict[str, torch.Tensor]:
    """Stack per-image parameter dicts into ``(B, 1)`` tensors."""
    table = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
    tensor = torch.as_tensor(table, dtype=dtype, device=device)
    return {n: tensor[:, i : i + 1] for i, n in enumerate(names)}
