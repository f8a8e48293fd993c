"""Typed samples shared by every dataset reader (PALM layout, InterHand2.6M, synthetic).

A reader turns one (subject, frame, view) of its dataset into a :class:`FrameSample`; training,
evaluation and the tests consume only this type, so they do not care where the data came from.

Conventions (``docs/architecture.md``): metres, OpenCV cameras (``K`` 3x3, ``Rt`` 4x4
world->camera, pixel centres at ``u + 0.5``), right hands, pose as axis-angle ``(16, 3)`` with
row 0 the global orientation and rows 1-15 the hand joints **absolute** for a
``flat_hand_mean=True`` hand layer (readers convert a dataset's mean-relative pose on load).
Keypoints are in MediaPipe order (``palm.hand.KEYPOINT_NAMES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CameraParams:
    """A calibrated OpenCV pinhole camera (numpy; see :meth:`to_camera` for the torch twin).

    Attributes:
        K: (3, 3) float64 intrinsics.
        Rt: (4, 4) float64 world -> camera.
        height, width: image size in pixels.
    """

    K: np.ndarray
    Rt: np.ndarray
    height: int
    width: int

    def project(self, points: np.ndarray) -> np.ndarray:
        """Continuous image coordinates of world points.

        Args:
            points: (N, 3) world points.

        Returns:
            (N, 2) ``(x, y)``; pixel ``(u, v)`` has its centre at ``(u + 0.5, v + 0.5)``.
        """
        p = np.asarray(points, dtype=np.float64) @ self.Rt[:3, :3].T + self.Rt[:3, 3]
        q = p @ self.K.T
        return q[:, :2] / q[:, 2:3]

    @property
    def centre(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        R, t = self.Rt[:3, :3], self.Rt[:3, 3]
        return -R.T @ t

    def to_camera(self, dtype: Any = None) -> Any:
        """The :class:`palm.render.rays.Camera` (torch) of this calibration."""
        import torch

        from palm.render.rays import Camera

        dtype = dtype or torch.float32
        return Camera(
            torch.as_tensor(self.K, dtype=dtype),
            torch.as_tensor(self.Rt, dtype=dtype),
            int(self.height),
            int(self.width),
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"K", "Rt", "height", "width"}`` with numpy arrays (the layout of PALM's cameras.npy)."""
        return {
            "K": np.asarray(self.K, np.float64),
            "Rt": np.asarray(self.Rt, np.float64),
            "height": int(self.height),
            "width": int(self.width),
        }


@dataclass
class HandParams:
    """Registration of one right hand in one frame.

    Attributes:
        pose: (16, 3) float32 axis-angle; row 0 global orientation, rows 1-15 joints absolute
            (flat-hand mean: zero = flat hand).
        betas: (10,) float32 shape coefficients (fewer for rigs with fewer; zero-padded to 10).
        transl: (3,) float32 translation, metres.
    """

    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray


@dataclass
class FrameSample:
    """One image of one subject in one frame, with everything known about it.

    Attributes:
        subject: subject id (PALM: 4-digit string; InterHand2.6M: ``c<capture>_<sequence>``).
        frame: frame index (0-based).
        view: camera id (PALM ``MCU_01``..; InterHand2.6M the camera number as a string).
        image: (H, W, 3) float32 sRGB in [0, 1].
        mask: (H, W) bool foreground, or None when the dataset has no mask.
        camera: the calibrated camera of ``view``.
        hand: the hand registration, or None when the frame has none.
        normal: (H, W, 3) float32 unit normals in OpenGL camera axes (x right, y up, z toward the
            viewer); zeros where missing. None when the dataset has no normal maps.
        depth: (H, W) float32 camera ``z`` in metres, 0 where missing; None when absent.
        keypoints_2d: (21, 2) float32 image coordinates (pixel centre convention), or None.
        keypoints_3d: (21, 3) float32 world coordinates, metres, or None.
        albedo: (H, W, 3) float32 ground-truth linear albedo (synthetic data only), or None.
        mano_mask: (H, W) bool silhouette of the registered hand model (PALM's ``mano/`` alpha), or None.
        env_name: name of the lighting environment (synthetic data), or None.
        env_lobes: (K, 7) float32 SG lobes the frame was lit with (synthetic data), or None.
        meta: anything else a reader knows (file names, quality, ...).
    """

    subject: str
    frame: int
    view: str
    image: np.ndarray
    mask: np.ndarray | None
    camera: CameraParams
    hand: HandParams | None = None
    normal: np.ndarray | None = None
    depth: np.ndarray | None = None
    keypoints_2d: np.ndarray | None = None
    keypoints_3d: np.ndarray | None = None
    albedo: np.ndarray | None = None
    mano_mask: np.ndarray | None = None
    env_name: str | None = None
    env_lobes: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
