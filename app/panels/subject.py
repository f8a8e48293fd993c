"""Shape and appearance: one slider per PCA component of the prior, in standard deviations (sigma)
of the prior's subjects (+-3 sigma), labelled with each component's share of the variance and, once
known, what it does ("size", "skin tone"); reset, random sample, compare with the avatar.

A personalised avatar's coefficients are shown in the same unit. One that lies beyond +-3 sigma
widens its slider to include it, and the note under the sliders says so (nothing widens silently).
Past the training subjects' own range the geometry holds still (``PriorInfo.held``): the tooltip
gives that range.
"""

from __future__ import annotations

import math

import dearpygui.dearpygui as dpg

from app import actions, tags

SIGMA = actions.SLIDER_SIGMA
RANGE_NOTE = "palm/subject/range_note"
DEAD_TEXT = "no spread among the prior's subjects: this component changes nothing"


def build(studio) -> None:
    c = studio.controller
    s = c.state.subject
    dpg.add_text(s.prior_note or f"prior: {s.prior_path}", tag=tags.SUBJECT_NOTE, wrap=400,
                 color=(230, 190, 90) if s.prior_note else (180, 220, 180))
    if c.prior is not None:
        dpg.add_text(f"Sliders in standard deviations (sigma) of the prior's subjects, +-{SIGMA:g} sigma.",
                     wrap=400, color=(150, 150, 150))
    shape_label = "Shape (PCA)" if c.prior is not None else "Shape (rig betas: no prior)"
    for which, header in (("shape", shape_label), ("appearance", "Appearance (PCA)")):
        with dpg.collapsing_header(label=header, default_open=True):
            for i in range(len(getattr(s, which))):
                tag = _tag(which, i)
                dpg.add_slider_float(label=label(c, which, i), tag=tag, width=200, min_value=-SIGMA,
                                     max_value=SIGMA, format="%+.2f sigma" if c.prior is not None else "%+.2f",
                                     user_data=(which, i), enabled=enabled(c, which, i),
                                     callback=lambda snd, a, u: studio.intent(c.set_code_sigma, u[0], u[1], a))
                with dpg.tooltip(tag):
                    dpg.add_text(tooltip(c, which, i), tag=f"{tag}/tip", wrap=360)
            if c.prior is None and which == "appearance":
                dpg.add_text("Appearance needs a trained prior.", color=(150, 150, 150))
    dpg.add_text("", tag=RANGE_NOTE, wrap=400, color=(230, 190, 90), show=False)
    with dpg.group(horizontal=True):
        dpg.add_button(label="Reset", callback=lambda: studio.intent(c.reset_codes))
        dpg.add_button(label="Random", callback=lambda: studio.intent(c.random_codes))
        dpg.add_checkbox(label="compare with personalised", tag=tags.SUBJECT_COMPARE,
                         callback=lambda s_, a: studio.intent(c.set_compare, a))
    dpg.add_text("", tag=tags.SUBJECT_BAKE, color=(150, 150, 150))


def _tag(which: str, i: int) -> str:
    return (tags.SHAPE_SLIDER if which == "shape" else tags.APPEARANCE_SLIDER).format(i=i)


def enabled(c, which: str, i: int) -> bool:
    if c.prior is None:
        return which == "shape"
    return c.prior.live(which, i)


def label(c, which: str, i: int) -> str:
    """``"shape 1 (92%) size"`` with a prior; ``"beta 1"`` on the rig."""
    if c.prior is None:
        return f"{which} {i + 1}" + (" (rig beta)" if which == "shape" else "")
    return c.prior.label(which, i)


def tooltip(c, which: str, i: int) -> str:
    if c.prior is None:
        return "rig shape coefficient (beta), in its own standard deviations"
    p = c.prior
    if not p.live(which, i):
        return DEAD_TEXT
    sd = float(p.std(which)[i])
    text = f"1 sigma = {sd:.4g} ({100 * float(p.ratio(which)[i]):.2f}% of the variance)"
    rng = p.shape_range if which == "shape" else p.appearance_range
    if rng is not None:
        lo, hi = rng[i] / sd
        text += f"; the training subjects span {lo:+.2f} to {hi:+.2f} sigma, the geometry holds beyond"
    return text


def slider_limit(value: float) -> float:
    """The slider's half range for a value: +-3 sigma, or wider (whole sigmas) to include it."""
    v = abs(float(value))
    return SIGMA if not math.isfinite(v) or v <= SIGMA else float(math.ceil(v))


def refresh(studio) -> None:
    c = studio.controller
    s = c.state.subject
    if studio.changed("names"):
        for which in ("shape", "appearance"):
            for i in range(len(getattr(s, which))):
                dpg.configure_item(_tag(which, i), label=label(c, which, i))
    shown = (c.revision["codes"], s.compare, s.personal_shape is not None)
    if getattr(studio, "_subject_shown", None) != shown:  # codes changed outside the sliders
        studio._subject_shown = shown
        widened = []
        for which in ("shape", "appearance"):
            for i, v in enumerate(c.code_sigmas(which)):
                tag, lim = _tag(which, i), slider_limit(v)
                dpg.configure_item(tag, min_value=-lim, max_value=lim)
                dpg.set_value(tag, float(v))
                if lim > SIGMA:
                    widened.append(f"{which} {i + 1} at {float(v):+.1f} sigma (slider widened to +-{lim:g})")
        note = ("Outside the prior's +-3 sigma: " + "; ".join(widened)) if widened else ""
        dpg.set_value(RANGE_NOTE, note)
        dpg.configure_item(RANGE_NOTE, show=bool(note))
    dpg.configure_item(tags.SUBJECT_COMPARE, enabled=s.personal_shape is not None)
    if dpg.get_value(tags.SUBJECT_COMPARE) != s.compare:
        dpg.set_value(tags.SUBJECT_COMPARE, s.compare)
    res = f"bake {s.bake_resolution}^3" if s.bake_resolution else "rig mesh"
    dpg.set_value(tags.SUBJECT_BAKE, f"{res}, {len(c.avatar.vertices)} vertices")
