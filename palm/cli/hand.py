"""``palm hand``: export a posed hand mesh, list the pose presets."""

from __future__ import annotations

import argparse

from palm.cli.common import common


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``palm hand export`` and ``palm hand presets``."""
    hand = sub.add_parser("hand", help="hand model tools: export a posed hand, list pose presets")
    hand_sub = hand.add_subparsers(dest="hand_command", metavar="HAND_COMMAND")
    hand.set_defaults(func=lambda args: hand.print_help() or 2)

    ex = hand_sub.add_parser(
        "export",
        parents=[common()],
        help="write a posed hand mesh (metres) as GLB, OBJ or PLY",
        description="Pose a hand model and write its mesh; the format follows the extension of --out.",
    )
    ex.add_argument(
        "--hand", default="open", choices=["open", "mano"], help="open (embedded CC0 rig) or mano (your MANO_RIGHT.pkl)"
    )
    ex.add_argument("--pose", default="flat", help="a preset name (see 'palm hand presets') or a pose .json/.npy file")
    ex.add_argument(
        "--betas", type=float, nargs="+", default=None, metavar="B", help="shape coefficients, each in [-100, 100] (the rest are 0)"
    )
    ex.add_argument(
        "--left", action="store_true", help="export the left hand: the mirror image of the right-hand pose (x -> -x)"
    )
    ex.add_argument("--out", required=True, help="output file: .glb, .obj or .ply")
    ex.set_defaults(func=run_export)

    pr = hand_sub.add_parser("presets", parents=[common()], help="list the pose presets, one a line")
    pr.set_defaults(func=run_presets)


def run_export(args: argparse.Namespace) -> int:
    from palm.export.mesh import MESH_EXTENSIONS
    from palm.io import check_output_path

    out = check_output_path(args.out, MESH_EXTENSIONS)

    import numpy as np
    import torch
    import trimesh

    from palm.errors import PalmError
    from palm.hand import load_hand, load_pose, mirror_pose
    from palm.hand.poses import check_betas
    from palm.io import atomic_write

    pose = load_pose(args.pose)  # checked there: finite, within MAX_POSE_RADIANS
    check_betas(args.betas or [], "--betas")
    hand = load_hand(args.hand, args.mano)
    betas = None
    if args.betas:
        betas = torch.tensor([check_betas(args.betas, "--betas", hand.n_betas)], dtype=torch.float32)
    pose_t = torch.as_tensor(pose, dtype=torch.float32)[None]
    if args.left:  # poses are right-hand poses: the left hand makes the mirror image of the gesture
        pose_t = mirror_pose(pose_t)
    with torch.no_grad():
        res = hand(pose_t, betas=betas, left=args.left)
    vertices = res.vertices[0].numpy().astype(np.float64)
    if not np.isfinite(vertices).all():  # the inputs are checked; this guards the writer itself
        raise PalmError(out, "the posed mesh has NaN or infinite vertices; nothing written")
    faces = res.faces.numpy()
    uv = hand.uv.numpy() if hand.uv is not None else None
    with atomic_write(out) as tmp:
        if out.suffix.lower() == ".obj":
            tmp.write_text(obj_text(vertices, faces, uv))
        else:
            visual = trimesh.visual.TextureVisuals(uv=uv) if uv is not None and out.suffix.lower() == ".glb" else None
            mesh = trimesh.Trimesh(vertices, faces, visual=visual, process=False)
            mesh.export(tmp, file_type=out.suffix.lower().lstrip("."))
    print(f"wrote {out} ({len(vertices)} vertices, {len(faces)} faces, {'left' if args.left else 'right'} hand)")
    return 0


def obj_text(vertices, faces, uv=None) -> str:
    """Wavefront OBJ of a triangle mesh (1-based indices; ``vt`` shares the vertex index).

    Args:
        vertices: (V, 3). faces: (F, 3) int. uv: (V, 2) or None.
    """
    lines = ["# palm-studio hand mesh, metres"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if uv is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
        lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in faces]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def run_presets(args: argparse.Namespace) -> int:
    from palm.hand import POSE_PRESETS

    for name in POSE_PRESETS:
        print(name)
    return 0
