"""Personalisation from a photo: open/drop, preprocessing overlay to accept, live loss plot."""

from __future__ import annotations

import dearpygui.dearpygui as dpg
import numpy as np

from app import actions, tags

OVERLAY = (384, 288)
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
    dpg.add_image(tags.PHOTO_TEXTURE, tag=tags.PHOTO_IMAGE)
    dpg.add_text("", tag=tags.PHOTO_INFO, wrap=400)
    with dpg.group(horizontal=True, tag=tags.PHOTO_ACCEPT):
        dpg.add_button(label="Accept and personalise", callback=lambda: studio.intent(c.accept_photo))
        dpg.add_button(label="Reject", callback=lambda: studio.intent(c.reject_photo))
    with dpg.plot(label="personalisation loss", height=180, width=-1):
        dpg.add_plot_axis(dpg.mvXAxis, label="step", tag=tags.PHOTO_PLOT_X)
        with dpg.plot_axis(dpg.mvYAxis, label="loss", tag=tags.PHOTO_PLOT_Y, log_scale=False):
            pass


def refresh(studio) -> None:
    c = studio.controller
    photo = c.state.photo
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
