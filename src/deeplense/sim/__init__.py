"""Batched, validated strong-lensing simulator (torch engine, lenstronomy conventions)."""

from deeplense.sim.presets import list_presets, load_preset
from deeplense.sim.simulator import ImageSample, Simulator

__all__ = ["Simulator", "ImageSample", "list_presets", "load_preset"]
