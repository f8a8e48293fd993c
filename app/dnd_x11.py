"""File drops from the file manager on X11: the XDND protocol (version 5) with python-xlib.

Dear PyGui has no file-drop event, so the studio speaks XDND itself, on a second X connection in
a small thread. It creates an unmapped proxy window on that connection and publishes it through
the ``XdndProxy`` property of the studio's top-level window (found by its title), with
``XdndAware`` = 5 on both, so drag sources send their client messages to the proxy (which this
connection receives) instead of to GLFW's window. The thread answers ``XdndEnter``/``XdndPosition``
with ``XdndStatus`` (accept, action copy), and on ``XdndDrop`` converts ``XdndSelection`` to
``text/uri-list``, reads the reply on ``SelectionNotify``, sends ``XdndFinished`` and hands every
local file path to ``on_drop`` (the studio passes a queue's ``put``; the frame loop takes it).

Windows would use ``DragAcceptFiles`` + ``WM_DROPFILES`` on the viewport's HWND; not implemented
(this module is X11 only).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from urllib.parse import unquote, urlparse

XDND_VERSION = 5


def parse_uri_list(text: str) -> list[str]:
    """Local paths of the ``file://`` URIs in a ``text/uri-list`` (comments and others skipped)."""
    paths = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.strip().rstrip("\x00")
        if not line or line.startswith("#"):
            continue
        uri = urlparse(line)
        if uri.scheme == "file" and uri.netloc in ("", "localhost"):
            paths.append(unquote(uri.path))
        elif uri.scheme == "" and line.startswith("/"):
            paths.append(line)
    return paths


def window_title(display, window) -> str:
    """``_NET_WM_NAME`` (UTF-8) or ``WM_NAME`` of a window, '' when unset."""
    from Xlib import X

    try:
        prop = window.get_full_property(display.intern_atom("_NET_WM_NAME"), X.AnyPropertyType)
        if prop and prop.value:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name()
        if isinstance(name, bytes):
            return name.decode("latin-1")
        return name or ""
    except Exception:  # noqa: BLE001 - windows vanish while we look
        return ""


def window_pid(display, window) -> int | None:
    """``_NET_WM_PID`` of a window (GLFW sets it), or None."""
    from Xlib import X

    try:
        prop = window.get_full_property(display.intern_atom("_NET_WM_PID"), X.AnyPropertyType)
    except Exception:  # noqa: BLE001
        return None
    return int(prop.value[0]) if prop and len(prop.value) else None


def find_window(display, title: str, pid: int | None = None):
    """The first window (breadth-first from the root) titled ``title`` (and owned by ``pid``), or None."""
    from Xlib import error

    todo = [display.screen().root]
    while todo:
        win = todo.pop(0)
        if window_title(display, win) == title and (pid is None or window_pid(display, win) in (pid, None)):
            return win
        try:
            todo.extend(win.query_tree().children)
        except error.XError:
            continue
    return None


class XdndListener:
    """Accepts XDND drops on the window titled ``title``; calls ``on_drop(path)`` per file.

    ``on_drop`` runs on the listener's thread: pass something thread-safe (a queue's ``put``).
    """

    def __init__(self, title: str, on_drop: Callable[[str], None], timeout_s: float = 5.0):
        from Xlib import X, display

        self.on_drop = on_drop
        self.display = display.Display()
        d = self.display
        deadline = time.monotonic() + timeout_s
        self.target = find_window(d, title, os.getpid())
        while self.target is None and time.monotonic() < deadline:
            time.sleep(0.05)
            self.target = find_window(d, title, os.getpid())
        if self.target is None:
            d.close()
            raise RuntimeError(f"no X window titled {title!r}")
        self.atoms = {name: d.intern_atom(name) for name in (
            "XdndAware", "XdndProxy", "XdndEnter", "XdndPosition", "XdndStatus", "XdndLeave", "XdndDrop",
            "XdndFinished", "XdndSelection", "XdndActionCopy", "text/uri-list", "PALM_XDND_DATA")}
        root = d.screen().root
        self.proxy = root.create_window(-10, -10, 1, 1, 0, X.CopyFromParent, X.InputOnly, X.CopyFromParent,
                                        event_mask=X.PropertyChangeMask)
        a = self.atoms
        for win in (self.target, self.proxy):
            win.change_property(a["XdndAware"], 4, 32, [XDND_VERSION])  # 4 = XA_ATOM
            win.change_property(a["XdndProxy"], 33, 32, [self.proxy.id])  # 33 = XA_WINDOW
        d.flush()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xdnd", daemon=True)
        self._source = 0
        self.received: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        with contextlib.suppress(Exception):  # the server may already be gone
            self.display.close()

    # -- protocol --------------------------------------------------------------------------------

    def _send(self, window_id: int, message: str, data: list[int]) -> None:
        from Xlib import X
        from Xlib.protocol import event

        win = self.display.create_resource_object("window", window_id)
        ev = event.ClientMessage(window=win, client_type=self.atoms[message], data=(32, (data + [0] * 5)[:5]))
        win.send_event(ev, event_mask=X.NoEventMask)
        self.display.flush()

    def _loop(self) -> None:
        from Xlib import X

        d, a = self.display, self.atoms
        while not self._stop.is_set():
            if not d.pending_events():
                time.sleep(0.01)
                continue
            ev = d.next_event()
            if ev.type == X.ClientMessage:
                kind, data = ev.client_type, ev.data[1]
                if kind == a["XdndEnter"]:
                    self._source = data[0]
                elif kind == a["XdndPosition"]:
                    self._source = data[0]
                    # accept (bit 0); no rectangle: send positions everywhere; action copy
                    self._send(data[0], "XdndStatus", [self.target.id, 1, 0, 0, a["XdndActionCopy"]])
                elif kind == a["XdndLeave"]:
                    self._source = 0
                elif kind == a["XdndDrop"]:
                    self._source = data[0]
                    self.proxy.convert_selection(a["XdndSelection"], a["text/uri-list"], a["PALM_XDND_DATA"],
                                                 data[2] or X.CurrentTime)
                    d.flush()
            elif ev.type == X.SelectionNotify and ev.selection == a["XdndSelection"]:
                ok = ev.property != X.NONE
                paths: list[str] = []
                if ok:
                    prop = self.proxy.get_full_property(a["PALM_XDND_DATA"], X.AnyPropertyType)
                    value = prop.value if prop is not None else b""
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    paths = parse_uri_list(text)
                    self.proxy.delete_property(a["PALM_XDND_DATA"])
                if self._source:
                    self._send(self._source, "XdndFinished",
                               [self.target.id, 1 if paths else 0, a["XdndActionCopy"] if paths else 0])
                self._source = 0
                for path in paths:
                    self.received.append(path)
                    self.on_drop(path)
