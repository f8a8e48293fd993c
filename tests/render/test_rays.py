"""Cameras and rays: pixel centres, projection, scaling, look-at and the MANO-space transform."""

from __future__ import annotations

import math

import pytest
import torch

from palm.errors import PalmError
from palm.render.rays import Camera, local_dirs_to_world, pixel_grid, pixel_rays, project, world_to_local


def _random_camera(seed: int, dtype=torch.float64) -> Camera:
    g = torch.Generator().manual_seed(seed)
    eye = torch.randn(3, generator=g, dtype=torch.float64) * 0.6
    target = torch.randn(3, generator=g, dtype=torch.float64) * 0.05
    cam = Camera.look_at(eye, target, up=(0.0, 1.0, 0.0), fov_deg=35.0, height=19, width=27, dtype=dtype)
    cam.K[0, 2] += 1.3  # off-centre principal point, non-square pixels
    cam.K[1, 1] *= 1.1
    return cam


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rays_reproject_to_pixel_centres(dtype):
    cam = _random_camera(0, dtype)
    pixels = pixel_grid(cam.height, cam.width)
    origins, dirs = pixel_rays(cam, pixels)
    assert origins.shape == dirs.shape == (cam.height * cam.width, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(len(dirs), dtype=dtype))
    for depth in (0.3, 1.7):
        uv = project(cam, origins + depth * dirs)
        err = (uv - (pixels.to(dtype) + 0.5)).abs().max()
        assert err < 1e-4


def test_all_pixels_row_major_and_camera_centre():
    cam = _random_camera(1)
    origins, dirs = pixel_rays(cam)
    assert origins.shape == (cam.height * cam.width, 3)
    torch.testing.assert_close(origins[0], cam.centre)
    # ray 1 is pixel (u=1, v=0): one pixel to the right
    uv = project(cam, origins[:2] + dirs[:2])
    torch.testing.assert_close(uv, torch.tensor([[0.5, 0.5], [1.5, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(cam.c2w @ cam.Rt, torch.eye(4, dtype=torch.float64))


def test_look_at_orientation_opencv():
    cam = Camera.look_at((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0), fov_deg=40.0, height=64, width=96)
    centre = project(cam, torch.tensor([[0.0, 0.0, 0.0]]))
    torch.testing.assert_close(centre, torch.tensor([[48.0, 32.0]]))
    above = project(cam, torch.tensor([[0.0, 0.1, 0.0]]))
    right = project(cam, torch.tensor([[0.1, 0.0, 0.0]]))
    assert above[0, 1] < 32.0 and abs(above[0, 0] - 48.0) < 1e-4  # world up is image up (y down)
    assert right[0, 0] > 48.0  # looking down -z with +y up, +x is to the right
    # vertical field of view: the point at the top edge
    top = project(cam, torch.tensor([[0.0, math.tan(math.radians(20.0)), 0.0]]))
    assert abs(float(top[0, 1])) < 1e-3


def test_scaled_camera_scales_image_coordinates():
    cam = _random_camera(2)
    big = cam.scaled(2.0)
    assert (big.height, big.width) == (38, 54)
    pts = torch.randn(10, 3, dtype=torch.float64) * 0.05
    torch.testing.assert_close(project(big, pts), 2.0 * project(cam, pts))
    with pytest.raises(PalmError):
        cam.scaled(0.0)


def test_dict_roundtrip_and_errors():
    cam = _random_camera(3, torch.float32)
    back = Camera.from_dict(cam.to_dict())
    torch.testing.assert_close(back.K, cam.K)
    torch.testing.assert_close(back.Rt, cam.Rt)
    assert (back.height, back.width) == (cam.height, cam.width)
    with pytest.raises(PalmError, match="camera"):
        Camera.from_dict({"K": [[1, 0], [0, 1]], "Rt": cam.Rt.tolist(), "height": 4, "width": 4}, path="cam.json")
    with pytest.raises(PalmError):
        Camera.from_dict({"K": cam.K.tolist()}, path="cam.json")


def _random_rigid(g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = q
    m[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64) * 0.2
    return m


def test_world_to_local_maps_points_along_rays():
    g = torch.Generator().manual_seed(4)
    origins = torch.randn(8, 3, generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(8, 3, generator=g, dtype=torch.float64), dim=-1)
    t = torch.rand(8, 1, generator=g, dtype=torch.float64)
    for w2s in (_random_rigid(g), torch.stack([_random_rigid(g) for _ in range(8)])):
        o2, d2 = world_to_local((origins, dirs), w2s)
        world_pts = torch.cat([origins + t * dirs, torch.ones(8, 1, dtype=torch.float64)], dim=-1)
        expected = (world_pts @ w2s.T)[:, :3] if w2s.dim() == 2 else torch.einsum("nij,nj->ni", w2s, world_pts)[:, :3]
        torch.testing.assert_close(o2 + t * d2, expected)
        torch.testing.assert_close(d2.norm(dim=-1), torch.ones(8, dtype=torch.float64))
        torch.testing.assert_close(local_dirs_to_world(d2, w2s), dirs)
