"""The skinned glTF 2.0 binary (GLB) writer, and a small reader for checking what it wrote.

Written with ``json`` + ``struct`` so that the file carries a skin: the 16 joints as a node
hierarchy, inverse bind matrices ``T(-J_j)``, top-4 ``JOINTS_0``/``WEIGHTS_0``, and a
metallic-roughness material with baseColor, metallicRoughness and normal textures in the ``xatlas``
UV atlas (:mod:`palm.export.textures`). A posed export stays bound to the rest pose and carries the
pose as its joints' node transforms (:func:`joint_node_transforms`).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from palm.bake import BakedAvatar
from palm.errors import PalmError
from palm.export.textures import BakedTextures, UVAtlas
from palm.hand.model import JOINT_NAMES
from palm.imageio import png_bytes
from palm.io import atomic_write

_FLOAT, _UBYTE, _USHORT, _UINT = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_GLB_MAGIC, _CHUNK_JSON, _CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942


class _GltfBuffer:
    """Accumulates buffer views and accessors of one binary buffer (4-byte aligned)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(
        self, array: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False
    ) -> int:
        dtype = {_FLOAT: "<f4", _UBYTE: "u1", _USHORT: "<u2", _UINT: "<u4"}[component]
        array = np.ascontiguousarray(array, dtype=dtype)
        acc: dict[str, Any] = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if minmax:
            flat = array.reshape(len(array), -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _quat_xyzw(rot: np.ndarray) -> list[float]:
    """Unit quaternion ``[x, y, z, w]`` (glTF order, ``w >= 0``) of a 3x3 rotation."""
    u, _, vt = np.linalg.svd(rot)
    r = u @ vt  # nearest rotation
    tr = np.trace(r)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 1e-300))
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return [float(x) for x in q]


def joint_node_transforms(joints: np.ndarray, parents: np.ndarray, bones: np.ndarray | None) -> list[np.ndarray]:
    """Local 4x4 transforms of the joint nodes (rest: pure translations between rest joints).

    With bone transforms ``B_j`` the posed joint frame is ``G_j = B_j T(J_j)`` (the rest frames are
    axis-aligned at the rest joints, matching the inverse bind matrices ``T(-J_j)``), and the node's
    local transform is ``G_parent^-1 G_j``; skinning then reproduces the rig's LBS exactly.

    Args:
        joints: (16, 3) rest joints; parents: (16,); bones: (16, 4, 4) or None.

    Returns:
        16 local (4, 4) float64 matrices.
    """
    frames = np.tile(np.eye(4), (len(joints), 1, 1))
    frames[:, :3, 3] = joints
    if bones is not None:
        frames = bones @ frames
    local = []
    for j, p in enumerate(parents):
        local.append(frames[j] if p < 0 else np.linalg.inv(frames[p]) @ frames[j])
    return local


def top4_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4 largest skin weights of each vertex, renormalised to sum to 1.

    Args:
        weights: (V, J) non-negative.

    Returns:
        joints (V, 4) uint8 (or uint16 when J > 256), weights (V, 4) float32 (zero weights get
        joint 0).
    """
    order = np.argsort(-weights, axis=1, kind="stable")[:, :4]
    w = np.take_along_axis(weights, order, axis=1).astype(np.float64)
    w = np.maximum(w, 0.0)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    w = w.astype(np.float32)
    w[:, 0] = 1.0 - w[:, 1:].sum(1)  # exact float32 normalisation (the largest absorbs rounding)
    idx = np.where(w > 0, order, 0)
    return idx.astype(np.uint8 if weights.shape[1] <= 256 else np.uint16), w


def write_glb(
    path: Path,
    avatar: BakedAvatar,
    atlas: UVAtlas,
    tangents: np.ndarray,
    textures: BakedTextures,
    bones: np.ndarray | None,
    vertex_colors: bool,
) -> None:
    """Write the skinned, textured avatar as a GLB.

    Args:
        path: output ``.glb`` (validated by the caller).
        avatar: the canonical (rest) avatar the skin is bound to.
        atlas: its UV atlas; tangents: (V', 4) atlas-vertex tangents; textures: the baked textures.
        bones: (16, 4, 4) bone transforms of a pose shown through the joint nodes, or None (rest).
        vertex_colors: add ``COLOR_0`` (linear albedo).
    """
    vm = atlas.vmapping
    n_joints = len(avatar.joints)
    buf = _GltfBuffer()
    normals = avatar.normals[vm].astype(np.float64)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    joint_idx, joint_w = top4_weights(avatar.skin_weights[vm])
    attributes = {
        "POSITION": buf.accessor(avatar.vertices[vm], _FLOAT, "VEC3", _ARRAY_BUFFER, minmax=True),
        "NORMAL": buf.accessor(normals, _FLOAT, "VEC3", _ARRAY_BUFFER),
        "TANGENT": buf.accessor(tangents, _FLOAT, "VEC4", _ARRAY_BUFFER),
        "TEXCOORD_0": buf.accessor(atlas.uv, _FLOAT, "VEC2", _ARRAY_BUFFER),
        "JOINTS_0": buf.accessor(joint_idx, _UBYTE if joint_idx.dtype == np.uint8 else _USHORT, "VEC4", _ARRAY_BUFFER),
        "WEIGHTS_0": buf.accessor(joint_w, _FLOAT, "VEC4", _ARRAY_BUFFER),
    }
    if vertex_colors:
        attributes["COLOR_0"] = buf.accessor(np.clip(avatar.albedo[vm], 0, 1), _FLOAT, "VEC3", _ARRAY_BUFFER)
    n_vertices = len(vm)
    index_type = _USHORT if n_vertices < 65535 else _UINT
    indices = buf.accessor(atlas.faces.reshape(-1), index_type, "SCALAR", _ELEMENT_ARRAY_BUFFER, minmax=True)

    ibm = np.tile(np.eye(4), (n_joints, 1, 1))
    ibm[:, :3, 3] = -avatar.joints.astype(np.float64)
    ibm_acc = buf.accessor(ibm.transpose(0, 2, 1).reshape(n_joints, 16), _FLOAT, "MAT4")  # column-major

    images = []
    for name, image in (
        ("baseColor", textures.base_color),
        ("metallicRoughness", textures.metallic_roughness),
        ("normal", textures.normal),
    ):
        images.append({"name": name, "mimeType": "image/png", "bufferView": buf.view(png_bytes(image))})

    nodes = []
    parents = avatar.parents.astype(np.int64)
    for j, local in enumerate(joint_node_transforms(avatar.joints.astype(np.float64), parents, bones)):
        node: dict[str, Any] = {"name": _joint_name(j), "translation": [float(x) for x in local[:3, 3]]}
        quat = _quat_xyzw(local[:3, :3])
        if abs(quat[3] - 1.0) > 1e-12:
            node["rotation"] = quat
        children = [int(c) for c in np.nonzero(parents == j)[0]]
        if children:
            node["children"] = children
        nodes.append(node)
    mesh_node = len(nodes)
    nodes.append({"name": "hand", "mesh": 0, "skin": 0})
    root = int(np.nonzero(parents < 0)[0][0])

    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "palm-studio export"},
        "scene": 0,
        "scenes": [{"name": "palm", "nodes": [mesh_node, root]}],
        "nodes": nodes,
        "skins": [
            {"name": "hand_skin", "joints": list(range(n_joints)), "skeleton": root, "inverseBindMatrices": ibm_acc}
        ],
        "meshes": [
            {"name": "hand", "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}
        ],
        "materials": [
            {
                "name": "skin",
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicRoughnessTexture": {"index": 1},
                    "metallicFactor": 1.0,
                    "roughnessFactor": 1.0,
                },
                "normalTexture": {"index": 2},
            }
        ],
        "textures": [{"sampler": 0, "source": i} for i in range(3)],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": images,
        "accessors": buf.accessors,
        "bufferViews": buf.views,
        "buffers": [{"byteLength": 0}],
    }
    buf.data.extend(b"\0" * (-len(buf.data) % 4))
    gltf["buffers"][0]["byteLength"] = len(buf.data)
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(buf.data)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        fh.write(struct.pack("<II", len(text), _CHUNK_JSON))
        fh.write(text)
        fh.write(struct.pack("<II", len(buf.data), _CHUNK_BIN))
        fh.write(bytes(buf.data))


def _joint_name(j: int) -> str:
    """The MANO name of joint ``j`` (``joint_NN`` past the 16 MANO joints)."""
    return str(JOINT_NAMES[j]) if j < len(JOINT_NAMES) else f"joint_{j:02d}"


def read_glb(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """Split a GLB into its JSON document and binary chunk."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or total != len(data):
        raise PalmError(path, "not a glTF 2.0 binary")
    length, _kind = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20 : 20 + length])
    offset = 20 + length
    blob = b""
    if offset < len(data):
        blen, _ = struct.unpack_from("<II", data, offset)
        blob = data[offset + 8 : offset + 8 + blen]
    return doc, blob


def glb_accessor(doc: dict[str, Any], blob: bytes, index: int) -> np.ndarray:
    """An accessor of a GLB (tightly packed views only) as a numpy array (count, n)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {_FLOAT: "<f4", _UBYTE: "u1", _USHORT: "<u2", _UINT: "<u4"}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    arr = np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=start)
    return arr.reshape(acc["count"], width)

