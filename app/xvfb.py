"""A private virtual X server (Xvfb) for headless runs: ``--screenshot`` without a display, GUI tests.

``start_xvfb()`` picks a free display number, starts ``Xvfb :N -screen 0 WxHx24``, waits until the
server accepts connections and returns a handle whose ``stop()`` ends that one process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from palm.errors import PalmError


@dataclass
class VirtualDisplay:
    """A running Xvfb: ``display`` is the ``:N`` string to put in ``DISPLAY``."""

    display: str
    process: subprocess.Popen

    def stop(self) -> None:
        """Terminate this Xvfb process (and only it) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _display_free(n: int) -> bool:
    return not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists()


def _accepts(n: int) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(f"/tmp/.X11-unix/X{n}")
        return True
    except OSError:
        return False
    finally:
        sock.close()


def start_xvfb(width: int = 1600, height: int = 1000, first: int = 90, timeout_s: float = 10.0) -> VirtualDisplay:
    """Start Xvfb on the first free display number at or above ``first``.

    Args:
        width, height: screen size in pixels (24-bit colour).
        first: lowest display number to try.
        timeout_s: how long to wait for the server to accept connections.

    Returns:
        A :class:`VirtualDisplay`; call ``stop()`` when done.
    """
    exe = shutil.which("Xvfb")
    if exe is None:
        raise PalmError("Xvfb", "no display and Xvfb is not installed (install the xvfb package or set DISPLAY)")
    for n in range(first, first + 200):
        if not _display_free(n):
            continue
        proc = subprocess.Popen(
            [exe, f":{n}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp", "+extension", "GLX"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break  # lost a race for this number: try the next one
            if _accepts(n):
                return VirtualDisplay(f":{n}", proc)
            time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            raise PalmError("Xvfb", f"virtual X server on :{n} did not start within {timeout_s:.0f} s")
    raise PalmError("Xvfb", "no free X display number found")


def ensure_display(width: int = 1600, height: int = 1000) -> VirtualDisplay | None:
    """Start a private Xvfb and set ``DISPLAY`` when no display is set; return it (or None)."""
    if os.environ.get("DISPLAY"):
        return None
    vd = start_xvfb(width, height)
    os.environ["DISPLAY"] = vd.display
    return vd
