"""Pretrained weights shipped inside the package: the one module that reads and writes them.

One folder per model under ``deeplense/models/pretrained/`` in the offline layout of timm and the
Hugging Face hub: ``config.json`` (architecture, its arguments, label names, the full model
contract with the image contract, the task's training state, and the card's check numbers),
``model.safetensors`` (tensors only: loading runs no code) and ``README.md`` (the model card).
``MANIFEST.sha256`` lists the sha256 of every file; :func:`read_pretrained` refuses a file whose
hash differs (corrupted or edited after packaging).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from deeplense.core.errors import DataFormatError

__all__ = [
    "PRETRAINED_DIR",
    "MANIFEST",
    "Pretrained",
    "list_pretrained",
    "read_pretrained",
    "write_pretrained",
    "sha256_of",
]

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
MANIFEST = "MANIFEST.sha256"
FILES = ("config.json", "model.safetensors", "README.md")


@dataclass(frozen=True)
class Pretrained:
    """A shipped model: ``name``, its folder, its ``config.json`` and its weights' sha256."""

    name: str
    folder: Path
    config: dict[str, Any]
    sha256: str

    @property
    def summary(self) -> str:
        return str(self.config.get("summary", ""))


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(root: Path) -> dict[str, str]:
    path = root / MANIFEST
    if not path.exists():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            entries[name] = digest
    return entries


def list_pretrained(root: Path = PRETRAINED_DIR) -> list[str]:
    """Names of the shipped models (folders listed in the manifest)."""
    return sorted({name.split("/")[0] for name in _manifest(root)})


def read_pretrained(name: str, root: Path = PRETRAINED_DIR) -> tuple[Pretrained, dict[str, Tensor]]:
    """A shipped model's config and weights, every file checked against the manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    manifest = _manifest(root)
    if name not in list_pretrained(root):
        raise DataFormatError(f"no pretrained model {name!r}; shipped: {list_pretrained(root)}")
    folder = root / name
    for file in FILES:
        path = folder / file
        expected = manifest.get(f"{name}/{file}")
        if not path.exists():
            raise DataFormatError(f"{path}: missing (the package is incomplete; reinstall deeplense)")
        if expected is None or sha256_of(path) != expected:
            raise DataFormatError(f"{path}: sha256 differs from {root / MANIFEST} (corrupted or edited; reinstall)")
    try:
        config = json.loads((folder / "config.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
    except (ValueError, SafetensorError) as exc:
        raise DataFormatError(f"{folder}: unreadable ({exc})") from None
    return Pretrained(name, folder, config, manifest[f"{name}/model.safetensors"]), weights


def write_pretrained(
    name: str, config: dict[str, Any], weights: dict[str, Tensor], card: str, root: Path = PRETRAINED_DIR
) -> Path:
    """Write (or replace) one model's folder and its manifest entries."""
    from safetensors.torch import save_file

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    (folder / "README.md").write_text(card)
    for file in FILES:
        (folder / file).chmod(0o644)
    manifest = {k: v for k, v in _manifest(root).items() if not k.startswith(f"{name}/")}
    manifest.update({f"{name}/{file}": sha256_of(folder / file) for file in FILES})
    (root / MANIFEST).write_text("".join(f"{digest}  {file}\n" for file, digest in sorted(manifest.items())))
    return folder
