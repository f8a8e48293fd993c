"""The hand model: MANO-format arrays -> :class:`HandModel` (one loader for every source).

MANO-format arrays (MANO's own key names):

=================  ============  ==========================================================
key                shape         meaning
=================  ============  ==========================================================
``v_template``     (V, 3)        flat right hand, metres
``shapedirs``      (V, 3, NB)    linear shape directions (betas)
``posedirs``       (V, 3, P)     pose correctives, ``P = 135`` (MANO) or ``P = 0`` (none)
``J_regressor``    (16, V)       joints = ``J_regressor @ vertices`` (dense or scipy.sparse)
``weights``        (V, 16)       skinning weights
``kintree_table``  (2, 16)       row 0: parent of each joint (root's parent is ignored)
``f``              (F, 3)        triangles, counter-clockwise seen from outside
``uv``             (V, 2)        optional per-vertex texture coordinates
``tip_vertex_ids`` (5,)          optional fingertip vertices: thumb, index, middle, ring, pinky
``seal_faces``     (S, 3)        optional triangles closing the wrist (computed when absent)
``weld_index``     (V,)          optional: geometric vertex each (UV-split) vertex copies
=================  ============  ==========================================================

Canonical frame (our reading of MANO's template): a flat right hand in metres, fingers pointing
towards -x, the wrist joint at about x = +0.096, the thumb on the +z side and the palm facing -y.

Left hands are mirrors of the right hand through the plane x = 0 of the hand's frame
(``left=True``): the pose is mirrored as axis-angle ``(x, y, z) -> (x, -y, -z)`` for every joint,
the right hand is posed, then every output is mirrored, ``x -> -x`` for points, ``M T M`` with
``M = diag(-1, 1, 1, 1)`` for 4x4 transforms, and the triangle winding is reversed so normals stay
outward. ``transl`` is applied in the left hand's world. Mirroring twice is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from palm.errors import PalmError
from palm.hand.lbs import lbs, mirror_pose, shape_blend
from palm.hand.mesh import seal_faces as _seal_faces
from palm.hand.mesh import weld_representatives

#: MANO joint order.
JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip
#: Parent of each MANO joint (-1 for the wrist).
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
#: The 21 keypoints in MediaPipe / OpenPose order.
KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip
#: Index of each keypoint in ``concat(joints (16), fingertips (5: thumb, index, middle, ring, pinky))``.
KEYPOINT_FROM_JOINT = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
#: MANO's fingertip vertices (thumb, index, middle, ring, pinky) for its 778-vertex mesh.
MANO_TIP_VERTEX_IDS = (744, 320, 443, 554, 671)

N_JOINTS = 16
REQUIRED_KEYS = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")
_MIRROR = (-1.0, 1.0, 1.0)


@dataclass
class HandOutput:
    """Result of posing a hand (all tensors batched, metres).

    Attributes:
        vertices: (B, V, 3) posed surface.
        joints: (B, 16, 3) posed joints, MANO order.
        keypoints: (B, 21, 3) MediaPipe order (joints + fingertip vertices).
        bone_transforms: (B, 16, 4, 4) LBS transforms: shaped flat hand -> posed hand, world.
        global_transforms: (B, 16, 4, 4) posed joint frames ``G_j`` (rotation, joint position).
        faces: (F, 3) long triangles with the winding of this side (reversed for left hands).
    """

    vertices: Tensor
    joints: Tensor
    keypoints: Tensor
    bone_transforms: Tensor
    global_transforms: Tensor
    faces: Tensor


def mirror_points(points: Tensor) -> Tensor:
    """``x -> -x`` for (..., 3) points."""
    return points * torch.tensor(_MIRROR, dtype=points.dtype, device=points.device)


def mirror_transforms(transforms: Tensor) -> Tensor:
    """``M T M`` with ``M = diag(-1, 1, 1, 1)`` for (..., 4, 4) transforms."""
    m = torch.tensor(_MIRROR + (1.0,), dtype=transforms.dtype, device=transforms.device)
    return transforms * m[:, None] * m[None, :]


class HandModel(torch.nn.Module):
    """An articulated, shape-parameterised right hand in MANO conventions.

    Build it with :func:`palm.hand.load_hand` (or :func:`hand_from_arrays`). All data are buffers,
    so ``.to(device)`` moves the model.

    Attributes:
        name: "open" or "mano". n_betas: number of shape coefficients.
        faces: (F, 3) long. skin_weights: (V, 16). uv: (V, 2) or None. parents: (16,) long.
        tip_vertex_ids: (5,) long. seal_faces: (S, 3) long. weld_index: (V,) long.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], name: str):
        super().__init__()
        self.name = name
        f32 = torch.float32
        self.register_buffer("v_template", torch.as_tensor(arrays["v_template"], dtype=f32))
        self.register_buffer("shapedirs", torch.as_tensor(arrays["shapedirs"], dtype=f32))
        self.register_buffer("posedirs", torch.as_tensor(arrays["posedirs"], dtype=f32))
        self.register_buffer("J_regressor", torch.as_tensor(arrays["J_regressor"], dtype=f32))
        self.register_buffer("skin_weights", torch.as_tensor(arrays["weights"], dtype=f32))
        self.register_buffer("parents", torch.as_tensor(arrays["parents"], dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(arrays["f"], dtype=torch.long))
        self.register_buffer("tip_vertex_ids", torch.as_tensor(arrays["tip_vertex_ids"], dtype=torch.long))
        self.register_buffer("seal_faces", torch.as_tensor(arrays["seal_faces"], dtype=torch.long))
        self.register_buffer("weld_index", torch.as_tensor(arrays["weld_index"], dtype=torch.long))
        self.register_buffer("keypoint_index", torch.as_tensor(KEYPOINT_FROM_JOINT, dtype=torch.long))
        uv = arrays.get("uv")
        self.uv: Tensor | None
        if uv is None:
            self.uv = None
        else:
            self.register_buffer("uv", torch.as_tensor(uv, dtype=f32))
        self._parents_list = [int(p) for p in arrays["parents"]]

    @property
    def n_betas(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def faces_for(self, left: bool = False) -> Tensor:
        """(F, 3) faces with outward winding for a right (default) or mirrored left hand."""
        return self.faces[:, [0, 2, 1]] if left else self.faces

    def _betas(self, betas: Tensor | None, batch: int) -> Tensor:
        dev, dt = self.v_template.device, self.v_template.dtype
        if betas is None:
            return torch.zeros(batch, self.n_betas, dtype=dt, device=dev)
        betas = torch.as_tensor(betas, dtype=dt, device=dev)
        if betas.ndim == 1:
            betas = betas[None].expand(batch, -1)
        if betas.shape[-1] > self.n_betas:
            raise ValueError(f"{self.name} hand has {self.n_betas} shape coefficients, got {betas.shape[-1]}")
        if betas.shape[-1] < self.n_betas:
            betas = torch.nn.functional.pad(betas, (0, self.n_betas - betas.shape[-1]))
        return betas

    def rest(self, betas: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The flat hand with a shape.

        Args:
            betas: (B, NB) or None (mean shape, B = 1).

        Returns:
            vertices (B, V, 3), joints (B, 16, 3).
        """
        betas = self._betas(betas, 1)
        v = shape_blend(self.v_template, self.shapedirs, betas)
        return v, torch.einsum("jv,bvc->bjc", self.J_regressor, v)

    def forward(
        self,
        pose: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
        left: bool = False,
    ) -> HandOutput:
        """Pose the hand.

        Args:
            pose: (B, 16, 3) axis-angle (row 0 global orientation), or (B, 48).
            betas: (B, NB) shape coefficients (fewer columns are zero-padded) or None.
            transl: (B, 3) translation or None.
            left: return the mirrored left hand (see the module docstring).

        Returns:
            :class:`HandOutput`.
        """
        dev, dt = self.v_template.device, self.v_template.dtype
        pose = torch.as_tensor(pose, dtype=dt, device=dev)
        pose = pose.reshape(pose.shape[0], N_JOINTS, 3)
        b = pose.shape[0]
        betas = self._betas(betas, b)
        if left:
            pose = mirror_pose(pose)
        verts, joints, bones, frames = lbs(
            betas, pose, self.v_template, self.shapedirs, self.posedirs, self.J_regressor, self.parents,
            self.skin_weights,
        )  # fmt: skip
        return self.posed_output(verts, joints, bones, frames, transl, left)

    def posed_output(
        self, verts: Tensor, joints: Tensor, bones: Tensor, frames: Tensor, transl: Tensor | None, left: bool
    ) -> HandOutput:
        """Right-hand LBS results -> :class:`HandOutput`: fingertips, mirroring, translation, keypoints.

        Args:
            verts: (B, V, 3), joints: (B, 16, 3), bones and frames: (B, 16, 4, 4), as :func:`lbs` returns
                them for the (un-mirrored) right hand; transl: (B, 3) or None.
        """
        tips = verts[:, self.tip_vertex_ids]
        if left:
            verts, joints, tips = mirror_points(verts), mirror_points(joints), mirror_points(tips)
            bones, frames = mirror_transforms(bones), mirror_transforms(frames)
        if transl is not None:
            t = torch.as_tensor(transl, dtype=verts.dtype, device=verts.device).reshape(verts.shape[0], 1, 3)
            verts, joints, tips = verts + t, joints + t, tips + t
            bones = bones.clone()
            frames = frames.clone()
            bones[..., :3, 3] += t
            frames[..., :3, 3] += t
        keypoints = torch.cat([joints, tips], dim=1)[:, self.keypoint_index]
        return HandOutput(verts, joints, keypoints, bones, frames, self.faces_for(left))

    def sealed_mesh(self, vertices: Tensor, left: bool = False) -> tuple[Tensor, Tensor]:
        """A watertight version of a hand surface: UV-split vertices welded, wrist closed.

        Args:
            vertices: (..., V, 3) vertices of this hand (any pose or shape).
            left: the vertices are a mirrored left hand (winding reversed).

        Returns:
            vertices (..., U, 3) with one vertex per geometric position, faces (F + S, 3) long,
            consistently oriented outwards.
        """
        rep = torch.as_tensor(weld_representatives(self.weld_index.cpu().numpy()), device=vertices.device)
        faces = torch.cat([self.faces, self.seal_faces], dim=0)
        faces = self.weld_index[faces]
        if left:
            faces = faces[:, [0, 2, 1]]
        return vertices[..., rep, :], faces.to(vertices.device)


# ---------------------------------------------------------------------------------------------
# the one loader of MANO-format arrays
# ---------------------------------------------------------------------------------------------


def _dense(a: Any) -> np.ndarray:
    if hasattr(a, "toarray"):
        a = a.toarray()
    return np.asarray(a)


def hand_from_arrays(arrays: Mapping[str, Any], name: str, path: str | os.PathLike) -> HandModel:
    """Validate MANO-format arrays and build a :class:`HandModel`.

    Args:
        arrays: mapping with the keys of the table in this module's docstring.
        name: "open" or "mano". path: the file the arrays came from (named in errors).

    Raises:
        PalmError: a key is missing or an array has the wrong shape.
    """
    for key in REQUIRED_KEYS:
        if key not in arrays or arrays[key] is None:
            raise PalmError(path, f"not a MANO-format hand model: missing key '{key}'")
    try:
        a = {k: _dense(arrays[k]) for k in REQUIRED_KEYS}
        for k in ("posedirs", "uv", "tip_vertex_ids", "seal_faces", "weld_index"):
            if k in arrays and arrays[k] is not None:
                a[k] = _dense(arrays[k])
    except Exception as exc:  # noqa: BLE001 - anything unreadable is a bad file
        raise PalmError(path, f"not a MANO-format hand model: unreadable array ({exc})") from None

    def bad(key: str, expected: str) -> PalmError:
        return PalmError(path, f"key '{key}' has shape {tuple(a[key].shape)}, expected {expected}")

    v = a["v_template"]
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 4:
        raise bad("v_template", "(V, 3)")
    n_v = v.shape[0]
    if a["shapedirs"].ndim != 3 or a["shapedirs"].shape[:2] != (n_v, 3):
        raise bad("shapedirs", f"({n_v}, 3, NB)")
    if a["J_regressor"].shape != (N_JOINTS, n_v):
        raise bad("J_regressor", f"({N_JOINTS}, {n_v})")
    if a["weights"].shape != (n_v, N_JOINTS):
        raise bad("weights", f"({n_v}, {N_JOINTS})")
    kt = a["kintree_table"]
    if kt.ndim != 2 or kt.shape != (2, N_JOINTS):
        raise bad("kintree_table", f"(2, {N_JOINTS})")
    f = a["f"]
    if f.ndim != 2 or f.shape[1] != 3 or f.size == 0:
        raise bad("f", "(F, 3)")
    if f.min() < 0 or f.max() >= n_v:
        raise PalmError(path, f"key 'f' refers to vertex {int(f.max())} but the template has {n_v}")
    posedirs = a.get("posedirs")
    if posedirs is None:
        posedirs = np.zeros((n_v, 3, 0), np.float32)
    elif posedirs.size and posedirs.shape != (n_v, 3, 9 * (N_JOINTS - 1)):
        raise bad("posedirs", f"({n_v}, 3, {9 * (N_JOINTS - 1)}) or empty")
    else:
        posedirs = posedirs.reshape(n_v, 3, -1)
    parents = kt[0].astype(np.int64).copy()
    parents[0] = -1
    if any(not (0 <= parents[j] < j) for j in range(1, N_JOINTS)):
        raise PalmError(path, f"key 'kintree_table' is not a tree with parents before children: {parents.tolist()}")
    faces = f.astype(np.int64)
    out: dict[str, np.ndarray] = {
        "v_template": v, "shapedirs": a["shapedirs"], "posedirs": posedirs, "J_regressor": a["J_regressor"],
        "weights": a["weights"], "parents": parents, "f": faces,
    }  # fmt: skip
    if "uv" in a:
        if a["uv"].shape != (n_v, 2):
            raise bad("uv", f"({n_v}, 2)")
        out["uv"] = a["uv"]
    out["weld_index"] = a["weld_index"].astype(np.int64) if "weld_index" in a else np.arange(n_v)
    if out["weld_index"].shape != (n_v,):
        raise bad("weld_index", f"({n_v},)")
    if "seal_faces" in a:
        out["seal_faces"] = a["seal_faces"].astype(np.int64).reshape(-1, 3)
    else:
        out["seal_faces"] = _seal_faces(out["weld_index"][faces])
    if "tip_vertex_ids" in a:
        tips = a["tip_vertex_ids"].astype(np.int64).ravel()
        if tips.shape != (5,) or tips.min() < 0 or tips.max() >= n_v:
            raise PalmError(path, "key 'tip_vertex_ids' must hold 5 vertex ids (thumb, index, middle, ring, pinky)")
    elif n_v == 778:
        tips = np.asarray(MANO_TIP_VERTEX_IDS)
    else:
        tips = fingertip_vertices(v, a["J_regressor"] @ v, a["weights"], parents)
    out["tip_vertex_ids"] = tips
    return HandModel(out, name)


def fingertip_vertices(
    template: np.ndarray, joints: np.ndarray, weights: np.ndarray, parents: np.ndarray
) -> np.ndarray:
    """(5,) vertex farthest along each distal bone (thumb, index, middle, ring, pinky).

    Used for rigs that do not list their fingertips.
    """
    ids = []
    for distal in (15, 3, 6, 12, 9):
        d = joints[distal] - joints[parents[distal]]
        d = d / max(np.linalg.norm(d), 1e-12)
        cand = np.flatnonzero(weights.argmax(1) == distal)
        if cand.size == 0:
            cand = np.arange(len(template))
        ids.append(int(cand[np.argmax((template[cand] - joints[distal]) @ d)]))
    return np.asarray(ids, dtype=np.int64)
