"""The whole single-photo preprocessing: photo -> landmarks, hand fit, mask, and its check images.

See :mod:`palm.data.photo` for the stages; everything in :class:`PhotoResult` lives in the working
frame (the photo mirrored horizontally when it shows a left hand).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palm.data.photo.detect import SKELETON, HandDetection, detect_hand
from palm.data.photo.fit import HandFit, fit_hand, fitted_keypoints_2d, load_hand_params
from palm.data.photo.segment import fitted_silhouette, segment_hand


@dataclass
class PhotoResult:
    """Everything the personaliser needs from one photo, in the working frame.

    Attributes:
        image: ``(H, W, 3)`` float32 sRGB in ``[0, 1]`` (flipped horizontally when ``left``).
        mask: ``(H, W)`` bool hand mask (working frame).
        keypoints_2d: ``(21, 2)`` landmarks (working frame); ``None`` with user hand params only.
        fit: the fitted (or user-given) hand.
        handedness: ``"left"`` or ``"right"`` (the real hand in the photo).
        left: whether the working frame is mirrored.
        detections: every hand found (photo frame), most confident first.
        mask_source: ``"u2netp"``, ``"u2netp+fit"``, ``"user"`` or ``"alpha"``.
        timings: seconds per stage.
        path: the photo.
    """

    image: np.ndarray
    mask: np.ndarray
    keypoints_2d: np.ndarray | None
    fit: HandFit
    handedness: str
    left: bool
    detections: list[HandDetection] = field(default_factory=list)
    mask_source: str = "u2netp"
    timings: dict[str, float] = field(default_factory=dict)
    path: str = ""

    @property
    def mask_fraction(self) -> float:
        return float(self.mask.mean())

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` working-frame pixel coordinates to the photo's own pixels."""
        points = np.asarray(points, dtype=np.float64).copy()
        if self.left:
            points[..., 0] = self.image.shape[1] - points[..., 0]
        return points

    def summary(self) -> dict[str, Any]:
        """The JSON ``palm photo --json`` prints (keypoints in the photo's own pixels)."""
        kp = self.keypoints_2d if self.keypoints_2d is not None else self.fit.keypoints_2d
        return {
            "photo": self.path,
            "hand_found": kp is not None,
            "handedness": self.handedness,
            "left": self.left,
            "keypoints_2d": None if kp is None else np.round(self.to_photo(kp), 2).tolist(),
            "reprojection_px": None
            if not np.isfinite(self.fit.reprojection_px)
            else round(float(self.fit.reprojection_px), 3),
            "mask_fraction": round(self.mask_fraction, 4),
            "mask_source": self.mask_source,
            "width": int(self.image.shape[1]),
            "height": int(self.image.shape[0]),
            "n_hands": len(self.detections),
            "detections": [d.to_json() for d in self.detections],
            "hand_params": self.fit.to_json(),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


# ---------------------------------------------------------------------------------------------
# The whole preprocessing
# ---------------------------------------------------------------------------------------------


def preprocess_photo(
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    mask_path: str | os.PathLike | None = None,
    hand_params_path: str | os.PathLike | None = None,
    left: bool | None = None,
    hand: Any = None,
    mirrored: bool = False,
    fit_steps: int = 250,
) -> PhotoResult:
    """Photo -> landmarks, hand fit, mask (and the check images when ``out_dir`` is given).

    Args:
        path: the photo.
        out_dir: when given, writes ``overlay.png``, ``mask.png`` (photo frame) and
            ``hand_params.json`` (working frame, :func:`load_hand_params` format) there.
        mask_path: the user's mask (skips U^2-Net-p). A photo with a non-opaque alpha channel
            uses its alpha as the mask.
        hand_params_path: the user's hand parameters (skips detection and fitting).
        left: force the handedness (default: detected; ``left`` in the hand params file).
        hand: hand model (default ``load_hand("open")``).
        mirrored: the photo is a mirrored selfie.
        fit_steps: optimisation steps of :func:`fit_hand`.

    Raises:
        PalmError: unreadable inputs, or ``(path, "no hand found")``.
    """
    from palm.imageio import read_image_alpha, read_mask

    if hand is None:
        from palm.hand import load_hand

        hand = load_hand("open")
    timings: dict[str, float] = {}
    photo, alpha = read_image_alpha(path)
    height, width = photo.shape[:2]
    detections: list[HandDetection] = []
    keypoints = None
    if hand_params_path is not None:
        fit = load_hand_params(hand_params_path, width, height, int(getattr(hand, "n_betas", 10)))
        if left is not None:
            fit.left = bool(left)
        is_left = fit.left
        fit.keypoints_2d = fitted_keypoints_2d(fit, hand)
        handedness = "left" if is_left else "right"
    else:
        detections = detect_hand(photo, path=path, mirrored=mirrored, timings=timings)
        best = detections[0]
        is_left = best.handedness == "left" if left is None else bool(left)
        handedness = "left" if is_left else "right"
        t0 = time.perf_counter()
        fit = fit_hand(best.keypoints_2d, (width, height), hand, left=is_left,
                       world_keypoints=best.world_keypoints, steps=fit_steps)  # fmt: skip
        timings["fit_s"] = time.perf_counter() - t0
        keypoints = best.keypoints_2d.copy()
        if is_left:
            keypoints[:, 0] = width - keypoints[:, 0]
    image = photo[:, ::-1].copy() if is_left else photo
    t0 = time.perf_counter()
    if mask_path is not None:
        mask = read_mask(mask_path, (height, width))
        source = "user"
    elif alpha is not None:
        mask = alpha > 0.5
        source = "alpha"
    else:
        mask = None
        source = "u2netp+fit"
    if mask is not None:
        mask = mask[:, ::-1].copy() if is_left else mask
    else:
        mask = segment_hand(image, fit=fit, hand=hand)
        timings["segment_s"] = time.perf_counter() - t0
    result = PhotoResult(
        image=image,
        mask=mask,
        keypoints_2d=keypoints,
        fit=fit,
        handedness=handedness,
        left=is_left,
        detections=detections,
        mask_source=source,
        timings=timings,
        path=os.fspath(path),
    )
    if out_dir is not None:
        write_outputs(result, out_dir, hand)
    return result


def write_outputs(result: PhotoResult, out_dir: str | os.PathLike, hand: Any) -> None:
    """Write ``overlay.png``, ``mask.png`` (photo frame) and ``hand_params.json`` into ``out_dir``."""
    from PIL import Image

    from palm.io import atomic_write, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    overlay = render_overlay(result, hand)
    mask = result.mask[:, ::-1] if result.left else result.mask
    with atomic_write(out / "overlay.png") as tmp:
        Image.fromarray(overlay).save(tmp, format="PNG")
    with atomic_write(out / "mask.png") as tmp:
        Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).save(tmp, format="PNG")
    write_json(out / "hand_params.json", result.fit.to_json())


def render_overlay(result: PhotoResult, hand: Any) -> np.ndarray:
    """Check image in the photo's own frame: mask tinted green, fitted-mesh outline in cyan,
    fitted keypoints as blue dots, detected landmarks and skeleton in red/yellow.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from PIL import Image, ImageDraw
    from scipy import ndimage

    img = result.image.astype(np.float32).copy()
    h, w = img.shape[:2]
    m = result.mask
    img[m] = 0.65 * img[m] + 0.35 * np.array([0.1, 0.9, 0.2], np.float32)
    sil = fitted_silhouette(result.fit, hand, h, w)
    outline = sil & ~ndimage.binary_erosion(sil, iterations=2)
    img[outline] = np.array([0.0, 0.9, 1.0], np.float32)
    canvas = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    r = max(2, round(max(h, w) / 250))
    if result.fit.keypoints_2d is not None:
        for x, y in result.fit.keypoints_2d:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(40, 90, 255))
    if result.keypoints_2d is not None:
        kp = result.keypoints_2d
        for a, b in SKELETON:
            draw.line([tuple(kp[a]), tuple(kp[b])], fill=(255, 210, 0), width=max(1, r // 2))
        for x, y in kp:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=(230, 20, 20), width=max(1, r // 2))
    out = np.asarray(canvas)
    return np.ascontiguousarray(out[:, ::-1]) if result.left else out
