"""Out of memory while rendering: ``PalmNet.render_image`` retries with smaller ray chunks.

``render_rays`` is replaced by a wrapper that raises ``torch.cuda.OutOfMemoryError`` (or the CPU
allocator's message) for chunks above a size, so the fallback is exercised on any machine.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from .conftest import tiny_config


@pytest.fixture(scope="module")
def scene():
    """A tiny random prior, the flat hand and a 24 x 24 camera looking at it."""
    from palm.hand import load_hand
    from palm.model import Frame, PalmNet
    from palm.render.views import framing_radius, orbit_camera

    torch.manual_seed(0)
    hand = load_hand("open")
    model = PalmNet(tiny_config().model, hand, 2).eval()
    pose = torch.zeros(16, 3)
    betas = torch.zeros(hand.n_betas)
    with torch.no_grad():
        verts = hand(pose[None], betas[None]).vertices[0]
    camera = orbit_camera(verts.mean(0), framing_radius(verts), 24)
    frame = Frame(shape_code=torch.zeros(32), appearance_code=torch.zeros(32), pose=pose, betas=betas,
                  transl=torch.zeros(3))
    return model, camera, frame


def _limit_chunks(monkeypatch, model, limit: int, error: Exception) -> list[int]:
    """Make ``model.render_rays`` fail with ``error`` for more than ``limit`` rays; returns the sizes tried."""
    original = model.render_rays
    sizes: list[int] = []

    def render_rays(origins, dirs, *args, **kwargs):
        sizes.append(origins.shape[0])
        if origins.shape[0] > limit:
            raise error
        return original(origins, dirs, *args, **kwargs)

    monkeypatch.setattr(model, "render_rays", render_rays)
    return sizes


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
], ids=["cuda-oom", "cpu-oom"])
def test_render_image_halves_the_chunk_on_out_of_memory(scene, monkeypatch, error):
    model, camera, frame = scene
    with torch.no_grad():
        reference = model.render_image(camera, frame, pbr=False, chunk=4096)
    assert reference["opacity"].max() > 0, "the camera misses the hand: the test would prove nothing"

    sizes = _limit_chunks(monkeypatch, model, limit=50, error=error)
    progress: list[tuple[int, int]] = []
    with torch.no_grad():
        out = model.render_image(camera, frame, pbr=False, chunk=4096, progress=lambda i, n: progress.append((i, n)))
    assert sizes[0] > 50, "the first chunk must be too large for the test to mean anything"
    assert sizes[:3] == [sizes[0], sizes[0] // 2, sizes[0] // 4]  # halved after each failure
    assert all(b <= a for a, b in itertools.pairwise(sizes))  # never grows back
    for key in ("rgb_rf", "opacity", "depth"):
        torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=1e-5)
    assert progress and progress[-1][0] == progress[-1][1]  # the progress bar reaches its end


def test_other_errors_are_not_swallowed(scene, monkeypatch):
    model, camera, frame = scene
    _limit_chunks(monkeypatch, model, limit=0, error=RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        model.render_image(camera, frame, pbr=False)


def test_out_of_memory_for_a_single_ray_is_raised(scene, monkeypatch):
    model, camera, frame = scene
    sizes = _limit_chunks(monkeypatch, model, limit=0, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        model.render_image(camera, frame, pbr=False, chunk=64)
    assert sizes == [64, 32, 16, 8, 4, 2, 1]
