"""User intents and job events -> :class:`app.state.AppState` (no Dear PyGui, no OpenGL).

The frame loop calls intent methods from widget callbacks and :meth:`Controller.handle_events`
once per frame. Views never write the controller's state: every change bumps a counter in
:attr:`Controller.revision` (``"avatar"``, ``"pose"``, ``"light"``, ...), and each view remembers the
revision it last drew and redraws when the counter has moved on.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from app import actions
from app.jobs import Failed, Finished, JobMessage, JobRunner, log_text
from app.state import AppState
from palm.errors import PalmError
from palm.hand import load_hand
from palm.hand.lbs import bone_transforms
from palm.jobs import Progress

PERSONAL_ENV = actions.AVATAR_ENV
#: The viewport follows a running personalisation by re-baking at most this often (seconds).
FOLLOW_EVERY_S = 2.0


class Controller:
    """Owns the state, the job runner and the engine objects (rig, prior, avatar)."""

    def __init__(self, prior_path: str | None = None, bake_resolutions=(actions.COARSE_RES, actions.FINE_RES)):
        from palm.assets import DEFAULT_ENV

        self.bake_resolutions = tuple(int(r) for r in bake_resolutions)
        """Grid resolutions of a re-bake: coarse (interpolated material), then refine (exact)."""
        self.state = AppState()
        self.runner = JobRunner()
        self.rng = np.random.default_rng(0)
        self.errors: list[str] = []
        self.revision: Counter[str] = Counter()
        """Change counters of what views show: ``avatar`` (the mesh), ``pose`` (the bones), ``light``,
        ``pose_values`` / ``codes`` (changed outside their sliders: the panel re-reads them),
        ``neural`` (the neural image) and ``preview`` (the personalisation's latest render)."""
        self.hand = load_hand("open")  # the embedded rig always ships
        self.presets = actions.pose_presets()
        self.env_names = actions.env_presets()
        self.prior, note = actions.load_prior(prior_path)
        s = self.state.subject
        s.prior_note, s.can_rebake = note, self.prior is not None
        s.prior_path = self.prior.path if self.prior else ""
        if note:
            self.log(note)
        if self.prior is not None:
            s.shape = np.zeros(self.prior.n_shape, np.float32)
            s.appearance = np.zeros(self.prior.n_appearance, np.float32)
        self.avatar = actions.bake_rig(self.hand)  # shown until the prior's first bake lands
        self.bones = np.tile(np.eye(4, dtype=np.float32), (16, 1, 1))
        self._bones_revision = -1
        self.neural_image: np.ndarray | None = None
        self.neural_job: int | None = None
        """The neural render of the current view (started once the camera rests), or None."""
        self.personal_preview: np.ndarray | None = None
        self.job_names: dict[int, str] = {}
        self._followed_at = -FOLLOW_EVERY_S
        self.bump("avatar", "pose", "light", "codes")
        st = self.state
        st.neural_note = actions.neural_available(self.prior)
        st.neural_available = not st.neural_note
        self.apply_preset(actions.default_preset(self.presets))
        self.set_environment(DEFAULT_ENV if DEFAULT_ENV in self.env_names else self.env_names[0])
        if self.prior is not None:
            self.request_bake()

    def bump(self, *parts: str) -> None:
        """Bump the revision of each of ``parts`` (the views redraw them)."""
        for part in parts:
            self.revision[part] += 1

    # -- log and errors -----------------------------------------------------------------------

    def log(self, line: str) -> None:
        self.state.add_log(line)

    def error(self, message: str) -> None:
        self.log(f"error: {message}")
        self.errors.append(message)

    def guarded(self, fn, *args, **kwargs) -> Any:
        """Run an intent; a PalmError (or any failure) becomes an error message, not a crash."""
        try:
            return fn(*args, **kwargs)
        except PalmError as exc:
            self.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - keep the app usable
            self.error(f"{type(exc).__name__}: {exc}")
        return None

    # -- posing --------------------------------------------------------------------------------

    def apply_preset(self, name: str) -> None:
        if not name:
            return
        self.set_pose(actions.load_pose(name), preset=name)

    def set_pose(self, pose: np.ndarray, left: bool | None = None, preset: str = "") -> None:
        """Show ``pose`` (16, 3) (and the hand side, when given); the pose sliders follow."""
        p = self.state.pose
        p.pose = np.array(pose, np.float32).reshape(16, 3)
        p.preset = preset
        if left is not None:
            p.left = bool(left)
        self.bump("pose", "pose_values")

    def set_pose_value(self, joint: int, comp: int, value: float) -> None:
        """A pose slider moved (the slider already shows the value)."""
        self.state.pose.pose[joint, comp] = float(value)
        self.state.pose.preset = ""
        self.bump("pose")

    def reset_pose(self) -> None:
        self.set_pose(np.zeros((16, 3), np.float32))

    def set_left(self, left: bool) -> None:
        self.state.pose.left = bool(left)
        self.bump("pose")

    def load_pose_file(self, path: str) -> None:
        self.set_pose(actions.load_pose(path), preset=Path(path).stem)
        self.log(f"pose loaded from {path}")

    def save_pose_file(self, path: str) -> None:
        actions.save_pose(path, self.state.pose.pose, self.state.pose.left)
        self.log(f"pose saved to {path}")

    def current_bones(self) -> np.ndarray:
        """Bone matrices (16, 4, 4) of the shown pose (``palm.hand.lbs.bone_transforms``), recomputed
        only after the pose changed."""
        if self._bones_revision != self.revision["pose"]:
            pose = self.state.pose
            self.bones = bone_transforms(self.hand, pose.pose, self.rig_betas(), pose.left)
            self._bones_revision = self.revision["pose"]
        return self.bones

    def rig_betas(self) -> np.ndarray | None:
        """Rig shape of the displayed mesh: the avatar's when comparing, else the slider betas
        (without a prior the shape sliders drive the rig's first betas), else the mean shape."""
        s = self.state.subject
        if self.prior is not None:
            return s.personal_betas if s.compare and s.personal_betas is not None else None
        n = int(self.hand.n_betas)
        betas = np.zeros(n, np.float32)
        k = min(n, len(s.shape))
        betas[:k] = s.shape[:k]
        return betas

    # -- shape / appearance --------------------------------------------------------------------

    def current_subject(self) -> actions.Subject:
        """The subject shown: the personalised avatar when comparing, else the slider values."""
        s = self.state.subject
        if s.compare and s.personal_shape is not None:
            return actions.Subject(
                s.personal_shape, s.personal_appearance if s.personal_appearance is not None else s.appearance,
                s.personal_shape_code, s.personal_appearance_code, s.personal_betas)
        return actions.Subject(s.shape.copy(), s.appearance.copy())

    def current_codes(self) -> tuple[np.ndarray, np.ndarray]:
        sub = self.current_subject()
        return sub.shape, sub.appearance

    def set_code(self, which: str, index: int, value: float) -> None:
        getattr(self.state.subject, which)[index] = float(value)
        self.state.subject.compare = False
        self.request_bake()

    def reset_codes(self) -> None:
        s = self.state.subject
        s.shape[:] = 0.0
        s.appearance[:] = 0.0
        s.compare = False
        self.bump("codes")
        self.request_bake()

    def random_codes(self) -> None:
        """A random subject of the prior (``PCASpace.sample_coeffs``); without one, random rig betas."""
        s = self.state.subject
        seed = int(self.rng.integers(2**31))
        if self.prior is not None:
            s.shape, s.appearance = actions.random_coefficients(self.prior, seed)
        else:
            s.shape = np.clip(np.random.default_rng(seed).standard_normal(len(s.shape)), -2.5, 2.5).astype(np.float32)
        s.compare = False
        self.bump("codes")
        self.request_bake()

    def set_compare(self, on: bool) -> None:
        self.state.subject.compare = bool(on) and self.state.subject.personal_shape is not None
        self.bump("pose")  # the avatar's betas change the bones
        self.request_bake()

    def request_bake(self, resolutions=None) -> None:
        """Re-bake for the current subject: coarse first, then refine (a job that replaces the last)."""
        resolutions = self.bake_resolutions if resolutions is None else resolutions
        if self.prior is None:
            # rig fallback: the sliders are betas; the bake is the rig's rest mesh (fast, synchronous)
            self.avatar = actions.bake_rig(self.hand, self.rig_betas())
            self.bump("avatar", "pose")
            return
        self.start_job("bake", actions.job_bake, self.prior, self.current_subject(), tuple(resolutions))

    def load_avatar(self, folder: str) -> None:
        """Show a personalised avatar: its codes and rig shape (compare on), its fitted light, its pose."""
        data = actions.load_avatar_file(folder, self.prior)
        s = self.state.subject
        s.personal_shape, s.personal_appearance = data["shape"], data["appearance"]
        s.personal_shape_code, s.personal_appearance_code = data["shape_code"], data["appearance_code"]
        s.personal_betas = data["betas"]
        n = min(len(s.shape), len(data["shape"]))
        s.shape[:n], s.appearance[:n] = data["shape"][:n], data["appearance"][: min(len(s.appearance), n)]
        s.avatar_path, s.compare = str(folder), True
        self.bump("codes")
        self.add_environment(PERSONAL_ENV, data["lobes"])
        self.set_pose(data["pose"], left=data["left"])
        self.request_bake()
        self.log(f"avatar loaded from {folder}")

    # -- lighting ------------------------------------------------------------------------------

    def set_environment(self, name: str) -> None:
        light = self.state.light
        if name in light.fitted:
            light.lobes = light.fitted[name]
        else:
            light.lobes, _ = actions.load_environment(name)
        light.name = name
        self.bump("light")

    def add_environment(self, name: str, lobes: np.ndarray, show: bool = True) -> None:
        """A fitted environment (from a file or a personalisation) joins the list as ``name``; shown
        at once when ``show``, else only refreshed if it is the one shown."""
        self.state.light.fitted[name] = np.asarray(lobes, np.float32).reshape(-1, 7)
        if show or self.state.light.name == name:
            self.set_environment(name)

    def load_environment_file(self, path: str) -> None:
        self.start_job("fit environment", actions.job_fit_environment, path)

    def set_rotation(self, degrees: float) -> None:
        self.state.light.rotation = math.radians(float(degrees))
        self.bump("light")

    def set_exposure(self, stops: float) -> None:
        self.state.light.exposure = float(stops)
        self.bump("light")

    def set_show_background(self, on: bool) -> None:
        self.state.light.show_background = bool(on)
        self.bump("light")

    def export_environment(self, path: str) -> None:
        light = self.state.light
        actions.export_environment(path, light.lobes, light.name)
        self.log(f"environment {light.name} exported to {path}")

    def environment_names(self) -> list[str]:
        return list(self.env_names) + [n for n in self.state.light.fitted if n not in self.env_names]

    def shown_lobes(self) -> np.ndarray:
        """The environment's lobes (K, 7) as shown: turned by the rotation slider."""
        light = self.state.light
        return actions.turn_environment(light.lobes, light.rotation)

    # -- neural view ---------------------------------------------------------------------------

    def set_neural_mode(self, on: bool) -> None:
        self.state.neural_mode = bool(on)
        self.discard_neural()

    def start_neural(self, view: actions.NeuralView) -> None:
        """Render the current subject, pose and light progressively in ``view`` (a job)."""
        self.neural_job = self.start_job("neural render", actions.job_neural_render, self.prior, self.current_subject(),
                                         self.state.pose.pose.copy(), self.shown_lobes(), view, kind="neural")

    def discard_neural(self) -> None:
        """The view changed: drop the neural image, and the render of the old view still on its way."""
        slot = self.runner.previews.get("neural")
        if slot is not None:
            slot.take()
        if self.neural_job is not None:
            self.runner.cancel(self.neural_job)
            self.neural_job = None
        if self.neural_image is not None:
            self.neural_image = None
            self.bump("neural")

    # -- photo and personalisation -------------------------------------------------------------

    def receive_drop(self, path: str) -> None:
        """A file dropped on the window (drag and drop): a photo to personalise."""
        self.state.dropped.append(path)
        self.log(f"dropped: {path}")
        self.guarded(self.open_photo, path)

    def open_photo(self, path: str) -> None:
        """Queue a photo: preprocess it in a job; the overlay waits for the user to accept."""
        photo = self.state.photo
        photo.path, photo.result, photo.accepted = str(path), None, False
        photo.losses, photo.steps = {}, []
        self.log(f"photo: {path}")
        self.start_job("preprocess", actions.job_preprocess, str(path))

    def accept_photo(self) -> None:
        photo = self.state.photo
        if photo.result is None:
            self.error("no preprocessed photo to accept")
            return
        photo.accepted = True
        why = actions.personalize_available(self.prior)
        if why:
            self.error(why)
            return
        out = str(actions.new_avatar_folder(Path(photo.path).stem))
        self.log(f"personalising: the avatar goes to {out}")
        self.start_job("personalize", actions.job_personalize, photo.result, self.prior, out)

    def reject_photo(self) -> None:
        self.state.photo.result = None
        self.state.photo.accepted = False

    # -- training ------------------------------------------------------------------------------

    def start_training(self, dataset: str, preset: str, out_dir: str) -> None:
        t = self.state.train
        t.dataset, t.preset, t.out_dir, t.losses, t.steps = dataset, preset, out_dir, {}, []
        self.start_job("train", actions.job_train, dataset, preset, out_dir)

    def use_prior(self, path: str) -> None:
        prior, note = actions.load_prior(path)
        if prior is None:
            self.error(note)
            return
        self.prior = prior
        s = self.state.subject
        s.prior_path, s.prior_note, s.can_rebake = prior.path, "", True
        s.shape = np.zeros(prior.n_shape, np.float32)
        s.appearance = np.zeros(prior.n_appearance, np.float32)
        s.personal_shape = s.personal_appearance = s.personal_shape_code = s.personal_appearance_code = None
        s.personal_betas, s.compare = None, False
        self.bump("codes")
        self.state.neural_note = actions.neural_available(prior)
        self.state.neural_available = not self.state.neural_note
        self.request_bake()

    # -- jobs ----------------------------------------------------------------------------------

    def start_job(self, name: str, fn, *args, kind: str | None = None) -> int:
        job_id = self.runner.start(name, fn, *args, kind=kind)
        self.job_names[job_id] = name
        self.state.events_seen.append(name)
        return job_id

    def cancel_jobs(self) -> None:
        self.runner.cancel()

    def cancel_kind(self, kind: str) -> None:
        for job in self.runner.active():
            if job.kind == kind:
                self.runner.cancel(job.job_id)

    def pause_kind(self, kind: str, pause: bool) -> None:
        for job in self.runner.active():
            if job.kind == kind:
                (self.runner.pause if pause else self.runner.resume)(job.job_id)

    def toggle_pause(self) -> None:
        """Pause the newest running job, or resume it when paused."""
        active = self.runner.active()
        if active:
            job = active[-1]
            (self.runner.resume if job.paused else self.runner.pause)(job.job_id)

    def handle_events(self) -> None:
        """Apply every queued job event and the newest snapshots/previews. Main thread, per frame."""
        for ev in self.runner.drain():
            line = log_text(ev)
            if line:
                self.log(line)
            if isinstance(ev, Failed):
                self.errors.append(ev.message)
            if isinstance(ev, Finished):
                self._finished(ev)
            if isinstance(ev, JobMessage) and isinstance(ev.event, Progress):
                self._progress(ev.name, ev.event)
        for kind, slot in self.runner.snapshots.items():
            full, snap = slot.take()
            if full:
                self._snapshot(kind, snap.data)
        for kind, slot in self.runner.previews.items():
            full, prev = slot.take()
            if full and kind == "neural":
                self.neural_image = np.asarray(prev.image)
                self.bump("neural")
            elif full and kind == "personalize":
                self.personal_preview = np.asarray(prev.image, np.float32)
                self.bump("preview")

    def _progress(self, name: str, p: Progress) -> None:
        target = self.state.photo if name == "personalize" else self.state.train if name == "train" else None
        if target is None or not p.losses:
            return
        target.steps.append(p.step)
        for key, value in p.losses.items():
            target.losses.setdefault(key, []).append(float(value))

    def _snapshot(self, kind: str, data: dict) -> None:
        if "avatar" in data and data["avatar"] is not None:
            self.avatar = data["avatar"]
            self.state.subject.bake_resolution = int(data.get("resolution", 0))
            self.bump("avatar")
        if kind == "personalize":
            self._follow_personalisation(data)

    def _follow_personalisation(self, data: dict) -> None:
        """A personalisation Snapshot: keep its values as the personalised subject and light; re-bake
        the viewport (coarse) from its codes at most every :data:`FOLLOW_EVERY_S` seconds."""
        s = self.state.subject

        def get(key):
            value = data.get(key)
            return None if value is None else np.asarray(value, np.float32).reshape(-1)

        if get("shape_coeffs") is not None:
            s.personal_shape, s.personal_appearance = get("shape_coeffs"), get("appearance_coeffs")
        s.personal_shape_code, s.personal_appearance_code = get("shape_code"), get("appearance_code")
        if s.personal_shape is None and s.personal_shape_code is not None:  # a prior without PCA: codes only
            s.personal_shape, s.personal_appearance = np.zeros_like(s.shape), np.zeros_like(s.appearance)
        lobes = data.get("light")
        if lobes is not None:
            self.add_environment(PERSONAL_ENV, lobes, show=False)
        if s.personal_shape is not None and self.prior is not None and now() - self._followed_at >= FOLLOW_EVERY_S:
            self._followed_at = now()
            s.compare = True
            self.request_bake(self.bake_resolutions[:1])

    def _finished(self, ev: Finished) -> None:
        if ev.name == "preprocess":
            self.state.photo.result = ev.result
            self.log("photo preprocessed: accept the overlay to personalise")
        elif ev.name == "fit environment" and ev.result is not None:
            lobes, info = ev.result
            self.add_environment(str(info.get("name", "fitted")), lobes)
        elif ev.name == "personalize":
            self.log(f"personalisation finished: {ev.result}")
            if ev.result:
                self.guarded(self.load_avatar, str(ev.result))
        elif ev.name == "train" and ev.result is not None:
            self.log(f"training finished: {ev.result}")
            path = getattr(ev.result, "path", ev.result)
            if isinstance(path, (str, Path)) and Path(path).is_dir():
                self.guarded(self.use_prior, str(path))

    # -- frame statistics (reported by the studio) ---------------------------------------------

    def frame_drawn(self, frame_ms: float) -> None:
        self.state.frames += 1
        self.state.frame_ms = float(frame_ms)

    def viewport_drawn(self, render_ms: float) -> None:
        self.state.render_ms = float(render_ms)

    def shutdown(self) -> None:
        self.runner.shutdown()


def now() -> float:
    return time.monotonic()
