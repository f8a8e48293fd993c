"""``palm-studio --screenshot`` as the checks run it: the asked pose once every bake has finished,
and a viewport that fills the window's right side at 1024x640."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gui
CHILD_BG = np.array([37, 37, 38])


def _shot(xvfb, out, *args):
    env = dict(os.environ, DISPLAY=xvfb, XDG_CONFIG_HOME=str(Path(out).parent / "cfg"))
    proc = subprocess.run([sys.executable, "-m", "app.studio", "--screenshot", str(out), "--size", "1024x640", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return iio.imread(out)[..., :3].astype(int)


def _viewport(image):
    """The viewport image: the bounding box of coloured pixels right of the panels (the widgets,
    borders and backgrounds of the dark theme are neutral greys)."""
    right = image[:, 480:]
    scene = (right.max(-1) - right.min(-1)) > 5
    rows, cols = np.where(scene[40:-40])
    return right[40 + rows.min(): 40 + rows.max() + 1, cols.min(): cols.max() + 1], (rows.min() + 40, cols.min() + 480,
                                                                                      rows.max() + 40, cols.max() + 480)


def _hand_solidity(view) -> float:
    """Silhouette area over its convex hull's: a fist is convex, an open hand is not. The hand is
    what is warmer than the viewport's bluish-grey background (red above blue; any skin tone)."""
    from scipy.spatial import ConvexHull

    mask = (view[..., 0] - view[..., 2] > 5) & (view[..., 0] > 90)
    ys, xs = np.where(mask)
    assert len(ys) > 500, "no hand in the viewport"
    return len(ys) / ConvexHull(np.c_[xs, ys]).volume


@pytest.fixture(scope="module")
def shots(xvfb, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shots")
    return {pose: _shot(xvfb, folder / f"{pose}.png", "--pose", pose) for pose in ("fist", "flat")}


def test_screenshot_shows_the_asked_pose(shots):
    fist, flat = _hand_solidity(_viewport(shots["fist"])[0]), _hand_solidity(_viewport(shots["flat"])[0])
    assert fist > 0.9 and flat < 0.85, (fist, flat)


def test_viewport_fills_the_right_side_at_1024x640(shots):
    image = shots["fist"]
    view, (_top, _left, bottom, right) = _viewport(image)
    # the viewport's child window ends 8 px from the window's right edge and above the status bar:
    # the image reaches its padding on every side (no band, no cropping)
    border_x = 1024 - 1 - 8  # the child window's right border column
    assert border_x - 9 <= right <= border_x - 6, right
    status_top = 640 - 34
    assert bottom >= status_top - 20, bottom
    assert view.shape[0] > 450 and view.shape[1] > 500
