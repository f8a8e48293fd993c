"""Prior training: dataset folder, preset, start/pause/resume/stop, live losses."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from app import actions, tags


def build(studio) -> None:
    c = studio.controller
    dpg.add_text("Train a prior on a PALM-layout, InterHand2.6M or synthetic dataset folder.", wrap=400)
    with dpg.group(horizontal=True):
        dpg.add_input_text(tag=tags.TRAIN_DATASET, hint="dataset folder", width=260)
        dpg.add_button(label="Browse...", callback=lambda: studio.file_dialog(
            "Dataset folder", None, lambda p: dpg.set_value(tags.TRAIN_DATASET, p), directory=True))
    with dpg.group(horizontal=True):
        dpg.add_input_text(tag=tags.TRAIN_OUT, hint="output prior folder", width=260, default_value="runs/prior")
        dpg.add_button(label="Browse...", callback=lambda: studio.file_dialog(
            "Output folder", None, lambda p: dpg.set_value(tags.TRAIN_OUT, p), directory=True))
    presets = actions.training_presets()
    dpg.add_combo(presets, label="preset", tag=tags.TRAIN_PRESET, width=160,
                  default_value="cpu" if "cpu" in presets else presets[0])
    with dpg.group(horizontal=True):
        dpg.add_button(label="Start", callback=lambda: studio.intent(
            c.start_training, dpg.get_value(tags.TRAIN_DATASET), dpg.get_value(tags.TRAIN_PRESET),
            dpg.get_value(tags.TRAIN_OUT)))
        dpg.add_button(label="Pause", callback=lambda: studio.intent(c.pause_kind, "train", True))
        dpg.add_button(label="Resume", callback=lambda: studio.intent(c.pause_kind, "train", False))
        dpg.add_button(label="Stop", callback=lambda: studio.intent(c.cancel_kind, "train"))
    with dpg.plot(label="training loss", height=200, width=-1):
        dpg.add_plot_legend(outside=False, location=dpg.mvPlot_Location_NorthEast)
        dpg.add_plot_axis(dpg.mvXAxis, label="step", tag=tags.TRAIN_PLOT_X)
        dpg.add_plot_axis(dpg.mvYAxis, label="loss", tag=tags.TRAIN_PLOT_Y)


def refresh(studio) -> None:
    t = studio.controller.state.train
    studio.update_plot(tags.TRAIN_PLOT_Y, tags.TRAIN_PLOT_X, t.steps, t.losses)
