"""Lighting: environment presets with thumbnails, HDR/EXR loading, rotation, exposure, export."""

from __future__ import annotations

import math

import dearpygui.dearpygui as dpg

from app import actions, tags

THUMB = (96, 48)
ENV_BUSY = "palm/light/busy"
ENV_BUSY_TEXT = "palm/light/busy_text"


def build(studio) -> None:
    c = studio.controller
    dpg.add_combo(c.environment_names(), label="environment", tag=tags.ENV_COMBO, width=200,
                  default_value=c.state.light.name, callback=lambda s, a: studio.intent(c.select_environment, a))
    with dpg.group(horizontal=True, tag=ENV_BUSY, show=False):
        dpg.add_loading_indicator(radius=1.5, style=1)
        dpg.add_text("", tag=ENV_BUSY_TEXT)
    with dpg.group():
        row = None
        for k, name in enumerate(c.env_names):
            if k % 3 == 0:
                row = dpg.add_group(horizontal=True)
            thumb = actions.env_thumbnail(name, THUMB)
            with dpg.group(parent=row):
                tex = dpg.add_static_texture(THUMB[0], THUMB[1], thumb.reshape(-1), parent=tags.TEXTURES)
                dpg.add_image_button(tex, tag=tags.ENV_THUMB.format(name=name), user_data=name,
                                     callback=lambda s, a, u: studio.intent(c.select_environment, u))
                dpg.add_text(name)
    dpg.add_slider_float(label="rotation (deg)", tag=tags.ENV_ROTATION, min_value=-180, max_value=180, width=220,
                         callback=lambda s, a: studio.intent(c.set_rotation, a))
    dpg.add_slider_float(label="exposure (stops)", tag=tags.ENV_EXPOSURE, min_value=-4, max_value=4, width=220,
                         callback=lambda s, a: studio.intent(c.set_exposure, a))
    with dpg.group(horizontal=True):
        dpg.add_button(label="Reset light", callback=lambda: studio.intent(c.reset_light))
        dpg.add_button(label="Load HDR/EXR...", callback=lambda: studio.file_dialog(
            "Environment map", [".exr", ".hdr", ".json"], lambda p: studio.intent(c.load_environment_file, p)))
        dpg.add_button(label="Export environment...", callback=lambda: studio.file_dialog(
            "Export environment", [".json", ".exr", ".png"], lambda p: studio.intent(c.export_environment, p),
            save=True, default=f"{c.state.light.name or 'environment'}.json"))
    dpg.add_text("Fitted environments (from files and personalisation) join the list above.",
                 tag=tags.ENV_FITTED, wrap=400, color=(150, 150, 150))


def refresh(studio) -> None:
    c = studio.controller
    light = c.state.light
    names = c.environment_names()
    if dpg.get_item_configuration(tags.ENV_COMBO)["items"] != names:
        dpg.configure_item(tags.ENV_COMBO, items=names)
    if dpg.get_value(tags.ENV_COMBO) != light.name:
        dpg.set_value(tags.ENV_COMBO, light.name)
    if abs(dpg.get_value(tags.ENV_ROTATION) - math.degrees(light.rotation)) > 1e-3:
        dpg.set_value(tags.ENV_ROTATION, math.degrees(light.rotation))
    if abs(dpg.get_value(tags.ENV_EXPOSURE) - light.exposure) > 1e-6:
        dpg.set_value(tags.ENV_EXPOSURE, light.exposure)
    if studio.changed("light_values") and dpg.does_item_exist(tags.SHOW_ENV):
        dpg.set_value(tags.SHOW_ENV, light.show_background)
    busy = bool(c.env_loading)
    dpg.configure_item(ENV_BUSY, show=busy)
    if busy:
        job = next((j for j in c.runner.active() if j.kind == "environment"), None)
        dpg.set_value(ENV_BUSY_TEXT, f"{c.env_loading}: {job.stage() if job else 'loading'}")
