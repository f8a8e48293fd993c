"""Images to personalise on and to score against: the working view, its crop, its render and scores.

Personalisation (:mod:`palm.train.personalize`) fits a :class:`PersonalizeView`; evaluation
(:mod:`palm.eval`) renders an avatar in such a view and scores it with the same functions, so the
numbers in ``report.json`` and in evaluation tables mean the same thing (spec section 11): the PBR
render over white in the working crop, masked PSNR / SSIM / LPIPS against the image, and the
silhouette IoU of the render against the image's mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from palm.config import PersonalizeConfig
from palm.errors import PalmError

#: Seed of the Monte-Carlo light samples of evaluation renders (reproducible scores).
RENDER_SEED = 0
#: Opacity above which a rendered pixel counts as hand (silhouette IoU).
SILHOUETTE_OPACITY = 0.5


@dataclass
class PersonalizeView:
    """One image to personalise on, in the working frame (right hand).

    Attributes:
        image: (H, W, 3) float32 sRGB in [0, 1].
        mask: (H, W) bool hand mask.
        camera: :class:`palm.render.rays.Camera` of ``image``.
        pose: (16, 3) axis-angle (flat-hand mean).
        betas: (n_betas,) shape of the hand rig.
        transl: (3,) metres.
        name: where it came from (photo file name, sample id).
        left: the photo shows a left hand (``image`` is the mirrored photo).
        full_camera: the camera of the whole (uncropped, unscaled) photo, when this view is a crop.
        keypoints: (21, 2) the hand's 2D keypoints in ``image`` (the rig's keypoint order, continuous
            pixel coordinates), or None.
        keypoints_3d: (21, 3) the registered hand's keypoints in world space (datasets that have
            them), or None.
    """

    image: np.ndarray
    mask: np.ndarray
    camera: Any
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    name: str = ""
    left: bool = False
    full_camera: Any = None
    keypoints: np.ndarray | None = None
    keypoints_3d: np.ndarray | None = None


def _keypoints(kp: Any, dim: int = 2) -> np.ndarray | None:
    """(21, dim) finite keypoints as float32, else None (missing or unusable ones are not fitted to)."""
    if kp is None:
        return None
    kp = np.asarray(kp, np.float32)
    return kp.reshape(21, dim).copy() if kp.size == 21 * dim and np.isfinite(kp).all() else None


def _fit_betas(betas: np.ndarray, n_betas: int) -> np.ndarray:
    b = np.zeros(n_betas, np.float32)
    b[: min(n_betas, len(betas))] = np.asarray(betas, np.float32)[:n_betas]
    return b


def view_from_input(item: Any, n_betas: int) -> PersonalizeView:
    """A :class:`PersonalizeView` of a :class:`palm.data.photo.pipeline.PhotoResult`, a
    :class:`palm.data.types.FrameSample` or a view.

    Raises:
        PalmError: a sample without mask or hand registration.
    """
    from palm.render.rays import Camera

    if isinstance(item, PersonalizeView):
        return item
    if hasattr(item, "fit") and hasattr(item, "mask"):  # PhotoResult
        fit = item.fit
        h, w = item.image.shape[:2]
        cam = Camera(torch.as_tensor(np.asarray(fit.K), dtype=torch.float32),
                     torch.as_tensor(np.asarray(fit.Rt), dtype=torch.float32), int(h), int(w))
        return PersonalizeView(
            image=np.asarray(item.image, np.float32), mask=np.asarray(item.mask, bool), camera=cam,
            pose=np.asarray(fit.pose, np.float32).reshape(16, 3), betas=_fit_betas(fit.betas, n_betas),
            transl=np.asarray(fit.transl, np.float32).reshape(3), name=Path(getattr(item, "path", "") or "").name,
            left=bool(item.left), keypoints=_keypoints(getattr(item, "keypoints_2d", None)),
        )
    if hasattr(item, "camera") and hasattr(item, "hand"):  # FrameSample
        name = f"{item.subject}/{item.frame}/{item.view}"
        if item.mask is None:
            raise PalmError(name, "personalisation needs a hand mask for every image")
        if item.hand is None:
            raise PalmError(name, "personalisation needs hand parameters for every image")
        return PersonalizeView(
            image=np.asarray(item.image, np.float32), mask=np.asarray(item.mask, bool),
            camera=item.camera.to_camera(torch.float32), pose=np.asarray(item.hand.pose, np.float32).reshape(16, 3),
            betas=_fit_betas(item.hand.betas, n_betas), transl=np.asarray(item.hand.transl, np.float32).reshape(3),
            name=name, keypoints=_keypoints(getattr(item, "keypoints_2d", None)),
            keypoints_3d=_keypoints(getattr(item, "keypoints_3d", None), 3),
        )
    raise TypeError(f"cannot personalise on a {type(item).__name__}")


def crop_view(view: PersonalizeView, work_res: int | None = PersonalizeConfig.work_res,
              scale: float = PersonalizeConfig.crop_scale) -> PersonalizeView:
    """Square crop around the mask (side ``scale`` x its bounding box), resized to at most ``work_res``.

    The camera follows exactly: the crop shifts the principal point by the crop's integer offset
    and the resize scales ``K``'s first two rows (pixel centres at ``u + 0.5`` scale with the
    image). ``full_camera`` keeps the original camera.

    Args:
        view: the image.
        work_res: longest side of the result in pixels (None: no resizing).
        scale: crop side over the mask box's longer side.

    Raises:
        PalmError: an empty mask.
    """
    from palm.render.rays import Camera

    mask = np.asarray(view.mask, bool)
    if not mask.any():
        raise PalmError(view.name or "mask", "the hand mask is empty")
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    cy, cx = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    side = math.ceil(scale * max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]))
    sh, sw = min(side, h), min(side, w)
    y0 = int(min(max(round(cy - sh / 2), 0), h - sh))
    x0 = int(min(max(round(cx - sw / 2), 0), w - sw))
    image = view.image[y0:y0 + sh, x0:x0 + sw]
    crop_mask = mask[y0:y0 + sh, x0:x0 + sw]
    factor = 1.0 if work_res is None else min(1.0, work_res / max(sh, sw))
    keypoints = None if view.keypoints is None else view.keypoints - np.array([x0, y0], np.float32)
    K = view.camera.K.clone()
    K[0, 2] -= x0
    K[1, 2] -= y0
    if factor < 1.0:
        nh, nw = max(1, round(sh * factor)), max(1, round(sw * factor))
        fy, fx = nh / sh, nw / sw
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        image = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        image = image[0].permute(1, 2, 0).clamp(0, 1).numpy()
        m = torch.from_numpy(crop_mask.astype(np.float32))[None, None]
        crop_mask = F.interpolate(m, size=(nh, nw), mode="area")[0, 0].numpy() > 0.5
        K[0] = K[0] * fx
        K[1] = K[1] * fy
        K[2] = torch.tensor([0.0, 0.0, 1.0])
        sh, sw = nh, nw
        if keypoints is not None:  # continuous coordinates scale with the image, as K does
            keypoints = keypoints * np.array([fx, fy], np.float32)
    cam = Camera(K, view.camera.Rt.clone(), int(sh), int(sw))
    return PersonalizeView(
        image=np.ascontiguousarray(image, np.float32), mask=np.ascontiguousarray(crop_mask), camera=cam,
        pose=view.pose, betas=view.betas, transl=view.transl, name=view.name, left=view.left,
        full_camera=view.full_camera if view.full_camera is not None else view.camera, keypoints=keypoints,
        keypoints_3d=view.keypoints_3d,
    )


# ---------------------------------------------------------------------------------------------
# Rendering and scoring
# ---------------------------------------------------------------------------------------------


def render_outputs(model, camera, frame, light: torch.Tensor, pbr: bool = True,
                   background: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Full image (no gradients) of ``frame`` seen by ``camera``, white background by default.

    The PBR estimator's random light-sample order is drawn from a fixed seed (the global RNG is
    left as it was), so the same inputs give the same image.

    Returns:
        ``{"rgb": (H, W, 3) float32 sRGB in [0, 1] (PBR or RF), "opacity": (H, W) float32}``.
    """
    from palm.model import Frame

    devices = [camera.K.device] if camera.K.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(RENDER_SEED)
        frame = Frame(*(t.detach() for t in (frame.shape_code, frame.appearance_code, frame.pose, frame.betas,
                                             frame.transl)),
                      albedo_gain=None if frame.albedo_gain is None else frame.albedo_gain.detach())
        out = model.render_image(camera, frame, light=light.detach(), background=background, pbr=pbr)
    rgb = (out["rgb_pbr"] if pbr else out["rgb_rf"]).clamp(0, 1)
    return {"rgb": rgb.cpu().numpy().astype(np.float32),
            "opacity": out["opacity"][..., 0].cpu().numpy().astype(np.float32)}


def render_view(model, camera, frame, light: torch.Tensor, pbr: bool = True,
                background: torch.Tensor | None = None) -> np.ndarray:
    """The colour of :func:`render_outputs`: ``(H, W, 3)`` sRGB, white background by default."""
    return render_outputs(model, camera, frame, light, pbr, background)["rgb"]


def silhouette_iou(opacity: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the rendered silhouette (``opacity > 0.5``, (H, W)) and the image's mask (H, W); NaN
    when both are empty."""
    a = np.asarray(opacity) > SILHOUETTE_OPACITY
    b = np.asarray(mask, bool)
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else float("nan")


def image_metrics(pred: np.ndarray, view: PersonalizeView, lpips: bool = True,
                  opacity: np.ndarray | None = None) -> dict[str, float]:
    """Masked PSNR / SSIM / LPIPS of a white-background render against the view (spec section 11),
    and with ``opacity`` the silhouette IoU.

    A metric that is undefined for the image (SSIM on an image smaller than its window, LPIPS on
    one AlexNet cannot take) is NaN.
    """
    from palm.metrics import lpips_masked, psnr_masked, ssim_masked

    out = {"psnr_masked": psnr_masked(pred, view.image, view.mask)}
    try:
        out["ssim_masked"] = ssim_masked(pred, view.image, view.mask)
    except ValueError:  # image smaller than the SSIM window
        out["ssim_masked"] = float("nan")
    if lpips:
        try:
            out["lpips_masked"] = lpips_masked(pred, view.image, view.mask)
        except (ValueError, RuntimeError):  # image too small for AlexNet
            out["lpips_masked"] = float("nan")
    if opacity is not None:
        out["iou"] = silhouette_iou(opacity, view.mask)
    return out


def json_number(value: float | None, digits: int = 4) -> float | None:
    """A metric for ``report.json``: rounded, or None (JSON null) when undefined (NaN, inf)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)
