"""The project's own error type: every bad input becomes a :class:`PalmError` naming the file.

The ``palm`` command prints it as one line, ``error: <path>: <what is wrong>``, and exits with
status 2; the studio shows the same text in a dialog.
"""

from __future__ import annotations

import os


class PalmError(Exception):
    """A user-facing error about one input or output.

    Args:
        path: the file or folder the problem is about (or a short name such as ``--pose``).
        message: what is wrong, in one line, lower case, no trailing full stop.
    """

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = "" if path is None else os.fspath(path)
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class JobCancelled(Exception):
    """Raised inside a job when its cancel token is set (caught by the job runner)."""
