"""Single-photo preprocessing: find the hand, its 21 landmarks, fit the hand model, segment it.

Pipeline (:func:`preprocess_photo`):

1. :func:`detect_hand`: the MediaPipe palm detector (``palm_detection_full.tflite``: the photo
   letterboxed to 192x192 in ``[0, 1]``; 2016 SSD anchors; boxes + 7 palm keypoints; sigmoid
   scores; weighted NMS), then the MediaPipe landmark model (``hand_landmark_full.tflite``) on a
   224x224 crop rotated and scaled from the palm box as MediaPipe does (rotation from the wrist to
   the middle-finger MCP, box x2.6 shifted half a box towards the fingers), refined once on the
   crop derived from the first landmarks (x2.0, as MediaPipe's tracking pass). Both models run on
   ``ai_edge_litert``. Keypoints come back in MediaPipe order (``palm.hand.KEYPOINT_NAMES``) in
   full-image pixels (continuous coordinates: pixel ``(u, v)`` covers ``[u, u+1) x [v, v+1)``).
2. Handedness: MediaPipe's classifier assumes a **mirrored (selfie) image**; its "Right" on an
   ordinary, non-mirrored photo is a *left* hand. :class:`HandDetection.handedness` is already
   swapped, i.e. it names the real hand of a normal photo. Pass ``mirrored=True`` for selfies.
3. Left hands are mirrored: the working image is the photo flipped horizontally, in which the hand
   is a right hand; everything in :class:`PhotoResult` and :class:`HandFit` lives in that working
   frame, and ``left=True`` records it (``PhotoResult.to_photo`` maps points back).
4. :func:`fit_hand`: pose, shape and translation of ``palm.hand.load_hand("open")`` fitted to the
   landmarks under a pinhole camera with a fixed focal length ``f = 1.2 * max(H, W)``
   (:data:`FOCAL_FACTOR`; about a 45 degree field of view on the long side, a phone's main camera),
   principal point at the image centre. Initialisation: global orientation by Kabsch alignment of
   the rest palm to MediaPipe's world landmarks, depth from the ratio of metric to pixel size;
   then articulation to the world landmarks (3D), then everything to the 2D landmarks with pose
   and shape priors.
5. :func:`segment_hand`: U^2-Net-p (``u2netp.onnx``, onnxruntime) saliency, thresholded, refined
   with the fitted silhouette (own rasteriser); or the user's mask.

The camera is OpenCV (x right, y down, z forward) with ``Rt = diag(1, -1, -1, 1)``: world +y is
image up and the camera looks down world -z, so environment-map conventions (world up = +y) hold.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from palm.assets import MODELS
from palm.errors import PalmError

MEDIAPIPE_DIR = MODELS / "mediapipe"
PALM_DETECTOR = MEDIAPIPE_DIR / "palm_detection_full.tflite"
HAND_LANDMARKER = MEDIAPIPE_DIR / "hand_landmark_full.tflite"
U2NETP = MODELS / "u2netp" / "u2netp.onnx"

FOCAL_FACTOR = 1.2
"""Focal length guess in pixels = ``FOCAL_FACTOR * max(H, W)``."""
HAND_PARAMS_FORMAT = "palm-hand-params-v1"

DETECTOR_SIZE = 192
LANDMARK_SIZE = 224
SEGMENTER_SIZE = 320
MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3
MIN_PRESENCE = 0.5

#: Skeleton edges in MediaPipe keypoint order (for overlays).
SKELETON = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip

#: ``Rt`` of every fitted camera: world +y = image up, camera looks down world -z.
WORLD_TO_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandDetection:
    """One hand found in a photo (full-image pixel coordinates of the image it was run on).

    Attributes:
        score: palm-detector confidence in ``[0, 1]``.
        palm_box: ``(4,)`` palm box ``x0, y0, x1, y1``.
        palm_keypoints: ``(7, 2)`` palm keypoints (wrist centre, index/middle/ring/pinky MCP,
            thumb CMC, thumb MCP).
        keypoints_2d: ``(21, 2)`` landmarks in MediaPipe order.
        keypoints_depth: ``(21,)`` MediaPipe's relative depth, pixels, wrist-relative (smaller = nearer).
        world_keypoints: ``(21, 3)`` MediaPipe's metric landmarks, metres, camera-aligned axes
            (x right, y down, z away), centred on the hand.
        presence: landmark model's hand-presence score in ``[0, 1]``.
        handedness: ``"left"`` or ``"right"``: the real hand in the photo (convention swapped
            from MediaPipe's mirrored one unless the photo was declared mirrored).
        handedness_score: confidence of ``handedness`` in ``[0.5, 1]``.
        roi: ``(cx, cy, size, rotation)`` of the landmark crop, pixels and radians.
    """

    score: float
    palm_box: np.ndarray
    palm_keypoints: np.ndarray
    keypoints_2d: np.ndarray
    keypoints_depth: np.ndarray
    world_keypoints: np.ndarray
    presence: float
    handedness: str
    handedness_score: float
    roi: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "presence": round(self.presence, 4),
            "handedness": self.handedness,
            "handedness_score": round(self.handedness_score, 4),
            "palm_box": [round(float(v), 2) for v in self.palm_box],
            "keypoints_2d": np.round(self.keypoints_2d, 2).tolist(),
        }


@dataclass
class HandFit:
    """A right hand fitted to landmarks in the working image (mirrored photo when ``left``).

    Attributes:
        pose: ``(16, 3)`` axis-angle, MANO joint order, flat-hand mean (row 0 global orientation).
        betas: ``(n_betas,)`` shape.
        transl: ``(3,)`` metres, world frame.
        K: ``(3, 3)`` intrinsics, pixels.
        Rt: ``(4, 4)`` world -> camera (:data:`WORLD_TO_CAMERA`).
        width, height: working-image size in pixels.
        left: the photo shows a left hand; the working image is the photo flipped horizontally.
        reprojection_px: mean distance between fitted and target keypoints, pixels.
        keypoints_2d: ``(21, 2)`` projected fitted keypoints (working image).
        hand_name: the hand model it was fitted with (``"open"`` or ``"mano"``).
    """

    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    K: np.ndarray
    Rt: np.ndarray
    width: int
    height: int
    left: bool
    reprojection_px: float = float("nan")
    keypoints_2d: np.ndarray | None = None
    hand_name: str = "open"

    def to_json(self) -> dict[str, Any]:
        """The documented ``palm-hand-params-v1`` JSON (see :func:`load_hand_params`)."""
        return {
            "format": HAND_PARAMS_FORMAT,
            "pose": np.asarray(self.pose, float).round(6).tolist(),
            "betas": np.asarray(self.betas, float).round(6).tolist(),
            "transl": np.asarray(self.transl, float).round(6).tolist(),
            "K": np.asarray(self.K, float).round(4).tolist(),
            "Rt": np.asarray(self.Rt, float).round(6).tolist(),
            "width": int(self.width),
            "height": int(self.height),
            "left": bool(self.left),
            "hand": self.hand_name,
            "reprojection_px": None if not np.isfinite(self.reprojection_px) else round(float(self.reprojection_px), 3),
        }


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
# Image sampling
# ---------------------------------------------------------------------------------------------


def crop_roi(image: np.ndarray, roi: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Sample a rotated square crop bilinearly (zeros outside the image).

    Args:
        image: ``(H, W, C)`` float32.
        roi: ``(cx, cy, side, rotation)``: centre and side in pixels (continuous coordinates),
            rotation in radians; the crop's "up" points along ``(sin r, -cos r)`` in the image.
        size: output side in pixels.

    Returns:
        ``(size, size, C)`` float32.
    """
    from scipy.ndimage import map_coordinates

    grid = (np.arange(size) + 0.5) / size - 0.5
    gx, gy = np.meshgrid(grid, grid)
    pts = roi_to_image(np.stack([gx, gy], -1), roi)
    coords = [pts[..., 1] - 0.5, pts[..., 0] - 0.5]  # index space: pixel centres at integers
    out = np.stack(
        [map_coordinates(image[..., c], coords, order=1, mode="constant", cval=0.0) for c in range(image.shape[-1])],
        -1,
    )
    return out.astype(np.float32)


def roi_to_image(points: np.ndarray, roi: tuple[float, float, float, float]) -> np.ndarray:
    """Map crop-normalised points ``(..., 2)`` in ``[-0.5, 0.5]`` to image pixels."""
    cx, cy, side, r = roi
    c, s = math.cos(r), math.sin(r)
    x, y = points[..., 0] * side, points[..., 1] * side
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], -1)


# ---------------------------------------------------------------------------------------------
# Palm detector
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def ssd_anchors(input_size: int = DETECTOR_SIZE, strides: tuple[int, ...] = (8, 16, 16, 16)) -> np.ndarray:
    """MediaPipe palm-detection SSD anchor centres (fixed unit size, 2 anchors per layer and cell).

    Consecutive layers with the same stride share one feature map: strides (8, 16, 16, 16) give a
    24x24 map with 2 anchors per cell and a 12x12 map with 6, i.e. 1152 + 864 = 2016 anchors, in
    the model's output order (row, column, anchor).

    Returns:
        ``(N, 2)`` anchor centres ``(x, y)`` normalised to ``[0, 1]``.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        per_cell = 2 * (same - layer)  # aspect ratio 1 + the interpolated-scale anchor, per layer
        cells = math.ceil(input_size / strides[layer])
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], -1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def decode_palms(raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float = MIN_DETECTION_SCORE):
    """Decode the detector's raw tensors.

    Args:
        raw_boxes: ``(N, 18)``: box centre offset, size, 7 keypoint offsets, in input pixels.
        raw_scores: ``(N,)`` logits.

    Returns:
        ``(boxes (M, 4) [cx, cy, w, h], keypoints (M, 7, 2), scores (M,))`` in normalised input
        coordinates, for the anchors scoring above ``min_score``.
    """
    anchors = ssd_anchors()
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -100.0, 100.0)))
    keep = scores >= min_score
    raw, anc = raw_boxes[keep] / DETECTOR_SIZE, anchors[keep]
    boxes = np.concatenate([raw[:, 0:2] + anc, raw[:, 2:4]], axis=1)
    kps = raw[:, 4:18].reshape(-1, 7, 2) + anc[:, None, :]
    return boxes, kps, scores[keep]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's weighted non-maximum suppression.

    The best remaining box absorbs every box overlapping it by more than ``iou``; the merged
    box and keypoints are the score-weighted mean of the absorbed ones, the score the best one's.

    Args:
        boxes: ``(N, 4)`` ``[cx, cy, w, h]``. keypoints: ``(N, K, 2)``. scores: ``(N,)``.

    Returns:
        list of ``(box (4,), keypoints (K, 2), score)``, best first.
    """
    order = list(np.argsort(-scores))
    corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    out = []
    while order:
        best = order[0]
        rest = np.array(order)
        lo = np.maximum(corners[best, :2], corners[rest, :2])
        hi = np.minimum(corners[best, 2:], corners[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        area = np.prod(corners[rest, 2:] - corners[rest, :2], axis=1)
        union = area[0] + area - inter
        overlap = inter / np.maximum(union, 1e-12)
        group = rest[overlap > iou]
        group = group if len(group) else np.array([best])
        w = scores[group][:, None]
        out.append(
            (
                (boxes[group] * w).sum(0) / w.sum(),
                (keypoints[group] * w[:, :, None]).sum(0) / w.sum(),
                float(scores[best]),
            )
        )
        order = [i for i in order if i not in set(group.tolist())]
    return out


@lru_cache(maxsize=2)
def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise PalmError("ai-edge-litert", f"the TFLite runtime is not installed ({exc})") from None
    if not Path(path).is_file():
        raise PalmError(path, "hand model file missing from assets/models")
    it = Interpreter(model_path=path, num_threads=2)
    with _native_stderr_silenced():  # the runtime logs "INFO: Created ... XNNPACK delegate" on fd 2
        it.allocate_tensors()
    return it


@contextmanager
def _native_stderr_silenced():
    """Send what native code writes to file descriptor 2 to /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _run_tflite(path: Path, x: np.ndarray) -> list[np.ndarray]:
    it = _interpreter(str(path))
    it.set_tensor(it.get_input_details()[0]["index"], x[None].astype(np.float32))
    it.invoke()
    outs = sorted(it.get_output_details(), key=lambda d: d["name"])  # Identity, Identity_1, ...
    return [it.get_tensor(d["index"])[0].copy() for d in outs]


def _palm_roi(box_px: np.ndarray, kps_px: np.ndarray) -> tuple[float, float, float, float]:
    """Palm box -> landmark crop: rotate wrist->middle MCP to 'up', shift -0.5 box, square, x2.6."""
    cx, cy, w, h = box_px
    r = _rotation(kps_px[0], kps_px[2])
    shift_y = -0.5
    cx, cy = cx - h * shift_y * math.sin(r), cy + h * shift_y * math.cos(r)
    return float(cx), float(cy), float(max(w, h) * 2.6), r


def _landmark_roi(kp: np.ndarray) -> tuple[float, float, float, float]:
    """Landmarks -> refined crop (MediaPipe tracking pass): rotation wrist->middle MCP, x2.0, shift -0.1."""
    r = _rotation(kp[0], kp[9])
    centre = kp.mean(0)
    c, s = math.cos(r), math.sin(r)
    local = (kp - centre) @ np.array([[c, -s], [s, c]])  # rows: points in the crop-aligned frame
    lo, hi = local.min(0), local.max(0)
    mid = (lo + hi) / 2
    w, h = hi - lo
    mid = mid + np.array([0.0, -0.1 * h])
    cx, cy = centre + np.array([[c, -s], [s, c]]) @ mid
    return float(cx), float(cy), float(max(w, h) * 2.0), r


def _rotation(p0: np.ndarray, p1: np.ndarray) -> float:
    angle = math.pi / 2 - math.atan2(-(p1[1] - p0[1]), p1[0] - p0[0])
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def _landmarks(image: np.ndarray, roi: tuple[float, float, float, float]):
    crop = crop_roi(image, roi, LANDMARK_SIZE)
    lm, presence, handed, world = _run_tflite(HAND_LANDMARKER, crop)
    lm = lm.reshape(21, 3) / LANDMARK_SIZE
    kp = roi_to_image(lm[:, :2] - 0.5, roi)
    depth = (lm[:, 2] - lm[0, 2]) * roi[2]
    world = world.reshape(21, 3).astype(np.float64)
    c, s = math.cos(roi[3]), math.sin(roi[3])
    world[:, :2] = world[:, :2] @ np.array([[c, -s], [s, c]]).T  # crop axes -> image axes
    return kp, depth, world, float(presence.ravel()[0]), float(handed.ravel()[0])


def detect_hand(
    image: np.ndarray, path: str | os.PathLike | None = None, mirrored: bool = False, timings: dict | None = None
) -> list[HandDetection]:
    """Find hands and their 21 landmarks.

    Args:
        image: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.
        path: named in the error when no hand is found.
        mirrored: the photo is a mirrored selfie (MediaPipe's own convention for handedness).
        timings: if given, ``detector_s`` and ``landmarks_s`` are added to it.

    Returns:
        Detections, most confident (``score * presence``) first.

    Raises:
        PalmError: ``(path, "no hand found")``.
    """
    h, w = image.shape[:2]
    side = float(max(h, w))
    letterbox = (w / 2, h / 2, side, 0.0)
    t0 = time.perf_counter()
    x = crop_roi(image, letterbox, DETECTOR_SIZE)
    raw_boxes, raw_scores = _run_tflite(PALM_DETECTOR, x)
    boxes, kps, scores = decode_palms(raw_boxes, raw_scores.reshape(-1))
    palms = weighted_nms(boxes, kps, scores)
    t1 = time.perf_counter()
    found = []
    for box, pk, score in palms:
        centre = roi_to_image(box[None, :2] - 0.5, letterbox)[0]
        box_px = np.array([centre[0], centre[1], box[2] * side, box[3] * side])
        pk_px = roi_to_image(pk - 0.5, letterbox)
        roi = _palm_roi(box_px, pk_px)
        kp, depth, world, presence, raw_hand = _landmarks(image, roi)
        if presence >= MIN_PRESENCE:  # MediaPipe's tracking pass: re-crop around the landmarks
            roi2 = _landmark_roi(kp)
            kp2, depth2, world2, presence2, raw2 = _landmarks(image, roi2)
            if presence2 >= presence * 0.9:
                roi, kp, depth, world, presence, raw_hand = roi2, kp2, depth2, world2, presence2, raw2
        if presence < MIN_PRESENCE:
            continue
        # The raw handedness output is the score of MediaPipe's first label, "Left", under its
        # mirrored-selfie assumption; on a non-mirrored photo that is the probability of a right hand.
        is_right = raw_hand >= 0.5 if not mirrored else raw_hand < 0.5
        found.append(
            HandDetection(
                score=score,
                palm_box=np.array(
                    [
                        box_px[0] - box_px[2] / 2,
                        box_px[1] - box_px[3] / 2,
                        box_px[0] + box_px[2] / 2,
                        box_px[1] + box_px[3] / 2,
                    ]
                ),
                palm_keypoints=pk_px,
                keypoints_2d=kp,
                keypoints_depth=depth,
                world_keypoints=world,
                presence=presence,
                handedness="right" if is_right else "left",
                handedness_score=max(raw_hand, 1 - raw_hand),
                roi=roi,
            )
        )
    if timings is not None:
        timings["detector_s"] = t1 - t0
        timings["landmarks_s"] = time.perf_counter() - t1
    found.sort(key=lambda d: -d.score * d.presence)
    found = _drop_duplicates(found)
    if not found:
        raise PalmError(path if path is not None else "image", "no hand found")
    return found


def _drop_duplicates(found: list[HandDetection]) -> list[HandDetection]:
    """Two palm boxes on one hand converge to the same landmarks: keep the better one."""
    kept: list[HandDetection] = []
    for d in found:
        scale = np.linalg.norm(d.keypoints_2d[9] - d.keypoints_2d[0]) + 1e-6
        if all(np.abs(d.keypoints_2d - k.keypoints_2d).mean() > 0.2 * scale for k in kept):
            kept.append(d)
    return kept


# ---------------------------------------------------------------------------------------------
# Hand fit
# ---------------------------------------------------------------------------------------------

#: Weight of the 2D term (squared reprojection error in units of the wrist-to-middle-MCP length).
DATA_WEIGHT = 1000.0
#: Weight of the 3D term (root-relative distance to MediaPipe's world landmarks, cm^2) in stage 3.
WORLD_WEIGHT = 0.01

#: Palm keypoints (wrist + 4 MCPs) used for the rigid initialisation.
_PALM = (0, 5, 9, 13, 17)


def default_camera(width: int, height: int) -> np.ndarray:
    """``K`` with ``f = FOCAL_FACTOR * max(W, H)`` and the principal point at the image centre."""
    f = FOCAL_FACTOR * max(width, height)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def project(points_world, K, Rt):
    """Pinhole projection, torch or numpy.

    Args:
        points_world: ``(..., 3)``. K: ``(3, 3)``. Rt: ``(4, 4)`` world -> camera.

    Returns:
        ``(..., 2)`` continuous pixel coordinates.
    """
    cam = points_world @ Rt[:3, :3].T + Rt[:3, 3]
    z = cam[..., 2:3]
    z = z.clamp(min=1e-6) if hasattr(z, "clamp") else np.maximum(z, 1e-6)
    uv = cam[..., :2] / z
    return uv * K[[0, 1], [0, 1]] + K[:2, 2]


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation ``R`` minimising ``|R (src - mean) - (dst - mean)|`` (both ``(N, 3)``)."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _axis_angle(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def fit_hand(
    keypoints_2d: np.ndarray,
    image_size: tuple[int, int],
    hand: Any = None,
    left: bool = False,
    world_keypoints: np.ndarray | None = None,
    steps: int = 250,
) -> HandFit:
    """Fit pose, shape and translation of a right hand to 2D landmarks under a fixed pinhole camera.

    Stages: (1) rigid: global orientation by Kabsch alignment of the rest palm (wrist + MCPs) to
    MediaPipe's world landmarks (or the best of a few canonical orientations without them), depth
    and position by least squares on the scaled-orthographic projection; (2) articulation and
    shape to the world landmarks (root-relative, 3D); (3) everything to the 2D landmarks, with the
    3D term kept at a small weight. Priors: L2 on finger pose (0.02) and betas (0.01), and a
    joint-limit penalty ``relu(|theta_j| - 1.7)^2`` per joint (1.0).

    Args:
        keypoints_2d: ``(21, 2)`` landmarks, photo pixels, MediaPipe order.
        image_size: ``(width, height)`` of the photo.
        hand: a ``palm.hand`` model (default ``load_hand("open")``).
        left: the photo shows a left hand: mirror the landmarks and fit a right hand.
        world_keypoints: ``(21, 3)`` MediaPipe world landmarks (camera axes), optional.
        steps: Adam steps of stage 3 (stage 2 uses ``steps // 2``).

    Returns:
        :class:`HandFit` in the working frame (mirrored photo when ``left``).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny ops: one thread is ~50x faster on a busy CPU
    try:
        return _fit_hand(keypoints_2d, image_size, hand, left, world_keypoints, steps)
    finally:
        torch.set_num_threads(threads)


def _fit_hand(keypoints_2d, image_size, hand, left, world_keypoints, steps) -> HandFit:
    import torch

    if hand is None:
        from palm.hand import load_hand

        hand = load_hand("open")
    width, height = int(image_size[0]), int(image_size[1])
    kp = np.asarray(keypoints_2d, dtype=np.float64).copy()
    world = None if world_keypoints is None else np.asarray(world_keypoints, dtype=np.float64).copy()
    if left:
        kp[:, 0] = width - kp[:, 0]
        if world is not None:
            world[:, 0] = -world[:, 0]
    K = default_camera(width, height)
    Rt = WORLD_TO_CAMERA.copy()
    R_wc = Rt[:3, :3]
    n_betas = int(getattr(hand, "n_betas", 10))
    dtype = torch.float64

    rig = keypoint_rig(hand)

    def forward(pose, betas, transl):
        return rig(pose, betas, transl)

    zeros_pose = torch.zeros(16, 3, dtype=dtype)
    zero_b = torch.zeros(n_betas, dtype=dtype)
    zero_t = torch.zeros(3, dtype=dtype)
    with torch.no_grad():
        rest = forward(zeros_pose, zero_b, zero_t).numpy()

    # --- stage 1: rigid initialisation -------------------------------------------------------
    palm = list(_PALM)
    if world is not None:
        target_world = world @ R_wc  # camera axes -> world axes (R_wc is its own inverse)
        R0 = _kabsch(rest[palm], target_world[palm])
        candidates = [R0]
    else:
        candidates = _canonical_orientations(kp)
    best = None
    for R0 in candidates:
        posed = (rest - rest[0]) @ R0.T + rest[0]
        cam = posed @ R_wc.T
        s, a, b = _weak_perspective(cam[:, :2] - cam[:, :2].mean(0), kp - K[:2, 2])
        if s <= 0:
            continue
        # keypoint centroid at camera (a / s, b / s, f / s); transl moves the model's centroid there
        centre_cam = np.array([a / s, b / s, K[0, 0] / s])
        transl = R_wc.T @ (centre_cam - cam.mean(0))
        err = np.linalg.norm(project(posed + transl, K, Rt) - kp, axis=1).mean()
        if best is None or err < best[0]:
            best = (err, R0, transl)
    if best is None:
        raise PalmError("keypoints", "degenerate landmarks: cannot initialise the hand fit")
    _, R0, transl0 = best

    pose = torch.zeros(16, 3, dtype=dtype)
    pose[0] = torch.from_numpy(_axis_angle(R0))
    pose.requires_grad_(True)
    betas = torch.zeros(n_betas, dtype=dtype, requires_grad=True)
    transl = torch.from_numpy(transl0).to(dtype).requires_grad_(True)
    K_t, Rt_t = torch.from_numpy(K), torch.from_numpy(Rt)
    kp_t = torch.from_numpy(kp)
    scale_px = float(np.linalg.norm(kp[9] - kp[0])) + 1e-6  # wrist -> middle MCP, pixels
    target3d = None if world is None else torch.from_numpy(world @ R_wc)

    def priors():
        limit = torch.relu(pose[1:].norm(dim=-1) - 1.7).pow(2).sum()
        return 0.02 * pose[1:].pow(2).sum() + 0.01 * betas.pow(2).sum() + 1.0 * limit

    def loss3d(k3):
        rel = k3 - k3.mean(0)
        tgt = target3d - target3d.mean(0)
        return (rel - tgt).pow(2).sum(-1).mean() / 0.01**2  # in cm^2

    # --- stage 2: articulation and shape to the world landmarks ------------------------------
    if target3d is not None:
        opt = torch.optim.Adam([pose, betas], lr=0.05)
        for _ in range(max(steps // 2, 1)):
            opt.zero_grad()
            loss = loss3d(forward(pose, betas, transl)) * 0.1 + priors()
            loss.backward()
            opt.step()

    # --- stage 3: everything to the 2D landmarks ---------------------------------------------
    opt = torch.optim.Adam([{"params": [pose, betas], "lr": 0.02}, {"params": [transl], "lr": 0.002}])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        k3 = forward(pose, betas, transl)
        r2 = (project(k3, K_t, Rt_t) - kp_t).pow(2).sum(-1).mean() / scale_px**2
        loss = DATA_WEIGHT * r2 + priors()
        if target3d is not None:
            loss = loss + WORLD_WEIGHT * loss3d(k3)
        loss.backward()
        opt.step()
        sched.step()

    with torch.no_grad():
        proj = project(forward(pose, betas, transl), K_t, Rt_t).numpy()
    err = float(np.linalg.norm(proj - kp, axis=1).mean())
    return HandFit(
        pose=pose.detach().numpy().astype(np.float32),
        betas=betas.detach().numpy().astype(np.float32),
        transl=transl.detach().numpy().astype(np.float32),
        K=K,
        Rt=Rt,
        width=width,
        height=height,
        left=left,
        reprojection_px=err,
        keypoints_2d=proj,
        hand_name=str(getattr(hand, "name", "open")),
    )


def keypoint_rig(hand: Any):
    """A keypoints-only copy of ``hand`` for fast fitting (float64).

    Skins only 21 points: the 16 joints (as pseudo-vertices that the regressor maps to themselves)
    and the 5 fingertip vertices, with :func:`palm.hand.lbs.lbs`, so the keypoints equal
    ``hand(...).keypoints`` without skinning the whole mesh.

    Returns:
        ``f(pose (16, 3), betas (NB,), transl (3,)) -> keypoints (21, 3)``, differentiable.
    """
    import torch

    from palm.hand.lbs import lbs

    f64 = torch.float64
    jreg = hand.J_regressor.to(f64)
    tips = hand.tip_vertex_ids
    v_t = torch.cat([jreg @ hand.v_template.to(f64), hand.v_template.to(f64)[tips]])
    sd = torch.cat([torch.einsum("jv,vcl->jcl", jreg, hand.shapedirs.to(f64)), hand.shapedirs.to(f64)[tips]])
    pd = hand.posedirs.to(f64)
    pd = torch.cat([torch.zeros(16, 3, pd.shape[-1], dtype=f64), pd[tips]])
    reg = torch.cat([torch.eye(16, dtype=f64), torch.zeros(16, 5, dtype=f64)], 1)
    w = torch.cat([torch.eye(16, dtype=f64), hand.skin_weights.to(f64)[tips]])
    index = hand.keypoint_index
    parents = hand.parents

    def forward(pose, betas, transl):
        verts, joints, _, _ = lbs(betas[None], pose[None], v_t, sd, pd, reg, parents, w)
        return torch.cat([joints[0], verts[0, 16:]])[index] + transl

    return forward


def _weak_perspective(xy: np.ndarray, uv: np.ndarray) -> tuple[float, float, float]:
    """Least squares ``uv ~ s * xy + (a, b)`` for ``(N, 2)`` arrays; returns ``(s, a, b)``."""
    n = len(xy)
    A = np.zeros((2 * n, 3))
    A[0::2, 0], A[1::2, 0] = xy[:, 0], xy[:, 1]
    A[0::2, 1], A[1::2, 2] = 1.0, 1.0
    sol = np.linalg.lstsq(A, uv.reshape(-1), rcond=None)[0]
    return float(sol[0]), float(sol[1]), float(sol[2])


def _canonical_orientations(kp: np.ndarray) -> list[np.ndarray]:
    """Candidate global rotations when no 3D landmarks are known: the 24 rotations of the cube,
    each also turned by 45 degrees about the camera axis (48 in all); the best one after the
    scaled-orthographic alignment starts the optimisation."""
    from scipy.spatial.transform import Rotation

    cube = Rotation.create_group("O")
    turn = Rotation.from_euler("z", [0.0, math.pi / 4])
    return [(t * c).as_matrix() for c in cube for t in turn]


# ---------------------------------------------------------------------------------------------
# Silhouettes and segmentation
# ---------------------------------------------------------------------------------------------


def rasterize_silhouette(points_2d: np.ndarray, faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill projected triangles: a pixel is inside when its centre is in a triangle (edges included).

    Args:
        points_2d: ``(V, 2)`` continuous pixel coordinates. faces: ``(F, 3)``.
        height, width: output size.

    Returns:
        ``(height, width)`` bool.
    """
    out = np.zeros((height, width), dtype=bool)
    tri = np.asarray(points_2d, dtype=np.float64)[np.asarray(faces)]  # (F, 3, 2)
    lo = np.floor(tri.min(1) - 0.5).astype(np.int64)
    hi = np.ceil(tri.max(1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    for t, (x0, y0), (x1, y1) in zip(tri, lo, hi):
        if x1 < x0 or y1 < y0:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        e = []
        for i in range(3):
            (ax, ay), (bx, by) = t[i], t[(i + 1) % 3]
            e.append((bx - ax) * (ys - ay) - (by - ay) * (xs - ax))
        inside = ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
        out[y0 : y1 + 1, x0 : x1 + 1] |= inside
    return out


def fitted_vertices_2d(fit: HandFit, hand: Any) -> np.ndarray:
    """``(V, 2)`` projected vertices of the fitted hand (working frame)."""
    import torch

    with torch.no_grad():
        out = hand(
            pose=torch.as_tensor(fit.pose, dtype=torch.float32)[None],
            betas=torch.as_tensor(fit.betas, dtype=torch.float32)[None],
            transl=torch.as_tensor(fit.transl, dtype=torch.float32)[None],
        )
    return project(out.vertices[0].double().numpy(), fit.K, fit.Rt)


def fitted_keypoints_2d(fit: HandFit, hand: Any) -> np.ndarray:
    """``(21, 2)`` projected keypoints of a hand fit (working frame)."""
    import torch

    with torch.no_grad():
        out = hand(
            pose=torch.as_tensor(fit.pose, dtype=torch.float32)[None],
            betas=torch.as_tensor(fit.betas, dtype=torch.float32)[None],
            transl=torch.as_tensor(fit.transl, dtype=torch.float32)[None],
        )
    return project(out.keypoints[0].double().numpy(), fit.K, fit.Rt)


#: Mask refinement radii, in units of the wrist-to-middle-MCP length: saliency is kept within
#: ``GROW`` of the fitted silhouette, and the silhouette eroded by ``SHRINK`` is always hand.
GROW = 0.12
SHRINK = 0.06


@lru_cache(maxsize=1)
def _u2netp_session():
    import onnxruntime as ort

    if not U2NETP.is_file():
        raise PalmError(U2NETP, "segmentation model file missing from assets/models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(str(U2NETP), sess_options=opts, providers=["CPUExecutionProvider"])


def saliency_u2netp(image: np.ndarray) -> np.ndarray:
    """U^2-Net-p foreground probability.

    Args:
        image: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``: the mean of the min-max normalised maps (as rembg
        normalises) of the image and of its mirror image (the network is not mirror-symmetric).
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(SEGMENTER_SIZE, SEGMENTER_SIZE), mode="bilinear", antialias=True, align_corners=False)
    x = x / max(float(x.max()), 1e-6)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((x - mean) / std).numpy().astype(np.float32)
    sess = _u2netp_session()
    maps = []
    for flip in (False, True):  # U^2-Net-p is not mirror-symmetric: average the photo and its mirror
        xi = np.ascontiguousarray(x[..., ::-1]) if flip else x
        pred = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: xi})[0][0, 0]
        pred = (pred - pred.min()) / max(float(pred.max() - pred.min()), 1e-6)
        maps.append(pred[:, ::-1] if flip else pred)
    pred = np.ascontiguousarray((maps[0] + maps[1]) / 2, dtype=np.float32)
    up = F.interpolate(torch.from_numpy(pred)[None, None], size=(h, w), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(0, 1).numpy()


def segment_hand(
    image: np.ndarray,
    fit: HandFit | None = None,
    hand: Any = None,
    keypoints_2d: np.ndarray | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Hand mask from U^2-Net-p, refined with the fitted silhouette.

    Without a fit: the saliency threshold, restricted to the connected components that contain a
    landmark (when ``keypoints_2d`` is given). With a fit (silhouette ``S`` of the fitted mesh, hand
    size ``L`` = wrist-to-middle-MCP distance in pixels): the components overlapping ``S``,
    intersected with ``S`` dilated by ``GROW * L`` (cuts the forearm and background blobs), united
    with ``S`` eroded by ``SHRINK * L`` (fills holes the saliency leaves inside the hand), in the
    spirit of the paper's training-mask rule (spec 10.1).

    Args:
        image: ``(H, W, 3)`` float32 in ``[0, 1]`` (working frame).
        fit: hand fit in the same frame; ``hand``: the model it was fitted with.
        keypoints_2d: ``(21, 2)`` landmarks (same frame), optional.
        threshold: saliency threshold.

    Returns:
        ``(H, W)`` bool.
    """
    from scipy import ndimage

    h, w = image.shape[:2]
    mask = saliency_u2netp(image) > threshold
    labels, n = ndimage.label(mask)
    if fit is not None:
        if hand is None:
            from palm.hand import load_hand

            hand = load_hand(fit.hand_name if fit.hand_name in ("open",) else "open")
        sil = rasterize_silhouette(fitted_vertices_2d(fit, hand), np.asarray(hand.faces), h, w)
        kp = fit.keypoints_2d if fit.keypoints_2d is not None else fitted_keypoints_2d(fit, hand)
        size = float(np.linalg.norm(kp[9] - kp[0]))
        if sil.any():
            keep = np.unique(labels[sil & mask])
            mask = np.isin(labels, keep[keep > 0])
            outside = ndimage.distance_transform_edt(~sil)  # pixels to the silhouette
            inside = ndimage.distance_transform_edt(sil)  # pixels to the background
            mask = (mask & (outside <= GROW * size)) | (inside > SHRINK * size)
    elif keypoints_2d is not None and n > 0:
        pts = np.round(np.asarray(keypoints_2d) - 0.5).astype(int)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        keep = np.unique(labels[pts[inside, 1], pts[inside, 0]])
        if (keep > 0).any():
            mask = np.isin(labels, keep[keep > 0])
    return ndimage.binary_fill_holes(mask) if mask.any() else mask


# ---------------------------------------------------------------------------------------------
# Hand-parameter files
# ---------------------------------------------------------------------------------------------


def load_hand_params(path: str | os.PathLike, width: int, height: int, n_betas: int | None = None) -> HandFit:
    """Read a ``palm-hand-params-v1`` JSON (ours or from the user's own estimator).

    Format (every field but ``pose`` optional)::

        {"format": "palm-hand-params-v1",
         "pose": [[ax, ay, az] x 16],       # axis-angle, MANO joint order, flat-hand mean;
                                            # or 48 numbers; or "global_orient" (3) + "hand_pose" (45)
         "betas": [b0, ...],                 # shape (missing entries are zero)
         "transl": [x, y, z],                # metres, world frame
         "K": 3x3, "Rt": 4x4,                # OpenCV intrinsics, world -> camera (defaults: the fit's)
         "width": W, "height": H,            # image the camera belongs to (K is rescaled to the photo)
         "left": false}                      # true: parameters of a right hand in the mirrored photo

    Args:
        path: JSON file.
        width, height: the photo's size.
        n_betas: the hand model's number of shape parameters (longer non-zero betas are an error).

    Raises:
        PalmError: malformed file.
    """
    from palm.io import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise PalmError(path, "hand params must be a JSON object")
    fmt = data.get("format", HAND_PARAMS_FORMAT)
    if fmt != HAND_PARAMS_FORMAT:
        raise PalmError(path, f"unknown hand params format '{fmt}' (expected {HAND_PARAMS_FORMAT})")

    def arr(key, shape_ok, default=None):
        if key not in data:
            if default is None:
                raise PalmError(path, f"missing '{key}'")
            return default
        try:
            a = np.asarray(data[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise PalmError(path, f"'{key}' must be numbers") from None
        if not shape_ok(a.shape) or not np.isfinite(a).all():
            raise PalmError(path, f"'{key}' has shape {a.shape} or non-finite values")
        return a

    if "pose" in data:
        pose = arr("pose", lambda s: s in ((16, 3), (48,)))
    elif "hand_pose" in data:
        go = arr("global_orient", lambda s: s in ((3,), (1, 3)), default=np.zeros(3))
        hp = arr("hand_pose", lambda s: s in ((45,), (15, 3)))
        pose = np.concatenate([go.reshape(3), hp.reshape(45)])
    else:
        raise PalmError(path, "missing 'pose' (16x3 or 48 axis-angle) or 'hand_pose' + 'global_orient'")
    pose = pose.reshape(16, 3)
    betas = arr("betas", lambda s: len(s) == 1, default=np.zeros(n_betas or 10))
    if n_betas is not None:
        if len(betas) > n_betas and np.abs(betas[n_betas:]).max() > 1e-6:
            raise PalmError(path, f"{len(betas)} betas given but the hand model has {n_betas}")
        betas = np.pad(betas[:n_betas], (0, max(0, n_betas - len(betas))))
    transl = arr("transl", lambda s: s == (3,), default=np.zeros(3))
    w0, h0 = int(data.get("width", width)), int(data.get("height", height))
    K = arr("K", lambda s: s == (3, 3), default=default_camera(w0, h0))
    if (w0, h0) != (width, height):
        if abs(w0 / h0 - width / height) > 0.01 * width / height:
            raise PalmError(path, f"hand params are for a {w0}x{h0} image but the photo is {width}x{height}")
        K = K.copy()
        K[:2] *= width / w0
    Rt = arr("Rt", lambda s: s == (4, 4), default=WORLD_TO_CAMERA.copy())
    return HandFit(
        pose=pose.astype(np.float32),
        betas=betas.astype(np.float32),
        transl=transl.astype(np.float32),
        K=K,
        Rt=Rt,
        width=width,
        height=height,
        left=bool(data.get("left", False)),
        hand_name=str(data.get("hand", "open")),
    )


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
    sil = rasterize_silhouette(fitted_vertices_2d(result.fit, hand), np.asarray(hand.faces), h, w)
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
