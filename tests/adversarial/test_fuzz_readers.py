"""Seeded fuzzing of the readers: valid files of every format, truncated, bit-flipped, spliced
and resized. Each mutant must open (and read) fine, or fail with the library's own error naming
the file; no other exception, no hang."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deeplense import open_dataset

MUTANTS_PER_FORMAT = 40


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    kind = rng.integers(5)
    raw = bytearray(data)
    if kind == 0:  # truncated
        return bytes(raw[: rng.integers(0, len(raw))])
    if kind == 1:  # bits flipped anywhere
        for _ in range(rng.integers(1, 16)):
            raw[rng.integers(len(raw))] ^= 1 << int(rng.integers(8))
        return bytes(raw)
    if kind == 2:  # bytes flipped in the header, where sizes and types live
        for _ in range(rng.integers(1, 6)):
            raw[rng.integers(min(len(raw), 512))] = int(rng.integers(256))
        return bytes(raw)
    if kind == 3:  # a block duplicated or removed
        a, b = sorted(rng.integers(0, len(raw), 2))
        return bytes(raw[:a] + raw[a:b] * int(rng.integers(0, 3)) + raw[b:])
    return bytes(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8))  # noise


def _valid_files(tmp: Path) -> dict[str, bytes]:
    from astropy.io import fits
    from PIL import Image

    rng = np.random.default_rng(7)
    image = rng.normal(size=(16, 16)).astype(np.float32)
    files = {}
    buffer = io.BytesIO()
    np.save(buffer, image)
    files[".npy"] = buffer.getvalue()
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, -23.5
    buffer = io.BytesIO()
    np.save(buffer, pair, allow_pickle=True)
    files["axion.npy"] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    files[".png"] = buffer.getvalue()
    buffer = io.BytesIO()
    fits.PrimaryHDU(image).writeto(buffer)
    files[".fits"] = buffer.getvalue()
    return files


@pytest.mark.parametrize("kind", [".npy", "axion.npy", ".png", ".fits"])
def test_mutated_image_files_open_or_fail_clearly(tmp_path, attack, kind):
    original = _valid_files(tmp_path)[kind]
    suffix = ".npy" if kind.endswith(".npy") else kind
    rng = np.random.default_rng([ord(c) for c in kind])
    for number in range(MUTANTS_PER_FORMAT):
        root = tmp_path / f"m{number}"
        for cls in ("cdm", "no_sub"):  # a second, valid class beside the mutant
            (root / cls).mkdir(parents=True)
        (root / "no_sub" / f"ok{suffix}").write_bytes(_valid_files(tmp_path)[kind])
        mutant = root / "cdm" / f"mutant{suffix}"
        mutant.write_bytes(_mutate(original, rng))
        attack.survives(lambda r=root: _read_all(open_dataset(r, check="full")), str(mutant))


def test_mutated_shards_and_manifests_open_or_fail_clearly(tiny_dataset, tmp_path, attack):
    rng = np.random.default_rng(11)
    shard = (tiny_dataset / "shards" / "shard-00000.h5").read_bytes()
    manifest = (tiny_dataset / "manifest.json").read_bytes()
    for number in range(MUTANTS_PER_FORMAT):
        data = tmp_path / f"d{number}"
        shutil.copytree(tiny_dataset, data)
        target = ("shards/shard-00000.h5", shard) if number % 2 else ("manifest.json", manifest)
        (data / target[0]).write_bytes(_mutate(target[1], rng))
        attack.survives(lambda d=data: _read_all(open_dataset(d, check="full")), str(data / target[0]))


def test_mutated_manifest_values_fail_clearly(tiny_dataset, tmp_path, attack):
    """Structured mutations: every field of the manifest replaced by values of the wrong kind."""
    rng = np.random.default_rng(12)
    original = json.loads((tiny_dataset / "manifest.json").read_text())
    fields = ["class_names", "split_names", "image", "columns", "n_images", "shards"]
    weird = [None, -1, 0, 10**12, "x", [], {}, [None], [[1]], {"shape": [1, -4, 2]}, 1.5, True]
    for number in range(MUTANTS_PER_FORMAT):
        data = tmp_path / f"v{number}"
        shutil.copytree(tiny_dataset, data)
        manifest = json.loads(json.dumps(original))
        manifest[fields[number % len(fields)]] = weird[int(rng.integers(len(weird)))]
        (data / "manifest.json").write_text(json.dumps(manifest))
        attack.survives(lambda d=data: _read_all(open_dataset(d)), str(data / "manifest.json"))


def _read_all(source) -> int:
    n = len(source)
    if n:
        source.images(np.arange(n))
    return n
