"""GUI test fixtures: a private Xvfb per session and one in-process studio shared by the tests.

The ``xvfb`` fixture starts ``Xvfb :N -screen 0 1600x1000x24`` on a free display number, points
``DISPLAY`` at it and stops that process at the end. Dear PyGui allows one context per process, so
the in-process :class:`app.studio.Studio` is session-scoped too; tests that need a fresh
application (start-up, screenshot, quitting) run it in a subprocess on the same display.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from app.xvfb import start_xvfb
from palm.assets import SHARED

PHOTO = str(SHARED / "data/photos/opencv_doc/handSrc.jpg")


def _gui_ready() -> str:
    if shutil.which("Xvfb") is None:
        return "Xvfb not installed"
    try:
        import dearpygui  # noqa: F401
        import moderngl  # noqa: F401
    except ImportError as exc:
        return f"missing {exc.name}"
    return ""


@pytest.fixture(scope="session", autouse=True)
def private_config(tmp_path_factory):
    """The studio's recent-files list goes to a temporary config folder, never the user's."""
    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    yield
    if old is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = old


@pytest.fixture(scope="session")
def xvfb():
    why = _gui_ready()
    if why:
        pytest.skip(why)
    old = os.environ.get("DISPLAY")
    display = start_xvfb(1600, 1000)
    os.environ["DISPLAY"] = display.display
    yield display.display
    display.stop()
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


@pytest.fixture(scope="session")
def studio(xvfb):
    from app.studio import Studio

    app = Studio(size=(1280, 800))
    app.step_frames(3)
    if app.controller.prior is not None:  # the real default prior: let its first bakes land
        deadline = time.monotonic() + 300
        while any(j.kind == "bake" for j in app.controller.runner.active()) and time.monotonic() < deadline:
            app.step_frames(1)
            time.sleep(0.05)
    yield app
    app.close()


@pytest.fixture
def photo_path():
    if not os.path.isfile(PHOTO):
        pytest.skip("sample photo not available")
    return str(Path(PHOTO).resolve())  # the form a file manager drops (symbolic links resolved)


# helpers (fixtures, because tests run with --import-mode=importlib)


def settle(studio, predicate=None, timeout_s: float = 10.0, min_frames: int = 2) -> bool:
    """Step frames until ``predicate()`` holds (or just ``min_frames`` frames); True on success."""
    studio.step_frames(min_frames)
    deadline = time.monotonic() + timeout_s
    while predicate is not None and not predicate():
        if time.monotonic() > deadline:
            return False
        studio.step_frames(1)
        time.sleep(0.01)
    return True


def changed_fraction(a: np.ndarray, b: np.ndarray, threshold: int = 8) -> float:
    """Fraction of pixels whose RGB differs by more than ``threshold`` levels."""
    diff = np.abs(a[..., :3].astype(int) - b[..., :3].astype(int)).max(axis=-1)
    return float((diff > threshold).mean())


@pytest.fixture(name="settle")
def settle_fixture():
    return settle


@pytest.fixture(name="changed_fraction")
def changed_fixture():
    return changed_fraction


# -- stand-in prior and avatar (the real default prior may not be installed) ------------------------

STANDIN_SUBJECTS = 3


def make_standin_prior(folder) -> str:
    """A small untrained prior with PCA spaces, written with ``palm.prior.save_prior``; returns its hash.

    PalmNet of the ``cpu`` preset on the embedded rig with 3 subjects whose codes are spread
    (N(0, 0.1^2)); the geometry MLP's conditioning columns get small random weights (the sphere
    initialisation zeroes them), so the shape code moves the SDF and the PCA sliders move the mesh.
    """
    import torch

    from palm.config import PRESETS
    from palm.fields.latent import fit_pca
    from palm.hand import load_hand
    from palm.model import PalmNet
    from palm.prior import save_prior

    torch.manual_seed(0)
    model = PalmNet(PRESETS["cpu"].model, load_hand("open"), n_subjects=STANDIN_SUBJECTS)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.codes.shape.weight.copy_(0.1 * torch.randn(model.codes.shape.weight.shape, generator=g))
        model.codes.appearance.weight.copy_(0.1 * torch.randn(model.codes.appearance.weight.shape, generator=g))
        mlp = model.geometry.mlp
        v = mlp.layers[0].parametrizations.weight.original1  # weight norm: direction v (hidden, in + cond)
        v[:, mlp.in_dim:] = 0.05 * torch.randn(v.shape[0], v.shape[1] - mlp.in_dim, generator=g)
    model.pca = {"shape": fit_pca(model.codes.shape.weight.detach(), 5),
                 "appearance": fit_pca(model.codes.appearance.weight.detach(), 5)}
    return save_prior(folder, model)


def make_standin_avatar(folder, prior_dir, pose: str = "fist") -> None:
    """An avatar of the stand-in prior (``palm.avatar.save_avatar``): PCA coefficients, their codes,
    a warm two-lobe light, a preset pose, zero betas and a 256 px camera."""
    import numpy as np
    import torch

    from palm.avatar import Avatar, save_avatar
    from palm.hand import load_pose
    from palm.prior import load_prior

    prior = load_prior(prior_dir)
    c_s = torch.tensor([2.0, -1.0, 0.0, 0.0, 0.0])
    c_a = torch.tensor([-1.5, 1.0, 0.0, 0.0, 0.0])
    z_s, z_a = prior.codes_from_coeffs(c_s, c_a)
    light = torch.tensor([[0.0, 1.0, 0.2, 3.0, 3.0, 1.4, 0.5], [0.0, -1.0, 0.0, 2.0, 0.6, 0.3, 0.1]])
    K = [[300.0, 0.0, 128.0], [0.0, 300.0, 128.0], [0.0, 0.0, 1.0]]
    Rt = np.eye(4)
    Rt[2, 3] = 0.5
    save_avatar(folder, Avatar(
        shape_coeffs=c_s, appearance_coeffs=c_a, shape_code=z_s, appearance_code=z_a, light=light,
        pose=np.asarray(load_pose(pose), np.float32), betas=np.zeros(prior.model.hand.n_betas, np.float32),
        transl=np.zeros(3, np.float32), camera={"K": K, "Rt": Rt.tolist(), "height": 256, "width": 256},
        prior_hash=prior.content_hash, photo="standin.jpg"))


@pytest.fixture(scope="session")
def standin_prior(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("standin") / "prior"
    make_standin_prior(folder)
    return str(folder)


@pytest.fixture(scope="session")
def standin_avatar(tmp_path_factory, standin_prior) -> str:
    folder = tmp_path_factory.mktemp("standin") / "avatar"
    make_standin_avatar(folder, standin_prior)
    return str(folder)


def wait_jobs(controller, kind: str = "bake", timeout_s: float = 60.0) -> bool:
    """Drain a controller's events until no job of ``kind`` runs; True when they all ended in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        controller.handle_events()
        if not any(j.kind == kind for j in controller.runner.active()):
            controller.handle_events()
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


@pytest.fixture(name="wait_jobs")
def wait_jobs_fixture():
    return wait_jobs
