"""The studio's shell around the panels: menu bar, keyboard shortcuts, recent files, status line and toasts.

Everything here only calls the controller's intents (guarded) and the studio's view methods; it
draws, it never computes. The recent-files list lives in a small JSON file under the user's config
folder (``$XDG_CONFIG_HOME/palm-studio/recent.json``, else ``~/.config/palm-studio/recent.json``),
written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from app import tags

RECENT_LIMIT = 10
TOAST_S = 4.0
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SHORTCUTS = (
    ("Ctrl+O", "Open photo..."),
    ("Ctrl+E", "Export..."),
    ("F", "Frame the hand (viewport)"),
    ("P", "The photo's view (personalised avatar)"),
    ("Home", "Reset camera"),
    ("Left drag", "Orbit"),
    ("Right / middle drag", "Pan"),
    ("Wheel", "Zoom"),
)
#: Log lines that name a written result: "<what> saved to <path>", "... exported to <path>", ...
SAVED = re.compile(r"(?:(?:saved|exported|written) to |(?:personalisation|training) finished: )(?P<path>\S.*)$")
FINISHED = re.compile(r"^\[job \d+\] (?P<name>.+?): (?P<what>finished|FAILED|cancelled)")
QUIET_JOBS = ("bake", "neural", "name ")
"""Jobs that start on their own (re-bakes, the neural view, ...): no toast when they end."""


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/palm-studio`` (default ``~/.config/palm-studio``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "palm-studio"


class RecentFiles:
    """Most-recent-first list of ``{"path", "kind"}`` (kind: ``photo`` or ``avatar``), persisted as JSON."""

    def __init__(self, path: str | os.PathLike | None = None, limit: int = RECENT_LIMIT):
        self.path = Path(path) if path is not None else config_dir() / "recent.json"
        self.limit = limit
        self.entries: list[dict] = self._read()
        self.revision = 0

    def _read(self) -> list[dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        items = data.get("recent", []) if isinstance(data, dict) else []
        return [{"path": str(e["path"]), "kind": str(e.get("kind", "photo"))} for e in items
                if isinstance(e, dict) and isinstance(e.get("path"), str)][: self.limit]

    def add(self, path: str, kind: str) -> None:
        path = str(Path(path).expanduser().resolve()) if path else ""
        if not path:
            return
        self.entries = [{"path": path, "kind": kind}] + [e for e in self.entries if e["path"] != path]
        del self.entries[self.limit:]
        self.revision += 1
        self.save()

    def save(self) -> None:
        """Write atomically; a read-only config folder only loses the list (never an error)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".recent.", suffix=".json.tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump({"format": "palm-studio-recent-v1", "recent": self.entries}, fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass


class Shell:
    """Menu bar, shortcuts, recent files, status line and toasts of one :class:`app.studio.Studio`."""

    def __init__(self, studio, recent: RecentFiles | None = None):
        self.studio = studio
        self.recent = recent if recent is not None else RecentFiles()
        self._recent_drawn = -1
        self._log_seen = 0
        self._last_line = None
        self._toast_until = 0.0
        self.toasts: list[str] = []
        """Every toast shown, oldest first (a test hook)."""
        self.saved_path = ""
        self._photo_seen = ""
        self._avatar_seen = ""

    # -- construction --------------------------------------------------------------------------

    def build_menu(self) -> None:
        dpg, s = self.studio.dpg, self.studio
        with dpg.menu_bar(tag=tags.MENU_BAR):
            with dpg.menu(label="File", tag=tags.MENU_FILE):
                dpg.add_menu_item(label="Open photo...", shortcut="Ctrl+O", tag=tags.MENU_OPEN_PHOTO,
                                  callback=lambda: self.open_photo_dialog())
                dpg.add_menu_item(label="Open avatar...", tag=tags.MENU_OPEN_AVATAR,
                                  callback=lambda: self.open_avatar_dialog())
                dpg.add_menu_item(label="Save avatar as...", tag=tags.MENU_SAVE_AVATAR,
                                  callback=lambda: self.save_avatar_dialog())
                dpg.add_menu_item(label="Export...", shortcut="Ctrl+E", tag=tags.MENU_EXPORT,
                                  callback=lambda: self.export())
                dpg.add_separator()
                dpg.add_menu(label="Recent files", tag=tags.MENU_RECENT)
            with dpg.menu(label="View", tag=tags.MENU_VIEW):
                dpg.add_menu_item(label="Frame", shortcut="F", callback=lambda: s.frame_hand())
                dpg.add_menu_item(label="Photo view", shortcut="P", tag=tags.MENU_PHOTO_VIEW,
                                  callback=lambda: s.photo_view())
                dpg.add_menu_item(label="Reset camera", shortcut="Home", callback=lambda: s.reset_camera())
                dpg.add_menu_item(label="Photo overlay", check=True, tag=tags.MENU_OVERLAY,
                                  callback=lambda sender, value: s.set_overlay(value))
                dpg.add_separator()
                dpg.add_menu_item(label="Diagnostics and log", tag=tags.MENU_DIAGNOSTICS,
                                  callback=lambda: dpg.configure_item(tags.DIAGNOSTICS_WINDOW, show=True))
            with dpg.menu(label="Help", tag=tags.MENU_HELP):
                dpg.add_menu_item(label="Keyboard shortcuts", tag=tags.MENU_SHORTCUTS,
                                  callback=lambda: dpg.configure_item(tags.HELP_WINDOW, show=True))
                dpg.add_menu_item(label="About palm-studio", callback=lambda: dpg.configure_item(tags.ABOUT_WINDOW,
                                                                                               show=True))

    def build_windows(self) -> None:
        dpg = self.studio.dpg
        with dpg.window(label="Keyboard shortcuts", show=False, tag=tags.HELP_WINDOW, width=380, height=250,
                        no_collapse=True), dpg.table(header_row=False):
            dpg.add_table_column(width_fixed=True, init_width_or_weight=140)
            dpg.add_table_column()
            for key, what in SHORTCUTS:
                with dpg.table_row():
                    dpg.add_text(key, color=(230, 200, 120))
                    dpg.add_text(what)
        with dpg.window(label="About palm-studio", show=False, tag=tags.ABOUT_WINDOW, width=420, height=130,
                        no_collapse=True):
            dpg.add_text("palm-studio: PALM-Net hand avatars: pose, relight, personalise from a photo, export.",
                         wrap=400)
            dpg.add_text(f"Recent files: {self.recent.path}", wrap=400, color=(150, 150, 150))
        with dpg.window(tag=tags.TOAST, show=False, no_title_bar=True, no_resize=True, no_move=True, height=34,
                        no_collapse=True, no_focus_on_appearing=True, no_scrollbar=True, no_saved_settings=True):
            dpg.add_text("", tag=tags.TOAST_TEXT, color=(160, 230, 160))

    def build_handlers(self) -> None:
        dpg = self.studio.dpg
        dpg.add_key_press_handler(dpg.mvKey_O, callback=lambda: self._ctrl(self.open_photo_dialog))
        dpg.add_key_press_handler(dpg.mvKey_E, callback=lambda: self._ctrl(self.export))
        dpg.add_key_press_handler(dpg.mvKey_F, callback=lambda: self._plain(self.studio.frame_hand))
        dpg.add_key_press_handler(dpg.mvKey_P, callback=lambda: self._plain(self.studio.photo_view))
        dpg.add_key_press_handler(dpg.mvKey_Home, callback=lambda: self._plain(self.studio.reset_camera))

    def _ctrl_down(self) -> bool:
        dpg = self.studio.dpg
        return any(dpg.is_key_down(k) for k in (dpg.mvKey_LControl, dpg.mvKey_RControl, dpg.mvKey_ModCtrl))

    def _ctrl(self, fn) -> None:
        if self._ctrl_down():
            fn()

    def _plain(self, fn) -> None:
        """A one-key shortcut: not with Ctrl, and not while typing in the panels (unless over the viewport)."""
        dpg = self.studio.dpg
        if self._ctrl_down():
            return
        if dpg.is_item_hovered(tags.VIEWPORT_IMAGE) or not dpg.is_item_focused(tags.PANEL_CHILD):
            fn()

    # -- actions -------------------------------------------------------------------------------

    def open_photo_dialog(self) -> None:
        self.studio.file_dialog("Open photo", list(PHOTO_EXTENSIONS), self.open_photo)

    def open_photo(self, path: str) -> None:
        c = self.studio.controller
        c.guarded(c.open_photo, path)

    def open_avatar_dialog(self) -> None:
        self.studio.file_dialog("Open avatar (folder)", [], self.open_avatar, directory=True)

    def open_avatar(self, path: str) -> None:
        c = self.studio.controller
        c.guarded(c.load_avatar, path)

    def save_avatar_dialog(self) -> None:
        c = self.studio.controller
        if not c.state.subject.avatar_path:
            c.error("no personalised avatar to save: open one (File > Open avatar...) or personalise a photo")
            return
        self.studio.file_dialog("Save avatar as (new folder)", [], self.save_avatar_as, directory=True)

    def save_avatar_as(self, path: str) -> None:
        """Copy the shown avatar's folder to ``path`` (the controller's ``save_avatar_as`` when it has one)."""
        c = self.studio.controller
        method = getattr(c, "save_avatar_as", None)
        if method is not None:
            c.guarded(method, path)
            return
        c.guarded(self._copy_avatar, c.state.subject.avatar_path, path)

    def _copy_avatar(self, source: str, dest: str) -> None:
        from palm.errors import PalmError

        src, out = Path(source), Path(dest)
        if out.resolve() == src.resolve():
            raise PalmError(dest, "that is the avatar's own folder")
        if out.exists() and any(out.iterdir()):
            out = out / src.name  # a chosen existing folder: save inside it
            if out.exists():
                raise PalmError(out, "already exists")
        tmp = out.parent / f".{out.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        self.recent.add(str(out), "avatar")
        self.studio.controller.log(f"avatar saved to {out}")

    def export(self) -> None:
        """The export dialog (``app.panels.export.open_dialog`` when it exists), else the Export tab."""
        from app.panels import export

        opener = getattr(export, "open_dialog", None)
        if opener is not None:
            self.studio.intent(opener, self.studio)
        else:
            self.studio.show_tab("Export")

    def open_recent(self, entry: dict) -> None:
        if not Path(entry["path"]).exists():
            self.studio.controller.error(f"{entry['path']}: no longer exists")
            return
        (self.open_avatar if entry["kind"] == "avatar" else self.open_photo)(entry["path"])

    # -- per frame -----------------------------------------------------------------------------

    def refresh(self) -> None:
        dpg, c = self.studio.dpg, self.studio.controller
        photo, avatar = c.state.photo.path, c.state.subject.avatar_path
        if photo != self._photo_seen:
            self._photo_seen = photo
            if photo:
                self.recent.add(photo, "photo")
                self.studio.show_tab("Personalise")  # straight to the check step
        if avatar != self._avatar_seen:
            self._avatar_seen = avatar
            if avatar:
                self.recent.add(avatar, "avatar")
        if self._recent_drawn != self.recent.revision:
            self._recent_drawn = self.recent.revision
            dpg.delete_item(tags.MENU_RECENT, children_only=True)
            for entry in self.recent.entries:
                dpg.add_menu_item(label=f"{Path(entry['path']).name}  ({entry['kind']})", parent=tags.MENU_RECENT,
                                  user_data=dict(entry), callback=lambda s, a, u: self.open_recent(u))
            if not self.recent.entries:
                dpg.add_menu_item(label="(none yet)", parent=tags.MENU_RECENT, enabled=False)
        dpg.configure_item(tags.MENU_SAVE_AVATAR, enabled=bool(avatar))
        dpg.configure_item(tags.MENU_PHOTO_VIEW, enabled=self.studio.photo_camera is not None)
        log = c.state.log
        if log and (len(log) != self._log_seen or log[-1] is not self._last_line):
            start = self._new_lines_start(log) if len(log) >= self._log_seen else 0
            for line in log[start:]:
                self._log_line(line)
            self._log_seen, self._last_line = len(log), log[-1]
        if self._toast_until and time.monotonic() > self._toast_until:
            self._toast_until = 0.0
            dpg.configure_item(tags.TOAST, show=False)

    def _new_lines_start(self, log: list[str]) -> int:
        """Index of the first log line not seen yet (the log drops its oldest lines when full)."""
        if self._last_line is None:
            return 0
        for i in range(len(log) - 1, -1, -1):
            if log[i] is self._last_line:
                return i + 1
        return 0

    def _log_line(self, line: str) -> None:
        first = line.splitlines()[0] if line else ""
        saved = SAVED.search(first)
        if saved and saved.group("path").strip() not in ("None", ""):
            self.saved_path = saved.group("path").strip()
            self.studio.dpg.set_value(tags.STATUS_SAVED, f"saved: {self.saved_path}")
            self.toast(first)
            return
        done = FINISHED.match(first)
        if done and not done.group("name").startswith(QUIET_JOBS):
            self.toast(f"{done.group('name')}: {done.group('what')}")

    def toast(self, text: str) -> None:
        """Show ``text`` for a few seconds in the viewport's bottom-right corner."""
        dpg = self.studio.dpg
        self.toasts.append(text)
        dpg.set_value(tags.TOAST_TEXT, text[:160])
        width = min(8 * len(text[:160]) + 24, 700)
        vw, vh = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()
        dpg.configure_item(tags.TOAST, show=True, width=width, height=34,
                           pos=(max(8, vw - width - 16), max(8, vh - 90)))
        self._toast_until = time.monotonic() + TOAST_S
