"""Shape and appearance: one slider per PCA component, reset, random sample, compare."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from app import tags


def build(studio) -> None:
    c = studio.controller
    s = c.state.subject
    dpg.add_text(s.prior_note or f"prior: {s.prior_path}", tag=tags.SUBJECT_NOTE, wrap=400,
                 color=(230, 190, 90) if s.prior_note else (180, 220, 180))
    shape_label = "Shape (PCA)" if c.prior is not None else "Shape (rig betas: no prior)"
    with dpg.collapsing_header(label=shape_label, default_open=True):
        std = c.prior.shape_std if c.prior is not None else [1.0] * len(s.shape)
        for i in range(len(s.shape)):
            dpg.add_slider_float(label=f"shape {i + 1}", tag=tags.SHAPE_SLIDER.format(i=i), width=220,
                                 min_value=-3 * max(float(std[i]), 1e-3), max_value=3 * max(float(std[i]), 1e-3),
                                 user_data=i, callback=lambda snd, a, u: studio.intent(c.set_code, "shape", u, a))
    with dpg.collapsing_header(label="Appearance (PCA)", default_open=True):
        std = c.prior.appearance_std if c.prior is not None else [1.0] * len(s.appearance)
        for i in range(len(s.appearance)):
            dpg.add_slider_float(label=f"appearance {i + 1}", tag=tags.APPEARANCE_SLIDER.format(i=i), width=220,
                                 min_value=-3 * max(float(std[i]), 1e-3), max_value=3 * max(float(std[i]), 1e-3),
                                 user_data=i, enabled=c.prior is not None,
                                 callback=lambda snd, a, u: studio.intent(c.set_code, "appearance", u, a))
        if c.prior is None:
            dpg.add_text("Appearance needs a trained prior.", color=(150, 150, 150))
    with dpg.group(horizontal=True):
        dpg.add_button(label="Reset", callback=lambda: studio.intent(c.reset_codes))
        dpg.add_button(label="Random", callback=lambda: studio.intent(c.random_codes))
        dpg.add_checkbox(label="compare with personalised", tag=tags.SUBJECT_COMPARE,
                         callback=lambda s_, a: studio.intent(c.set_compare, a))
    dpg.add_text("", tag=tags.SUBJECT_BAKE, color=(150, 150, 150))


def refresh(studio) -> None:
    c = studio.controller
    s = c.state.subject
    if studio.changed("codes"):  # changed outside the sliders (reset, random, avatar, new prior)
        for i, v in enumerate(s.shape):
            dpg.set_value(tags.SHAPE_SLIDER.format(i=i), float(v))
        for i, v in enumerate(s.appearance):
            dpg.set_value(tags.APPEARANCE_SLIDER.format(i=i), float(v))
    dpg.configure_item(tags.SUBJECT_COMPARE, enabled=s.personal_shape is not None)
    if dpg.get_value(tags.SUBJECT_COMPARE) != s.compare:
        dpg.set_value(tags.SUBJECT_COMPARE, s.compare)
    res = f"bake {s.bake_resolution}^3" if s.bake_resolution else "rig mesh"
    dpg.set_value(tags.SUBJECT_BAKE, f"{res}, {len(c.avatar.vertices)} vertices")
