"""The model contract: everything needed to use a trained network, stored in every checkpoint and
beside it as ``contract.json``.

Version 1 (this module) is nested: ``task``, ``model`` (name, kwargs), ``input`` (bands, pixel
scale, image size, pixel units, the evaluation transforms with their fitted normalisation),
``output`` (class names, or regression targets with units and normalisation), ``training`` (what
the task's loss was built with) and ``provenance`` (package version, data). Version 0 is the flat
dictionary that checkpoints written before 2026-12-03 carry; :meth:`ModelContract.from_dict`
reads both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from deeplense.core.errors import DataFormatError

__all__ = ["CONTRACT_VERSION", "ModelContract", "ModelSpec", "InputSpec", "OutputSpec", "Provenance"]

CONTRACT_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """The network: a registered or timm backbone ``name`` with its ``kwargs``; ``pretrained``
    as configured, and ``init``: what the weights were before training (``random``, ``timm``,
    ``file:PATH``, or ``random (pretrained weights asked for, none available)``)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool | str = False
    init: str = "random"


@dataclass(frozen=True)
class InputSpec:
    """What images the network expects: ``in_chans`` bands of ``img_size`` pixels after the
    ``transforms`` (evaluation mode, fitted statistics included) are applied to raw pixels in
    ``pixel_units`` sampled at ``pixel_scale_arcsec`` (arcsec/pixel; ``None``: not recorded).
    ``domain``: the range of the training images' statistics after the transforms
    (:mod:`deeplense.data.domain`; ``None`` for models trained before it was recorded)."""

    in_chans: int
    img_size: int
    transforms: list[dict[str, Any]] = field(default_factory=list)
    bands: list[str] | None = None
    pixel_scale_arcsec: float | None = None
    pixel_units: list[str] | None = None
    raw_size: int | None = None
    domain: dict[str, Any] | None = None


@dataclass(frozen=True)
class OutputSpec:
    """What the network predicts: ``class_names`` (classification, anomaly detection) or
    ``targets`` with ``target_units`` and the normalisation ``target_mean``/``target_std``."""

    class_names: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    target_units: list[str] = field(default_factory=list)
    target_mean: list[float] = field(default_factory=list)
    target_std: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Provenance:
    """Where the model came from: package version, training data, class counts."""

    deeplense_version: str = "unknown"
    data: dict[str, Any] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ModelContract:
    """A trained model's task, network, input, output, training state and provenance."""

    task: str
    model: ModelSpec
    input: InputSpec
    output: OutputSpec
    provenance: Provenance = field(default_factory=Provenance)
    training: dict[str, Any] = field(default_factory=dict)
    version: int = CONTRACT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "contract") -> ModelContract:
        """Read a version 1 contract, or the flat version 0 of earlier checkpoints."""
        if not isinstance(data, dict):
            raise DataFormatError(f"{where}: expected a mapping, got {type(data).__name__}")
        version = data.get("version", 0)
        if version == 0:
            data = _from_version_0(data)
        elif version != CONTRACT_VERSION:
            raise DataFormatError(
                f"{where}: contract version {version} is newer than this deeplense reads ({CONTRACT_VERSION}); upgrade"
            )
        try:
            return cls(
                task=str(data["task"]),
                model=ModelSpec(**data["model"]),
                input=InputSpec(**data["input"]),
                output=OutputSpec(**data["output"]),
                provenance=Provenance(**data.get("provenance", {})),
                training=dict(data.get("training", {})),
                version=CONTRACT_VERSION,
            )
        except KeyError as exc:
            raise DataFormatError(f"{where}: missing field {exc}") from None
        except TypeError as exc:
            raise DataFormatError(f"{where}: {exc}") from None


def _from_version_0(flat: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "task": flat["task"],
            "model": {k: v for k, v in flat["model"].items() if k in ("name", "kwargs", "pretrained")},
            "input": {"in_chans": flat["in_chans"], "img_size": flat["img_size"], "transforms": flat["transforms"]},
            "output": {
                "class_names": flat.get("class_names") or [],
                "targets": flat.get("targets") or [],
                "target_units": flat.get("target_units") or [],
                "target_mean": flat.get("target_mean") or [],
                "target_std": flat.get("target_std") or [],
            },
            "provenance": {
                "deeplense_version": flat.get("deeplense_version", "unknown"),
                "data": flat.get("data") or {},
                "class_counts": flat.get("class_counts") or [],
            },
            "training": {"class_weights": flat.get("class_weights")},
        }
    except (KeyError, AttributeError) as exc:
        raise DataFormatError(f"contract (version 0): missing field {exc}") from None
