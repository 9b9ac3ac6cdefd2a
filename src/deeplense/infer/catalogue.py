"""The catalogue file that ``predict`` writes: the one module that reads and writes it.

Rows stream into a journal beside the output (``<out>.partial.csv``, flushed and synced batch by
batch, with ``<out>.partial.json`` naming the model and options). An interrupted run resumes from
the journal: rows already there are skipped, a torn last line is dropped, nothing is written twice.
When every input is done, the journal becomes the requested format (CSV with ``#`` metadata lines,
FITS binary table with header keywords, or Parquet with schema metadata) by an atomic rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from deeplense.core.config import ConfigError
from deeplense.core.errors import DataFormatError

__all__ = ["FORMATS", "CatalogueWriter", "read_catalogue"]

FORMATS = {".csv": "csv", ".fits": "fits", ".fit": "fits", ".parquet": "parquet"}
_KEYS = ["source", "hdu", "index"]
#: metadata also written as keywords of the FITS catalogue's header (all of it is in HDU METADATA)
_FITS_KEYWORDS = {"model": "MODEL", "model_version": "MODELVER", "model_sha256": "MODELSHA", "deeplense": "DLVER"}


def _keys(table: pd.DataFrame) -> set[tuple[str, str, int]]:
    """The identities of a table's rows: (source, hdu, index), the columns in ``_KEYS``."""
    return set(zip(table["source"], table["hdu"], table["index"].astype(int)))


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError("out", f"{path}: the catalogue must end in {sorted(FORMATS)}")
    return fmt


class CatalogueWriter:
    """Journal-backed writer (see the module docstring); ``metadata`` must be the same to resume."""

    def __init__(self, out: str | Path, metadata: dict[str, str], overwrite: bool = False):
        self.out = Path(out)
        self.format = _format_of(self.out)
        self.journal = self.out.with_name(self.out.name + ".partial.csv")
        self.sidecar = self.out.with_name(self.out.name + ".partial.json")
        self.metadata = {k: str(v) for k, v in metadata.items()}
        if not self.out.parent.is_dir():
            raise ConfigError("out", f"{self.out.parent}: no such folder")
        if self.out.exists() and not self.journal.exists() and not overwrite:
            raise ConfigError("out", f"{self.out} exists; pass --overwrite to replace it")
        self.done: set[tuple[str, str, int]] = set()
        self.columns: list[str] | None = None
        if self.journal.exists():
            self._resume()

    def _resume(self) -> None:
        try:
            previous = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != self.metadata:
            raise ConfigError(
                "out",
                f"{self.journal} is an unfinished catalogue of another model or other options; "
                "run the same command to finish it, or delete it",
            )
        raw = self.journal.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]
        if len(whole) != len(raw):  # a line torn by the interruption
            with open(self.journal, "r+b") as f:
                f.truncate(len(whole))
        if not whole:
            return
        table = pd.read_csv(self.journal, keep_default_na=False, dtype={"source": str, "hdu": str})
        self.columns = list(table.columns)
        self.done = _keys(table)

    def append(self, rows: pd.DataFrame) -> None:
        """Add rows and make them durable before returning."""
        if rows.empty:
            return
        new = not self.journal.exists() or self.journal.stat().st_size == 0
        if new:
            self.sidecar.write_text(json.dumps(self.metadata))
            self.columns = list(rows.columns)
        elif list(rows.columns) != self.columns:
            raise DataFormatError(f"{self.journal}: columns {self.columns} cannot take rows with {list(rows.columns)}")
        with open(self.journal, "a", newline="") as f:
            rows.to_csv(f, header=new, index=False)
            f.flush()
            os.fsync(f.fileno())
        self.done.update(_keys(rows))

    def finish(self, units: dict[str, str] | None = None) -> Path:
        """Write the requested format atomically and remove the journal; returns the output path."""
        if self.journal.exists() and self.journal.stat().st_size:
            table = _read_rows(self.journal)
        else:
            table = pd.DataFrame(columns=self.columns or _KEYS)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        if self.format == "csv":
            with open(tmp, "w", newline="") as f:
                for key, value in self.metadata.items():
                    f.write(f"# {key}: {value}\n")
                table.to_csv(f, index=False)
        elif self.format == "fits":
            _write_fits(table, tmp, self.metadata, units or {})
        else:
            _write_parquet(table, tmp, self.metadata)
        os.replace(tmp, self.out)
        self.journal.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        return self.out


def _write_fits(table: pd.DataFrame, path: Path, metadata: dict[str, str], units: dict[str, str]) -> None:
    from astropy.io import fits
    from astropy.table import Table

    t = Table.from_pandas(table)
    for name, unit in units.items():
        if name in t.colnames:
            t[name].description = unit
    hdu = fits.table_to_hdu(t)
    hdu.header["EXTNAME"] = "CATALOGUE"
    for key, card in _FITS_KEYWORDS.items():
        if key in metadata:
            hdu.header[card] = metadata[key]
    for i, name in enumerate(t.colnames, start=1):
        if name in units:
            hdu.header[f"TUNIT{i}"] = units[name]
    meta = fits.BinTableHDU(Table({"key": list(metadata), "value": list(metadata.values())}), name="METADATA")
    fits.HDUList([fits.PrimaryHDU(), hdu, meta]).writeto(path, overwrite=True)


def _write_parquet(table: pd.DataFrame, path: Path, metadata: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    existing = arrow.schema.metadata or {}
    arrow = arrow.replace_schema_metadata(
        {**existing, **{f"deeplense.{k}".encode(): v.encode() for k, v in metadata.items()}}
    )
    pq.write_table(arrow, path)


_TEXT = ("source", "hdu", "flag", "predicted")


def _text_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Text columns as ``str``, empty where empty (every format reads back the same rows)."""
    for column in _TEXT:
        if column in table:
            values = table[column].map(lambda v: v.decode() if isinstance(v, bytes) else v)
            table[column] = values.where(values.notna(), "").astype(str)
    return table


def _read_rows(path: Path, comment: str | None = None) -> pd.DataFrame:
    """Rows of a CSV journal or catalogue: empty text columns stay text, empty numbers are NaN."""
    dtype = dict.fromkeys(_TEXT, str)
    return _text_columns(pd.read_csv(path, comment=comment, keep_default_na=False, na_values=[""], dtype=dtype))


def read_catalogue(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A catalogue written by :class:`CatalogueWriter` and its metadata."""
    path = Path(path)
    fmt = _format_of(path)
    if fmt == "csv":
        metadata = {}
        with open(path) as f:
            for line in f:
                if not line.startswith("# "):
                    break
                key, _, value = line[2:].rstrip("\n").partition(": ")
                metadata[key] = value
        return _read_rows(path, comment="#"), metadata
    if fmt == "fits":
        from astropy.table import Table

        meta = Table.read(path, hdu="METADATA")
        metadata = {str(k): str(v) for k, v in zip(meta["key"], meta["value"])}
        return _text_columns(Table.read(path, hdu="CATALOGUE").to_pandas()), metadata
    import pyarrow.parquet as pq

    arrow = pq.read_table(path)
    raw: dict[bytes, bytes] = arrow.schema.metadata or {}
    metadata = {k.decode()[10:]: v.decode() for k, v in raw.items() if k.startswith(b"deeplense.")}
    return _text_columns(arrow.to_pandas()), metadata
