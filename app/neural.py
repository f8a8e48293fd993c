"""The viewport's neural view: PALM-Net's own volume PBR image of what the viewport shows.

The job functions here render the prior's fields for the subject, pose and light of the viewport,
through its camera, progressively (small sizes first); like :mod:`app.actions` they take
``(emit, cancel, ...)``, run on a worker thread and never touch Dear PyGui.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.actions import PriorInfo, Subject
from palm.bake import to_numpy
from palm.jobs import Preview, Progress, check_cancel

#: Sides (pixels, longest side) of the progressive neural render.
NEURAL_SIZES = (64, 128, 256)


def neural_available(prior: PriorInfo | None) -> str:
    """'' when the neural (volume PBR) view can run, else why not."""
    if prior is None:
        return "the neural view renders the prior: it needs a trained prior (assets/priors/default)"
    return ""


@dataclass(frozen=True)
class NeuralView:
    """The viewport's camera and image at the time of a neural render.

    Attributes:
        K: (3, 3) OpenCV intrinsics of the full viewport; Rt: (4, 4) world -> camera.
        width, height: viewport size in pixels.
        background: (H, W, 4) uint8 sRGB viewport without the hand (what the hand is composited on).
        exposure: 2^stops factor applied to the render, as the viewport does.
    """

    K: np.ndarray
    Rt: np.ndarray
    width: int
    height: int
    background: np.ndarray
    exposure: float = 1.0


def neural_frame(prior: PriorInfo, subject: Subject, pose: np.ndarray):
    """The ``palm.model.Frame`` of the subject in ``pose`` (16, 3) (transl 0: the viewport's world)."""
    import torch

    from palm.model import Frame

    z_s, z_a = subject.codes(prior)
    n_betas = int(prior.prior.model.hand.n_betas)
    betas = np.zeros(n_betas, np.float32)
    if subject.betas is not None:
        betas[: min(n_betas, len(subject.betas))] = np.asarray(subject.betas, np.float32)[:n_betas]
    gain = None if subject.albedo_gain is None else torch.as_tensor(np.asarray(subject.albedo_gain, np.float32))
    return Frame(shape_code=z_s, appearance_code=z_a, pose=torch.as_tensor(np.asarray(pose, np.float32)).reshape(16, 3),
                 betas=torch.as_tensor(betas), transl=torch.zeros(3), albedo_gain=gain)


def composite_neural(rgba: np.ndarray, view: NeuralView) -> np.ndarray:
    """A neural render (h, w, 4) linear straight alpha over the viewport background -> (H, W, 4) sRGB float."""
    from palm.render.color import linear_to_srgb, srgb_to_linear

    h, w = rgba.shape[:2]
    ys = np.minimum((np.arange(view.height) * h / view.height).astype(int), h - 1)
    xs = np.minimum((np.arange(view.width) * w / view.width).astype(int), w - 1)
    up = np.asarray(rgba, np.float32)[ys][:, xs]
    bg = srgb_to_linear(np.asarray(view.background[..., :3], np.float32) / 255.0)
    alpha = up[..., 3:4]
    rgb = up[..., :3] * view.exposure * alpha + bg * (1.0 - alpha)
    out = np.ones((view.height, view.width, 4), np.float32)
    out[..., :3] = np.clip(linear_to_srgb(np.clip(rgb, 0.0, None)), 0.0, 1.0)
    return out


def neural_scene(prior: PriorInfo, subject: Subject, pose: np.ndarray, lobes: np.ndarray, view: NeuralView,
                 left: bool = False):
    """The ``palm.scene.Scene`` of the viewport's neural image: the subject in ``pose`` seen by the
    view's camera under ``lobes``. A left hand (``left``) is the mirror image of the right hand in
    ``pose``, as the viewport draws it; the fields know right hands only, so they render the right
    hand through the mirrored camera under the mirrored light and the image is flipped back
    (``Scene.mirror``), which is exactly the left hand under ``lobes``."""
    import torch

    from palm.render.rays import Camera
    from palm.scene import Scene, left_hand_view

    camera = Camera(torch.as_tensor(view.K, dtype=torch.float32), torch.as_tensor(view.Rt, dtype=torch.float32),
                    int(view.height), int(view.width))
    light = torch.as_tensor(np.asarray(lobes, np.float32)).reshape(-1, 7)
    if left:
        camera, light = left_hand_view(camera, light)
    return Scene(model=prior.prior.model, frame=neural_frame(prior, subject, pose), camera=camera, light=light,
                 background=torch.zeros(3), mirror=bool(left))


def job_neural_render(emit, cancel, prior: PriorInfo, subject: Subject, pose: np.ndarray, lobes: np.ndarray,
                      view: NeuralView, sizes=NEURAL_SIZES, left: bool = False):
    """Render the true volume PBR image progressively (``palm.scene.render_scene``).

    Each size in ``sizes`` (longest side, capped at the viewport's) is rendered with the viewport's
    camera scaled to it and published as a Preview of the whole viewport (sRGB, hand composited on
    the background); the cancel token stops it between ray chunks. ``left``: :func:`neural_scene`.
    """
    import dataclasses

    from palm.scene import render_scene

    full = neural_scene(prior, subject, pose, lobes, view, left)
    longest = max(view.width, view.height)
    steps = sorted({min(int(s), longest) for s in sizes})
    weights = [s * s for s in steps]  # progress counts pixels: the ETA holds as the sizes grow
    image, done, total = None, 0, sum(weights)
    for i, side in enumerate(steps):
        check_cancel(cancel)
        cam = full.camera.scaled(side / longest) if side < longest else full.camera
        scene = dataclasses.replace(full, camera=cam)

        def chunk(ev, done=done, w=weights[i], label=f"neural {cam.width}x{cam.height}"):
            if isinstance(ev, Progress) and ev.total > 0:
                emit(Progress(done + w * min(ev.step, ev.total) // ev.total, total, label))

        rgba = render_scene(scene, "pbr", emit=chunk, cancel=cancel)
        done += weights[i]
        image = composite_neural(to_numpy(rgba), view)
        emit(Progress(done, total, f"neural {cam.width}x{cam.height}"))
        emit(Preview(i, image))
    return image
