"""Code or data from a file must never run or leak in: checkpoints, .npy pickles, HDF5 shards,
manifests, YAML and FITS headers made by somebody else."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from deeplense import open_dataset
from deeplense.core.errors import DataFormatError
from deeplense.data.safe_npy import load_npy


class _Payload:
    """Unpickling this creates ``path`` (builtins.open): the sign that a file ran code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _tamper(checkpoint: Path, marker: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["callbacks"] = {"evil": _Payload(marker)}
    torch.save(state, checkpoint)


def _run_copy(run: Path, tmp: Path) -> Path:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("tampered", ["best.ckpt", "last.ckpt"])
def test_a_tampered_checkpoint_cannot_run_code_on_resume_even_when_torch_is_told_to_trust_it(
    tiny_runs, attack, tampered
):
    """last.ckpt is read when the run resumes, best.ckpt by the test of the best weights that
    ends it (the run has all its epochs, so no new best replaces the tampered one)."""
    run = _run_copy(tiny_runs["cls"], attack.tmp)
    _tamper(run / "checkpoints" / tampered, attack.marker)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    result = attack.cli("train", "--resume", run, env=env, match=rf"{tampered}: not a readable checkpoint")
    assert "weights_only=False" not in result.stderr  # no advice to turn the protection off


def test_a_tampered_checkpoint_cannot_run_code_in_evaluate(tiny_runs, attack):
    run = _run_copy(tiny_runs["cls"], attack.tmp)
    _tamper(run / "checkpoints" / "best.ckpt", attack.marker)
    attack.cli("evaluate", run, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, match=r"best\.ckpt: not a readable")


def _object_npy(path: Path, payload: bytes) -> Path:
    """A .npy file declaring an object array whose pickle is ``payload``."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (2,)})
        f.write(payload)
    return path


class _Call:
    def __init__(self, target, args):
        self.target, self.args = target, args

    def __reduce__(self):
        return (self.target, self.args)


def test_npy_pickle_calling_ndarray_cannot_allocate_uninitialised_images(attack):
    path = _object_npy(attack.tmp / "big.npy", pickle.dumps(_Call(np.ndarray, ((10000, 10000),)), protocol=2))
    attack.api(lambda: load_npy(path), error=DataFormatError, match=r"big\.npy: .*ndarray directly")


def test_npy_pickle_rebuilding_a_large_array_without_data_is_refused(attack):
    from numpy._core.multiarray import _reconstruct

    payload = pickle.dumps(_Call(_reconstruct, (np.ndarray, (10000, 10000), b"b")), protocol=2)
    path = _object_npy(attack.tmp / "rebuild.npy", payload)
    attack.api(lambda: load_npy(path), error=DataFormatError, match=r"rebuild\.npy: .*without its data")


def test_npy_pickle_that_never_fills_its_array_is_refused(attack):
    """[image, value] where the image is numpy's empty rebuild with no data set on it."""
    from numpy._core.multiarray import _reconstruct

    outer = np.empty(2, dtype=object)
    outer[0], outer[1] = _Call(_reconstruct, (np.ndarray, (0,), b"b")), 1.5
    path = attack.tmp / "unfilled.npy"
    np.save(path, outer, allow_pickle=True)
    attack.api(lambda: load_npy(path), error=DataFormatError, match=r"unfilled\.npy: .*never fills it")


def test_hdf5_external_link_to_another_file_is_refused(tiny_dataset, attack):
    data = attack.copy(tiny_dataset)
    with h5py.File(data / "shards" / "shard-00000.h5", "a") as f:
        f["params/leak"] = h5py.ExternalLink("/etc/passwd", "/")
    attack.refused_to_open(data, r"shard-00000\.h5: /params/leak is a link")


def test_hdf5_external_storage_reading_the_password_file_is_refused(tiny_dataset, attack):
    data = attack.copy(tiny_dataset)
    shard = data / "shards" / "shard-00000.h5"
    with h5py.File(shard, "a") as f:
        n = f["images"].shape[0]
        del f["label"]
        f.create_dataset("label", shape=(n,), dtype="int16", external=[("/etc/passwd", 0, 2 * n)])
    attack.refused_to_open(data, r"shard-00000\.h5: /label stores its data in other files")


def test_manifest_shard_paths_outside_the_data_set_are_refused(tiny_dataset, attack):
    data = attack.copy(tiny_dataset)
    outside = attack.tmp / "outside.h5"
    shutil.copy(data / "shards" / "shard-00000.h5", outside)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../outside.h5"
    (data / "manifest.json").write_text(json.dumps(manifest))
    attack.refused_to_open(data, r"manifest\.json: field 'shards\[0\]\.file': '\.\./outside\.h5' is outside")


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, attack):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefgh", "abcdefg"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\ntask: classification\n")
    attack.cli("train", bomb, match=r"bomb\.yaml: the YAML's aliases expand to more than")
    assert not (tmp_path / "runs").exists()
    attack.cli("simulate", "--config", bomb, "--out", tmp_path / "out", "--n-per-class", 1, match=r"aliases expand")


def test_fits_header_declaring_a_huge_image_is_refused_before_allocation(attack):
    from astropy.io import fits

    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 2
    header["NAXIS1"], header["NAXIS2"] = 100000, 100000
    path = attack.tmp / "huge.fits"
    path.write_bytes(header.tostring().encode() + bytes(2880))
    attack.api(lambda: open_dataset(path), error=DataFormatError, match=r"huge\.fits: HDU 0 declares 40000000000 bytes")
