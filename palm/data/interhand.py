"""Reader of InterHand2.6M's released layout and the paper's 12 evaluation sequences (spec 10.2).

Layout (as released)::

    <root>/images/<split>/Capture<c>/<sequence>/cam<camera>/image<frame>.jpg
    <root>/annotations/<split>/InterHand2.6M_<split>_camera.json
        {"<c>": {"campos": {cam: [3] mm}, "camrot": {cam: 3x3 world->camera}, "focal": {cam: [fx, fy]},
                 "princpt": {cam: [cx, cy]}}}
    <root>/annotations/<split>/InterHand2.6M_<split>_joint_3d.json
        {"<c>": {"<frame>": {"world_coord": 42x3 mm, "joint_valid": 42, "hand_type", "hand_type_valid"}}}
    <root>/annotations/<split>/InterHand2.6M_<split>_MANO_NeuralAnnot.json
        {"<c>": {"<frame>": {"right": {"pose": 48, "shape": 10, "trans": 3 m} | null, "left": ...}}}
    <root>/annotations/<split>/InterHand2.6M_<split>_data.json
        COCO style: {"images": [{"id", "file_name", "width", "height", "capture", "camera",
                                 "frame_idx", "seq_name", ...}], "annotations": [...]}

Conversions to :class:`palm.data.types.FrameSample`: millimetres -> metres; camera
``Rt = [camrot | -camrot @ campos]``; the 21 right-hand joints (InterHand order: thumb tip..,
index, middle, ring, pinky, wrist last) reordered to MediaPipe order (:data:`IH_TO_MEDIAPIPE`);
MANO ``pose`` (48, relative to MANO's mean hand pose, as InterHand's ``flat_hand_mean=False``
layer uses it) made absolute with MANO's mean pose. InterHand2.6M has no masks: ``mask`` is None.

Every missing or malformed file raises :class:`PalmError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palm.data.palm_dataset import POSE_ABSOLUTE, mano_pose_mean, read_rgb, to_absolute
from palm.data.types import CameraParams, FrameSample, HandParams
from palm.errors import PalmError
from palm.io import read_json

#: InterHand2.6M joint index (within one hand's 21) of each MediaPipe keypoint.
IH_TO_MEDIAPIPE = (20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16)


@dataclass(frozen=True)
class EvalSequence:
    """One of the paper's InterHand2.6M evaluation sequences (Supp. Table 2; test split, right hand).

    Attributes:
        capture: capture number (``Capture<capture>``).
        sequence: sequence folder name.
        camera: camera id (``cam<camera>``).
        first_id: first image id (the personalisation image).
        step: spacing of the 20 evaluation image ids.
    """

    capture: int
    sequence: str
    camera: str
    first_id: int
    step: int

    @property
    def name(self) -> str:
        """``c<capture>_<sequence>_<camera>``."""
        return f"c{self.capture}_{self.sequence}_{self.camera}"

    @property
    def image_ids(self) -> tuple[int, ...]:
        """The 20 image ids (file ``image<id>.jpg``); the first is used for personalisation."""
        return tuple(self.first_id + self.step * k for k in range(20))


#: The 12 evaluation sequences of Supp. Table 2.
EVAL_SEQUENCES: tuple[EvalSequence, ...] = (
    EvalSequence(0, "ROM03_RT_No_Occlusion", "400262", 12966, 114),
    EvalSequence(0, "ROM03_RT_No_Occlusion", "400451", 12966, 114),
    EvalSequence(0, "ROM04_RT_Occlusion", "400275", 17746, 42),
    EvalSequence(0, "ROM04_RT_Occlusion", "400418", 17746, 42),
    EvalSequence(0, "ROM05_RT_Wrist_ROM", "400270", 19583, 24),
    EvalSequence(0, "ROM05_RT_Wrist_ROM", "400488", 19583, 24),
    EvalSequence(1, "ROM03_RT_No_Occlusion", "400456", 21646, 114),
    EvalSequence(1, "ROM03_RT_No_Occlusion", "400486", 21646, 114),
    EvalSequence(1, "ROM04_RT_Occlusion", "400266", 17468, 42),
    EvalSequence(1, "ROM04_RT_Occlusion", "400439", 17468, 42),
    EvalSequence(1, "ROM05_RT_Wrist_ROM", "400314", 24004, 24),
    EvalSequence(1, "ROM05_RT_Wrist_ROM", "400469", 24004, 24),
)


def eval_sequence(name: str) -> EvalSequence:
    """The evaluation sequence called ``name`` (``c0_ROM03_RT_No_Occlusion_400262``)."""
    for seq in EVAL_SEQUENCES:
        if seq.name == name:
            return seq
    raise PalmError(
        name, f"unknown InterHand2.6M evaluation sequence (known: {', '.join(s.name for s in EVAL_SEQUENCES)})"
    )


class InterHandDataset:
    """Samples of one split of InterHand2.6M (right hands).

    Args:
        root: the dataset folder (holding ``images/`` and ``annotations/``).
        split: ``train``, ``val`` or ``test``.
        pose_mean: (15, 3) MANO mean hand pose; default: from the user's MANO file, read when the
            first MANO registration is converted.

    Annotation files are read lazily (the released JSON files are large).
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", pose_mean: np.ndarray | None = None):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise PalmError(self.root, "InterHand2.6M folder not found" if not self.root.exists() else "not a folder")
        ann = self.root / "annotations" / split
        if not ann.is_dir():
            raise PalmError(ann, "annotation folder not found (expected the released InterHand2.6M layout)")
        self._pose_mean = pose_mean
        self._json: dict[str, Any] = {}

    def annotation_path(self, kind: str) -> Path:
        """Path of ``InterHand2.6M_<split>_<kind>.json`` (kind: camera, joint_3d, MANO_NeuralAnnot, data)."""
        return self.root / "annotations" / self.split / f"InterHand2.6M_{self.split}_{kind}.json"

    def _load(self, kind: str) -> Any:
        if kind not in self._json:
            path = self.annotation_path(kind)
            data = read_json(path)
            if not isinstance(data, dict):
                raise PalmError(path, "expected a JSON object")
            self._json[kind] = data
        return self._json[kind]

    def image_path(self, capture: int, sequence: str, camera: str, frame: int) -> Path:
        return self.root / "images" / self.split / f"Capture{capture}" / sequence / f"cam{camera}" / f"image{frame}.jpg"

    def camera(self, capture: int, camera: str, height: int, width: int) -> CameraParams:
        """Calibration of ``camera`` in ``capture`` (metres)."""
        path = self.annotation_path("camera")
        cams = self._load("camera")
        try:
            c = cams[str(capture)]
            pos = np.asarray(c["campos"][camera], np.float64).reshape(3) / 1000.0
            R = np.asarray(c["camrot"][camera], np.float64).reshape(3, 3)
            fx, fy = (float(v) for v in c["focal"][camera])
            cx, cy = (float(v) for v in c["princpt"][camera])
        except KeyError as exc:
            raise PalmError(path, f"no calibration for capture {capture} camera {camera} (missing {exc})") from None
        except (TypeError, ValueError) as exc:
            raise PalmError(path, f"malformed calibration of capture {capture} camera {camera} ({exc})") from None
        Rt = np.eye(4)
        Rt[:3, :3] = R
        Rt[:3, 3] = -R @ pos
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return CameraParams(K, Rt, int(height), int(width))

    def keypoints_3d(self, capture: int, frame: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Right-hand keypoints of a frame.

        Returns:
            (21, 3) float32 world metres (MediaPipe order), (21,) bool validity, and the frame's
            ``hand_type`` (``right``, ``left`` or ``interacting``).
        """
        path = self.annotation_path("joint_3d")
        joints = self._load("joint_3d")
        try:
            entry = joints[str(capture)][str(frame)]
            world = np.asarray(entry["world_coord"], np.float64).reshape(-1, 3)
            valid = np.asarray(entry.get("joint_valid", np.ones(len(world))), np.float64).reshape(-1)
            hand_type = str(entry.get("hand_type", "right"))
        except KeyError as exc:
            raise PalmError(path, f"no joints for capture {capture} frame {frame} (missing {exc})") from None
        except (TypeError, ValueError) as exc:
            raise PalmError(path, f"malformed joints of capture {capture} frame {frame} ({exc})") from None
        if world.shape[0] < 21 or valid.shape[0] != world.shape[0]:
            raise PalmError(path, f"capture {capture} frame {frame}: expected 42 joints, got {world.shape[0]}")
        idx = np.asarray(IH_TO_MEDIAPIPE)
        return (world[idx] / 1000.0).astype(np.float32), valid[idx] > 0, hand_type

    def hand_params(self, capture: int, frame: int) -> HandParams | None:
        """The right hand's MANO registration (absolute pose), or None when the frame has none."""
        path = self.annotation_path("MANO_NeuralAnnot")
        mano = self._load("MANO_NeuralAnnot")
        try:
            entry = mano[str(capture)][str(frame)].get("right")
        except (KeyError, AttributeError):
            return None
        if entry is None:
            return None
        try:
            pose = np.asarray(entry["pose"], np.float32).reshape(16, 3)
            shape = np.asarray(entry["shape"], np.float32).reshape(-1)
            trans = np.asarray(entry["trans"], np.float32).reshape(3)
        except (KeyError, TypeError, ValueError) as exc:
            raise PalmError(path, f"capture {capture} frame {frame}: malformed right-hand MANO entry ({exc})") from None
        if self._pose_mean is None:
            self._pose_mean = mano_pose_mean()
        betas = np.zeros(10, np.float32)
        betas[: min(10, shape.size)] = shape[:10]
        return HandParams(pose=to_absolute(pose, self._pose_mean), betas=betas, transl=trans)

    def load(self, capture: int, sequence: str, camera: str, frame: int) -> FrameSample:
        """One image with its camera, keypoints and MANO registration."""
        path = self.image_path(capture, sequence, camera, frame)
        image = read_rgb(path)
        h, w = image.shape[:2]
        cam = self.camera(capture, camera, h, w)
        kp3d, valid, hand_type = self.keypoints_3d(capture, frame)
        kp2d = cam.project(kp3d).astype(np.float32)
        return FrameSample(
            subject=f"c{capture}_{sequence}",
            frame=int(frame),
            view=str(camera),
            image=image,
            mask=None,
            camera=cam,
            hand=self.hand_params(capture, frame),
            keypoints_2d=kp2d,
            keypoints_3d=kp3d,
            meta={
                "path": str(path),
                "keypoints_valid": valid,
                "hand_type": hand_type,
                "capture": capture,
                "sequence": sequence,
                "pose_convention": POSE_ABSOLUTE,
            },
        )

    def index(self) -> list[tuple[int, str, str, int]]:
        """``(capture, sequence, camera, frame)`` of every image listed in ``_data.json``."""
        path = self.annotation_path("data")
        data = self._load("data")
        images = data.get("images")
        if not isinstance(images, list):
            raise PalmError(path, "expected a COCO-style object with an 'images' list")
        out = []
        for im in images:
            try:
                parts = Path(im["file_name"]).parts
                out.append((int(im["capture"]), str(im["seq_name"]), str(im["camera"]), int(im["frame_idx"])))
            except (KeyError, TypeError, ValueError):
                try:  # fall back to the file name: Capture<c>/<seq>/cam<id>/image<frame>.jpg
                    out.append((int(parts[-4][7:]), parts[-3], parts[-2][3:], int(Path(parts[-1]).stem[5:])))
                except (IndexError, ValueError, UnboundLocalError, KeyError):
                    raise PalmError(path, f"malformed image entry {im!r:.120}") from None
        return out

    def eval_samples(self, seq: EvalSequence | str) -> list[FrameSample]:
        """The 20 samples of an evaluation sequence (the first is the personalisation image)."""
        if isinstance(seq, str):
            seq = eval_sequence(seq)
        return [self.load(seq.capture, seq.sequence, seq.camera, i) for i in seq.image_ids]
