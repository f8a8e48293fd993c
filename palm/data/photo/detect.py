"""Hand detection: the MediaPipe palm detector, then the hand-landmark model on a rotated crop.

See :mod:`palm.data.photo` for the whole pipeline. Both models run on ``ai_edge_litert``; the
keypoints come back in MediaPipe order in full-image pixels (continuous coordinates: pixel
``(u, v)`` covers ``[u, u+1) x [v, v+1)``), with the handedness of the real hand in the photo
(MediaPipe's mirrored-selfie convention swapped unless the photo is declared mirrored).
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from palm.assets import MODELS
from palm.errors import PalmError

MEDIAPIPE_DIR = MODELS / "mediapipe"
PALM_DETECTOR = MEDIAPIPE_DIR / "palm_detection_full.tflite"
HAND_LANDMARKER = MEDIAPIPE_DIR / "hand_landmark_full.tflite"

DETECTOR_SIZE = 192
LANDMARK_SIZE = 224
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
    from ai_edge_litert.interpreter import Interpreter

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
