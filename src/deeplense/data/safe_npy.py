"""Read ``.npy`` files without letting them run code.

DeepLense axion files are pickled object arrays ``[image, m_a]``; ``np.load(allow_pickle=True)``
would execute whatever a crafted file asks for. Here plain arrays go through ``np.load`` with
pickles disabled, and object arrays through an unpickler that can only rebuild numpy arrays,
dtypes and numbers: any other global in the stream (``os.system``, ``builtins.eval`` ...) is refused
before it is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from deeplense.core.errors import DataFormatError

__all__ = ["UnsafeFileError", "NpyHeader", "read_header", "load_npy"]


class UnsafeFileError(DataFormatError):
    """A pickled ``.npy`` asks for something other than numpy arrays and numbers."""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles store byte strings through it
}


class _NdarrayType(np.ndarray):
    """Stands for ``numpy.ndarray`` in a pickle: it may only be the type handed to numpy's
    array rebuild, never called (``ndarray(shape)`` would allocate uninitialised memory)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _NdarrayType:
        raise UnsafeFileError("the pickle calls numpy.ndarray directly (uninitialised memory); refused")


def _guarded_reconstruct(reconstruct: Any) -> Any:
    """numpy's rebuild, allowed only as numpy itself pickles arrays: an empty ``(0,)`` array of
    type ndarray, whose shape and data the pickle's state must then set (and numpy checks)."""

    def rebuild(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NdarrayType or tuple(shape) != (0,):
            raise UnsafeFileError(f"the pickle rebuilds an array of shape {shape!r} without its data; refused")
        return reconstruct(np.ndarray, (0,), dtype)

    return rebuild


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafeFileError(f"{self._path}: refused to unpickle {module}.{name} (only numpy arrays and numbers)")
        if name == "ndarray":
            return _NdarrayType
        found = super().find_class(module, name)
        return _guarded_reconstruct(found) if name == "_reconstruct" else found


class NpyHeader:
    """Shape, dtype and layout of a ``.npy`` file, read from its header alone."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, fortran: bool, data_offset: int, file_size: int):
        self.shape, self.dtype, self.fortran = shape, dtype, fortran
        self.data_offset, self.file_size = data_offset, file_size

    @property
    def expected_size(self) -> int | None:
        """Bytes the file must have, or None for object arrays (pickled, size unknown)."""
        if self.dtype.hasobject:
            return None
        return self.data_offset + int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_header(path: str | Path) -> NpyHeader:
    """Parse the header; ``ValueError`` naming the file when it is not a ``.npy`` file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, EOFError, SyntaxError) as exc:
            raise DataFormatError(f"{path}: not a .npy file ({exc})") from None
        return NpyHeader(tuple(shape), np.dtype(dtype), fortran, f.tell(), size)


def load_npy(path: str | Path, *, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file safely; object arrays go through the numpy-only unpickler.

    Raises ``ValueError`` (truncated, not a .npy file) or ``UnsafeFileError``, naming the file.
    """
    path = Path(path)
    header = read_header(path)
    expected = header.expected_size
    if expected is not None and header.file_size < expected:
        raise DataFormatError(f"{path}: truncated ({header.file_size} bytes, header {header.shape} needs {expected})")
    if not header.dtype.hasobject:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    with open(path, "rb") as f:
        f.seek(header.data_offset)
        payload = f.read()
    try:
        array = _NumpyOnlyUnpickler(io.BytesIO(payload), path).load()
    except UnsafeFileError as exc:
        message = str(exc)
        raise UnsafeFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataFormatError(f"{path}: cannot read the pickled object array ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, np.ndarray):
        raise DataFormatError(f"{path}: the pickle holds {type(array).__name__}, not an array")
    _check_filled(array, path)
    return array


def _check_filled(array: np.ndarray, path: Path) -> None:
    """Every array in the pickle (the object array and those it holds) was given its data: an
    array left at the empty rebuild shape is refused."""
    stack = [array]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                stack.extend(item.ravel().tolist())
            elif item.shape == (0,):
                raise DataFormatError(f"{path}: the pickle rebuilds an array but never fills it with data")
