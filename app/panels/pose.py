"""Posing: per-joint sliders in anatomical angles (degrees) bounded by each joint's range of motion
(``palm.hand.poses.JOINT_LIMITS``; the wrist by ``app.controller.WRIST_LIMITS_DEG``), presets by
the names ``--pose`` takes, reset, load/save, left/right."""

from __future__ import annotations

import math

import dearpygui.dearpygui as dpg

from app import tags
from app.controller import joint_limits

FINGERS = (("Wrist", (0,)), ("Thumb", (13, 14, 15)), ("Index", (1, 2, 3)), ("Middle", (4, 5, 6)),
           ("Ring", (10, 11, 12)), ("Pinky", (7, 8, 9)))
JOINT_LABEL = {1: "base", 2: "middle", 3: "tip"}
THUMB_LABEL = {1: "base (CMC)", 2: "middle (MCP)", 3: "tip (IP)"}
#: Slider order (flex, spread, twist) -> index in ``Controller.pose_angles``: (flex, abd, twist) for
#: the joints; the wrist's x-y-z Euler angles (fingers along +x: twist about x, flex about z).
SLIDERS = ("flex", "spread", "twist")
ANGLE_OF = {True: (2, 1, 0), False: (0, 1, 2)}
PRESET_NOTE = "palm/pose/preset_note"


def angle_index(joint: int, k: int) -> int:
    return ANGLE_OF[joint == 0][k]


def limits_deg(joint: int, k: int) -> tuple[float, float]:
    lo, hi = joint_limits()[joint, angle_index(joint, k)]
    return math.degrees(lo), math.degrees(hi)


def build(studio) -> None:
    c = studio.controller
    with dpg.group(horizontal=True):
        dpg.add_combo(c.presets, label="preset", tag=tags.POSE_PRESET, width=160,
                      default_value=c.state.pose.preset, callback=lambda s, a: studio.intent(c.apply_preset, a))
        dpg.add_checkbox(label="left hand", tag=tags.POSE_LEFT, callback=lambda s, a: studio.intent(c.set_left, a))
    dpg.add_text(f"Presets (also palm-studio --pose NAME): {', '.join(c.presets)}", tag=PRESET_NOTE, wrap=400,
                 color=(150, 150, 150))
    with dpg.group(horizontal=True):
        dpg.add_button(label="Reset", callback=lambda: studio.intent(c.reset_pose))
        dpg.add_button(label="Load pose...", callback=lambda: studio.file_dialog(
            "Load pose", [".json"], lambda p: studio.intent(c.load_pose_file, p)))
        dpg.add_button(label="Save pose...", callback=lambda: studio.file_dialog(
            "Save pose", [".json"], lambda p: studio.intent(c.save_pose_file, p), save=True, default="pose.json"))
    dpg.add_text("Angles in degrees, within each joint's anatomical range. Posing only moves bones.",
                 wrap=400, color=(150, 150, 150))
    for finger, joints in FINGERS:
        with dpg.collapsing_header(label=finger, default_open=finger in ("Wrist", "Index")):
            for n, joint in enumerate(joints):
                name = "wrist" if joint == 0 else (THUMB_LABEL if finger == "Thumb" else JOINT_LABEL)[n + 1]
                for k, what in enumerate(SLIDERS):
                    lo, hi = limits_deg(joint, k)
                    dpg.add_slider_float(
                        label=f"{name} {what}", tag=tags.POSE_SLIDER.format(joint=joint, comp=k),
                        min_value=lo, max_value=hi, format="%.0f deg", width=200, user_data=(joint, k),
                        clamped=True,
                        callback=lambda s, a, u: studio.intent(c.set_joint_angle, u[0], angle_index(*u), a))


def refresh(studio) -> None:
    """Push the pose into the sliders when it changed outside them (preset, reset, file, avatar)."""
    if not studio.changed("pose_values"):
        return
    c = studio.controller
    angles = c.pose_angles()
    for joint in range(16):
        for k in range(3):
            lo, hi = limits_deg(joint, k)
            value = math.degrees(float(angles[joint, angle_index(joint, k)]))
            dpg.set_value(tags.POSE_SLIDER.format(joint=joint, comp=k), min(max(value, lo), hi))
    dpg.set_value(tags.POSE_PRESET, c.state.pose.preset)
    dpg.set_value(tags.POSE_LEFT, c.state.pose.left)
