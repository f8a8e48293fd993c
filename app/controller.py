"""User intents and job events -> :class:`app.state.AppState` (no Dear PyGui, no OpenGL).

The frame loop calls intent methods from widget callbacks and :meth:`Controller.handle_events` once per
frame. Views never write the controller's state: every change bumps a counter in :attr:`Controller.revision`
(``"avatar"``, ``"pose"``, ...); each view redraws when the counter has moved past the one it last drew.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app import actions, neural, tasks
from app.jobs import Cancelled, Failed, Finished, JobMessage, JobRunner, log_text
from app.state import AppState
from palm.errors import PalmError
from palm.hand import load_hand
from palm.hand.lbs import bone_transforms, mirror_pose
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
        self.notice: dict[str, Any] = {"text": "", "path": "", "time": 0.0}
        """The latest confirmation (:meth:`notify`): the status line / toast shows it."""
        self.env_loading = ""
        """The environment being loaded / pre-integrated by :meth:`select_environment` ('' when none)."""
        self.input_files: set[str] = set()
        """Files and folders the user opened (never overwritten by an export)."""
        self._frames: np.ndarray | None = None
        self._angles: tuple[int, np.ndarray] | None = None
        self._described = False
        self._env_cache: dict[str, np.ndarray] = {}
        self._followed_at = -FOLLOW_EVERY_S
        self.bump("avatar", "pose", "light", "codes", "names")
        st = self.state
        st.neural_note = neural.neural_available(self.prior)
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

    def notify(self, text: str, path: str = "") -> None:
        """Confirm something to the user (an export, a saved avatar): kept in :attr:`notice` for the
        status line and toasts (revision ``"notice"``), and logged."""
        self.notice = {"text": str(text), "path": str(path), "time": time.monotonic()}
        self.log(text)
        self.bump("notice")

    def input_paths(self) -> list[str]:
        """What an export must never overwrite: the photo, avatar, prior and opened files."""
        st = self.state
        return [p for p in (st.photo.path, st.subject.avatar_path, st.subject.prior_path, *self.input_files) if p]

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
        """Set one axis-angle component; the joint is held inside its anatomical range
        (``palm.hand.poses.clamp_pose``; the wrist, row 0, is not limited here)."""
        pose = self.state.pose.pose.copy()
        pose[joint, comp] = float(value)
        self.state.pose.pose = self._clamped(pose)
        self.state.pose.preset = ""
        self.bump("pose")
        if not np.isclose(self.state.pose.pose[joint, comp], value):
            self.bump("pose_values")

    def _clamped(self, pose: np.ndarray) -> np.ndarray:
        from palm.hand.poses import clamp_pose

        return np.asarray(clamp_pose(pose, frames=self.joint_frames()), np.float32).reshape(16, 3)

    def joint_frames(self) -> np.ndarray:
        """(16, 3, 3) anatomical frames of the rig (``palm.hand.poses.joint_frames``), made once."""
        if self._frames is None:
            from palm.hand.poses import joint_frames

            self._frames = joint_frames(self.hand)
        return self._frames

    def pose_angles(self) -> np.ndarray:
        """(16, 3) anatomical angles in radians (flex, abd, twist; row 0 the wrist's x-y-z Euler
        angles) of the shown pose (``palm.hand.poses.pose_to_angles``)."""
        rev = self.revision["pose"]
        if self._angles is None or self._angles[0] != rev:
            from palm.hand.poses import pose_to_angles

            self._angles = (rev, pose_to_angles(self.state.pose.pose, frames=self.joint_frames()).reshape(16, 3))
        return self._angles[1]

    def set_joint_angle(self, joint: int, angle: int, degrees: float) -> None:
        """A pose slider moved: anatomical ``angle`` (0 flex, 1 abduction, 2 twist) of ``joint`` in
        degrees, clipped to the joint's limits (:func:`joint_limits`); the other angles are kept."""
        from palm.hand.poses import angles_to_pose

        angles = self.pose_angles().copy()
        lo, hi = joint_limits()[joint, angle]
        angles[joint, angle] = float(np.clip(math.radians(float(degrees)), lo, hi))
        pose = self.state.pose.pose.copy()
        pose[joint] = angles_to_pose(angles, frames=self.joint_frames())[joint]
        self.state.pose.pose = pose
        self.state.pose.preset = ""
        self.bump("pose")

    def reset_pose(self) -> None:
        self.set_pose(np.zeros((16, 3), np.float32))

    def set_left(self, left: bool) -> None:
        self.state.pose.left = bool(left)
        self.bump("pose")

    def load_pose_file(self, path: str) -> None:
        self.set_pose(actions.load_pose(path), left=actions.pose_side(path), preset=Path(path).stem)
        self.input_files.add(str(path))
        self.log(f"pose loaded from {path}")

    def save_pose_file(self, path: str) -> None:
        path = str(tasks.check_export(path, (".json",), self.input_paths()))
        actions.save_pose(path, self.state.pose.pose, self.state.pose.left)
        self.notify(f"pose saved to {path}", path)

    def current_bones(self) -> np.ndarray:
        """Bone matrices (16, 4, 4) of the shown pose (``bone_transforms``), recomputed when it changed."""
        if self._bones_revision != self.revision["pose"]:
            pose = self.state.pose
            s = self.state.subject  # a refined mesh is posed about its own (fitted) skeleton
            joints = s.personal_mesh.joints if s.compare and s.personal_mesh is not None else None
            # a left hand: the posture's mirror image, the rig's left hand in mirrored parameters
            shown = mirror_pose(torch.as_tensor(pose.pose)).numpy() if pose.left else pose.pose
            self.bones = bone_transforms(self.hand, shown, self.rig_betas(), pose.left, joints=joints)
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
        """The subject shown: the personalised avatar when comparing, else the slider values held
        inside the training subjects' range (``PriorInfo.held``: the geometry stays a hand)."""
        s = self.state.subject
        if s.compare and s.personal_shape is not None:
            return actions.Subject(
                s.personal_shape, s.personal_appearance if s.personal_appearance is not None else s.appearance,
                s.personal_shape_code, s.personal_appearance_code, s.personal_betas, s.personal_albedo_gain)
        if self.prior is None:
            return actions.Subject(s.shape.copy(), s.appearance.copy())
        return actions.Subject(self.prior.held("shape", s.shape), self.prior.held("appearance", s.appearance))

    def code_sigmas(self, which: str) -> np.ndarray:
        """The shown subject's coefficients of ``which`` in standard deviations of the prior's
        subjects (the sliders' unit); without a prior, the rig betas as they are."""
        sub = self.current_subject() if self.state.subject.compare else None
        values = getattr(sub, which) if sub is not None else getattr(self.state.subject, which)
        if self.prior is None:
            return np.asarray(values, np.float32).copy()
        return self.prior.to_sigma(which, values)

    def set_code_sigma(self, which: str, index: int, sigmas: float) -> None:
        """A PCA slider moved: ``sigmas`` standard deviations of the prior's subjects."""
        std = float(self.prior.std(which)[index]) if self.prior is not None else 1.0
        self.set_code(which, index, float(sigmas) * std)

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
        if self.state.subject.compare and self.state.subject.personal_mesh is not None:
            self.avatar = self.state.subject.personal_mesh  # refined from the photo: what render and export show
            return self.bump("avatar", "pose")
        if self.prior is None:  # rig fallback: the sliders are betas; the rig's rest mesh (fast, synchronous)
            self.avatar = actions.bake_rig(self.hand, self.rig_betas())
            return self.bump("avatar", "pose")
        self.start_job("bake", actions.job_bake, self.prior, self.current_subject(), tuple(resolutions))

    def load_avatar(self, folder: str) -> None:
        """Show a personalised avatar: its codes and rig shape (compare on), its fitted light, its pose."""
        data = actions.load_avatar_file(folder, self.prior)
        s = self.state.subject
        s.personal_shape, s.personal_appearance = data["shape"], data["appearance"]
        s.personal_shape_code, s.personal_appearance_code = data["shape_code"], data["appearance_code"]
        s.personal_betas, s.personal_mesh, s.personal_albedo_gain = data["betas"], data["mesh"], data["albedo_gain"]
        n = min(len(s.shape), len(data["shape"]))
        s.shape[:n], s.appearance[:n] = data["shape"][:n], data["appearance"][: min(len(s.appearance), n)]
        s.avatar_path, s.compare = str(folder), True
        self.input_files.add(str(folder))
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
        elif name in self._env_cache:
            light.lobes = self._env_cache[name]
        else:
            light.lobes, _ = actions.load_environment(name)
        light.name = name
        self.bump("light")

    def select_environment(self, name: str) -> None:
        """The user picked an environment: a fitted one shows at once; a preset is loaded and its
        light pre-integrated in a job (:attr:`env_loading` names it meanwhile: the panel spins)."""
        if name in self.state.light.fitted or name == self.state.light.name:
            self.set_environment(name)
            return
        self.env_loading = name
        self.start_job("environment", actions.job_fit_environment, name)

    def reset_light(self) -> None:
        """Lighting back to its defaults: no rotation, exposure 0, the background shown."""
        light = self.state.light
        light.rotation, light.exposure, light.show_background = 0.0, 0.0, True
        self.bump("light", "light_values")

    def add_environment(self, name: str, lobes: np.ndarray, show: bool = True) -> None:
        """A fitted environment (from a file or a personalisation) joins the list as ``name``; shown
        at once when ``show``, else only refreshed if it is the one shown."""
        self.state.light.fitted[name] = np.asarray(lobes, np.float32).reshape(-1, 7)
        if show or self.state.light.name == name:
            self.set_environment(name)

    def load_environment_file(self, path: str) -> None:
        self.input_files.add(str(path))
        self.env_loading = Path(path).name
        self.start_job("fit environment", actions.job_fit_environment, path, kind="environment")

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
        path = str(tasks.check_export(path, tasks.ENV_EXTENSIONS, self.input_paths()))
        actions.export_environment(path, light.lobes, light.name)
        self.notify(f"environment {light.name} exported to {path}", path)

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

    def start_neural(self, view: neural.NeuralView) -> None:
        """Render the current subject, pose and light progressively in ``view`` (a job)."""
        self.neural_job = self.start_job("neural render", neural.job_neural_render, self.prior, self.current_subject(),
                                         self.state.pose.pose.copy(), self.shown_lobes(), view, neural.NEURAL_SIZES,
                                         self.state.pose.left, kind="neural")

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
        self.input_files.add(str(path))
        self.log(f"photo: {path}")
        self.start_job("preprocess", actions.job_preprocess, str(path))
        self.bump("photo_opened")  # the Personalise tab comes forward: its check step waits there

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

    # -- exports -------------------------------------------------------------------------------

    def export_mesh(self, path: str, resolution: int = 0) -> None:
        """The posed mesh at grid ``resolution`` (at least the viewport's bake; 0: the viewport's
        mesh as shown), in a job; :meth:`notify` confirms the path."""
        path = str(tasks.check_export(path, tasks.MESH_EXTENSIONS, self.input_paths()))
        s = self.state.subject
        refined = s.compare and s.personal_mesh is not None  # the photo-detail mesh is exported as shown
        res = max(int(resolution), s.bake_resolution) if self.prior is not None and resolution and not refined else 0
        if res == s.bake_resolution and s.bake_resolution >= max(self.bake_resolutions):
            res = 0  # the refined viewport mesh is that resolution already
        self.start_job("export mesh", tasks.job_export_mesh, path, self.avatar, self.hand,
                       self.state.pose.pose.copy(), self.rig_betas(), self.prior if res else None,
                       self.current_subject(), res, self.state.pose.left)

    def export_neural(self, path: str, view: neural.NeuralView, transparent: bool = False) -> None:
        """The neural (volume PBR) render of ``view`` written to ``path`` (a job; minutes on a CPU)."""
        why = neural.neural_available(self.prior)
        if why:
            raise PalmError(path, why)
        path = str(tasks.check_export(path, tasks.IMAGE_EXTENSIONS, self.input_paths()))
        self.start_job("export render", tasks.job_export_neural, path, self.prior, self.current_subject(),
                       self.state.pose.pose.copy(), self.shown_lobes(), view, bool(transparent), self.state.pose.left)

    def describe_components(self) -> None:
        """Name the prior's PCA components by what they do (a background job; the labels follow)."""
        if self.prior is not None and not self.prior.names:
            self.start_job("name components", tasks.job_describe_components, self.prior, kind="describe")

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
        s.personal_betas = s.personal_mesh = s.personal_albedo_gain = None
        s.compare, self._described = False, False
        self.bump("codes", "names")
        self.state.neural_note = neural.neural_available(prior)
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
            if isinstance(ev, (Failed, Cancelled)) and ev.name in ("environment", "fit environment"):
                self.env_loading = ""
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
            return None if data.get(key) is None else np.asarray(data[key], np.float32).reshape(-1)

        if get("shape_coeffs") is not None:
            s.personal_shape, s.personal_appearance = get("shape_coeffs"), get("appearance_coeffs")
        s.personal_shape_code, s.personal_appearance_code = get("shape_code"), get("appearance_code")
        s.personal_albedo_gain = None  # the paper stage's codes under its own light
        if s.personal_shape is None and s.personal_shape_code is not None:  # a prior without PCA: codes only
            s.personal_shape, s.personal_appearance = np.zeros_like(s.shape), np.zeros_like(s.appearance)
        if (lobes := data.get("light")) is not None:
            self.add_environment(PERSONAL_ENV, lobes, show=False)
        if s.personal_shape is not None and self.prior is not None and time.monotonic() - self._followed_at >= FOLLOW_EVERY_S:
            self._followed_at, s.compare = time.monotonic(), True
            self.request_bake(self.bake_resolutions[:1])

    def _finished(self, ev: Finished) -> None:
        if ev.name == "bake" and self.prior is not None and not self.prior.names and not self._described:
            self._described = True
            self.describe_components()
        elif ev.name == "name components" and isinstance(ev.result, dict) and self.prior is not None:
            self.prior.names = ev.result
            self.bump("names")
        elif ev.name == "export mesh" and ev.result:
            self.notify(f"mesh ({ev.result[1]} vertices) exported to {ev.result[0]}", ev.result[0])
        elif ev.name == "export render" and ev.result:
            self.notify(f"neural render saved to {ev.result}", str(ev.result))
        elif ev.name == "environment" and ev.result is not None:
            name, self.env_loading = self.env_loading, ""
            self._env_cache[name] = ev.result[0]
            self.set_environment(name)
        elif ev.name == "preprocess":
            self.state.photo.result = ev.result
            self.log("photo preprocessed: accept the overlay to personalise")
        elif ev.name == "fit environment" and ev.result is not None:
            lobes, info = ev.result
            self.env_loading = ""
            self.add_environment(str(info.get("name", "fitted")), lobes)
        elif ev.name == "personalize":
            if ev.result:
                self.notify(f"avatar saved to {ev.result}", str(ev.result))
                self.guarded(self.load_avatar, str(ev.result))
        elif ev.name == "train" and ev.result is not None:
            path = getattr(ev.result, "path", ev.result)
            self.notify(f"prior saved to {path}", str(path))
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


#: The wrist's slider range (global orientation as x-y-z Euler angles, degrees): twist (pronation /
#: supination) about the fingers' axis, deviation, flexion / extension. Wider turns swing the hand
#: about the wrist out of the framed view; the camera turns it instead.
WRIST_LIMITS_DEG = ((-90.0, 90.0), (-30.0, 30.0), (-75.0, 75.0))


@functools.lru_cache(maxsize=1)
def joint_limits() -> np.ndarray:
    """(16, 3, 2) slider limits in radians: ``palm.hand.poses.limits_array`` (anatomy) for the
    joints, :data:`WRIST_LIMITS_DEG` for row 0 (angles in ``Controller.pose_angles`` order)."""
    from palm.hand.poses import limits_array

    lim = limits_array().copy()
    lim[0] = np.radians(np.asarray(WRIST_LIMITS_DEG))
    return lim
