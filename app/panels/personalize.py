"""Personalisation from a photo: open/drop, preprocessing overlay to accept, live loss plot."""

from __future__ import annotations

import dearpygui.dearpygui as dpg
import numpy as np

from app import actions, tags

OVERLAY = (384, 288)
JOB_GROUP = "palm/photo/job"
JOB_BAR = "palm/photo/job_bar"
JOB_SPIN = "palm/photo/job_spin"
JOB_TEXT = "palm/photo/job_text"
PLOT = "palm/photo/plot"
#: Jobs this panel reports, by the name the controller gives them.
JOBS = ("preprocess", "personalize")
KEYPOINT_COLOUR = np.array([1.0, 0.25, 0.2])
MASK_COLOUR = np.array([0.2, 0.6, 1.0])


def overlay_image(result, size: tuple[int, int] = OVERLAY) -> np.ndarray:
    """Photo with the hand mask tinted and the fitted keypoints drawn, letter-boxed to ``size``.

    Args:
        result: a ``palm.data.photo.PhotoResult`` (image (H, W, 3) sRGB [0, 1], mask (H, W), keypoints).

    Returns:
        (size[1], size[0], 4) float32 RGBA.
    """
    image = np.asarray(result.image, np.float32)[..., :3].copy()
    mask = np.asarray(getattr(result, "mask", np.zeros(image.shape[:2], bool)), bool)
    image[mask] = 0.6 * image[mask] + 0.4 * MASK_COLOUR
    h, w = image.shape[:2]
    kp = getattr(result, "keypoints_2d", None)
    fit = getattr(result, "fit", None)
    for points, colour in ((kp, KEYPOINT_COLOUR), (getattr(fit, "keypoints_2d", None), np.array([0.2, 1.0, 0.3]))):
        if points is None:
            continue
        r = max(2, int(0.006 * max(h, w)))
        for x, y in np.asarray(points, float).reshape(-1, 2):
            x0, y0 = round(x), round(y)
            image[max(y0 - r, 0):y0 + r + 1, max(x0 - r, 0):x0 + r + 1] = colour
    return letterbox(image, size)


def letterbox(image: np.ndarray, size: tuple[int, int] = OVERLAY) -> np.ndarray:
    """An (h, w, 3|4) [0, 1] image scaled (nearest) into an RGBA ``size`` canvas."""
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    scale = min(size[0] / w, size[1] / h)
    nw, nh = max(int(w * scale), 1), max(int(h * scale), 1)
    ys = np.minimum((np.arange(nh) / scale).astype(int), h - 1)
    xs = np.minimum((np.arange(nw) / scale).astype(int), w - 1)
    out = np.zeros((size[1], size[0], 4), np.float32)
    out[..., 3] = 1.0
    oy, ox = (size[1] - nh) // 2, (size[0] - nw) // 2
    out[oy:oy + nh, ox:ox + nw, :3] = np.clip(image[ys][:, xs][..., :3], 0.0, 1.0)
    return out


def build(studio) -> None:
    c = studio.controller
    dpg.add_text("Drop a photo of a hand onto the window, or open one.", wrap=400)
    with dpg.group(horizontal=True):
        dpg.add_button(label="Open photo...", callback=lambda: studio.file_dialog(
            "Photo", [".jpg", ".jpeg", ".png"], lambda p: studio.intent(c.open_photo, p)))
        dpg.add_text("", tag=tags.PHOTO_PATH)
    dpg.add_text("", tag=tags.PHOTO_NOTE, wrap=400, color=(230, 190, 90))
    with dpg.group(horizontal=True, tag=JOB_GROUP, show=False):
        dpg.add_loading_indicator(tag=JOB_SPIN, radius=1.5, style=1)
        dpg.add_progress_bar(tag=JOB_BAR, width=160, default_value=0.0)
        dpg.add_text("", tag=JOB_TEXT)
    dpg.add_image(tags.PHOTO_TEXTURE, tag=tags.PHOTO_IMAGE)
    dpg.add_text("", tag=tags.PHOTO_INFO, wrap=400)
    with dpg.group(horizontal=True, tag=tags.PHOTO_ACCEPT):
        dpg.add_button(label="Accept and personalise", callback=lambda: studio.intent(c.accept_photo))
        dpg.add_button(label="Reject", callback=lambda: studio.intent(c.reject_photo))
    with dpg.plot(label="personalisation loss", height=180, width=-1, tag=PLOT):
        dpg.add_plot_legend(outside=False, location=dpg.mvPlot_Location_NorthEast)
        dpg.add_plot_axis(dpg.mvXAxis, label="step", tag=tags.PHOTO_PLOT_X)
        with dpg.plot_axis(dpg.mvYAxis, label="loss", tag=tags.PHOTO_PLOT_Y, log_scale=False):
            pass


def job_line(job) -> str:
    """``"personalize: fitting (pbr) 120/402, 0:35 left"`` (the ETA from the measured step times)."""
    eta = job.eta_s()
    left = "" if eta is None else f", {int(eta) // 60}:{int(eta) % 60:02d} left"
    return f"{job.name}: {job.stage()}{' [paused]' if job.paused else ''}{left}"


def show_job(job, group: str, bar: str, spin: str, text: str) -> None:
    """A running job as a bar (measurable steps) or a spinner (a stage without steps), and its line."""
    dpg.configure_item(group, show=job is not None)
    if job is None:
        return
    dpg.configure_item(bar, show=not job.indeterminate)
    dpg.configure_item(spin, show=job.indeterminate)
    dpg.set_value(bar, job.fraction())
    dpg.set_value(text, job_line(job))


def _bring_forward() -> None:
    """Show the Personalise tab (a photo was opened or dropped: its check step waits here)."""
    for tab in dpg.get_item_children(tags.TABS, 1) or []:
        if "personali" in str(dpg.get_item_alias(tab) or dpg.get_item_label(tab)).lower():
            dpg.set_value(tags.TABS, tab)
            return


def refresh(studio) -> None:
    c = studio.controller
    photo = c.state.photo
    if studio.changed("photo_opened") and c.revision["photo_opened"]:
        _bring_forward()
    jobs = [j for j in c.runner.active() if j.name in JOBS]
    show_job(jobs[-1] if jobs else None, JOB_GROUP, JOB_BAR, JOB_SPIN, JOB_TEXT)
    dpg.set_value(tags.PHOTO_PATH, photo.path)
    why = actions.personalize_available(c.prior)
    dpg.set_value(tags.PHOTO_NOTE, why)
    dpg.configure_item(tags.PHOTO_NOTE, show=bool(why))
    if studio.shown_photo is not photo.result:
        studio.shown_photo = photo.result
        if photo.result is not None:
            dpg.set_value(tags.PHOTO_TEXTURE, overlay_image(photo.result).reshape(-1))
            fit = getattr(photo.result, "fit", None)
            err = getattr(fit, "reprojection_px", float("nan"))
            dpg.set_value(tags.PHOTO_INFO, f"{getattr(photo.result, 'handedness', '?')} hand, "
                          f"mask {getattr(photo.result, 'mask_fraction', 0):.1%}, keypoint error {err:.1f} px")
        else:
            dpg.set_value(tags.PHOTO_TEXTURE, np.zeros(OVERLAY[0] * OVERLAY[1] * 4, np.float32))
            dpg.set_value(tags.PHOTO_INFO, "")
    if studio.changed("preview") and c.personal_preview is not None:  # the optimisation's latest render
        dpg.set_value(tags.PHOTO_TEXTURE, letterbox(c.personal_preview).reshape(-1))
    dpg.configure_item(tags.PHOTO_ACCEPT, show=photo.result is not None and not photo.accepted)
    studio.update_plot(tags.PHOTO_PLOT_Y, tags.PHOTO_PLOT_X, photo.steps, photo.losses)
