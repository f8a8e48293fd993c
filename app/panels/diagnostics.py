"""Diagnostics: ``palm doctor``'s report and the log."""

from __future__ import annotations

import json

import dearpygui.dearpygui as dpg

from app import actions, tags


def build(studio) -> None:
    dpg.add_button(label="Run palm doctor", callback=lambda: dpg.set_value(
        tags.DOCTOR_TEXT, json.dumps(actions.doctor_report(), indent=1, default=str)))
    dpg.add_input_text(tag=tags.DOCTOR_TEXT, multiline=True, readonly=True, width=-1, height=220)
    dpg.add_text("Log")
    dpg.add_input_text(tag=tags.LOG_TEXT, multiline=True, readonly=True, width=-1, height=-1)


def refresh(studio) -> None:
    log = studio.controller.state.log
    if studio.shown_log != len(log):
        studio.shown_log = len(log)
        dpg.set_value(tags.LOG_TEXT, "\n".join(log[-400:]))
