"""File plumbing shared by every writer: atomic writes and validated JSON.

Nothing the user made is ever left half-written: every writer goes through :func:`atomic_write`,
which writes a temporary file in the destination folder and renames it into place, so a kill at
any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
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


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer of ``path`` left beside it; returns what was removed.

    A kill between the two renames of :func:`atomic_dir` leaves ``path`` missing and its previous
    version inside a ``.old`` temporary: that version is put back first. Two writers of the same
    output at the same time are not supported (the second would take the first one's
    temporaries for stale).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    pattern = _temporary_name(path.name)
    stale = sorted(p for p in parent.iterdir() if pattern.match(p.name))
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
    return stale


def discard_dir(path: str | os.PathLike) -> None:
    """Remove the folder ``path`` (when it exists): renamed aside first, so that ``path`` is free at
    once and a kill during the removal leaves only a temporary (see :func:`clean_stale_temporaries`)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return
    parent = path.parent if str(path.parent) else Path(".")
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
    os.replace(path, aside / "x")
    _rmtree(aside)
