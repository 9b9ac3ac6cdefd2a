"""Inputs of ``predict``: files, folders and globs -> a stream of :class:`Cutout` records, one file
(or one batch of a data set) in memory at a time.

Accepted: FITS (its one image HDU with data, the one ``hdu`` names, or with ``hdu="all"`` every
one; a file with several and no ``hdu`` is refused rather than read in part; a 2-D image, a cube of
single-band cutouts or of one cutout's bands, an ``(N, C, H, W)`` stack; bands as extensions when
there are as many image HDUs as the model has bands; one file per band when the names end in the
model's band names, e.g. ``obj7_g.fits obj7_r.fits obj7_i.fits``), ``.npy`` images and stacks,
PNG/JPEG, and data-set folders in any layout :func:`deeplense.data.readers.open_dataset` reads.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplense.core.contract import InputSpec
from deeplense.core.errors import DataFormatError
from deeplense.data.decoders import FITS, IMAGE_SUFFIXES, NPY, PNG, suffix_of
from deeplense.infer.conform import ImageFacts

__all__ = ["Cutout", "expand_inputs", "iter_cutouts", "header_facts"]

_DATASET_BATCH = 256


@dataclass
class Cutout:
    """One input image ``(C, H, W)`` with where it came from and what its header says."""

    image: np.ndarray
    source: str
    hdu: str
    index: int
    facts: ImageFacts
    ra: float = math.nan
    dec: float = math.nan
    seed: int | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.source, self.hdu, self.index)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders and globs -> the paths to read, in a stable order. A folder that is a data set
    stays one path; any other folder contributes its image files (recursively)."""
    from deeplense.data.layouts import detect

    paths: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches:
            raise DataFormatError(f"{item}: no file matches")
        for match in map(Path, matches):
            if not match.exists():
                raise DataFormatError(f"{match}: no such file or folder")
            if match.is_dir():
                try:
                    layout = detect(match)
                except DataFormatError:
                    layout = None
                if layout is not None and layout not in ("stacked_array", "fits_cube", "image_folder"):
                    paths.append(match)
                    continue
                found = sorted(
                    p for p in match.rglob("*") if p.is_file() and suffix_of(p.name) in IMAGE_SUFFIXES + (".fz",)
                )
                if not found:
                    raise DataFormatError(f"{match}: no FITS, .npy or PNG files and not a data set")
                paths.extend(found)
            else:
                paths.append(match)
    return list(dict.fromkeys(paths))


def header_facts(header: Mapping[str, Any], where: str) -> tuple[ImageFacts, float, float]:
    """Pixel scale (arcsec, from the WCS's CD/CDELT/PC or a PIXSCALE keyword), ``BUNIT``, and the
    RA/Dec (deg) of the image centre where the header has a celestial WCS."""
    scale: float | None = None
    ra = dec = math.nan
    naxis1, naxis2 = int(header.get("NAXIS1", 0) or 0), int(header.get("NAXIS2", 0) or 0)
    if any(k in header for k in ("CTYPE1", "CD1_1", "CDELT1")):
        import warnings

        from astropy.wcs import WCS, FITSFixedWarning
        from astropy.wcs.utils import proj_plane_pixel_scales

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(header, naxis=2)
            if wcs.has_celestial:
                sky = wcs if wcs.wcs.lng == 0 and wcs.wcs.lat == 1 else wcs.celestial  # one sub-WCS at most
                scales = proj_plane_pixel_scales(sky) * 3600.0
                if np.all(np.isfinite(scales)) and scales[0] > 0:
                    scale = float(np.sqrt(scales[0] * scales[1]))
                world = sky.pixel_to_world_values((naxis1 - 1) / 2.0, (naxis2 - 1) / 2.0)
                ra, dec = float(world[0]), float(world[1])
            elif "CDELT1" in header and str(header.get("CUNIT1", "")).strip().lower() == "arcsec":
                scale = abs(float(header["CDELT1"]))
        except (ValueError, TypeError, KeyError, MemoryError) as exc:
            raise DataFormatError(f"{where}: unreadable WCS ({exc}) (field: WCS)") from None
    if scale is None:
        for key in ("PIXSCALE", "PIXSCAL1", "PIXELSCL", "SECPIX"):
            if key in header:
                try:
                    scale = float(header[key])
                except (TypeError, ValueError):
                    raise DataFormatError(f"{where}: {key} = {header[key]!r} is not a number (field: {key})") from None
                break
    if scale is not None and not (0 < scale < 3600):
        raise DataFormatError(f"{where}: pixel scale {scale!r} arcsec is not positive and finite (field: CD/CDELT)")
    unit = header.get("BUNIT")
    return ImageFacts(where, scale, str(unit).strip() if unit not in (None, "") else None), ra, dec


def _planes(data: np.ndarray, in_chans: int, where: str) -> list[np.ndarray]:
    """An HDU's or array's data -> its ``(C, H, W)`` images."""
    if data.ndim == 2:
        return [data[None]]
    if data.ndim == 3:
        if in_chans == 1:
            return [plane[None] for plane in data]
        if data.shape[0] == in_chans:
            return [data]
        raise DataFormatError(
            f"{where}: a cube of {data.shape[0]} planes; the model reads {in_chans} band(s) (field: NAXIS3)"
        )
    if data.ndim == 4:
        return list(data)
    raise DataFormatError(f"{where}: {data.ndim}-D data; expected 2-D, (C, H, W) or (N, C, H, W) (field: NAXIS)")


def _fits_cutouts(path: Path, spec: InputSpec, hdu: str | None) -> Iterator[Cutout]:
    from deeplense.data.fits_files import read_fits_images

    try:
        hdus = read_fits_images(path, None if hdu == "all" else hdu)
    except ValueError as exc:
        raise DataFormatError(f"{path}: {exc}") from None
    if not hdus:
        raise DataFormatError(f"{path}: no image HDU with data (field: HDU)")
    bands = _in_band_order(hdus, spec) if hdu is None and len(hdus) == spec.in_chans > 1 else None
    if bands is not None and all(h.data.ndim == 2 for h in bands):
        hdus = bands  # bands as extensions
        facts, ra, dec = header_facts(hdus[0].header, f"{path}")
        yield Cutout(
            np.stack([h.data for h in hdus]),
            str(path),
            "+".join(h.name or str(h.number) for h in hdus),
            0,
            facts,
            ra,
            dec,
        )
        return
    if hdu is None and len(hdus) > 1:
        names = [h.name or str(h.number) for h in hdus]
        raise DataFormatError(
            f"{path}: {len(hdus)} image HDUs {names}; pass --hdu NAME or NUMBER to read one, or --hdu all to read "
            "each as cutouts (field: HDU)"
        )
    for item in hdus:
        label = item.name or str(item.number)
        where = f"{path}[{label}]"
        facts, ra, dec = header_facts(item.header, where)
        for i, plane in enumerate(_planes(item.data, spec.in_chans, where)):
            yield Cutout(plane, str(path), label, i, facts, ra, dec)


def _in_band_order(hdus: list, spec: InputSpec) -> list | None:
    """Image HDUs as the model's bands: named after them (any order), or, without EXTNAMEs, in
    file order; ``None`` when they are something else (SCI, ERR, DQ ...)."""
    names = [h.name.upper() for h in hdus]
    if spec.bands and sorted(names) == sorted(b.upper() for b in spec.bands):
        return [hdus[names.index(b.upper())] for b in spec.bands]
    return hdus if not any(names) else None


def _array_cutouts(path: Path, spec: InputSpec) -> Iterator[Cutout]:
    from deeplense.data.decoders import DECODERS
    from deeplense.data.safe_npy import load_npy, read_header

    suffix = suffix_of(path.name)
    facts = ImageFacts(str(path))
    try:
        if suffix in NPY and read_header(path).dtype != object:
            array = load_npy(path, mmap=True)
            for i, plane in enumerate(_planes(array, spec.in_chans, str(path))):
                yield Cutout(np.asarray(plane, np.float32), str(path), "", i, facts)
            return
        image = DECODERS[suffix](str(path)).image
    except ValueError as exc:
        raise DataFormatError(f"{path}: {exc}") from None
    if suffix in PNG and image.shape[0] == 3 and spec.in_chans == 1:
        image = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), image, axes=1)[None]
    yield Cutout(image, str(path), "", 0, facts)


def _dataset_cutouts(path: Path, spec: InputSpec) -> Iterator[Cutout]:
    from deeplense.data.readers import open_dataset

    source = open_dataset(path)
    image_info = (getattr(source, "manifest", None) or {}).get("image", {})
    units = image_info.get("pixel_units")
    facts = ImageFacts(str(path), image_info.get("pixel_scale_arcsec"), units[0] if units else None)
    meta = source.metadata
    files = meta["file"].astype(str).tolist() if "file" in meta else None
    seeds = meta["seed"].to_numpy() if "seed" in meta else None
    for lo in range(0, len(source), _DATASET_BATCH):
        rows = np.arange(lo, min(lo + _DATASET_BATCH, len(source)))
        for row, image in zip(rows, source.images(rows)):
            name = files[row] if files is not None else str(path)
            seed = int(seeds[row]) if seeds is not None else None
            index = int(row) if files is None else 0
            yield Cutout(
                image,
                name,
                "",
                index,
                ImageFacts(f"{name}" if files else f"{path}[{row}]", facts.pixel_scale_arcsec, facts.units),
                seed=seed,
            )


def _band_groups(paths: list[Path], spec: InputSpec) -> tuple[list[list[Path]], list[Path]]:
    """One-file-per-band FITS, grouped by name (``<stem>_<band>.fits``) in the model's band order."""
    if spec.in_chans == 1 or not spec.bands:
        return [], paths
    pattern = re.compile(r"^(.*)[_.-](" + "|".join(map(re.escape, spec.bands)) + r")$", re.IGNORECASE)
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    rest: list[Path] = []
    for p in paths:
        stem = p.name[: -len(suffix_of(p.name))] if suffix_of(p.name) in FITS else None
        match = pattern.match(stem) if stem else None
        if match is None:
            rest.append(p)
            continue
        band = next(b for b in spec.bands if b.lower() == match.group(2).lower())
        groups.setdefault((p.parent, match.group(1)), {})[band] = p
    complete = []
    for (parent, stem), members in groups.items():
        missing = [b for b in spec.bands if b not in members]
        if missing:
            raise DataFormatError(f"{parent / stem}: no file for band(s) {missing} (expected {stem}_<band>.fits)")
        complete.append([members[b] for b in spec.bands])
    return complete, rest


def iter_cutouts(paths: list[Path], spec: InputSpec, hdu: str | None = None) -> Iterator[tuple[int, Cutout]]:
    """``(file number, cutout)`` for every image of ``paths`` (see the module docstring)."""
    groups, singles = _band_groups(paths, spec)
    number = 0
    for group in groups:
        parts = [next(_fits_cutouts(p, InputSpec(1, spec.img_size), hdu)) for p in group]
        image = np.concatenate([c.image for c in parts])
        yield number, Cutout(image, str(group[0]), parts[0].hdu, 0, parts[0].facts, parts[0].ra, parts[0].dec)
        number += 1
    for path in singles:
        suffix = suffix_of(path.name)
        if path.is_dir():
            produced = _dataset_cutouts(path, spec)
        elif suffix in FITS or path.name.lower().endswith(".fz"):
            produced = _fits_cutouts(path, spec, hdu)
        elif suffix in NPY + PNG:
            produced = _array_cutouts(path, spec)
        else:
            raise DataFormatError(f"{path}: not an input predict reads (FITS, .npy, PNG/JPEG or a data-set folder)")
        for cutout in produced:
            yield number, cutout
        number += 1
