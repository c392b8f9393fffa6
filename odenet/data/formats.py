"""Readers for the on-disk formats the datasets ship in: IDX (MNIST family) and CIFAR pickles.

Both readers validate what they read, so a truncated download or a file of the wrong kind
fails with one sentence naming the file instead of a reshape error deep inside numpy.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path

import numpy as np

from odenet.errors import UserError

IDX_UBYTE = 0x08


class DataFileError(UserError):
    """A dataset file exists but cannot be read as what it should be."""


def _open_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataFileError(f"{path} is a damaged or truncated gzip file ({exc}); delete it and fetch it again") from exc


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) of unsigned bytes with ``ndim`` dimensions.

    Format (LeCun et al.): two zero bytes, a type code (0x08 = ubyte), the number of
    dimensions, one big-endian int32 per dimension, then the data in C order.
    """
    data = _open_maybe_gzip(path)
    header_len = 4 + 4 * ndim
    if len(data) < header_len or data[0:2] != b"\x00\x00":
        raise DataFileError(f"{path} is not an IDX file (bad magic number); delete it and fetch it again")
    if data[2] != IDX_UBYTE or data[3] != ndim:
        raise DataFileError(f"{path} holds IDX type 0x{data[2]:02x} with {data[3]} dimensions, expected unsigned "
                            f"bytes with {ndim}; check that the file is the one its name says")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header_len != expected:
        raise DataFileError(f"{path} is truncated or padded: its header promises {'x'.join(map(str, dims))} bytes "
                            f"({expected}) but it holds {len(data) - header_len}; delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays and builtins, never arbitrary objects.

    The CIFAR archives are pickles; a pickle can run code, so only the globals needed to
    rebuild the numpy arrays inside them are allowed.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _uint8(data) -> np.ndarray:
    """Pixel bytes as uint8; anything that is not integers in 0..255 (text, objects, 300, 1.5) is refused."""
    array = np.asarray(data)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iub" or (array.size and (array.min() < 0 or array.max() > 255)):
        raise ValueError(f"{array.dtype} values, not bytes 0..255")
    return array.astype(np.uint8)


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch → (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    try:
        with path.open("rb") as fh:
            batch = _ArrayUnpickler(io.BufferedReader(fh), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataFileError(f"{path} is not a readable CIFAR batch ({exc}); delete it and fetch it again") from exc
    if not isinstance(batch, dict):
        raise DataFileError(f"{path} is not a CIFAR batch (expected a dict); delete it and fetch it again")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataFileError(f"{path} lacks the 'data' or {label_key!r} entry; is it from the other CIFAR archive?")
    try:
        images = _uint8(batch["data"])
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataFileError(f"{path} holds 'data' or {label_key!r} that are not arrays of pixel bytes and integer "
                            f"labels ({str(exc).splitlines()[0][:120]}); delete it and fetch it again") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise DataFileError(f"{path} holds data of shape {images.shape} with {len(labels)} labels, expected "
                            f"(N, 3072) and N labels; delete it and fetch it again")
    return images.reshape(-1, 3, 32, 32), labels
