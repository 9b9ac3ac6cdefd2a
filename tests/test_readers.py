"""Readers for every DeepLense layout, the restricted unpickler, and bad files."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from deeplense import open_dataset
from deeplense.data.base import DataFormatError
from deeplense.data.readers import detect_layout
from deeplense.data.safe_npy import UnsafeFileError, load_npy
from deeplense.data.splits import save_split
from layouts import gsoc, lens_finding, model_i, save_object_pair


def test_model_i_class_folders_with_object_arrays(tmp_path):
    truth = model_i(tmp_path / "Model_I")
    ds = open_dataset(tmp_path / "Model_I")
    assert ds.layout == "class_folders"
    assert ds.class_names == ["no_sub", "cdm", "axion"]
    assert len(ds) == 12
    meta = ds.metadata
    axion = meta[meta["class_name"] == "axion"].sort_values("file")
    np.testing.assert_allclose(axion["value"].to_numpy(), truth["m_a"])
    np.testing.assert_allclose(axion["substructure.log10_m_a"].to_numpy(), np.log10(truth["m_a"]))
    assert meta.loc[meta["class_name"] == "cdm", "value"].isna().all()
    image, label, params = ds[int(axion.index[0])]
    assert image.shape == (1, 16, 16) and image.dtype.is_floating_point and label == 2
    assert params["value"] == pytest.approx(truth["m_a"][0])
    stored = np.load(axion["file"].iloc[0], allow_pickle=True)[0]
    np.testing.assert_array_equal(image[0].numpy(), stored.astype(np.float32))


def test_gsoc_split_folders_map_to_canonical_classes(tmp_path):
    gsoc(tmp_path)
    ds = open_dataset(tmp_path)
    assert ds.layout == "split_class_folders"
    assert ds.class_names == ["no_sub", "cdm", "axion"]
    assert ds.original_class_names == ["no", "sphere", "vort"]
    assert sorted(set(ds.splits)) == ["train", "val"]
    val = open_dataset(tmp_path, split="val")
    assert len(val) == 9 and set(val.metadata["split"]) == {"val"}
    assert set(val.metadata["original_class"]) == {"no", "sphere", "vort"}


def test_lens_finding_prefixed_folders_three_bands(tmp_path):
    lens_finding(tmp_path)
    ds = open_dataset(tmp_path)
    assert ds.layout == "split_prefixed_folders"
    assert ds.class_names == ["nonlens", "lens"]
    assert ds.image_shape == (3, 16, 16)
    counts = ds.metadata.groupby(["split", "class_name"]).size().to_dict()
    assert counts == {("test", "lens"): 2, ("test", "nonlens"): 6, ("train", "lens"): 2, ("train", "nonlens"): 6}


def test_per_file_variants_decode_to_the_same_image(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.random((16, 16))
    variants = {
        "plain": image,
        "flat": image.reshape(-1),
        "row_vector": image.reshape(1, -1),
        "column_vector": image.reshape(-1, 1),
        "flat_with_label": np.append(image.reshape(-1), 2.0),
        "label_row": np.vstack([image, np.full((1, 16), 2.0)]),
        "channel_first": image[None],
    }
    for name, array in variants.items():
        (tmp_path / "cdm").mkdir(exist_ok=True)
        np.save(tmp_path / "cdm" / f"{name}.npy", array)
    ds = open_dataset(tmp_path)
    assert len(ds) == len(variants) and not ds.bad_files
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.image(i)[0], image.astype(np.float32))
    labelled = ds.metadata.dropna(subset=["stored_label"])
    assert sorted(labelled["file"].map(lambda f: f.rsplit("/", 1)[1])) == ["flat_with_label.npy", "label_row.npy"]
    assert (labelled["stored_label"] == 2.0).all()


def test_stacked_array_with_labels_and_int16_memmap_with_targets(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.random((10, 1, 16, 16)).astype(np.float32)
    labels = (np.arange(10) % 3).reshape(-1, 1)
    np.save(tmp_path / "images_train.npy", images)
    np.save(tmp_path / "labels_train.npy", labels)
    ds = open_dataset(tmp_path / "images_train.npy")
    assert ds.layout == "stacked_array" and len(ds) == 10
    assert ds.labels.tolist() == labels[:, 0].tolist()
    np.testing.assert_array_equal(ds.images([7, 2, 7]), images[[7, 2, 7]])

    memmap = np.lib.format.open_memmap(tmp_path / "images_mmep_0.npy", mode="w+", dtype=np.int16, shape=(6, 16, 16))
    memmap[:] = rng.integers(0, 3000, (6, 16, 16))
    memmap.flush()
    masses = rng.uniform(1e9, 1e10, 6)
    np.save(tmp_path / "masses_mmep_0.npy", masses)
    ds = open_dataset(tmp_path / "images_mmep_0.npy")
    assert ds.image_shape == (1, 16, 16) and ds.image(3).dtype == np.float32
    np.testing.assert_array_equal(ds.image(3)[0], memmap[3].astype(np.float32))
    np.testing.assert_allclose(ds.metadata["masses"], masses)
    assert ds[2][2]["masses"] == pytest.approx(masses[2])


def test_fits_cube_with_label_table_and_fits_and_png_folders(tmp_path):
    rng = np.random.default_rng(5)
    cube = rng.random((5, 16, 16)).astype(np.float32)
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="label", format="K", array=np.array([0, 1, 1, 0, 1])),
            fits.Column(name="z_lens", format="D", array=np.linspace(0.2, 0.6, 5)),
        ]
    )
    fits.HDUList([fits.PrimaryHDU(cube), table]).writeto(tmp_path / "cube.fits")
    ds = open_dataset(tmp_path / "cube.fits")
    assert ds.layout == "fits_cube" and ds.labels.tolist() == [0, 1, 1, 0, 1]
    np.testing.assert_array_equal(ds.image(4)[0], cube[4])
    assert ds[1][2]["z_lens"] == pytest.approx(0.3)

    for cls in ("lens", "nonlens"):
        (tmp_path / "fitsdir" / cls).mkdir(parents=True)
        (tmp_path / "pngdir" / cls).mkdir(parents=True)
        for i in range(2):
            fits.PrimaryHDU(cube[i]).writeto(tmp_path / "fitsdir" / cls / f"{i}.fits")
            Image.fromarray((cube[i] * 255).astype(np.uint8)).save(tmp_path / "pngdir" / cls / f"{i}.png")
    ds = open_dataset(tmp_path / "fitsdir")
    assert ds.class_names == ["nonlens", "lens"] and len(ds) == 4
    np.testing.assert_array_equal(ds.image(0)[0], cube[0])
    ds = open_dataset(tmp_path / "pngdir")
    np.testing.assert_allclose(ds.image(0)[0], (cube[0] * 255).astype(np.uint8) / 255.0, atol=1e-7)


class _RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.target)],))


def test_crafted_npy_cannot_run_code(tmp_path):
    target = tmp_path / "pwned"
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = np.zeros((4, 4)), _RunsCode(target)
    path = tmp_path / "axion" / "evil.npy"
    path.parent.mkdir()
    np.save(path, pair, allow_pickle=True)
    with pytest.raises(UnsafeFileError, match="subprocess.call"):
        load_npy(path)
    assert not target.exists()
    with pytest.raises(DataFormatError, match="evil.npy: refused to unpickle"):
        open_dataset(tmp_path)
    assert not target.exists()
    # the same payload through plain np.load does run (the threat is real)
    subprocess.run([sys.executable, "-c", f"import numpy as np; np.load({str(path)!r}, allow_pickle=True)"], check=True)
    assert target.exists()


def test_object_arrays_of_old_pickle_protocols_still_load(tmp_path):
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = np.arange(16.0).reshape(4, 4), 3e-23
    path = tmp_path / "old.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (2,)})
        pickle.dump(pair, f, protocol=2)
    loaded = load_npy(path)
    np.testing.assert_array_equal(loaded[0], pair[0])
    assert loaded[1] == 3e-23


def _bad_folder(root):
    rng = np.random.default_rng(6)
    for cls in ("cdm", "no_sub"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            np.save(root / cls / f"good_{i}.npy", rng.random((16, 16)))
    np.save(root / "cdm" / "nan.npy", np.full((16, 16), np.nan))
    np.save(root / "cdm" / "wrong_shape.npy", rng.random((8, 8)))
    (root / "cdm" / "empty.npy").write_bytes(b"")
    (root / "cdm" / "garbage.npy").write_bytes(b"this is not numpy")
    full = rng.random((16, 16))
    np.save(root / "no_sub" / "truncated.npy", full)
    data = (root / "no_sub" / "truncated.npy").read_bytes()
    (root / "no_sub" / "truncated.npy").write_bytes(data[: len(data) // 2])
    save_object_pair(root / "no_sub" / "bad_pair.npy", rng.random((16, 16)), float("nan"))


def test_bad_files_are_named_or_skipped(tmp_path):
    _bad_folder(tmp_path)
    with pytest.raises(DataFormatError) as err:
        open_dataset(tmp_path, check="full")
    message = str(err.value)
    for name, reason in [
        ("nan.npy", "NaN/Inf"),
        ("wrong_shape.npy", "differs"),
        ("empty.npy", "not a .npy"),
        ("garbage.npy", "not a .npy"),
        ("truncated.npy", "truncated"),
    ]:
        assert any(name in line and reason in line for line in message.splitlines()), (name, message)
    assert "--on-bad-file skip" in message
    ds = open_dataset(tmp_path, check="full", on_bad_file="skip")
    assert len(ds) == 7 and len(ds.bad_files) == 5
    assert all(np.isfinite(ds.image(i)).all() for i in range(len(ds)))


def test_header_check_catches_truncation_without_reading_data(tmp_path):
    _bad_folder(tmp_path)
    ds = open_dataset(tmp_path, on_bad_file="skip")
    bad = {b.path.rsplit("/", 1)[1] for b in ds.bad_files}
    assert {"truncated.npy", "empty.npy", "garbage.npy", "wrong_shape.npy"} <= bad
    assert "nan.npy" not in bad  # found only by check='full'


def test_seeded_stratified_split_is_reproducible_and_reusable(tmp_path):
    model_i(tmp_path / "Model_I", n=20)
    a = open_dataset(tmp_path / "Model_I", split="train", split_seed=3)
    b = open_dataset(tmp_path / "Model_I", split="train", split_seed=3)
    c = open_dataset(tmp_path / "Model_I", split="train", split_seed=4)
    assert a.metadata["file"].tolist() == b.metadata["file"].tolist() != c.metadata["file"].tolist()
    assert a.metadata["class_name"].value_counts().to_dict() == {"no_sub": 16, "cdm": 16, "axion": 16}
    full = open_dataset(tmp_path / "Model_I", split=None)
    from deeplense.data.splits import assign_splits

    assign_splits(full, seed=3)
    save_split(full, tmp_path / "split.csv")
    again = open_dataset(tmp_path / "Model_I", split="test", split_file=tmp_path / "split.csv")
    assert set(again.metadata["file"]) == set(full.metadata.loc[full.metadata["split"] == "test", "file"])


def test_detect_layout_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty: no image files"):
        detect_layout(tmp_path / "empty")
    model_i(tmp_path / "many" / "Model_I")
    model_i(tmp_path / "many" / "Model_II")
    with pytest.raises(DataFormatError, match=r"open one of \['Model_I', 'Model_II'\]"):
        detect_layout(tmp_path / "many")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        detect_layout(tmp_path / "nowhere")
