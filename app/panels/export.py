"""Export: the current render, the posed mesh, a turntable and the environment."""

from __future__ import annotations

import dearpygui.dearpygui as dpg


def build(studio) -> None:
    c = studio.controller
    dpg.add_button(label="Save render (PNG/EXR)...", width=260, callback=lambda: studio.file_dialog(
        "Save render", [".png", ".exr"], lambda p: studio.intent(studio.export_render, p), save=True,
        default="render.png"))
    dpg.add_button(label="Export mesh (OBJ/PLY/glTF)...", width=260, callback=lambda: studio.file_dialog(
        "Export mesh", [".glb", ".gltf", ".obj", ".ply"], lambda p: studio.intent(studio.export_mesh, p),
        save=True, default="hand.glb"))
    dpg.add_button(label="Export turntable...", width=260, callback=lambda: studio.file_dialog(
        "Turntable", [".mp4", ".gif"], lambda p: studio.intent(studio.export_turntable, p), save=True,
        default="turntable.mp4"))
    dpg.add_button(label="Export environment...", width=260, callback=lambda: studio.file_dialog(
        "Export environment", [".json", ".exr", ".png"], lambda p: studio.intent(c.export_environment, p),
        save=True, default="environment.json"))


def refresh(studio) -> None:
    pass
