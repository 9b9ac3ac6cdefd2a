"""The built wheel holds everything the docs use: presets, training configs, pretrained weights
with their cards and manifest, and the type marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from deeplense.configs import available
from deeplense.models.hub import list_pretrained

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_configs_presets_and_pretrained_weights(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(ROOT),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    [wheel] = tmp_path.glob("deeplense-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "deeplense/py.typed" in names and "deeplense/sim/presets/lens_finding_hst.yaml" in names
    assert {f"deeplense/configs/{name}.yaml" for name in available()} <= names
    assert "deeplense/models/pretrained/MANIFEST.sha256" in names
    for name in list_pretrained():
        for file in ("config.json", "model.safetensors", "README.md"):
            assert f"deeplense/models/pretrained/{name}/{file}" in names
