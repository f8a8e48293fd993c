"""Pictures of a :class:`palm.bake.BakedAvatar`: raster stills, turntables and environment maps.

- :func:`raster_render`: the posed avatar through :func:`palm.detail.render_mesh` (z-buffer,
  per-pixel SG shading with shadows, supersampled): the renderer of ``palm render --avatar``.
- :func:`raster_view`: the standard still: the hand presented upright and framed palm to the
  camera (:func:`palm.render.views.present_upright`, :func:`palm.render.views.framing_camera`, the
  framing every renderer uses).
- :func:`export_turntable`: MP4 (imageio-ffmpeg) or GIF (pillow) of ``frames`` rendered views.
- :func:`export_env`: an SG environment as an equirect EXR or as JSON.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palm.bake import BakedAvatar, left_hand, posed_avatar, to_numpy
from palm.errors import PalmError
from palm.hand.lbs import bone_transforms
from palm.imageio import to_srgb8, write_exr
from palm.io import atomic_write, check_output_path
from palm.jobs import Emit, Progress, check_cancel, null_emit
from palm.render.rays import Camera
from palm.render.sg import save_sg, sg_to_equirect
from palm.render.views import framing_camera, present_upright

VIDEO_EXTENSIONS = (".mp4", ".gif")
ENV_EXTENSIONS = (".exr", ".json")


def raster_render(
    avatar: BakedAvatar,
    pose: Any,
    hand: Any,
    camera: Camera,
    sg_lobes: Any,
    res: int | tuple[int, int] | None = None,
    betas: Any = None,
    shadows: bool = True,
    supersample: int = 2,
) -> np.ndarray:
    """Render the (posed) avatar with the z-buffer rasteriser under an SG environment.

    The renderer of ``palm render --avatar`` (:func:`palm.detail.render_mesh`): per-pixel
    interpolated position, normal and material, shaded two-sided under the SG light with per-lobe
    -group shadows, ``supersample`` x ``supersample`` samples per pixel.

    Args:
        avatar: the canonical baked avatar; pose: (16, 3) or None (as is); hand: the rig.
        camera: a :class:`palm.render.rays.Camera` (``K``, ``Rt`` world -> OpenCV camera).
        sg_lobes: (K, 7) raw SG lobes (tensor or array).
        res: output side or (height, width); None uses the camera's size (K is rescaled otherwise).
        betas: shape coefficients for the pose.
        shadows: shadowed light (False: unshadowed); supersample: samples per pixel side.

    Returns:
        (H, W, 4) float32 linear RGB with straight alpha (1 on the hand, 0 elsewhere).
    """
    from palm.detail import render_mesh

    K = torch.as_tensor(camera.K, dtype=torch.float32).cpu().clone()
    height, width = int(camera.height), int(camera.width)
    if res is not None:
        new_h, new_w = (res, res) if isinstance(res, int) else res
        K[0] *= new_w / width
        K[1] *= new_h / height
        height, width = int(new_h), int(new_w)
    view = Camera(K, torch.as_tensor(camera.Rt, dtype=torch.float32).cpu().clone(), height, width)
    bones = (np.repeat(np.eye(4, dtype=np.float32)[None], 16, axis=0) if pose is None
             else to_numpy(bone_transforms(hand, pose, betas, joints=avatar.joints)))
    lobes = torch.as_tensor(sg_lobes, dtype=torch.float32)
    return render_mesh(avatar, bones, np.zeros(3, np.float32), view, lobes, shadows=shadows, supersample=supersample)


def raster_view(
    avatar: BakedAvatar,
    pose: Any,
    hand: Any,
    sg_lobes: Any,
    res: int | tuple[int, int],
    azimuth_deg: float = 0.0,
    elevation_deg: float = 10.0,
    betas: Any = None,
    left: bool = False,
) -> np.ndarray:
    """The standard raster still: the hand upright, palm to the camera at azimuth 0.

    The pose's global orientation is presented upright (:func:`palm.render.views.present_upright`,
    as ``palm render`` does) and the camera comes from :func:`palm.render.views.framing_camera`.

    Args:
        avatar: canonical baked avatar; pose: (16, 3) or None (the flat hand); hand: its rig.
        sg_lobes: (K, 7) raw lobes; res: side or (height, width).
        azimuth_deg, elevation_deg: camera orbit (degrees) about the hand's up axis.
        betas: the rig's shape coefficients.
        left: show the left hand, the mirror image of the right one in ``pose``
            (:func:`palm.bake.left_hand`), framed palm to the camera as the right one is.

    Returns:
        (H, W, 4) float32 linear straight-alpha RGBA.
    """
    upright = present_upright(np.zeros((16, 3), np.float32) if pose is None else to_numpy(pose).reshape(16, 3))
    if left:
        avatar, upright = left_hand(avatar, upright)
    shown = posed_avatar(avatar, upright, hand, betas)
    camera = framing_camera(shown.vertices, res, azimuth_deg, elevation_deg, joints=shown.joints, left=left)
    return raster_render(avatar, upright, hand, camera, sg_lobes, betas=betas)


def export_turntable(
    path: str | os.PathLike,
    render_fn: Callable[[float], Any],
    frames: int,
    fps: int = 24,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    exposure: float = 1.0,
    emit: Emit = null_emit,
    cancel: Any = None,
) -> Path:
    """Render ``frames`` views at azimuths ``360 i / frames`` and write an MP4 or a GIF.

    Args:
        path: ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif`` (pillow, loops forever).
        render_fn: ``azimuth_deg -> (H, W, 4)`` linear RGBA (straight alpha) image.
        frames: number of frames (>= 1). The MP4 always holds exactly ``frames``; in a GIF, pillow
            folds a frame that is pixel-identical to the one before into it (longer duration), which
            only happens when the render does not change with the azimuth.
        fps: frames per second.
        background: linear RGB the frames are composited over (videos have no alpha).
        exposure: linear multiplier before tone mapping.
        emit: receives a :class:`palm.jobs.Progress` after every frame.
        cancel: optional cancel token, checked between frames.

    Returns:
        The path written.
    """
    path = check_output_path(path, VIDEO_EXTENSIONS)
    if frames < 1:
        raise PalmError("--frames", f"need at least 1 frame, got {frames}")
    images = []
    for i in range(frames):
        check_cancel(cancel)
        rgba = np.asarray(to_numpy(render_fn(360.0 * i / frames)), np.float32)
        rgb = rgba[..., :3]
        if rgba.shape[-1] == 4:
            a = rgba[..., 3:4]
            rgb = rgb * a + np.asarray(background, np.float32) / max(exposure, 1e-12) * (1 - a)
        images.append(to_srgb8(rgb, exposure))
        emit(Progress(step=i + 1, total=frames, message="turntable"))
    if path.suffix.lower() == ".mp4":
        import imageio.v2 as imageio

        h, w = images[0].shape[:2]
        pad = ((0, h % 2), (0, w % 2), (0, 0))  # yuv420p needs even sizes
        with atomic_write(path) as tmp:
            writer = imageio.get_writer(
                str(tmp),
                format="FFMPEG",
                fps=fps,
                codec="libx264",
                quality=8,
                macro_block_size=2,
                pixelformat="yuv420p",
                ffmpeg_log_level="error",
            )
            try:
                for image in images:
                    writer.append_data(np.pad(image, pad, mode="edge"))
            finally:
                writer.close()
    else:
        from PIL import Image

        pil = [Image.fromarray(image) for image in images]
        with atomic_write(path) as tmp:
            pil[0].save(
                tmp, format="GIF", save_all=True, append_images=pil[1:], duration=round(1000 / fps), loop=0, disposal=1
            )
    return path


def export_env(path: str | os.PathLike, sg_lobes: Any, height: int = 256, source: str = "palm export") -> Path:
    """Write an SG environment as an equirect linear EXR (``H x 2H``) or as SG JSON.

    Args:
        path: ``.exr`` or ``.json``.
        sg_lobes: (K, 7) raw lobes.
        height: EXR rows.
        source: the JSON's ``source`` field.

    Returns:
        The path written.
    """
    path = check_output_path(path, ENV_EXTENSIONS)
    lobes = np.asarray(to_numpy(sg_lobes), np.float32)
    if lobes.ndim != 2 or lobes.shape[1] != 7:
        raise PalmError(path, f"SG lobes must be (K, 7), got {lobes.shape}")
    P = torch.as_tensor(lobes)
    if path.suffix.lower() == ".json":
        save_sg(path, P, {"source": source})
        return path
    with torch.no_grad():
        write_exr(path, to_numpy(sg_to_equirect(P, height)).astype(np.float32))
    return path
