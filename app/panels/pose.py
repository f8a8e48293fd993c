"""Posing: per-joint rotation sliders grouped by finger, presets, reset, load/save, left/right."""

from __future__ import annotations

import math

import dearpygui.dearpygui as dpg

from app import tags

FINGERS = (("Global orientation", (0,)), ("Thumb", (13, 14, 15)), ("Index", (1, 2, 3)), ("Middle", (4, 5, 6)),
           ("Ring", (10, 11, 12)), ("Pinky", (7, 8, 9)))
JOINT_LABEL = {0: "wrist", 1: "base", 2: "middle", 3: "tip"}
# axis-angle components shown as (label, component index): MANO's flat right hand points the
# fingers along +x, so flexion is mostly about z, spread about y and twist about x.
COMPONENTS = (("flex", 2), ("spread", 1), ("twist", 0))
LIMIT = math.pi * 0.6


def build(studio) -> None:
    c = studio.controller
    with dpg.group(horizontal=True):
        dpg.add_combo(c.presets, label="preset", tag=tags.POSE_PRESET, width=160,
                      default_value=c.state.pose.preset, callback=lambda s, a: studio.intent(c.apply_preset, a))
        dpg.add_checkbox(label="left hand", tag=tags.POSE_LEFT, callback=lambda s, a: studio.intent(c.set_left, a))
    with dpg.group(horizontal=True):
        dpg.add_button(label="Reset", callback=lambda: studio.intent(c.reset_pose))
        dpg.add_button(label="Load pose...", callback=lambda: studio.file_dialog(
            "Load pose", [".json"], lambda p: studio.intent(c.load_pose_file, p)))
        dpg.add_button(label="Save pose...", callback=lambda: studio.file_dialog(
            "Save pose", [".json"], lambda p: studio.intent(c.save_pose_file, p), save=True, default="pose.json"))
    dpg.add_text("Posing only moves bones: the network never re-runs.", color=(150, 150, 150))
    for finger, joints in FINGERS:
        with dpg.collapsing_header(label=finger, default_open=finger in ("Global orientation", "Index")):
            for k, joint in enumerate(joints):
                label = "wrist" if joint == 0 else JOINT_LABEL[k + 1]
                for name, comp in COMPONENTS:
                    dpg.add_slider_float(
                        label=f"{label} {name}", tag=tags.POSE_SLIDER.format(joint=joint, comp=comp),
                        min_value=-LIMIT if joint else -math.pi, max_value=LIMIT if joint else math.pi,
                        width=220, user_data=(joint, comp),
                        callback=lambda s, a, u: studio.intent(c.set_pose_value, u[0], u[1], a))


def refresh(studio) -> None:
    """Push the pose into the sliders when it changed outside them (preset, reset, file, avatar)."""
    if not studio.changed("pose_values"):
        return
    pose = studio.controller.state.pose
    for joint in range(16):
        for comp in range(3):
            dpg.set_value(tags.POSE_SLIDER.format(joint=joint, comp=comp), float(pose.pose[joint, comp]))
    dpg.set_value(tags.POSE_PRESET, pose.preset)
    dpg.set_value(tags.POSE_LEFT, pose.left)
