"""File plumbing shared by every writer: atomic writes and validated JSON.

Nothing the user made is ever left half-written: every writer goes through :func:`atomic_write`,
which writes a temporary file in the destination folder and renames it into place, so a kill at
any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from palm.errors import PalmError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the destination's extension (or ``suffix``) so that libraries that
    choose a format by extension still do. On error the temporary file is removed and the error
    propagates; ``path`` is untouched.

    >>> with atomic_write("out.png") as tmp:
    ...     imageio.imwrite(tmp, image)
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PalmError(folder, "output folder does not exist")
    ext = suffix if suffix is not None else "".join(path.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0 and not _allow_empty(path):
            raise PalmError(path, "writer produced no data")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _allow_empty(path: Path) -> bool:
    return path.suffix in {".txt", ".log"}


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it into place when the block succeeds.

    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _rmtree(tmp)
        raise


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`PalmError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise PalmError(path, "file not found" if not path.exists() else "not a file")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise PalmError(path, "not a text file (expected JSON)") from None
    except json.JSONDecodeError as exc:
        raise PalmError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise PalmError(path, "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of thousands of digits
        raise PalmError(path, f"malformed JSON ({str(exc)[:80]})") from None


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise :class:`PalmError` when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise PalmError(path, f"{what} not found")
    if not path.is_file():
        raise PalmError(path, f"expected a {what}, found a folder")
    return path


def check_output_path(path: str | os.PathLike, extensions: tuple[str, ...]) -> Path:
    """Validate an output path before any work: known extension and an existing folder."""
    path = Path(path)
    if path.suffix.lower() not in extensions:
        raise PalmError(path, f"unsupported output format '{path.suffix}' (use {', '.join(extensions)})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise PalmError(parent, "output folder does not exist")
    return path
