"""The studio's camera views and the photo overlay (a mixin of :class:`app.studio.Studio`).

Start-up and "Reset camera" share :meth:`CameraViews.reset_camera`; "Frame" centres the posed
hand; "the photo's view" looks through a personalised avatar's own camera (``K``, ``Rt`` with its
translation folded in, the photo's frame letterboxed into the viewport, see
:func:`app.camera.fit_intrinsics`), optionally with the photo behind the avatar.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.camera import PhotoCamera
from palm.hand.lbs import skin_vertices

DEFAULT_AZIMUTH, DEFAULT_ELEVATION = 0.5, 0.9


class CameraViews:
    """Camera intents of the studio; expects ``controller``, ``camera``, ``vp_size`` and ``_moved()``."""

    def _posed_points(self) -> np.ndarray:
        """(N, 3) posed points of the avatar for framing: every fourth vertex of the mesh (framing
        needs the hand's extent, not every vertex; a quarter of the skinning cost on a key press)."""
        c = self.controller
        a = c.avatar
        posed, _ = skin_vertices(a.vertices[::4], a.normals[::4], a.skin_weights[::4], c.current_bones())
        return posed

    def _aspect(self) -> float:
        return self.vp_size[0] / max(self.vp_size[1], 1)

    def reset_camera(self) -> None:
        """The start-up view: fixed angles, the posed hand framed (start-up and reset agree)."""
        self.camera.home(self._posed_points(), DEFAULT_AZIMUTH, DEFAULT_ELEVATION, self._aspect())
        self._user_camera = False
        self._moved()

    _frame_camera = reset_camera

    def frame_hand(self) -> None:
        """Centre the posed hand and fit it in the view, keeping the viewing direction."""
        if self.camera.photo is not None:
            self.camera.leave_photo()
        self.camera.frame(self._posed_points(), self._aspect())
        self._user_camera = True
        self._moved()

    def photo_view(self) -> None:
        """Look through the personalisation photo's camera (its K, Rt and frame, letterboxed)."""
        if self.photo_camera is None:
            self.controller.log("no photo view: open a personalised avatar first")
            return
        self.camera.use_photo(self.photo_camera)
        self._user_camera = True
        self._moved()

    def set_overlay(self, on: bool) -> None:
        """Show the photo behind the avatar in the photo's view."""
        self.overlay = bool(on)
        if self.overlay and self.camera.photo is None:
            self.photo_view()
        self._moved()

    def _follow_avatar(self) -> None:
        """A personalised avatar was loaded: keep its photo camera and show its view."""
        folder = self.controller.state.subject.avatar_path
        if folder == self._avatar_seen:
            return
        self._avatar_seen = folder
        self.photo_camera, self._photo_image = None, None
        if not folder:
            return
        try:
            meta = json.loads((Path(folder) / "avatar.json").read_text())
            self.photo_camera = PhotoCamera.from_avatar(meta["camera"], meta.get("transl"), bool(meta.get("left", False)))
            self._photo_file = _photo_file(folder, meta.get("photo", ""), self.controller.state.photo.path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.controller.log(f"{folder}: no photo camera ({exc})")
            return
        self.photo_view()

    def _photo_backdrop(self) -> np.ndarray | None:
        """The photo as float RGB (h, w, 3) in [0, 1], or None when it cannot be read."""
        if self._photo_image is None and getattr(self, "_photo_file", ""):
            try:
                import imageio.v3 as iio

                img = np.asarray(iio.imread(self._photo_file), np.float32)
                img = img[..., None].repeat(3, -1) if img.ndim == 2 else img[..., :3]
                self._photo_image = img / (65535.0 if img.max() > 255 else 255.0)
            except Exception as exc:  # noqa: BLE001 - an overlay is a convenience
                self.controller.log(f"{self._photo_file}: photo overlay unavailable ({exc})")
                self._photo_file = ""
        return self._photo_image


def _photo_file(folder: str, recorded: str, opened: str) -> str:
    """The avatar's photo on disk: as recorded (absolute, or beside the avatar), else the photo open now."""
    for candidate in (Path(recorded), Path(folder) / recorded, Path(folder) / Path(recorded).name):
        if recorded and candidate.is_file():
            return str(candidate)
    return opened if opened and Path(opened).is_file() else ""


def _over_photo(image: np.ndarray, photo: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The avatar (alpha > 0 in ``image``, (H, W, 4) uint8) over the photo scaled into ``rect``; the
    letterbox bands outside the photo are dark grey."""
    h, w = image.shape[:2]
    out = np.full((h, w, 3), 28, np.uint8)
    x0, y0, x1, y1 = rect
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 > x0 and y1 > y0:
        ys = np.minimum(((np.arange(y0, y1) - rect[1] + 0.5) * photo.shape[0] / (rect[3] - rect[1])).astype(int),
                        photo.shape[0] - 1)
        xs = np.minimum(((np.arange(x0, x1) - rect[0] + 0.5) * photo.shape[1] / (rect[2] - rect[0])).astype(int),
                        photo.shape[1] - 1)
        out[y0:y1, x0:x1] = (np.clip(photo[ys][:, xs], 0, 1) * 255 + 0.5).astype(np.uint8)
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    rgb = image[..., :3] * alpha + out * (1.0 - alpha)
    result = np.empty_like(image)
    result[..., :3] = rgb.astype(np.uint8)
    result[..., 3] = 255
    return result


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w, 3|4) float image to (H, W, 4)."""
    w, h = size
    ys = np.minimum((np.arange(h) * image.shape[0] / h).astype(int), image.shape[0] - 1)
    xs = np.minimum((np.arange(w) * image.shape[1] / w).astype(int), image.shape[1] - 1)
    out = np.ones((h, w, 4), np.float32)
    out[..., :3] = image[ys][:, xs][..., :3]
    return out
