"""Restricted loading of LEAD's lzma pickles (``metas/*.pkl``, ``bboxes/*.pkl``).

LEAD stores metas and boxes as lzma-compressed pickles. A pickle can name any importable callable and call
it while loading, so a plain ``pickle.load`` of a file from a shared drive runs whatever the file says. This
loader resolves globals through an allow-list: the builtin containers and scalars, numpy arrays, dtypes and
scalars (what real LEAD files contain), and nothing else. Any other global raises `UnsafePickleError` before
anything is called.
"""

from __future__ import annotations

import io
import lzma
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from leadio.format.errors import UnsafePickleError

__all__ = ["ALLOWED_GLOBALS", "load_lzma_pickle", "loads_restricted"]

#: (module, name) pairs a LEAD pickle may reference. numpy's array reconstruction goes through
#: ``_reconstruct`` / ``scalar`` / ``dtype``; the module moved from numpy.core to numpy._core in numpy 2,
#: and files written by either must load with either.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")}
    | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
    | {("numpy", t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                              "uint8", "uint16", "uint32", "uint64", "bool_", "str_")}
    | {("numpy.dtypes", f"{t}DType") for t in ("Float16", "Float32", "Float64", "Int8", "Int16", "Int32",
                                               "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Bool",
                                               "Str", "Bytes", "Object")}
    | {("builtins", t) for t in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                                 "int", "float", "complex", "bool", "slice", "range")}
    | {("collections", "OrderedDict"), ("_codecs", "encode")}
)


class _RestrictedUnpickler(pickle.Unpickler):  # noqa: S301 - the restricted unpickler itself (an allow-list of classes)
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"pickle references {module}.{name}, which is not plain data (allowed: builtins containers "
                f"and scalars, numpy arrays and scalars); refusing to load it, nothing was executed"
            )
        if module.startswith("numpy.core."):  # numpy >= 2 keeps deprecated aliases; go to the real module
            module = "numpy._core." + module.removeprefix("numpy.core.")
        if module.startswith("numpy"):
            obj: Any = np
            for part in module.split(".")[1:] + [name]:
                obj = getattr(obj, part)
            return obj
        return super().find_class(module, name)


def loads_restricted(data: bytes) -> Any:
    """Unpickle ``data`` admitting only plain data (see `ALLOWED_GLOBALS`).

    Raises:
        UnsafePickleError: the pickle names a global outside the allow-list.
    """
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def load_lzma_pickle(path: str | Path) -> Any:
    """Read an xz/LZMA-compressed pickle through the restricted unpickler.

    Raises:
        UnsafePickleError: the pickle names a global outside the allow-list.
        lzma.LZMAError, pickle.UnpicklingError, EOFError: the file is not a complete lzma pickle.
    """
    with lzma.open(path, "rb") as f:
        data = f.read()
    return loads_restricted(data)
