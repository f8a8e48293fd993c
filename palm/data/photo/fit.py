"""The hand model fitted to 2D (and MediaPipe's 3D) landmarks under a fixed pinhole camera.

The working frame is the photo, mirrored horizontally when it shows a left hand, so that the
fitted hand is always a right hand. The camera is OpenCV (x right, y down, z forward) with
``Rt = diag(1, -1, -1, 1)`` (:data:`WORLD_TO_CAMERA`): world +y is image up and the camera looks
down world -z. The focal length is ``FOCAL_FACTOR * max(H, W)``, the principal point the image
centre. :func:`load_hand_params` reads the same fit back from a ``palm-hand-params-v1`` JSON.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from palm.errors import PalmError

FOCAL_FACTOR = 1.2
"""Focal length guess in pixels = ``FOCAL_FACTOR * max(H, W)``."""
HAND_PARAMS_FORMAT = "palm-hand-params-v1"

#: ``Rt`` of every fitted camera: world +y = image up, camera looks down world -z.
WORLD_TO_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])


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


# ---------------------------------------------------------------------------------------------
# Hand fit
# ---------------------------------------------------------------------------------------------

#: Weight of the 2D term (squared reprojection error in units of the wrist-to-middle-MCP length).
DATA_WEIGHT = 1000.0
#: Weight of the articulation's squared axis-angle norm (radians^2, the 15 finger joints).
POSE_WEIGHT = 0.1
#: Weight of the squared excess (radians^2) of the joints' anatomical angles over their range of
#: motion (:data:`palm.hand.poses.JOINT_LIMITS`): 2D landmarks cannot tell a finger bent towards the
#: camera from one bent away (both shorten it on the image); the limits rule out PIP and DIP joints
#: bending backwards.
LIMIT_WEIGHT = 100.0
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
    3D term kept at a small weight. Priors: L2 on finger pose (:data:`POSE_WEIGHT`) and betas
    (0.01), and the squared excess of every finger joint's anatomical angles over their range of
    motion (:data:`LIMIT_WEIGHT`).

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

    from palm.hand.poses import joint_frames, limits_array

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

    # anatomical range of motion: each joint's (flex, abd, twist) in its own frame, linearised
    # (the local rotation B^T R B has the rotation vector B^T theta)
    frames = torch.from_numpy(joint_frames(hand))[1:].to(dtype)  # (15, 3, 3)
    limits = torch.from_numpy(limits_array())[1:].to(dtype)  # (15, 3, 2)

    def priors():
        angles = torch.einsum("jab,ja->jb", frames, pose[1:])
        outside = torch.relu(limits[..., 0] - angles) + torch.relu(angles - limits[..., 1])
        return POSE_WEIGHT * pose[1:].pow(2).sum() + 0.01 * betas.pow(2).sum() + LIMIT_WEIGHT * outside.pow(2).sum()

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
    turn = Rotation.from_euler("z", [[0.0], [math.pi / 4]])  # (N, 1): one angle per rotation
    return [(t * c).as_matrix() for c in cube for t in turn]


def posed_hand(fit: HandFit, hand: Any) -> Any:
    """The hand model's output (``vertices (1, V, 3)``, ``keypoints (1, 21, 3)``, world) for a fit."""
    import torch

    with torch.no_grad():
        return hand(
            pose=torch.as_tensor(fit.pose, dtype=torch.float32)[None],
            betas=torch.as_tensor(fit.betas, dtype=torch.float32)[None],
            transl=torch.as_tensor(fit.transl, dtype=torch.float32)[None],
        )


def fitted_vertices_2d(fit: HandFit, hand: Any) -> np.ndarray:
    """``(V, 2)`` projected vertices of the fitted hand (working frame)."""
    return project(posed_hand(fit, hand).vertices[0].double().numpy(), fit.K, fit.Rt)


def fitted_keypoints_2d(fit: HandFit, hand: Any) -> np.ndarray:
    """``(21, 2)`` projected keypoints of a hand fit (working frame)."""
    return project(posed_hand(fit, hand).keypoints[0].double().numpy(), fit.K, fit.Rt)


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
        except (TypeError, ValueError, OverflowError):
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
    from palm.hand.poses import check_betas, check_pose_values

    pose = check_pose_values(pose.reshape(16, 3), path)
    betas = check_betas(arr("betas", lambda s: len(s) == 1, default=np.zeros(n_betas or 10)), path)
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
