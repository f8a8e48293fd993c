"""Orbit camera maths (NumPy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.camera import OrbitCamera, gl_projection


def project(cam: OrbitCamera, x: np.ndarray, w: int = 200, h: int = 100) -> np.ndarray:
    rt, k = cam.world_to_camera(), cam.intrinsics(w, h)
    xc = rt[:3, :3] @ x + rt[:3, 3]
    uv = k @ xc
    return uv[:2] / uv[2]


def test_world_to_camera_is_a_rigid_opencv_frame():
    cam = OrbitCamera(target=np.array([0.1, 0.2, 0.3]), distance=2.0, azimuth=0.7, elevation=0.4)
    rt = cam.world_to_camera()
    r = rt[:3, :3]
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1.0)
    # the target is straight ahead at the orbit distance; the eye is the camera centre
    t_cam = r @ cam.target + rt[:3, 3]
    assert np.allclose(t_cam, [0, 0, 2.0])
    assert np.allclose(r @ cam.eye() + rt[:3, 3], 0, atol=1e-12)
    # world up (+y) points up in the image (negative camera y)
    assert (r @ np.array([0, 1.0, 0]))[1] < 0


def test_target_projects_to_image_centre_and_up_is_up():
    cam = OrbitCamera(distance=1.0, azimuth=0.0, elevation=0.0)
    assert np.allclose(project(cam, np.zeros(3)), [100, 50])
    above = project(cam, np.array([0, 0.1, 0]))
    right = project(cam, np.array([0.1, 0, 0]))
    assert above[1] < 50 and right[0] > 100  # seen from +z: +x is to the right


def test_orbit_keeps_distance_and_clamps_elevation():
    cam = OrbitCamera(distance=1.5)
    cam.orbit(1000, 10000)
    assert math.isclose(np.linalg.norm(cam.eye() - cam.target), 1.5)
    assert cam.elevation <= math.radians(89.0) + 1e-12


def test_pan_moves_the_target_with_the_drag():
    cam = OrbitCamera(distance=1.0)
    point = np.array([0.0, 0.0, 0.0])
    before = project(cam, point, 200, 100)
    cam.pan(10, 0, 100)
    after = project(cam, point, 200, 100)
    assert np.isclose(after[0] - before[0], 10, atol=1e-6) and np.isclose(after[1], before[1])


def test_zoom_and_frame():
    cam = OrbitCamera(distance=1.0)
    cam.zoom(1)
    assert math.isclose(cam.distance, 0.9)
    pts = np.random.default_rng(0).uniform(-0.1, 0.1, (200, 3)) + [1, 2, 3]
    cam.frame(pts)
    for p in pts:
        u, v = project(cam, p, 100, 100)
        assert 0 <= u <= 100 and 0 <= v <= 100


def test_gl_projection_maps_pixels_to_ndc_top_row_first():
    cam = OrbitCamera(distance=1.0)
    w, h = 64, 32
    k = cam.intrinsics(w, h)
    p = gl_projection(k, w, h, 0.1, 10.0)
    for x_cam in (np.array([0.05, -0.02, 1.0]), np.array([-0.1, 0.1, 2.0])):
        uv = k @ x_cam
        uv = uv[:2] / uv[2]
        clip = p @ np.append(x_cam, 1.0)
        ndc = clip[:3] / clip[3]
        assert np.allclose(ndc[:2], [2 * uv[0] / w - 1, 2 * uv[1] / h - 1])
        assert -1 < ndc[2] < 1
    near = p @ np.array([0, 0, 0.1, 1.0])
    far = p @ np.array([0, 0, 10.0, 1.0])
    assert np.isclose(near[2] / near[3], -1) and np.isclose(far[2] / far[3], 1)


def test_photo_camera_reproduces_the_photo_framing():
    from app.camera import PhotoCamera, fit_intrinsics, photo_rect

    K = np.array([[500.0, 0, 300], [0, 500.0, 200], [0, 0, 1]])
    rt = np.eye(4)
    rt[:3, :3] = np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1.0]])
    rt[:3, 3] = [0.01, 0.02, 0.6]
    transl = np.array([0.05, -0.02, 0.01])
    photo = PhotoCamera.from_avatar({"K": K.tolist(), "Rt": rt.tolist(), "width": 640, "height": 400}, transl)
    cam = OrbitCamera()
    cam.use_photo(photo)
    x_studio = np.array([0.02, 0.03, -0.01])  # a point of the hand as the studio draws it (no transl)
    x_fit = x_studio + transl
    uv_photo = K @ (rt[:3, :3] @ x_fit + rt[:3, 3])
    uv_photo = uv_photo[:2] / uv_photo[2]
    for w, h in ((640, 400), (800, 800), (300, 600)):
        k = cam.intrinsics(w, h)
        assert np.allclose(k, fit_intrinsics(K, 640, 400, w, h))
        r = cam.world_to_camera()
        uv = k @ (r[:3, :3] @ x_studio + r[:3, 3])
        uv = uv[:2] / uv[2]
        x0, y0, x1, y1 = photo_rect(photo, w, h)
        s = (x1 - x0) / 640
        assert np.allclose(uv, [x0 + s * uv_photo[0], y0 + s * uv_photo[1]], atol=1.0)
        assert (x1 - x0) / (y1 - y0) == pytest.approx(640 / 400, rel=0.01)
        assert x0 == 0 or y0 == 0  # letterboxed along one axis only


def test_leaving_the_photo_view_keeps_eye_and_direction():
    from app.camera import PhotoCamera

    cam = OrbitCamera(target=np.zeros(3), distance=0.5)
    start = OrbitCamera(target=np.array([0.01, 0.0, 0.02]), distance=0.45, azimuth=1.1, elevation=0.3)
    photo = PhotoCamera(start.intrinsics(256, 256), start.world_to_camera(), 256, 256)
    cam.use_photo(photo)
    eye = cam.eye().copy()
    cam.leave_photo()
    assert cam.photo is None
    assert np.allclose(cam.eye(), eye, atol=1e-9)
    assert np.allclose(cam.world_to_camera()[2, :3], start.world_to_camera()[2, :3], atol=1e-9)


def test_frame_centres_and_fits_narrow_views():
    pts = np.random.default_rng(1).uniform(-0.1, 0.1, (300, 3)) * [2.0, 0.5, 0.5] + [0.3, -0.1, 0.2]
    for aspect, (w, h) in ((1.0, (100, 100)), (0.5, (50, 100)), (2.0, (200, 100))):
        cam = OrbitCamera(azimuth=0.5, elevation=0.9)
        cam.home(pts, 0.5, 0.9, aspect)
        uv = np.array([project(cam, p, w, h) for p in pts])
        assert (uv >= 0).all() and (uv[:, 0] <= w).all() and (uv[:, 1] <= h).all()
        centre = project(cam, 0.5 * (pts.min(0) + pts.max(0)), w, h)
        assert np.allclose(centre, [w / 2, h / 2])
