"""A real XDND drop onto the studio window from a test client on its own X connection."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app import actions
from app.dnd_x11 import find_window, parse_uri_list
from app.studio import TITLE

pytestmark = pytest.mark.gui


def test_parse_uri_list():
    text = "# comment\r\nfile:///tmp/a%20b.jpg\r\nhttp://example.com/x.png\r\nfile://localhost/c.png\r\n"
    assert parse_uri_list(text) == ["/tmp/a b.jpg", "/c.png"]


class XdndSource:
    """The source side of XDND v5, as a file manager would speak it."""

    def __init__(self, uri_list: str):
        from Xlib import X, display

        self.d = display.Display()
        self.uri_list = uri_list.encode()
        self.win = self.d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent, X.InputOutput,
                                                      X.CopyFromParent)
        self.atom = {n: self.d.intern_atom(n) for n in (
            "XdndAware", "XdndProxy", "XdndEnter", "XdndPosition", "XdndStatus", "XdndDrop", "XdndFinished",
            "XdndSelection", "XdndActionCopy", "text/uri-list")}

    def send(self, to, target_id: int, name: str, data: list[int]) -> None:
        from Xlib import X
        from Xlib.protocol import event

        ev = event.ClientMessage(window=self.d.create_resource_object("window", target_id),
                                 client_type=self.atom[name], data=(32, (data + [0] * 5)[:5]))
        to.send_event(ev, event_mask=X.NoEventMask)
        self.d.flush()

    def wait(self, predicate, timeout_s: float = 5.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while self.d.pending_events():
                ev = self.d.next_event()
                out = predicate(ev)
                if out is not None:
                    return out
            time.sleep(0.01)
        raise AssertionError("XDND peer did not answer in time")

    def drop_on(self, title: str) -> dict:
        from Xlib import X
        from Xlib.protocol import event

        a, d = self.atom, self.d
        target = find_window(d, title, os.getpid())
        assert target is not None, f"no window titled {title}"
        aware = target.get_full_property(a["XdndAware"], X.AnyPropertyType)
        assert aware is not None and aware.value[0] >= 5
        proxy_prop = target.get_full_property(a["XdndProxy"], X.AnyPropertyType)
        to = d.create_resource_object("window", proxy_prop.value[0]) if proxy_prop else target
        self.win.set_selection_owner(a["XdndSelection"], X.CurrentTime)
        d.flush()
        self.send(to, target.id, "XdndEnter", [self.win.id, 5 << 24, a["text/uri-list"]])
        self.send(to, target.id, "XdndPosition", [self.win.id, 0, (20 << 16) | 20, X.CurrentTime,
                                                  a["XdndActionCopy"]])
        status = self.wait(lambda ev: ev if ev.type == X.ClientMessage and ev.client_type == a["XdndStatus"] else None)
        self.send(to, target.id, "XdndDrop", [self.win.id, 0, X.CurrentTime])

        def serve(ev):
            if ev.type == X.SelectionRequest and ev.target == a["text/uri-list"]:
                ev.requestor.change_property(ev.property, ev.target, 8, self.uri_list)
                reply = event.SelectionNotify(time=ev.time, requestor=ev.requestor, selection=ev.selection,
                                              target=ev.target, property=ev.property)
                ev.requestor.send_event(reply, event_mask=X.NoEventMask)
                d.flush()
            if ev.type == X.ClientMessage and ev.client_type == a["XdndFinished"]:
                return ev
            return None

        finished = self.wait(serve)
        return {"status": status.data[1], "finished": finished.data[1], "target": target.id}

    def close(self) -> None:
        self.win.destroy()
        self.d.close()


def test_xdnd_drop_starts_the_photo_pipeline(studio, photo_path, settle):
    c = studio.controller
    assert studio.dnd is not None, "the studio did not start its XDND listener"
    before = len(c.state.events_seen)
    source = XdndSource(Path(photo_path).resolve().as_uri() + "\r\n")
    try:
        reply = source.drop_on(TITLE)
    finally:
        source.close()
    assert reply["status"][1] & 1, "XdndStatus did not accept the drop"
    assert reply["status"][4] == source.atom["XdndActionCopy"]
    assert reply["finished"][1] & 1 and reply["finished"][0] == reply["target"]
    assert settle(studio, lambda: photo_path in c.state.dropped, timeout_s=30)
    assert "preprocess" in c.state.events_seen[before:]
    assert c.state.photo.path == photo_path
    if actions.personalize_available(c.prior):  # a reason why not: this build cannot personalise
        return  # this build cannot personalise: receiving the photo and preprocessing is the whole flow
    # where personalisation is available, accepting the preprocessed photo starts it
    assert settle(studio, lambda: not any(j.name == "preprocess" for j in c.runner.active()), timeout_s=90)
    if c.state.photo.result is not None:
        c.accept_photo()
        assert "personalize" in c.state.events_seen
        c.runner.cancel()
        settle(studio, lambda: not c.runner.active(), timeout_s=30)
