"""Mesh export: OBJ/PLY/GLB reload, the glTF skin and PBR textures, posing, Khronos validation."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from palm.export.gltf import glb_accessor, read_glb, top4_weights
from palm.export.mesh import export_mesh
from palm.hand.lbs import bone_transforms, skin_vertices
from palm.imageio import to_srgb8

ROOT = Path(__file__).resolve().parents[2]
TEX = 128


# --- a minimal glTF skinning reader (independent of the writer) --------------------------------


def _quat_matrix(q):
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _local(node):
    m = np.eye(4)
    m[:3, :3] = _quat_matrix(node.get("rotation", [0, 0, 0, 1])) * np.asarray(node.get("scale", [1, 1, 1]))
    m[:3, 3] = node.get("translation", [0, 0, 0])
    return m


def _globals(doc, override=None):
    """World matrix of every node; ``override`` maps node index -> local 4x4."""
    override = override or {}
    out = {}

    def visit(i, parent):
        node = doc["nodes"][i]
        out[i] = parent @ override.get(i, _local(node))
        for c in node.get("children", []):
            visit(c, out[i])

    for root in doc["scenes"][doc.get("scene", 0)]["nodes"]:
        visit(root, np.eye(4))
    return out


def _skinned_positions(doc, blob, override=None):
    prim = doc["meshes"][0]["primitives"][0]
    attr = prim["attributes"]
    pos = glb_accessor(doc, blob, attr["POSITION"]).astype(np.float64)
    joints = glb_accessor(doc, blob, attr["JOINTS_0"]).astype(np.int64)
    weights = glb_accessor(doc, blob, attr["WEIGHTS_0"]).astype(np.float64)
    skin = doc["skins"][0]
    ibm = glb_accessor(doc, blob, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    world = _globals(doc, override)
    joint_mats = np.stack([world[n] @ ibm[k] for k, n in enumerate(skin["joints"])])
    blend = np.einsum("vk,vkab->vab", weights, joint_mats[joints])
    return np.einsum("vab,vb->va", blend[:, :3, :3], pos) + blend[:, :3, 3]


def _dense_top4(weights):
    idx, w = top4_weights(weights)
    dense = np.zeros_like(weights)
    rows = np.arange(len(weights))
    for k in range(4):  # unused slots repeat joint 0 with weight 0: accumulate, do not overwrite
        dense[rows, idx[:, k]] += w[:, k]
    return dense


def _coloured(avatar):
    """Each vertex gets a colour from its dominant joint (constant per toy box)."""
    rng = np.random.default_rng(3)
    palette = rng.uniform(0.05, 0.9, size=(16, 3)).astype(np.float32)
    n = len(avatar.vertices)
    return replace(
        avatar,
        albedo=palette[avatar.skin_weights.argmax(1)],
        roughness=np.full(n, 0.6, np.float32),
        metallic=np.full(n, 0.2, np.float32),
    )


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["obj", "ply", "glb"])
def test_trimesh_reloads_with_the_same_vertex_count(tmp_path, toy_avatar, ext):
    summary = export_mesh(tmp_path / f"hand.{ext}", toy_avatar, texture_res=TEX, vertex_colors=True)
    mesh = trimesh.load(tmp_path / f"hand.{ext}", process=False, force="mesh")
    assert len(mesh.faces) == len(toy_avatar.faces)
    if ext == "ply":  # PLY keeps the avatar's vertices as they are
        assert len(mesh.vertices) == len(toy_avatar.vertices)
        np.testing.assert_allclose(mesh.vertices, toy_avatar.vertices, atol=1e-7)
        return
    # OBJ/GLB carry UVs: vertices are split where the atlas has seams, so the count is the atlas's
    assert len(mesh.vertices) == summary["atlas_vertices"] == summary["vertices"]
    assert summary["atlas_vertices"] >= len(toy_avatar.vertices)
    # ...and every reloaded vertex is one of the avatar's, every avatar vertex is present
    d = np.linalg.norm(mesh.vertices[:, None] - toy_avatar.vertices[None], axis=-1)
    assert d.min(1).max() < 1e-5 and d.min(0).max() < 1e-5


def test_skin_joint_hierarchy_matches_the_rig(tmp_path, toy_avatar, toy_hand):
    export_mesh(tmp_path / "hand.glb", toy_avatar, texture_res=TEX)
    doc, blob = read_glb(tmp_path / "hand.glb")
    skin = doc["skins"][0]
    joints = skin["joints"]
    assert len(joints) == 16
    parent_of = {c: i for i, n in enumerate(doc["nodes"]) for c in n.get("children", [])}
    parents = toy_hand.parents.numpy()
    for j, node in enumerate(joints):
        if parents[j] < 0:
            assert node not in parent_of and node in doc["scenes"][0]["nodes"] and skin["skeleton"] == node
        else:
            assert parent_of[node] == joints[parents[j]]
    world = _globals(doc)
    rest = np.stack([world[n][:3, 3] for n in joints])
    np.testing.assert_allclose(rest, toy_avatar.joints, atol=1e-6)
    ibm = glb_accessor(doc, blob, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    for k, n in enumerate(joints):
        np.testing.assert_allclose(ibm[k] @ world[n], np.eye(4), atol=1e-6)
    # the skinned mesh node is a scene root and carries the skin
    mesh_node = next(i for i, n in enumerate(doc["nodes"]) if "mesh" in n)
    assert doc["nodes"][mesh_node]["skin"] == 0 and mesh_node in doc["scenes"][0]["nodes"]


def test_rotating_a_glb_joint_bends_the_finger(tmp_path, toy_avatar, toy_hand):
    summary = export_mesh(tmp_path / "hand.glb", toy_avatar, texture_res=TEX)
    doc, blob = read_glb(tmp_path / "hand.glb")
    attr = doc["meshes"][0]["primitives"][0]["attributes"]
    rest = glb_accessor(doc, blob, attr["POSITION"]).astype(np.float64)
    np.testing.assert_allclose(_skinned_positions(doc, blob), rest, atol=1e-6)  # bind pose = rest

    angle = np.pi / 3  # index MCP (joint 1) 60 degrees about z
    joint1 = doc["skins"][0]["joints"][1]
    local = _local(doc["nodes"][joint1])
    c, s = np.cos(angle / 2), np.sin(angle / 2)
    local[:3, :3] = _quat_matrix([0, 0, -s, c])
    bent = _skinned_positions(doc, blob, {joint1: local})
    move = np.linalg.norm(bent - rest, axis=1)

    vm = np.array([np.argmin(np.linalg.norm(toy_avatar.vertices - p, axis=1)) for p in rest])
    weights = toy_avatar.skin_weights[vm]
    tips = weights.argmax(1) == 3  # index distal segment
    wrist = weights[:, 0] > 0.999
    assert tips.any() and wrist.any()
    assert move[tips].min() > 0.01  # the fingertip swings by centimetres
    assert move[wrist].max() < 1e-6  # the palm stays put
    # the same pose through the rig's LBS (with the file's top-4 weights) gives the same surface
    pose = np.zeros((16, 3), np.float32)
    pose[1] = (0, 0, -angle)
    expected, _ = skin_vertices(rest, np.zeros_like(rest), _dense_top4(weights), bone_transforms(toy_hand, pose))
    np.testing.assert_allclose(bent, expected, atol=1e-5)
    assert summary["atlas_vertices"] == len(rest)


def test_posed_glb_shows_the_pose_and_stays_bound_to_rest(tmp_path, toy_avatar, toy_hand, bent_pose):
    export_mesh(tmp_path / "rest.glb", toy_avatar, texture_res=TEX)
    export_mesh(tmp_path / "posed.glb", toy_avatar, bent_pose, toy_hand, texture_res=TEX)
    doc_r, blob_r = read_glb(tmp_path / "rest.glb")
    doc, blob = read_glb(tmp_path / "posed.glb")
    attr = doc["meshes"][0]["primitives"][0]["attributes"]
    rest = glb_accessor(doc, blob, attr["POSITION"]).astype(np.float64)
    np.testing.assert_array_equal(rest, glb_accessor(doc_r, blob_r, attr["POSITION"]))  # mesh at rest
    ibm = doc["skins"][0]["inverseBindMatrices"]
    np.testing.assert_array_equal(glb_accessor(doc, blob, ibm), glb_accessor(doc_r, blob_r, ibm))
    shown = _skinned_positions(doc, blob)
    vm = np.array([np.argmin(np.linalg.norm(toy_avatar.vertices - p, axis=1)) for p in rest])
    expected, _ = skin_vertices(
        rest, np.zeros_like(rest), _dense_top4(toy_avatar.skin_weights[vm]), bone_transforms(toy_hand, bent_pose)
    )
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    assert np.linalg.norm(shown - rest, axis=1).max() > 0.01


@pytest.mark.parametrize("ext", ["ply", "obj"])
def test_posed_obj_and_ply_bake_the_pose(tmp_path, toy_avatar, toy_hand, bent_pose, ext):
    export_mesh(tmp_path / f"posed.{ext}", toy_avatar, bent_pose, toy_hand, texture_res=TEX)
    mesh = trimesh.load(tmp_path / f"posed.{ext}", process=False, force="mesh")
    posed = toy_hand(bent_pose).vertices[0].numpy()  # the rig's own LBS (all 5 influences)
    d = np.linalg.norm(mesh.vertices[:, None] - posed[None], axis=-1)
    assert d.min(1).max() < 2e-5 and d.min(0).max() < 2e-5


def test_obj_writes_mtl_and_textures(tmp_path, toy_avatar):
    export_mesh(tmp_path / "hand.obj", toy_avatar, texture_res=TEX)
    mtl = (tmp_path / "hand.mtl").read_text()
    assert "map_Kd hand_albedo.png" in mtl
    for name in ("albedo", "roughness", "metallic", "normal"):
        assert (tmp_path / f"hand_{name}.png").is_file()
    mesh = trimesh.load(tmp_path / "hand.obj", process=False, force="mesh")
    assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(mesh.vertices)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_glb_textures_carry_the_baked_material_without_holes(tmp_path, toy_avatar):
    avatar = _coloured(toy_avatar)
    export_mesh(tmp_path / "hand.glb", avatar, texture_res=TEX)
    doc, blob = read_glb(tmp_path / "hand.glb")
    material = doc["materials"][0]
    images = []
    for img in doc["images"]:
        view = doc["bufferViews"][img["bufferView"]]
        data = blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
        images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    tex = {
        k: images[doc["textures"][material["pbrMetallicRoughness"][k]["index"]]["source"]]
        for k in ("baseColorTexture", "metallicRoughnessTexture")
    }
    normal_tex = images[doc["textures"][material["normalTexture"]["index"]]["source"]]
    base = tex["baseColorTexture"]
    assert base.shape == (TEX, TEX, 3)
    # sample every face at its UV centroid: the face's albedo (constant per toy box), sRGB
    attr = doc["meshes"][0]["primitives"][0]["attributes"]
    uv = glb_accessor(doc, blob, attr["TEXCOORD_0"])
    pos = glb_accessor(doc, blob, attr["POSITION"])
    faces = glb_accessor(doc, blob, doc["meshes"][0]["primitives"][0]["indices"]).reshape(-1, 3)
    vm = np.array([np.argmin(np.linalg.norm(avatar.vertices - p, axis=1)) for p in pos])
    centre = uv[faces].mean(1) * TEX
    texel = base[centre[:, 1].astype(int), centre[:, 0].astype(int)]
    expected = to_srgb8(avatar.albedo[vm][faces].mean(1)[None])[0]
    assert np.abs(texel.astype(int) - expected).max() <= 1
    # dilation: no texel is left at the background value; every texel is one of the face colours
    palette = np.unique(to_srgb8(avatar.albedo[None])[0], axis=0)
    dist = np.abs(base.reshape(-1, 1, 3).astype(int) - palette[None].astype(int)).max(-1).min(1)
    assert dist.max() <= 1
    mr = tex["metallicRoughnessTexture"]
    assert (mr[..., 1] == round(0.6 * 255)).all() and (mr[..., 2] == round(0.2 * 255)).all()
    assert (normal_tex == (128, 128, 255)).all()  # no finer detail than the vertex normals: flat


def test_detail_normals_round_trip_through_the_tangent_frame(tmp_path, toy_avatar):
    target = np.array([0.3, 0.8, 0.52])
    target /= np.linalg.norm(target)
    export_mesh(
        tmp_path / "hand.glb", toy_avatar, texture_res=TEX, detail_normals=lambda p: np.tile(target, (len(p), 1))
    )
    doc, blob = read_glb(tmp_path / "hand.glb")
    prim = doc["meshes"][0]["primitives"][0]
    get = lambda k: glb_accessor(doc, blob, prim["attributes"][k]).astype(np.float64)
    uv, n, t = get("TEXCOORD_0"), get("NORMAL"), get("TANGENT")
    np.testing.assert_allclose(np.linalg.norm(t[:, :3], axis=1), 1, atol=1e-5)
    assert set(np.unique(t[:, 3])) <= {-1.0, 1.0}
    faces = glb_accessor(doc, blob, prim["indices"]).reshape(-1, 3)
    view = doc["bufferViews"][doc["images"][2]["bufferView"]]
    normal_tex = np.asarray(Image.open(io.BytesIO(blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]])))
    checked = 0
    for f in faces:
        corners = uv[f] * TEX
        x, y = np.floor(corners.mean(0)).astype(int)
        # barycentrics of that texel's centre: interpolate the frame exactly where it was baked
        a = np.array([[*corners[:, 0]], [*corners[:, 1]], [1, 1, 1]])
        bary = np.linalg.solve(a, [x + 0.5, y + 0.5, 1.0])
        if bary.min() < 0:
            continue
        ts = normal_tex[y, x] / 255.0 * 2 - 1
        nn = bary @ n[f]
        nn /= np.linalg.norm(nn)
        if nn @ target < 0.2:
            continue
        tt = bary @ t[f, :3]
        tt -= nn * (nn @ tt)
        tt /= np.linalg.norm(tt)
        bb = np.cross(nn, tt) * t[f[0], 3]  # what a glTF viewer does
        world = ts[0] * tt + ts[1] * bb + ts[2] * nn
        assert world @ target / np.linalg.norm(world) > 0.999  # 8-bit quantisation only
        checked += 1
    assert checked > 10


def test_top4_weights_are_the_largest_and_sum_to_one(toy_avatar):
    idx, w = top4_weights(toy_avatar.skin_weights)
    assert idx.dtype == np.uint8 and w.dtype == np.float32
    assert (np.abs(w.sum(1, dtype=np.float32) - 1) <= 1e-7).all()
    fifth = np.sort(toy_avatar.skin_weights, axis=1)[:, -5]
    kept = np.take_along_axis(toy_avatar.skin_weights, idx.astype(np.int64), 1)
    assert kept[w > 0].min() >= fifth.min()
    assert (kept.min(1) >= fifth).all()


# --- Khronos glTF validator ------------------------------------------------------------------


def _validator():
    if shutil.which("node") is None:
        pytest.skip("node is not installed (tools/system_deps.sh installs Node.js)")
    module = ROOT / "tools" / "node" / "node_modules" / "gltf-validator" / "package.json"
    if not module.is_file():
        subprocess.run(["bash", str(ROOT / "tools" / "node_deps.sh")], check=False, timeout=300)
    if not module.is_file():
        pytest.skip("gltf-validator could not be installed (offline?); run tools/node_deps.sh")
    return ROOT / "tools" / "gltf_validate.mjs"


@pytest.mark.parametrize("posed,left", [(False, False), (True, False), (True, True)], ids=["rest", "posed", "left"])
def test_glb_passes_the_khronos_validator(tmp_path, toy_avatar, toy_hand, bent_pose, posed, left):
    script = _validator()
    path = tmp_path / "hand.glb"
    export_mesh(
        path, _coloured(toy_avatar), bent_pose if posed else None, toy_hand, texture_res=TEX, vertex_colors=posed,
        left=left,
    )
    run = subprocess.run(["node", str(script), str(path)], check=False, capture_output=True, text=True, timeout=120)
    report = json.loads(run.stdout)
    issues = report["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert run.returncode == 0
    info = report["info"]
    assert info["skinnedMeshCount"] == 1 if "skinnedMeshCount" in info else True
    assert info["materialCount"] == 1 and info["hasTextures"] and info["hasSkins"]


def test_real_rig_posed_glb_reproduces_its_lbs(tmp_path):
    """The shipped rig: the posed GLB, skinned by a glTF reader, is the rig's own LBS surface."""
    hand_mod = pytest.importorskip("palm.hand")
    if not hasattr(hand_mod, "load_hand"):
        pytest.skip("palm.hand.load_hand is not in this build")
    from palm.bake import bake_from_hand

    hand = hand_mod.load_hand("open")
    avatar = bake_from_hand(hand)
    pose = np.zeros((16, 3), np.float32)
    pose[0] = (0.2, 0.1, 0.3)
    pose[1] = (0.0, 0.0, -1.0)
    pose[13] = (0.3, 0.2, 0.1)
    path = tmp_path / "posed.glb"
    summary = export_mesh(path, avatar, pose, hand, texture_res=256)
    doc, blob = read_glb(path)
    shown = _skinned_positions(doc, blob)
    rest = glb_accessor(doc, blob, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    from scipy.spatial import cKDTree

    dist, vm = cKDTree(avatar.vertices).query(rest)
    assert dist.max() < 1e-7 and len(rest) == summary["atlas_vertices"]
    import torch

    rig = hand(pose=torch.as_tensor(pose)[None]).vertices[0].numpy()[vm]
    assert np.abs(shown - rig).max() < 5e-4  # exact up to the top-4 weight truncation
    top4, _ = skin_vertices(
        rest, np.zeros_like(rest), _dense_top4(avatar.skin_weights[vm]), bone_transforms(hand, pose)
    )
    np.testing.assert_allclose(shown, top4, atol=1e-5)
    if shutil.which("node"):
        script = _validator()
        run = subprocess.run(["node", str(script), str(path)], check=False, capture_output=True, text=True, timeout=120)
        assert json.loads(run.stdout)["issues"]["numErrors"] == 0


@pytest.mark.parametrize("beta", [0.0004, 0.0007, 0.0015])
def test_silhouette_level_is_where_the_volume_render_draws_the_outline(beta):
    """Rays past a cylinder (radius 8 mm) through the Laplace density: their opacity is one half
    at ``silhouette_level`` outside the surface (the level the bakes extract)."""
    import torch

    from palm.bake import SILHOUETTE_RADIUS, silhouette_level
    from palm.render.volume import laplace_density

    r = SILHOUETTE_RADIUS
    t = torch.linspace(-0.05, 0.05, 200001, dtype=torch.float64)
    dt = float(t[1] - t[0])

    def opacity(h: float) -> float:  # a ray at distance h from the axis, perpendicular to it
        d = torch.sqrt(h * h + t * t) - r
        return 1.0 - math.exp(-float(laplace_density(d, beta).sum()) * dt)

    lo, hi = r - 5 * beta, r + 10 * beta  # opacity falls from ~1 to ~0 across this range
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if opacity(mid) > 0.5 else (lo, mid)
    outline = 0.5 * (lo + hi) - r
    level = silhouette_level(beta)
    assert outline > 0.5 * beta  # the outline lies well outside the zero set
    assert abs(level - outline) < 0.1 * beta, (level, outline)


def test_encloses_tells_a_box_that_cuts_the_surface():
    """Marching cubes of a sphere SDF is closed and outward when the grid's border is outside it,
    and open (the flag False) when the box cuts the sphere."""
    from skimage.measure import marching_cubes

    from palm.bake import closed_outward, encloses

    ax = np.linspace(-1.0, 1.0, 24)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    sdf = np.sqrt(x**2 + y**2 + z**2)
    for radius in (0.6, 1.2):
        v, f, _, _ = marching_cubes(sdf - radius, level=0.0, spacing=(0.5, 0.5, 0.5), gradient_direction="descent")
        assert encloses(v, sdf.shape, 0.5) == (radius < 1.0) == closed_outward(v, f)


@pytest.mark.parametrize("ext", ["ply", "glb"])
def test_a_left_hand_exports_as_the_mirror_image_of_the_right_one(tmp_path, toy_avatar, toy_hand, bent_pose, ext):
    """``left``: the file holds the left hand, the right hand in the pose mirrored through x = 0,
    wound outward; the GLB's skin shows it from its own mirrored skeleton."""
    export_mesh(tmp_path / f"left.{ext}", toy_avatar, bent_pose, toy_hand, texture_res=TEX, left=True)
    right = toy_hand(bent_pose).vertices[0].numpy()
    mirrored = right * [-1.0, 1.0, 1.0]
    if ext == "ply":
        mesh = trimesh.load(tmp_path / "left.ply", process=False, force="mesh")
        assert mesh.is_winding_consistent and mesh.volume > 0  # outward: a positive enclosed volume
        d = np.linalg.norm(np.asarray(mesh.vertices)[:, None] - mirrored[None], axis=-1)
        assert d.min(1).max() < 2e-5 and d.min(0).max() < 2e-5
    else:  # the skin's top-4 influences, as the right hand's GLB test
        doc, blob = read_glb(tmp_path / "left.glb")
        rest = glb_accessor(doc, blob, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]).astype(np.float64)
        rest_right = rest * [-1.0, 1.0, 1.0]  # bound to the mirrored rest mesh
        vm = np.array([np.argmin(np.linalg.norm(toy_avatar.vertices - p, axis=1)) for p in rest_right])
        assert np.abs(toy_avatar.vertices[vm] - rest_right).max() < 1e-6
        expected, _ = skin_vertices(rest_right, np.zeros_like(rest), _dense_top4(toy_avatar.skin_weights[vm]),
                                    bone_transforms(toy_hand, bent_pose))
        np.testing.assert_allclose(_skinned_positions(doc, blob), expected * [-1.0, 1.0, 1.0], atol=1e-5)
    assert np.abs(right - mirrored).max() > 0.01  # not the right hand
