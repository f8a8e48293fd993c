"""``palm export``: meshes (GLB/OBJ/PLY), stills (PNG/EXR), turntables (MP4/GIF) and environments.

```
palm export mesh      [--avatar DIR | --prior DIR] [--pose PRESET] [--res N] [--hand open|mano] --out FILE.glb|.obj|.ply
palm export render    [--avatar DIR] [--pose P] [--env E] --res N --out FILE.png|.exr [--renderer raster|neural]
palm export turntable [--avatar DIR] --frames N --out FILE.mp4|.gif
palm export env       [--avatar DIR | --env NAME] --out FILE.exr|.json
```

Every command validates its output path (extension and folder) before doing any work. Without
``--avatar``/``--prior`` the hand rig's own mesh is exported (:func:`palm.bake.bake_from_hand`).
Stills and turntables show the hand upright, palm to the camera at azimuth 0, with either renderer
(:func:`palm.render.views.framing_camera`); the light is :func:`palm.render.environment.display_light`.
"""

from __future__ import annotations

import argparse
from typing import Any

from palm.cli.common import bounded_float, bounded_int, common
from palm.errors import PalmError

MAX_IMAGE_RES = 8192
"""Largest still side (an 8192^2 float32 RGBA image is 1 GB before shading buffers)."""
MAX_MESH_RES = 512
"""Most marching-cubes cells along the hand (512^3 SDF samples, 0.5 GB)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``palm export {mesh,render,turntable,env}``."""
    parser = sub.add_parser(
        "export",
        help="export meshes, renders, turntables and environments",
        description="Export the avatar as a mesh (skinned PBR glTF, OBJ, PLY), a still, a turntable or its light.",
    )
    cmds = parser.add_subparsers(dest="export_command", metavar="WHAT")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    mesh = cmds.add_parser("mesh", parents=[common()], help="GLB (skinned, PBR textures), OBJ (+MTL) or PLY")
    source = mesh.add_mutually_exclusive_group()
    source.add_argument("--avatar", metavar="DIR", help="a personalised avatar folder")
    source.add_argument("--prior", metavar="DIR", help="a prior folder (its mean subject)")
    _pose_hand_args(mesh)
    mesh.add_argument(
        "--res", type=bounded_int(8, MAX_MESH_RES), default=128, metavar="N",
        help=f"marching-cubes cells along the hand's longest side, 8 to {MAX_MESH_RES} (default 128)"
    )
    mesh.add_argument("--texture-res", type=bounded_int(1, MAX_IMAGE_RES), default=1024, metavar="N", help="texture side (default 1024)")
    mesh.add_argument("--vertex-colors", action="store_true", help="add vertex colours (OBJ/PLY/GLB)")
    mesh.add_argument("--out", required=True, metavar="FILE", help="FILE.glb | FILE.obj | FILE.ply")
    mesh.set_defaults(func=run_mesh)

    render = cmds.add_parser("render", parents=[common()], help="a still as PNG (sRGB + alpha) or EXR (linear)")
    render.add_argument("--avatar", metavar="DIR", help="a personalised avatar folder")
    render.add_argument("--prior", metavar="DIR", help="prior folder (default: the shipped assets/priors/default)")
    _pose_hand_args(render)
    render.add_argument("--env", metavar="E", help="environment: preset name, SG .json or .exr/.hdr")
    render.add_argument("--res", type=bounded_int(1, MAX_IMAGE_RES), required=True, metavar="N", help="image side in pixels")
    render.add_argument(
        "--renderer",
        choices=("raster", "neural"),
        default="raster",
        help="raster (baked mesh, z-buffer; default) or neural (needs a prior)",
    )
    render.add_argument(
        "--azimuth", type=bounded_float(-3600.0, 3600.0), default=0.0, metavar="DEG", help="camera azimuth, 0 = facing the palm (default 0)"
    )
    render.add_argument("--exposure", type=bounded_float(0.0, 1e6, open_lo=True), default=1.0, help="linear exposure multiplier (default 1)")
    render.add_argument("--out", required=True, metavar="FILE", help="FILE.png | FILE.exr")
    render.set_defaults(func=run_render)

    turn = cmds.add_parser("turntable", parents=[common()], help="a turntable video (MP4 or GIF)")
    turn.add_argument("--avatar", metavar="DIR", help="a personalised avatar folder")
    turn.add_argument("--prior", metavar="DIR", help="prior folder (default: the shipped assets/priors/default)")
    _pose_hand_args(turn)
    turn.add_argument("--env", metavar="E", help="environment: preset name, SG .json or .exr/.hdr")
    turn.add_argument("--frames", type=bounded_int(1, 3600), required=True, metavar="N", help="number of frames (one turn)")
    turn.add_argument("--res", type=bounded_int(1, MAX_IMAGE_RES), default=512, metavar="N", help="frame side in pixels (default 512)")
    turn.add_argument("--fps", type=bounded_int(1, 240), default=24, help="frames per second (default 24)")
    turn.add_argument("--out", required=True, metavar="FILE", help="FILE.mp4 | FILE.gif")
    turn.set_defaults(func=run_turntable)

    env = cmds.add_parser("env", parents=[common()], help="the SG environment as equirect EXR or JSON")
    env_source = env.add_mutually_exclusive_group()
    env_source.add_argument("--avatar", metavar="DIR", help="the avatar's fitted environment")
    env_source.add_argument("--env", metavar="NAME", help="preset name, SG .json or .exr/.hdr (fitted)")
    env.add_argument("--height", type=bounded_int(1, MAX_IMAGE_RES), default=256, metavar="H", help="EXR rows (width 2H; default 256)")
    env.add_argument("--out", required=True, metavar="FILE", help="FILE.exr | FILE.json")
    env.set_defaults(func=run_env)


def _pose_hand_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pose", metavar="PRESET", help="pose preset name or pose JSON (default: flat hand)")
    parser.add_argument(
        "--hand",
        choices=("open", "mano"),
        default=None,
        help="hand rig: open (embedded, default) or mano (needs --mano or $PALM_MANO_PATH)",
    )


# ---------------------------------------------------------------------------------------------
# Inputs (the hooks for avatars, priors and the neural renderer live here)
# ---------------------------------------------------------------------------------------------


def _load_hand(args: argparse.Namespace) -> Any:
    from palm.hand import load_hand

    kind = args.hand or ("mano" if args.mano else "open")
    return load_hand("mano", args.mano) if kind == "mano" else load_hand("open")


def _load_pose(args: argparse.Namespace) -> Any:
    if not args.pose:
        return None
    from palm.hand import load_pose
    return load_pose(args.pose)


def _require_dir(path: str, what: str) -> None:
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise PalmError(p, f"{what} folder not found")
    if not p.is_dir():
        raise PalmError(p, f"expected the {what} folder, found a file")


def load_source(args: argparse.Namespace, hand: Any, res: int = 128) -> tuple[Any, Any, bool]:
    """The baked avatar and its rig shape for ``--avatar``/``--prior``.

    ``--avatar`` gives its refined mesh (``mesh.safetensors`` of the photo-detail stage, at the
    stage's resolution) or else bakes the personalised codes with the prior it was made for (the
    shipped default prior unless ``--prior`` is given too); ``--prior`` (or, with neither, the shipped default
    prior) bakes the prior's mean subject. Without any prior installed, the hand rig itself is used.

    Returns:
        ``(BakedAvatar, betas or None, left)``: ``left`` when the avatar's photo showed a left hand
        (its mesh is the fitted right hand; the exports show its mirror image).
    """
    from palm.assets import DEFAULT_PRIOR
    from palm.bake import RIG_FILL, bake_from_hand, bake_from_prior

    avatar_dir, prior_dir = getattr(args, "avatar", None), getattr(args, "prior", None)
    if avatar_dir is not None:
        _require_dir(avatar_dir, "avatar")
    if prior_dir is not None:
        _require_dir(prior_dir, "prior")
    if avatar_dir is None and prior_dir is None and not (DEFAULT_PRIOR / "prior.json").is_file():
        return bake_from_hand(hand), None, False
    from palm.prior import load_prior

    prior = load_prior(prior_dir)
    if avatar_dir is None:
        return bake_from_prior(prior, resolution=res, rig_fill=RIG_FILL), None, False
    from palm.avatar import load_avatar

    av = load_avatar(avatar_dir, prior_hash=prior.content_hash)
    if "mesh" in av.extra:  # refined from the photo (palm.detail): what the studio and palm render show
        return av.extra["mesh"], av.betas, bool(av.left)
    baked = bake_from_prior(prior, resolution=res, betas=av.betas, shape_code=av.shape_code, rig_fill=RIG_FILL,
                            appearance_code=av.appearance_code)
    return baked, av.betas, bool(av.left)


def load_lobes(args: argparse.Namespace) -> Any:
    """SG lobes (K, 7): ``--env`` (preset, JSON or HDR), else the avatar's fitted light, else the
    default preset (both through :func:`palm.render.environment.display_light`)."""
    from palm.render.environment import display_light

    if getattr(args, "env", None) or not getattr(args, "avatar", None):
        return display_light(getattr(args, "env", None))[0]
    from palm.avatar import load_avatar

    _require_dir(args.avatar, "avatar")
    return load_avatar(args.avatar).light


def neural_render(args: argparse.Namespace, azimuth: float | None = None) -> Any:
    """(H, W, 4) linear straight-alpha image from PALM-Net's volume renderer (``--renderer neural``)."""
    from palm.cli.common import resolve_device
    from palm.jobs import ConsoleProgress
    from palm.scene import load_scene, render_scene

    scene = load_scene(prior=getattr(args, "prior", None), avatar=getattr(args, "avatar", None),
                       pose=args.pose or "relaxed", env=getattr(args, "env", None), res=args.res,
                       azimuth=args.azimuth if azimuth is None else azimuth,
                       device=resolve_device(getattr(args, "device", "auto")))
    return render_scene(scene, emit=ConsoleProgress("neural render")).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def run_mesh(args: argparse.Namespace) -> int:
    from palm.export.mesh import MESH_EXTENSIONS, export_mesh
    from palm.io import check_output_path

    out = check_output_path(args.out, MESH_EXTENSIONS)

    hand = _load_hand(args)
    pose = _load_pose(args)
    avatar, betas, left = load_source(args, hand, args.res)
    summary = export_mesh(
        out, avatar, pose, hand, betas, texture_res=args.texture_res, vertex_colors=args.vertex_colors, left=left
    )
    print(f"wrote {out} ({summary['vertices']} vertices, {summary['faces']} faces)")
    return 0


def run_render(args: argparse.Namespace) -> int:
    from palm.imageio import IMAGE_EXTENSIONS, write_image
    from palm.io import check_output_path

    out = check_output_path(args.out, IMAGE_EXTENSIONS)

    if args.renderer == "neural":
        write_image(out, neural_render(args), exposure=args.exposure)
        print(f"wrote {out} ({args.res}x{args.res}, neural)")
        return 0

    from palm.export.preview import raster_view

    hand = _load_hand(args)
    pose = _load_pose(args)
    avatar, betas, left = load_source(args, hand)
    lobes = load_lobes(args)
    image = raster_view(avatar, pose, hand, lobes, args.res, azimuth_deg=args.azimuth, betas=betas, left=left)
    write_image(out, image, exposure=args.exposure)
    print(f"wrote {out} ({args.res}x{args.res})")
    return 0


def run_turntable(args: argparse.Namespace) -> int:
    from palm.export.preview import VIDEO_EXTENSIONS, export_turntable, raster_view
    from palm.io import check_output_path

    out = check_output_path(args.out, VIDEO_EXTENSIONS)
    from palm.jobs import ConsoleProgress

    hand = _load_hand(args)
    pose = _load_pose(args)
    avatar, betas, left = load_source(args, hand)
    lobes = load_lobes(args)

    def render(azimuth: float):
        return raster_view(avatar, pose, hand, lobes, args.res, azimuth_deg=azimuth, betas=betas, left=left)

    export_turntable(out, render, args.frames, fps=args.fps, emit=ConsoleProgress("turntable"))
    print(f"wrote {out} ({args.frames} frames)")
    return 0


def run_env(args: argparse.Namespace) -> int:
    from palm.cli.common import check_distinct
    from palm.export.preview import ENV_EXTENSIONS, export_env
    from palm.io import check_output_path

    out = check_distinct(check_output_path(args.out, ENV_EXTENSIONS), args.env)
    lobes = load_lobes(args)
    export_env(out, lobes, height=args.height, source=args.env or "default")
    print(f"wrote {out}")
    return 0
