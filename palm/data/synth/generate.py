"""The synthetic-dataset generator: renders every subject, pose and view into the PALM layout."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palm.data.palm_dataset import DEPTH_MAX_M, POSE_ABSOLUTE, frame_name
from palm.data.synth.config import CAMERA_IDS, GENERATOR_VERSION, SynthConfig
from palm.data.synth.rig import preset_poses, rig_cameras, rotation_y, sample_pose
from palm.data.synth.shading import (
    Environments,
    FrameScene,
    background_fn,
    lobe_visibility,
    render_view,
    uv_gradients,
    welded_normals,
)
from palm.data.synth.shape import (
    SHAPE_FILE,
    ShapedHand,
    bone_lengths,
    fit_canonical_box,
    project_betas,
)
from palm.data.synth.subjects import SubjectSpec, sample_subject, subject_material
from palm.errors import PalmError
from palm.imageio import to_srgb8, to_u8, write_png
from palm.io import atomic_dir, atomic_write, write_json
from palm.jobs import ETA, CancelToken, Emit, Log, Progress, check_cancel, null_emit
from palm.render.sg import lobe_groups, normalise_exposure

# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_npy(path: Path, obj: Any) -> None:
    """``np.save`` of a dict (the release's pickled-dict ``.npy`` format), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        np.save(tmp, obj)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` of plain arrays (no pickles), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def subject_hand(rig: Any, spec: SubjectSpec) -> tuple[SubjectSpec, ShapedHand, np.ndarray]:
    """The subject's hand: its flat hand (rig betas + proportions, fitted into the canonical cube),
    the betas registered for it (the rig's best fit) and the :class:`ShapedHand` that poses it.

    Returns:
        the spec with the betas and proportions actually used, the hand, the registered betas (NB,).
    """
    import dataclasses

    rest, betas, props = fit_canonical_box(rig, spec.betas, spec.proportions)
    spec = dataclasses.replace(spec, betas=[round(float(b), 4) for b in betas], proportions=props)
    registered = project_betas(rig, rest)
    return spec, ShapedHand(rig, registered[None], rest[None]), registered


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, array)


def encode_normals(n_gl: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB = (n + 1) / 2 * 255 on the mask, 0 elsewhere (foreground never encodes as 0,0,0)."""
    rgb = to_u8((n_gl + 1.0) / 2.0)
    rgb[~mask] = 0
    return rgb


def encode_depth(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.round(depth / DEPTH_MAX_M * 65535.0), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


def _check_replaceable(out: Path) -> None:
    """Refuse to replace an existing folder unless it is empty or an earlier synthetic dataset."""
    if not out.exists():
        return
    if not out.is_dir():
        raise PalmError(out, "exists and is not a folder")
    if not any(out.iterdir()):
        return
    meta = out / "meta.json"
    try:
        ours = json.loads(meta.read_text()).get("generator") == "palm.data.synth"
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise PalmError(out, "folder exists and is not a synthetic dataset; choose a new or empty --out folder")


def load_rig(name: str) -> Any:
    """The hand rig: ``open`` or a path to a MANO file."""
    from palm.hand import load_hand

    if name == "open":
        return load_hand("open")
    return load_hand("mano", name)


def generate(
    out: str | os.PathLike,
    cfg: SynthConfig | None = None,
    emit: Emit = null_emit,
    cancel: CancelToken | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Render a synthetic dataset into ``out`` (written to a temporary folder, then renamed).

    Args:
        out: dataset folder (replaced when it exists, only after the new one is complete).
        cfg: what to generate (default ``SynthConfig()``).
        emit: progress callback (:class:`palm.jobs.Progress` after every frame).
        cancel: cancellation token checked between frames.
        device: torch device of the renderer.

    Returns:
        Summary ``{"root", "subjects", "frames", "views", "images", "seconds"}``.
    """
    cfg = SynthConfig() if cfg is None else cfg
    previous = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _generate(out, cfg, emit, cancel, device)
    finally:
        torch.set_num_threads(previous)


def _generate(
    out: str | os.PathLike, cfg: SynthConfig, emit: Emit, cancel: CancelToken | None, device: torch.device | str
) -> dict[str, Any]:
    t0 = time.monotonic()
    if not 1 <= cfg.n_views <= len(CAMERA_IDS):
        raise PalmError("--views", f"must be 1..{len(CAMERA_IDS)}, got {cfg.n_views}")
    if cfg.background not in ("env", "black", "white"):
        raise PalmError("background", f"unknown background '{cfg.background}' (env, black, white)")
    out = Path(out)
    _check_replaceable(out)
    device = torch.device(device)
    hand = load_rig(cfg.hand).to(device)
    names, presets = preset_poses()
    envs = Environments(cfg.envs)
    rng = np.random.default_rng(cfg.seed)
    strata = (np.arange(cfg.n_subjects) + rng.uniform(0, 1, cfg.n_subjects)) / cfg.n_subjects
    strata = strata[rng.permutation(cfg.n_subjects)]
    specs = [
        sample_subject(np.random.default_rng([cfg.seed, i]), i, float(strata[i]), hand.n_betas)
        for i in range(cfg.n_subjects)
    ]
    total = cfg.n_subjects * cfg.n_poses
    eta = ETA(total)
    faces_all = (
        torch.cat([hand.faces, hand.seal_faces]) if getattr(hand, "seal_faces", None) is not None else hand.faces
    )
    meta_frames: dict[str, dict[str, Any]] = {}
    step = 0
    with atomic_dir(out) as root:
        for spec in specs:
            check_cancel(cancel)
            srng = np.random.default_rng([cfg.seed, int(spec.sid), 1])
            sdir = root / spec.sid
            spec, shand, reg_betas = subject_hand(hand.cpu(), spec)
            material = subject_material(shand, spec, cfg.texture_side(), reg_betas)
            hand.to(device)
            shand.to(device)
            cams = rig_cameras(srng, cfg)
            n = cfg.n_poses
            poses = np.zeros((n, 16, 3), np.float32)
            transl = np.zeros((n, 3), np.float32)
            kp3d = np.zeros((n, 21, 3), np.float32)
            kp2d = {c: np.zeros((n, 21, 2), np.float32) for c in cams}
            lighting: dict[str, Any] = {"frames": {}}
            betas = torch.tensor(reg_betas[None], dtype=torch.float32, device=device)
            for f in range(n):
                check_cancel(cancel)
                pose, label = sample_pose(srng, presets, names, cfg.preset_probability)
                with torch.no_grad():
                    posed = shand(pose=torch.from_numpy(pose)[None].to(device), betas=betas)
                    verts0 = posed.vertices[0]
                    centre = 0.5 * (verts0.amin(0) + verts0.amax(0))
                    t = (-centre.cpu().numpy() + srng.uniform(-0.01, 0.01, 3)).astype(np.float32)
                    posed = shand(
                        pose=torch.from_numpy(pose)[None].to(device),
                        betas=betas,
                        transl=torch.from_numpy(t)[None].to(device),
                    )
                    verts = posed.vertices[0]
                    normals = welded_normals(verts[None], shand)[0]
                    uv_grad = None if shand.uv is None else uv_gradients(verts, shand.faces, shand.uv)
                env_name = envs.names[int(srng.integers(len(envs.names)))]
                base_lobes, hdr = envs.get(env_name)
                angle = float(srng.uniform(0, 2 * math.pi))
                rot = rotation_y(angle)
                from palm.render.sg import sg_rotate

                lobes = sg_rotate(base_lobes, torch.as_tensor(rot, dtype=torch.float32))
                lobes, scale = normalise_exposure(lobes, cfg.exposure)
                lobes = lobes.to(device)
                groups = lobe_groups(lobes, cfg.shadow_groups)
                with torch.no_grad():
                    vis = lobe_visibility(verts, normals, shand, lobes, groups, cfg)
                scene = FrameScene(
                    vertices=verts,
                    normals=normals,
                    faces=faces_all.to(device),
                    n_rig_faces=int(hand.faces.shape[0]),
                    uv=None if hand.uv is None else hand.uv.to(device),
                    vertex_albedo=material["vertex_albedo"].to(device),
                    vertex_roughness=material["vertex_roughness"].to(device),
                    albedo_map=None if material["albedo_map"] is None else material["albedo_map"].to(device),
                    roughness_map=None if material["roughness_map"] is None else material["roughness_map"].to(device),
                    metallic=spec.metallic,
                    lobes=lobes,
                    groups=groups,
                    visibility=vis,
                    background=background_fn(cfg.background, lobes.cpu(), hdr, rot, scale),
                    bump_map=None
                    if material["bump_map"] is None or not cfg.relief
                    else material["bump_map"].to(device),
                    uv_grad=uv_grad,
                )
                fname = frame_name(f)
                for cam_id, cam in cams.items():
                    with torch.no_grad():
                        views = render_view(scene, cam, cfg.supersample)
                    _write_png(sdir / "images" / cam_id / f"{fname}.png", to_srgb8(views["rgb"]))
                    _write_png(sdir / "masks" / cam_id / f"{fname}.png", views["mask"].astype(np.uint8) * 255)
                    _write_png(
                        sdir / "normals" / cam_id / f"{fname}.png", encode_normals(views["normal_gl"], views["mask"])
                    )
                    _write_png(sdir / "depth" / cam_id / f"{fname}.png", encode_depth(views["depth"]))
                    _write_png(sdir / "albedo" / cam_id / f"{fname}.png", to_srgb8(views["albedo"]))
                    rgba = np.dstack(
                        [np.repeat(to_u8(views["shade"])[..., None], 3, -1), views["mask"].astype(np.uint8) * 255]
                    )
                    _write_png(sdir / "mano" / cam_id / f"{fname}.png", rgba)
                    kp2d[cam_id][f] = cam.project(posed.keypoints[0].cpu().numpy().astype(np.float64))
                poses[f], transl[f] = pose, t
                kp3d[f] = posed.keypoints[0].cpu().numpy()
                lighting["frames"][fname] = {
                    "env": env_name,
                    "rotation_y": round(angle, 6),
                    "exposure_scale": scale,
                    "pose": label,
                    "lobes": lobes.cpu().numpy().round(6).tolist(),
                }
                meta_frames.setdefault(spec.sid, {})[fname] = {
                    "env": env_name,
                    "rotation_y": round(angle, 6),
                    "pose": label,
                }
                step += 1
                emit(Progress(step, total, message=f"subject {spec.sid} frame {fname}", eta_s=eta(step)))
            write_npy(sdir / "cameras.npy", {"cameras": {c: cam.to_dict() for c, cam in cams.items()}})
            write_npy(
                sdir / "poses.npy",
                {
                    "betas": np.asarray(reg_betas[None], np.float32),
                    "hand_pose": poses[:, 1:].reshape(n, 45),
                    "global_orient": poses[:, 0],
                    "transl": transl,
                },
            )
            write_npy(sdir / "keypoints.npy", {"keypoints_3d": kp3d, "keypoints_2d": kp2d})
            write_json(sdir / "lighting.json", lighting)
            rest = shand.subject_rest[0].cpu().numpy()
            write_npz(
                sdir / SHAPE_FILE,
                rest_vertices=rest,
                rest_joints=(shand.J_regressor @ shand.subject_rest[0]).cpu().numpy(),
                betas=reg_betas,
                drawn_betas=np.asarray(spec.betas, np.float32),
                bone_length=np.asarray(spec.proportions.bone_length, np.float32),
                bone_thickness=np.asarray(spec.proportions.bone_thickness, np.float32),
                palm=np.asarray(spec.proportions.palm, np.float32),
                finger_lengths_m=bone_lengths(shand.cpu(), rest).astype(np.float32),
            )
            shand.to(device)
            has_maps = material["albedo_map"] is not None
            if has_maps:
                _write_png(sdir / "albedo_map.png", to_srgb8(material["albedo_map"].numpy()))
                _write_png(sdir / "roughness_map.png", to_u8(material["roughness_map"].numpy()[..., 0]))
                h16 = np.clip(np.round(material["height_map"].numpy() / 0.002 * 32767.5 + 32767.5), 0, 65535)
                _write_png(sdir / "height_map.png", h16.astype(np.uint16))
            write_json(
                sdir / "subject.json",
                {
                    **asdict(spec),
                    "registered_betas": [round(float(b), 5) for b in reg_betas],
                    "shape": SHAPE_FILE,
                    "hand": hand.name,
                    "albedo_map": "albedo_map.png" if has_maps else None,
                    "roughness_map": "roughness_map.png" if has_maps else None,
                    "height_map": "height_map.png" if has_maps else None,
                    "albedo_encoding": "linear albedo stored sRGB-encoded, 8 bit; texel row 0 is v = 1",
                    "roughness_encoding": "roughness * 255, 8 bit",
                    "height_encoding": "relief along the normal, 16 bit: metres = (value - 32767.5) / 32767.5 * 0.002",
                },
            )
        write_json(
            root / "meta.json",
            {
                "generator": "palm.data.synth",
                "generator_version": GENERATOR_VERSION,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                "seed": cfg.seed,
                "resolution": cfg.resolution,
                "texture_size": cfg.texture_side(),
                "subjects": [s.sid for s in specs],
                "cameras": list(CAMERA_IDS[: cfg.n_views]),
                "hand": hand.name,
                "n_betas": hand.n_betas,
                "shape_note": "each subject's flat hand is <sid>/shape.npz:rest_vertices (rig vertex order, metres); "
                "its skeleton is J_regressor @ rest_vertices and a frame is the rig's LBS of it "
                "(palm.data.synth.shape.ShapedHand); poses.npy betas are the rig's closest fit to it "
                "(and identify the subject to ShapedHand)",
                "hand_pose_convention": POSE_ABSOLUTE,
                "hand_pose_note": "hand_pose is absolute for a flat_hand_mean=True layer (the PALM release stores it "
                "relative to MANO's mean pose)",
                "depth_encoding": f"16-bit PNG, metres = value / 65535 * {DEPTH_MAX_M}, 0 = background, camera z",
                "normal_encoding": "RGB = (n + 1) / 2 * 255, OpenGL camera axes (x right, y up, z to viewer), 0 = background",
                "world_up": [0.0, 1.0, 0.0],
                "environments": {sid: frames for sid, frames in meta_frames.items()},
                "renderer": "rasterised rig mesh; L = sum_k V_k shade_sg(n, v, albedo, roughness, metallic, lobe_k); "
                "V_k per-vertex cosine-weighted shadow-map visibility of the lobe's directions",
            },
        )
        emit(Log(f"wrote {total * cfg.n_views} images to {out}", level="debug"))
    return {
        "root": str(out),
        "subjects": cfg.n_subjects,
        "frames": total,
        "views": cfg.n_views,
        "images": total * cfg.n_views,
        "seconds": round(time.monotonic() - t0, 2),
    }


def contact_sheet(root: str | os.PathLike, view: str = "MCU_01", frame: int = 0, cols: int = 5) -> np.ndarray:
    """Tile one image of every subject of a dataset (for looking at a generated set).

    Returns:
        (rows * H, cols * W, 3) uint8.
    """
    from palm.data.palm_dataset import PalmDataset

    ds = PalmDataset(root)
    tiles = [np.round(ds.load(sid, frame, view).image * 255).astype(np.uint8) for sid in ds.subjects]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = t
    return sheet
