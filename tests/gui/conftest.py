"""GUI test fixtures: a private Xvfb per session and one in-process studio shared by the tests.

The ``xvfb`` fixture starts ``Xvfb :N -screen 0 1600x1000x24`` on a free display number, points
``DISPLAY`` at it and stops that process at the end. Dear PyGui allows one context per process, so
the in-process :class:`app.studio.Studio` is session-scoped too; tests that need a fresh
application (start-up, screenshot, quitting) run it in a subprocess on the same display.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from app.xvfb import start_xvfb

PHOTO = "/work/shared/data/photos/opencv_doc/handSrc.jpg"


def _gui_ready() -> str:
    if shutil.which("Xvfb") is None:
        return "Xvfb not installed"
    try:
        import dearpygui  # noqa: F401
        import moderngl  # noqa: F401
    except ImportError as exc:
        return f"missing {exc.name}"
    return ""


@pytest.fixture(scope="session")
def xvfb():
    why = _gui_ready()
    if why:
        pytest.skip(why)
    old = os.environ.get("DISPLAY")
    display = start_xvfb(1600, 1000)
    os.environ["DISPLAY"] = display.display
    yield display.display
    display.stop()
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


@pytest.fixture(scope="session")
def studio(xvfb):
    from app.studio import Studio

    app = Studio(size=(1280, 800))
    app.step_frames(3)
    yield app
    app.close()


@pytest.fixture
def photo_path():
    if not os.path.isfile(PHOTO):
        pytest.skip("sample photo not available")
    return PHOTO


# helpers (fixtures, because tests run with --import-mode=importlib)


def settle(studio, predicate=None, timeout_s: float = 10.0, min_frames: int = 2) -> bool:
    """Step frames until ``predicate()`` holds (or just ``min_frames`` frames); True on success."""
    studio.step_frames(min_frames)
    deadline = time.monotonic() + timeout_s
    while predicate is not None and not predicate():
        if time.monotonic() > deadline:
            return False
        studio.step_frames(1)
        time.sleep(0.01)
    return True


def changed_fraction(a: np.ndarray, b: np.ndarray, threshold: int = 8) -> float:
    """Fraction of pixels whose RGB differs by more than ``threshold`` levels."""
    diff = np.abs(a[..., :3].astype(int) - b[..., :3].astype(int)).max(axis=-1)
    return float((diff > threshold).mean())


@pytest.fixture(name="settle")
def settle_fixture():
    return settle


@pytest.fixture(name="changed_fraction")
def changed_fixture():
    return changed_fraction
