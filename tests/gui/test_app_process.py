"""The real ``palm-studio`` process: --screenshot with and without a display, and a clean quit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gui


def _run(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "app.studio", *args], cwd=ROOT, env=env, capture_output=True, check=False,
                          text=True, timeout=timeout)


def test_screenshot_on_the_test_display(xvfb, tmp_path):
    out = tmp_path / "shot.png"
    proc = _run(["--screenshot", str(out), "--size", "1024x700"], dict(os.environ, DISPLAY=xvfb))
    assert proc.returncode == 0, proc.stderr
    image = iio.imread(out)
    assert image.shape[:2] == (700, 1024)
    # the viewport (right part) shows a lit hand over the background: many distinct colours
    viewport = image[80:600, 500:1000, :3].reshape(-1, 3)
    assert len(np.unique(viewport // 8, axis=0)) > 20
    # the panel column is drawn (not uninitialised memory): mostly the dark theme
    panel = image[100:600, 20:400, :3].astype(int)
    assert np.median(panel) < 90


def test_screenshot_without_display_starts_its_own_xvfb(xvfb, tmp_path):
    out = tmp_path / "headless.png"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = _run(["--screenshot", str(out), "--size", "800x600"], env)
    assert proc.returncode == 0, proc.stderr
    assert iio.imread(out).shape[:2] == (600, 800)


def test_bad_arguments_exit_2_with_a_message(tmp_path):
    proc = _run(["--screenshot", str(tmp_path / "x.png"), "--size", "big"], dict(os.environ))
    assert proc.returncode == 2 and "error: --size" in proc.stderr
    proc = _run([str(tmp_path / "missing.jpg"), "--screenshot", str(tmp_path / "y.png")], dict(os.environ))
    assert proc.returncode == 2 and "missing.jpg" in proc.stderr


def test_window_close_quits_cleanly(xvfb):
    from Xlib import X, display
    from Xlib.protocol import event

    from app.dnd_x11 import find_window
    from app.studio import TITLE

    proc = subprocess.Popen([sys.executable, "-m", "app.studio", "--size", "800x600"], cwd=ROOT,
                            env=dict(os.environ, DISPLAY=xvfb), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    d = display.Display(xvfb)
    try:
        deadline, win = time.monotonic() + 60, None
        while win is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            win = find_window(d, TITLE, proc.pid)
        assert win is not None, proc.stderr.read().decode() if proc.poll() is not None else "no window"
        time.sleep(0.5)
        wm_protocols, wm_delete = d.intern_atom("WM_PROTOCOLS"), d.intern_atom("WM_DELETE_WINDOW")
        ev = event.ClientMessage(window=win, client_type=wm_protocols, data=(32, [wm_delete, X.CurrentTime, 0, 0, 0]))
        win.send_event(ev, event_mask=X.NoEventMask)
        d.flush()
        rc = proc.wait(timeout=30)
    finally:
        d.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, proc.stderr.read().decode()
