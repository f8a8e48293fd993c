"""Real input events for a window on an X server (XTEST): pointer moves, clicks, keys.

Used by the GUI tests and ``bench/viewport.py`` to drive the studio the way a user does: the
events go through the X server, GLFW and Dear PyGui like hardware input. Coordinates are relative
to the window's top-left corner.
"""

from __future__ import annotations

import time

from app.dnd_x11 import find_window


class XInput:
    """Fake input into the window titled ``title`` (owned by ``pid`` when given) on ``display_name``."""

    def __init__(self, title: str, pid: int | None = None, display_name: str | None = None, timeout_s: float = 30.0):
        from Xlib import display

        self.d = display.Display(display_name)
        deadline = time.monotonic() + timeout_s
        self.window = None
        while self.window is None:
            self.window = find_window(self.d, title, pid)
            if self.window is None:
                if time.monotonic() > deadline:
                    self.d.close()
                    raise RuntimeError(f"no window titled {title!r}")
                time.sleep(0.1)

    def origin(self) -> tuple[int, int]:
        """The window's top-left corner in root coordinates."""
        root = self.d.screen().root
        pos = self.window.translate_coords(root, 0, 0)
        return -pos.x, -pos.y

    def move(self, x: int, y: int) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        ox, oy = self.origin()
        xtest.fake_input(self.d, X.MotionNotify, x=int(ox + x), y=int(oy + y))
        self.d.sync()

    def button(self, button: int = 1, press: bool = True) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        xtest.fake_input(self.d, X.ButtonPress if press else X.ButtonRelease, button)
        self.d.sync()

    def click(self, x: int, y: int, button: int = 1, hold_s: float = 0.05) -> None:
        self.move(x, y)
        time.sleep(hold_s)
        self.button(button, True)
        time.sleep(hold_s)
        self.button(button, False)

    def key(self, name: str, *modifiers: str, hold_s: float = 0.05) -> None:
        """Press and release the key ``name`` (an X keysym name: ``"o"``, ``"F10"``, ``"Home"``) while
        holding ``modifiers`` (``"Control_L"``, ``"Shift_L"``, ``"Alt_L"``)."""
        from Xlib import XK, X
        from Xlib.ext import xtest

        codes = [self.d.keysym_to_keycode(XK.string_to_keysym(m)) for m in modifiers]
        code = self.d.keysym_to_keycode(XK.string_to_keysym(name))
        if not code:
            raise ValueError(f"unknown key {name!r}")
        for c in codes:
            xtest.fake_input(self.d, X.KeyPress, c)
        xtest.fake_input(self.d, X.KeyPress, code)
        self.d.sync()
        time.sleep(hold_s)
        xtest.fake_input(self.d, X.KeyRelease, code)
        for c in reversed(codes):
            xtest.fake_input(self.d, X.KeyRelease, c)
        self.d.sync()

    def press(self, name: str, down: bool = True) -> None:
        """Only press (or with ``down=False`` only release) the key ``name``."""
        from Xlib import XK, X
        from Xlib.ext import xtest

        xtest.fake_input(self.d, X.KeyPress if down else X.KeyRelease,
                         self.d.keysym_to_keycode(XK.string_to_keysym(name)))
        self.d.sync()

    def close(self) -> None:
        self.d.close()
