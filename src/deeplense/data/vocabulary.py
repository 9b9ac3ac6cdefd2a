"""Canonical class names for the folder names in circulation, and split-name aliases."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["canonical_class", "class_order", "canonical_split", "SPLIT_ALIASES"]

_CLASS_ALIASES = {
    "no_sub": ("no", "no_sub", "nosub", "no_substructure", "none", "nosubstructure"),
    "cdm": ("cdm", "sphere", "spheres", "spherical", "sub", "subhalo", "subhalos"),
    "axion": ("axion", "axions", "vort", "vortex", "vortices"),
    "wdm": ("wdm",),
    "sidm": ("sidm",),
    "nonlens": ("nonlens", "nonlenses", "non_lens", "non_lenses", "non-lens", "non-lenses", "negatives"),
    "lens": ("lens", "lenses", "positives"),
}
_LOOKUP = {alias: name for name, aliases in _CLASS_ALIASES.items() for alias in aliases}
_ORDER = list(_CLASS_ALIASES)

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def canonical_class(name: str) -> str:
    """``'vort' -> 'axion'``, ``'sphere' -> 'cdm'``, ``'no' -> 'no_sub'``; unknown names lower-cased."""
    key = name.strip().lower()
    return _LOOKUP.get(key, key)


def class_order(names: Iterable[str]) -> list[str]:
    """Canonical names in a stable order: the DeepLense order first (no_sub, cdm, axion, ...,
    nonlens, lens, so that 'lens' is the positive class 1 of a binary set), others sorted."""
    names = set(names)
    known = [n for n in _ORDER if n in names]
    return known + sorted(names - set(known))


def canonical_split(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.strip().lower())
