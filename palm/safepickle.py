"""The one restricted unpickler: numpy arrays, dtypes and plain values out of files we did not write.

Two formats the project must read are pickles by design: the PALM release's ``cameras.npy`` /
``poses.npy`` (a dict pickled inside a ``.npy``, what ``np.save(path, {...})`` writes) and the
user's ``MANO_RIGHT.pkl``. ``pickle`` (and ``np.load`` with pickles allowed) runs whatever a
file's reduce hooks name, e.g. ``os.system``; this module never does:

* **Allow-list.** The only globals a file may name are those that rebuild numpy arrays, dtypes
  and numpy scalars (``numpy[._core|.core].multiarray._reconstruct`` / ``scalar``,
  ``numpy.ndarray`` as a marker, ``numpy.dtype`` from a type string), ``builtins.complex`` and
  ``_codecs.encode`` to latin-1 (Python 2 byte strings). Dicts, lists, tuples, strings, numbers,
  booleans and None need no global. Every other global is refused with
  :class:`UnsafePickleError` naming the file; a caller may allow a few more (``allow``: MANO's
  scipy sparse matrices and chumpy stand-ins, see :mod:`palm.hand.mano`).
* **Bounds.** A file over :data:`MAX_FILE_BYTES` is refused before it is parsed. The opcode
  stream is scanned first (at most :data:`MAX_OPCODES` opcodes; memo indices must be dense, so a
  single ``LONG_BINPUT 2**31`` cannot make the unpickler allocate its memo table). Every array
  is built with an empty shape and only takes its real shape once its size,
  ``prod(shape) * itemsize``, is checked: no array, and not all arrays of a file together, may
  exceed :data:`MAX_ARRAY_BYTES` (a 300-byte pickle declaring a 1.5e9-element object array, i.e.
  12 GB of pointers, is refused without allocating it). Non-object array data must match its
  size byte for byte (numpy checks), so plain arrays never outgrow the file.

The arrays come back as plain ``numpy.ndarray`` (never a subclass).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from palm.errors import PalmError

#: Largest pickled file read at all (bytes). PALM's cameras.npy / poses.npy are kilobytes and
#: MANO_RIGHT.pkl is about 4 MB.
MAX_FILE_BYTES = 64 * 2**20
#: Largest reconstructed size of any one array, and of all arrays of one file together (bytes).
MAX_ARRAY_BYTES = 256 * 2**20
#: Most opcodes in one pickle stream (bounds the time and the unpickler's stack).
MAX_OPCODES = 2_000_000
#: Most dimensions of an array (numpy's own limit).
MAX_DIMS = 64

#: ``allow(module, name)`` -> the object to use for that global, or None to refuse it.
Allow = Callable[[str, str], Any]

_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
#: The first argument numpy pickles a dtype with: a kind letter and an item size ("f8", "U2", "O8").
_DTYPE_SPEC = re.compile(r"[a-zA-Z?][0-9]{0,10}")


class UnsafePickleError(PalmError):
    """A pickled file asks for something the loader refuses: a global outside the allow-list, or
    a size over the bounds. Callers that collect ordinary read errors let this one through."""


class _NdarrayMarker:
    """What ``numpy.ndarray`` resolves to: an argument of ``_reconstruct``, never callable."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise ValueError("numpy.ndarray takes no state")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayMarker()


class _PendingDtype:
    """What ``numpy.dtype(spec, align, copy)`` resolves to while unpickling.

    numpy's own ``dtype.__setstate__`` trusts the file's flags (an object dtype whose flags say
    "no references" turns raw bytes from the file into object pointers), so it never runs: the
    real dtype is built by the ``numpy.dtype`` constructor from the validated state
    (:meth:`real`), and numpy derives every flag itself.
    """

    def __init__(self, spec: str, max_bytes: int):
        self.spec = spec
        self.max_bytes = max_bytes
        self.state: Any = None
        self.built: np.dtype | None = None

    def __setstate__(self, state: Any) -> None:
        if self.state is not None:
            raise ValueError("dtype state set twice")
        self.state = state

    def real(self) -> np.dtype:
        if self.built is None:
            self.built = _build_dtype(self.spec, self.state, self.max_bytes)
        return self.built


class _PendingArray(np.ndarray):
    """An array that is still empty: its ``__setstate__`` checks the size before numpy allocates."""

    _loader: _Loader

    def __setstate__(self, state: Any) -> None:
        loader = self.__dict__.pop("_loader", None)
        if loader is None:
            raise ValueError("array state set twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("malformed array state")
        shape, pending, fortran, data = state[-4:]
        if not isinstance(pending, _PendingDtype):
            raise TypeError("malformed array dtype")
        dtype = pending.real()
        n = loader.charge(shape, dtype)
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != n:
                raise ValueError("object array data does not match its shape")
        elif not isinstance(data, bytes | str):
            raise TypeError("malformed array data")
        super().__setstate__((*state[:-4], shape, dtype, bool(fortran), data))


class _Loader(pickle.Unpickler):
    """``pickle.Unpickler`` with the allow-list and the size budget of one file."""

    def __init__(self, payload: bytes, source: str | os.PathLike, allow: Allow | None, max_array_bytes: int):
        super().__init__(io.BytesIO(payload), encoding="latin1")
        self.source = source
        self.allow = allow
        self.max_array_bytes = max_array_bytes
        self.spent = 0
        self.globals: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "scalar"): self._scalar,
            ("numpy.core.multiarray", "scalar"): self._scalar,
            ("builtins", "complex"): complex,
            ("_codecs", "encode"): self._encode,
        }

    def refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(self.source, f"refuses to load this pickled file: {what}")

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in self.globals:
            return self.globals[(module, name)]
        found = self.allow(module, name) if self.allow is not None else None
        if found is None:
            raise UnsafePickleError(
                self.source, f"refuses to load {module}.{name} (only numpy arrays and plain values are read)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise self.refuse("persistent ids are not supported")

    def charge(self, shape: Any, dtype: np.dtype, book: bool = True) -> int:
        """Check an array's size against the bounds (and book it); returns its element count."""
        if not isinstance(shape, tuple) or len(shape) > MAX_DIMS:
            raise ValueError("malformed array shape")
        if not all(isinstance(s, int | np.integer) and s >= 0 for s in shape):
            raise ValueError("malformed array shape")
        n = math.prod(int(s) for s in shape)
        nbytes = n * max(int(dtype.itemsize), 1)
        spent = self.spent + nbytes
        if book:
            self.spent = spent
        if nbytes > self.max_array_bytes or spent > self.max_array_bytes:
            raise self.refuse(
                f"an array of shape {tuple(int(s) for s in shape)} ({nbytes} bytes) goes over the "
                f"{self.max_array_bytes}-byte bound on arrays"
            )
        return n

    def _reconstruct(self, subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
        if subtype is not _NDARRAY:
            raise self.refuse(f"arrays of type {subtype!r} are not supported")
        self.charge(shape, np.dtype(np.uint8), book=False)  # numpy writes (0,); never allocate more
        array = np.ndarray.__new__(_PendingArray, (0,), np.uint8)
        array._loader = self
        return array

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> _PendingDtype:
        if not isinstance(spec, str) or not _DTYPE_SPEC.fullmatch(spec):
            raise ValueError(f"malformed dtype {spec!r}")
        return _PendingDtype(spec, self.max_array_bytes)

    def _scalar(self, pending: Any, data: Any = None) -> Any:
        if not isinstance(pending, _PendingDtype):
            raise TypeError("malformed numpy scalar")
        dtype = pending.real()
        if dtype.hasobject:
            return data  # what numpy does: the scalar of an object dtype is the object
        if not isinstance(data, bytes | str):
            raise TypeError("malformed numpy scalar")
        raw = data.encode("latin-1") if isinstance(data, str) else data
        if dtype.itemsize == 0 and dtype.kind in "SU" and not raw:
            return dtype.type()  # the empty string
        if len(raw) != dtype.itemsize:
            raise ValueError("numpy scalar data does not match its dtype")
        return np.frombuffer(raw, dtype=dtype, count=1)[0]

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1:
            raise self.refuse("codecs other than latin-1 text are not supported")
        return text.encode("latin-1")


def _build_dtype(spec: str, state: Any, max_bytes: int) -> np.dtype:
    """The dtype a pickled ``(spec, state)`` describes, made by the ``numpy.dtype`` constructor.

    ``state`` is numpy's ``(version, byteorder, subarray, names, fields, itemsize, alignment,
    flags[, metadata])``; the flags are ignored (numpy derives them), the rest is checked.
    Structured dtypes with object fields are refused (no file we read needs them).
    """
    base = np.dtype(spec)
    if state is None:
        return base
    if not isinstance(state, tuple) or len(state) not in (8, 9):
        raise ValueError("malformed dtype state")
    _version, order, subarray, names, fields, itemsize, _alignment, flags = state[:8]
    extra = state[8] if len(state) == 9 else None
    if order not in ("<", ">", "=", "|") or not isinstance(itemsize, int) or not isinstance(flags, int):
        raise ValueError("malformed dtype state")
    if subarray is not None:
        if not (isinstance(subarray, tuple) and len(subarray) == 2 and isinstance(subarray[0], _PendingDtype)):
            raise ValueError("malformed subarray dtype")
        inner, shape = subarray[0].real(), subarray[1]
        shape = shape if isinstance(shape, tuple) else (shape,)
        if len(shape) > MAX_DIMS or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError("malformed subarray shape")
        if math.prod(shape) * inner.itemsize > max_bytes:
            raise ValueError("subarray dtype over the size bound")
        dtype = np.dtype((inner, shape))
    elif names is not None:
        if not isinstance(names, tuple) or not isinstance(fields, dict) or not 0 <= itemsize <= max_bytes:
            raise ValueError("malformed structured dtype")
        formats, offsets, titles = [], [], []
        for name in names:
            entry = fields.get(name) if isinstance(name, str) else None
            if not (isinstance(entry, tuple) and len(entry) in (2, 3) and isinstance(entry[0], _PendingDtype)):
                raise ValueError("malformed structured dtype")
            if not isinstance(entry[1], int) or len(entry) == 3 and not isinstance(entry[2], str | None):
                raise ValueError("malformed structured dtype")
            formats.append(entry[0].real())
            offsets.append(entry[1])
            titles.append(entry[2] if len(entry) == 3 else None)
        spec_dict = {"names": list(names), "formats": formats, "offsets": offsets, "itemsize": itemsize}
        if any(t is not None for t in titles):
            spec_dict["titles"] = titles
        dtype = np.dtype(spec_dict, align=bool(flags & 0x80))  # NPY_ALIGNED_STRUCT
    else:
        dtype = base
        sized = base.kind in "SU" or (base.kind in "MmV" and itemsize != -1)  # the state repeats the size
        if sized and itemsize != base.itemsize:
            raise ValueError("malformed dtype itemsize")
        if base.kind in "Mm" and isinstance(extra, tuple) and len(extra) == 2 and extra[1] is not None:
            unit, count = extra[1][:2]
            unit = unit.decode("ascii") if isinstance(unit, bytes) else unit
            if not isinstance(unit, str) or not unit.isalpha() or not isinstance(count, int) or count < 1:
                raise ValueError("malformed datetime dtype")
            dtype = np.dtype(f"{spec}[{count}{unit}]")
    if dtype.hasobject and dtype != np.dtype(object):
        raise ValueError("structured dtypes with object fields are not supported")
    if order in "<>" and dtype.byteorder != "|":
        dtype = dtype.newbyteorder(order)
    return dtype


def _scan(payload: bytes, source: str | os.PathLike) -> None:
    """Walk the opcodes without running them: a bounded count, dense memo indices, a STOP."""
    puts = 0
    stopped = False
    for count, (opcode, arg, _pos) in enumerate(pickletools.genops(payload), start=1):
        if count > MAX_OPCODES:
            raise UnsafePickleError(source, f"refuses to load this pickled file: more than {MAX_OPCODES} opcodes")
        if opcode.name in _MEMO_PUTS:
            if not isinstance(arg, int) or not 0 <= arg <= puts:
                raise UnsafePickleError(source, f"refuses to load this pickled file: memo index {arg} out of order")
            puts += 1
        elif opcode.name == "MEMOIZE":
            puts += 1
        elif opcode.name == "STOP":
            stopped = True
    if not stopped:
        raise ValueError("pickle data was truncated")


def _plain(obj: Any, seen: dict[int, Any]) -> Any:
    """``obj`` with every pending array replaced by a plain ndarray (containers rebuilt, shared
    references kept shared)."""
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, _PendingDtype):
        seen[key] = obj.real()
        return seen[key]
    if isinstance(obj, np.ndarray):
        if isinstance(obj, _PendingArray):
            obj.__dict__.pop("_loader", None)  # never set: the file gave no state
        base = obj.view(np.ndarray)
        if base.dtype != object:
            seen[key] = base
            return base
        out = np.empty(base.shape, dtype=object)
        seen[key] = out
        flat = out.reshape(-1)
        for i, item in enumerate(base.reshape(-1)):
            flat[i] = _plain(item, seen)
        return out
    if isinstance(obj, dict):
        new: dict[Any, Any] = {}
        seen[key] = new
        for k, v in obj.items():
            new[_plain(k, seen)] = _plain(v, seen)
        return new
    if isinstance(obj, list):
        items: list[Any] = []
        seen[key] = items
        items.extend(_plain(v, seen) for v in obj)
        return items
    if isinstance(obj, tuple):
        out_t = tuple(_plain(v, seen) for v in obj)
        seen[key] = out_t
        return out_t
    if hasattr(obj, "__dict__") and not isinstance(obj, type):  # an allowed object (MANO's sparse matrices)
        seen[key] = obj
        for name, value in list(vars(obj).items()):
            setattr(obj, name, _plain(value, seen))
    return obj


def loads(
    payload: bytes,
    source: str | os.PathLike,
    allow: Allow | None = None,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> Any:
    """Unpickle ``payload`` through the allow-list and the size bounds.

    Args:
        payload: the pickle stream.
        source: the file it came from (named in every error).
        allow: ``allow(module, name)`` -> object for globals beyond the numpy allow-list, or None
            to refuse them.
        max_array_bytes: bound on each array and on all arrays together (bytes).

    Returns:
        The unpickled value; arrays are plain ``numpy.ndarray``.

    Raises:
        UnsafePickleError: a refused global or a size over the bounds.
        PalmError: anything else wrong with the stream.
    """
    try:
        _scan(payload, source)
        loader = _Loader(payload, source, allow, max_array_bytes)
        return _plain(loader.load(), {})
    except UnsafePickleError:
        raise
    except RecursionError:
        raise PalmError(source, "not a readable pickle (nested too deeply)") from None
    except Exception as exc:  # noqa: BLE001 - pickle and numpy raise many types on corrupt streams
        raise PalmError(source, f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def read_bounded(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, refused when it holds more than ``max_bytes``.

    Raises:
        PalmError: missing file; UnsafePickleError: over the bound.
    """
    path = Path(path)
    if not path.is_file():
        raise PalmError(path, "file not found")
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafePickleError(path, f"refuses to load this pickled file: larger than {max_bytes} bytes")
    return data


def load_pickle(
    path: str | os.PathLike,
    allow: Allow | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> Any:
    """Read a pickle file through :func:`loads` (after the file-size bound)."""
    return loads(read_bounded(path, max_file_bytes), path, allow, max_array_bytes)


def load_npy_dict(
    path: str | os.PathLike,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> dict[str, Any]:
    """Read a ``.npy`` file that holds a pickled dict (the PALM release's cameras.npy / poses.npy).

    The ``.npy`` header is parsed with :mod:`numpy.lib.format`; the file must hold a 0-d object
    array, whose pickled payload goes through :func:`loads`.

    Raises:
        UnsafePickleError: the payload names a refused global or goes over the bounds.
        PalmError: missing file, not a ``.npy`` file, or not a dict.
    """
    path = Path(path)
    raw = read_bounded(path, max_file_bytes)
    fh = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # noqa: BLE001 - the header parser raises many types on corrupt files
        raise PalmError(path, f"cannot read numpy file ({type(exc).__name__}: {exc})") from None
    if dtype != np.dtype(object) or shape != ():
        what = "an object array" if dtype == np.dtype(object) else f"an array of dtype {dtype}"
        raise PalmError(path, f"expected a dict saved with numpy, got {what} of shape {shape}")
    obj = loads(raw[fh.tell() :], path, max_array_bytes=max_array_bytes)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj[()]
    if not isinstance(obj, dict):
        raise PalmError(path, f"expected a dict saved with numpy, got {type(obj).__name__}")
    return obj
