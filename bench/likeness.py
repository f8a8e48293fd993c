"""Likeness benchmark: personalise real photos with the ``fast`` preset and compare the avatar with them.

    python bench/likeness.py [--photos A.jpg,B.jpg,...] [--figure docs/likeness.png] [--steps N]

For every photo: the ``fast`` personalisation (paper stage + photo-detail stage), then, in the
photo's own view (the detail stage's crop), masked PSNR / SSIM / LPIPS and silhouette IoU of

* ``before``: the paper stage's subject as a mesh (baked and subdivided like the detail stage,
  the prior's albedo), rasterised under the paper stage's own fitted light with shadows: what the PCA space gives;
* ``after``: the refined mesh of the photo-detail stage (the report's numbers).

With ``--figure``, one row per photo: photo | avatar in the photo's view | albedo (unlit) | relit
with ``city`` | relit with ``sunset`` | posed as a fist from the standard view (the photo's light) |
the photo's pose from behind, the side the photo does not show (``studio`` light). Prints progress to
stderr and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "photos" / "opencv_doc"
DEFAULT = ",".join(str(PHOTOS / n) for n in ("handSrc.jpg", "handDst.jpg", "Back_Projection_Theory0.jpg"))
PANEL = 192


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _panel(rgb: np.ndarray, side: int = PANEL) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (side, side, 3) uint8, letterboxed on white."""
    from PIL import Image

    img = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    img.thumbnail((side, side), Image.LANCZOS)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(canvas)


def albedo_image(mesh, bones, transl, camera) -> np.ndarray:
    """(H, W, 3) sRGB over white: the mesh's albedo, unlit, in ``camera``."""
    from palm.render.color import linear_to_srgb
    from palm.render.raster import interpolate, rasterize
    from palm.silhouette import PosedMesh

    posed = PosedMesh(mesh, bones, transl, camera.K.cpu(), camera.Rt.cpu())
    frags = rasterize(posed.screen(posed.world())[None], posed.faces, int(camera.height), int(camera.width))
    a = interpolate(torch.as_tensor(mesh.albedo), posed.faces, frags)[0].numpy()
    return np.where(frags.mask[0].numpy()[..., None], linear_to_srgb(np.clip(a, 0, 1)), 1.0)


def one_photo(path: str, prior, steps: int | None, figure: bool) -> tuple[dict, np.ndarray | None]:
    from palm.bake import bake_from_prior
    from palm.config import PERSONALIZE_PRESETS, scaled_schedule
    from palm.data.photo.pipeline import preprocess_photo
    from palm.detail import on_white, render_mesh, subdivide
    from palm.hand.lbs import bone_transforms
    from palm.render.environment import display_light
    from palm.train.personalize import personalize
    from palm.train.views import crop_view, image_metrics, view_from_input

    cfg = PERSONALIZE_PRESETS["fast"]
    if steps:
        cfg = scaled_schedule(cfg, steps)
    photo = preprocess_photo(path, hand=prior.model.hand)
    t0 = time.perf_counter()
    avatar = personalize(photo, prior, cfg, None, preset="fast")
    seconds = time.perf_counter() - t0
    report = avatar.extra["report"]
    view = crop_view(view_from_input(photo, prior.model.hand.n_betas), cfg.detail.res, cfg.crop_scale)
    mesh = avatar.extra["mesh"]
    bones = bone_transforms(prior.model.hand, avatar.pose, avatar.betas, joints=mesh.joints)
    paper_light = avatar.light.clone()  # the paper stage's own light (the avatar keeps it in the data's gauge)
    paper_light[:, 4:7] *= torch.tensor(report["detail"]["paper_light_scale"], dtype=paper_light.dtype)
    paper_pose = np.asarray(report["detail"].get("paper_pose", avatar.pose), np.float32)  # before the pose fit
    paper_transl = np.asarray(report["detail"].get("paper_transl", avatar.transl), np.float32)
    plain = subdivide(bake_from_prior(prior, resolution=cfg.detail.mesh_res, betas=avatar.betas,
                                      shape_code=avatar.shape_code, appearance_code=avatar.appearance_code,
                                      pose=paper_pose))
    rgba = render_mesh(plain, bone_transforms(prior.model.hand, paper_pose, avatar.betas), paper_transl,
                       view.camera, paper_light)
    before = image_metrics(on_white(rgba), view, opacity=rgba[..., 3])
    keys = ("psnr_masked", "ssim_masked", "lpips_masked", "iou")
    row = {"photo": Path(path).name, "left": bool(avatar.left), "seconds": round(seconds, 1),
           "before": {k: round(float(before[k]), 4) for k in keys},
           "after": {k: report.get(k) for k in keys}, "detail": report.get("detail")}
    if not figure:
        return row, None
    shown = [view.image, on_white(render_mesh(mesh, bones, avatar.transl, view.camera, avatar.light)),
             albedo_image(mesh, bones, avatar.transl, view.camera)]
    for env in ("city", "sunset"):
        shown.append(on_white(render_mesh(mesh, bones, avatar.transl, view.camera, display_light(env)[0])))
    from palm.bake import posed_avatar
    from palm.hand import load_pose
    from palm.render.views import framing_camera, present_upright

    fist = present_upright(load_pose("fist"))
    posed = posed_avatar(mesh, fist, prior.model.hand, avatar.betas)
    cam = framing_camera(posed.vertices, 256, 20.0, 10.0, joints=posed.joints)
    shown.append(on_white(render_mesh(mesh, bone_transforms(prior.model.hand, fist, avatar.betas, joints=mesh.joints),
                                      np.zeros(3), cam,
                                      avatar.light)))
    # the side the photo does not show: the photo's pose seen from behind, in the studio preset
    own = posed_avatar(mesh, avatar.pose, prior.model.hand, avatar.betas)
    back = framing_camera(own.vertices, 256, 180.0, 10.0, joints=own.joints)
    shown.append(on_white(render_mesh(mesh, bones, np.zeros(3), back, display_light("studio")[0])))
    if avatar.left:  # fitted as the right hand of the mirrored crop: show the left hand the user took
        shown = [s[:, ::-1] for s in shown]
    return row, np.concatenate([_panel(s) for s in shown], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=DEFAULT, help="comma-separated photo paths")
    ap.add_argument("--figure", default=None, help="write the comparison figure (PNG) here")
    ap.add_argument("--steps", type=int, default=None, help="scale the fast schedule to N steps")
    ap.add_argument("--prior", default=None, help="prior folder (default: the shipped one)")
    args = ap.parse_args()
    from palm.prior import load_prior

    prior = load_prior(args.prior)
    rows, strips = [], []
    for path in args.photos.split(","):
        log(f"personalising {path} ...")
        row, strip = one_photo(path, prior, args.steps, args.figure is not None)
        log(json.dumps(row))
        rows.append(row)
        if strip is not None:
            strips.append(strip)
    if args.figure and strips:
        from PIL import Image

        from palm.io import atomic_write

        with atomic_write(args.figure) as tmp:
            Image.fromarray(np.concatenate(strips, axis=0)).save(tmp, format="PNG")
    mean = {stage: {k: round(float(np.mean([r[stage][k] for r in rows])), 4) for k in rows[0][stage]}
            for stage in ("before", "after")}
    print(json.dumps({"device": f"cpu ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})",
                      "prior": prior.content_hash, "photos": rows, "mean": mean}))


if __name__ == "__main__":
    main()
