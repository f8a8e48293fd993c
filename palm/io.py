"""File plumbing shared by every writer: atomic writes and validated JSON.

Nothing the user made is ever left half-written: every writer goes through :func:`atomic_write`,
which writes a temporary file in the destination folder and renames it into place, so a kill at
any moment leaves either the old file or the new one.

Temporaries are named ``.NAME.XXXXXXXX.tmp[.ext]`` (folders: ``.tmp`` / ``.old``) and locked
(``flock``) by the process writing them for as long as it does. A kill (even SIGKILL) drops the
lock, so the next writer of the same output -- :func:`check_output_path`, :func:`atomic_write`
and :func:`atomic_dir` all call :func:`clean_stale_temporaries` -- recognises the temporary as
stale and removes it; a temporary another running process still holds is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from palm.errors import PalmError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the destination's extension (or ``suffix``) so that libraries that
    choose a format by extension still do. On error the temporary file is removed and the error
    propagates; ``path`` is untouched. Temporaries of ``path`` that a killed writer left behind are
    removed first (:func:`clean_stale_temporaries`).

    >>> with atomic_write("out.png") as tmp:
    ...     imageio.imwrite(tmp, image)
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PalmError(folder, "output folder does not exist")
    clean_stale_temporaries(path, listing_once=True)
    ext = suffix if suffix is not None else "".join(path.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{ext}", dir=folder)
    held = fd if _lock(fd) else _release(fd)  # held until the block ends: a kill frees the lock
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
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
    finally:
        _release(held)


#: When this process started using palm.io: without ``flock`` (Windows) a temporary older than
#: this is taken for stale.
_STARTED = time.time()


def _lock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd``; False where there is none (Windows: the caller then
    closes the file at once, since an open file cannot be renamed there)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True


def _lock_dir(path: Path) -> int | None:
    """Open the folder ``path`` and :func:`_lock` it; returns the descriptor to close later."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return None
    _lock(fd)
    return fd


def _release(fd: int | None) -> None:
    """Close ``fd`` (which drops its lock); None is ignored. Returns None."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _in_use(path: Path) -> bool:
    """Whether a live process still holds the temporary ``path`` (its ``flock``; see the module)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: anything from before this process is stale
        try:
            return path.lstat().st_mtime >= _STARTED
        except OSError:
            return False
    if path.is_symlink():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # pragma: no cover - a file system without locks: fall back to the age
        return path.lstat().st_mtime >= _STARTED
    finally:
        os.close(fd)
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _allow_empty(path: Path) -> bool:
    return path.suffix in {".txt", ".log"}


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it into place when the block succeeds.

    An existing folder at ``path`` is replaced only after the new one is complete. Temporaries of
    ``path`` that a killed writer left behind are removed first (:func:`clean_stale_temporaries`).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path, listing_once=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    held = [_lock_dir(tmp)]
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            held.append(_lock_dir(old))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _rmtree(tmp)
        raise
    finally:
        for fd in held:
            _release(fd)


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
    if path.is_dir():
        raise PalmError(path, "is a folder; the output must be a file, choose another path")
    clean_stale_temporaries(path)  # what a killed earlier run of this command left beside it
    return path


# ---------------------------------------------------------------------------------------------
# Output folders: the one policy of the commands that write a folder (--out DIR)
# ---------------------------------------------------------------------------------------------


def check_output_dir(
    path: str | os.PathLike,
    marker: str,
    inputs: Iterable[str | os.PathLike | None] = (),
    force: bool = False,
    *,
    what: str = "an output folder",
    marker_format: str | None = None,
    resume: bool = False,
    hint: str = "pass --force to replace it",
    disposable: Callable[[Path], bool] | None = None,
) -> Path:
    """Refuse an output folder whose writing could destroy something; call it before any work.

    Refused whatever ``force`` says (:class:`PalmError` naming ``path`` as given):

    * ``path`` is one of ``inputs``, lies inside one, or contains one (links resolved);
    * ``path`` is a symbolic link, a file or anything else that is not a folder;
    * ``path`` is an existing folder that does not carry ``marker`` (a file of that name directly
      inside it; with ``marker_format``, a JSON object whose ``"format"`` is that string) -- it is
      not one of ours, empty or not.

    An existing folder that carries the marker is refused unless ``force`` (it is then replaced
    by the command, atomically where the command allows) or ``disposable(folder)`` says it holds
    nothing worth keeping (a training run killed before its first checkpoint). With ``resume`` the
    command continues an existing folder instead of replacing it: only the first two rules apply.

    Args:
        path: the ``--out`` folder.
        marker: file name that marks a folder this command made, e.g. ``avatar.json``.
        inputs: the command's input paths (None entries are skipped).
        force: the user's ``--force``.
        what: how messages name such a folder, with its article, e.g. ``"an avatar folder"``.
        marker_format: see above.
        resume: the command continues an existing folder (see above).
        hint: what the message about an existing marked folder tells the user to do.
        disposable: see above (default: no marked folder is disposable).

    Returns:
        ``path`` as a Path.
    """
    out, name = Path(path), os.fspath(path)  # messages name the path as the user wrote it
    resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if resolved == source:
            raise PalmError(name, f"is also an input of this command ({item}); choose another output folder")
        if source in resolved.parents:
            raise PalmError(name, f"lies inside the input {item}; choose an output folder outside it")
        if resolved in source.parents:
            raise PalmError(name, f"contains the input {item}; writing here would replace it, choose another folder")
    if out.is_symlink():
        raise PalmError(name, "is a symbolic link; give the path of a real folder")
    if not out.exists():
        return out
    if not out.is_dir():
        kind = "a file" if out.is_file() else "not a folder"
        raise PalmError(name, f"is {kind}; the output must be a folder, choose another path")
    if resume:
        return out
    if not has_marker(out, marker, marker_format):
        raise PalmError(name, f"exists and is not {what} (no {marker}); choose a path that does not exist yet")
    if not force and not (disposable is not None and disposable(out)):
        raise PalmError(name, f"is already {what}: {hint}")
    return out


def has_marker(folder: str | os.PathLike, marker: str, marker_format: str | None = None) -> bool:
    """Whether ``folder/marker`` is a regular file (with ``marker_format``: JSON with that ``"format"``)."""
    file = Path(folder) / marker
    if file.is_symlink() or not file.is_file():
        return False
    if marker_format is None:
        return True
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == marker_format


def _temporary_name(name: str) -> re.Pattern[str]:
    """Names of the temporaries :func:`atomic_dir` / :func:`atomic_write` make for ``name``
    (also nested: a temporary of a temporary)."""
    return re.compile(r"^\.+" + re.escape(name) + r"\.[a-z0-9_]{8}\.(tmp|old)(\..*)?$")


#: Per large folder, the names that may be temporaries, listed once per process for
#: ``clean_stale_temporaries(..., listing_once=True)`` (writers of many files in one folder).
_LISTED: dict[Path, set[str]] = {}
#: Folders with more entries than this are listed once per process by ``listing_once`` callers.
_LARGE_FOLDER = 256


def _candidates(parent: Path, listing_once: bool) -> list[str]:
    """Names in ``parent`` that look like temporaries (hidden, ``.tmp`` / ``.old`` inside)."""
    key = parent.resolve()
    if listing_once and key in _LISTED:
        return sorted(_LISTED[key])
    names, count = set(), 0
    with os.scandir(parent) as entries:
        for e in entries:
            count += 1
            if e.name.startswith(".") and (".tmp" in e.name or ".old" in e.name):
                names.add(e.name)
    if count > _LARGE_FOLDER:
        _LISTED[key] = names
    else:
        _LISTED.pop(key, None)
    return sorted(names)


def clean_stale_temporaries(path: str | os.PathLike, *, listing_once: bool = False) -> list[Path]:
    """Remove the temporaries a killed writer of ``path`` left beside it; returns what was removed.

    A temporary is stale when no live process holds its lock (see the module docstring); one that
    a running writer holds is left alone. A kill between the two renames of :func:`atomic_dir`
    leaves ``path`` missing and its previous version inside a ``.old`` temporary: that version is
    put back first.

    Args:
        path: the output whose temporaries to look for.
        listing_once: list a large folder (more than ``_LARGE_FOLDER`` entries) only the first
            time this process asks about it, so that writing thousands of files into one folder
            stays linear; temporaries other processes leave there later are then not seen.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    pattern = _temporary_name(path.name)
    try:
        names = _candidates(parent, listing_once)
    except OSError:
        return []
    stale = [parent / n for n in names if pattern.match(n) and not _in_use(parent / n)]
    for p in stale:
        if p.name.endswith(".old") and p.is_dir() and not path.exists() and not path.is_symlink():
            previous = p / "x"
            if previous.exists():
                os.replace(previous, path)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            _rmtree(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        _LISTED.get(parent.resolve(), set()).discard(p.name)
    return stale


def discard_dir(path: str | os.PathLike) -> None:
    """Remove the folder ``path`` (when it exists): renamed aside first, so that ``path`` is free at
    once and a kill during the removal leaves only a temporary (see :func:`clean_stale_temporaries`)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return
    parent = path.parent if str(path.parent) else Path(".")
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
    held = _lock_dir(aside)
    try:
        os.replace(path, aside / "x")
        _rmtree(aside)
    finally:
        _release(held)
