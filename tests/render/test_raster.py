"""The one triangle rasteriser (palm.render.raster): exact coverage, the z-buffer, float64 precision."""

from __future__ import annotations

import numpy as np
import torch

from palm.render.raster import interpolate, rasterize


def _screen(xy, depth=None, dtype=torch.float64):
    """(F, 3, 2) triangles (and (F, 3) depths) -> unshared (1, 3F, 3) screen vertices and faces."""
    xy = torch.as_tensor(np.asarray(xy, np.float64), dtype=dtype).reshape(-1, 2)
    z = torch.ones(len(xy), 1, dtype=dtype) if depth is None else torch.as_tensor(
        np.asarray(depth, np.float64), dtype=dtype).reshape(-1, 1)
    return torch.cat([xy, z], 1)[None], torch.arange(len(xy)).reshape(-1, 3)


def _covered(frags):
    face = frags.face_id[0].reshape(-1)
    pix = torch.nonzero(face >= 0).squeeze(1)
    return pix.numpy(), face[pix].numpy(), frags.bary[0].reshape(-1, 3)[pix].numpy()


def test_rasterize_covers_a_split_square_exactly_once():
    h, w = 37, 53
    square = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    tris = square[[[0, 1, 2], [0, 2, 3]]]
    screen, faces = _screen(tris)
    pix, tri, bary = _covered(rasterize(screen, faces, h, w, perspective=False))
    assert len(pix) == h * w and len(np.unique(pix)) == h * w  # no cracks on the diagonal
    np.testing.assert_allclose(bary.sum(1), 1, atol=1e-6)
    # barycentric interpolation of the corner coordinates gives back the pixel centre
    centres = np.einsum("nk,nkc->nc", bary, tris[tri])
    np.testing.assert_allclose(centres, np.stack([pix % w + 0.5, pix // w + 0.5], 1), atol=1e-4)


def test_rasterize_keeps_the_nearest_fragment_in_either_order():
    near = [[2, 2], [30, 2], [2, 30]]
    far = [[0, 0], [32, 0], [0, 32]]
    for order in ([0, 1], [1, 0]):
        xy = np.array([near, far], float)[order]
        depth = np.array([[1.0] * 3, [2.0] * 3])[order]
        screen, faces = _screen(xy, depth)
        pix, tri, _ = _covered(rasterize(screen, faces, 32, 32))
        near_idx = order.index(0)
        inside_near = (pix % 32 > 3) & (pix // 32 > 3) & (pix % 32 + pix // 32 < 28)
        assert (tri[inside_near] == near_idx).all()
        assert (tri[~inside_near] != near_idx).any()


def test_float64_keeps_small_triangles_exact_in_large_images():
    """A pixel-sized triangle far from the origin of a large image: float64 screen coordinates give
    exact barycentrics (interpolating the corners returns the pixel centre)."""
    size = 1024
    x0, y0 = 1001.2, 977.9
    tri = np.array([[[x0, y0], [x0 + 2.3, y0 + 0.4], [x0 + 0.7, y0 + 2.6]]])
    screen, faces = _screen(tri)
    frags = rasterize(screen, faces, size, size, perspective=False)
    pix, _, bary = _covered(frags)
    assert len(pix) >= 1
    centres = np.einsum("nk,kc->nc", bary, tri[0])
    np.testing.assert_allclose(centres, np.stack([pix % size + 0.5, pix // size + 0.5], 1), atol=1e-9)
    xy = interpolate(screen[0, :, :2], faces, frags)[0].reshape(-1, 2)[torch.as_tensor(pix)].numpy()
    np.testing.assert_allclose(xy, centres, atol=1e-9)


def test_row_spans_miss_no_centre_of_slivers_or_far_triangles():
    """The per-row spans only skip work: every triangle alone covers exactly the centres where the
    inside test (evaluated on every pixel of the image) accepts it, slivers and float32 included."""
    from palm.render.raster import INSIDE_EPS, _bary_coefficients

    g = torch.Generator().manual_seed(7)
    h, w = 48, 64
    base = torch.rand(40, 1, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h])
    long_side = torch.randn(40, 1, 2, generator=g, dtype=torch.float64) * 40
    spread = torch.tensor([0.05, 2.0], dtype=torch.float64)[torch.arange(40) % 2, None, None]  # slivers, blobs
    jitter = torch.randn(40, 3, 2, generator=g, dtype=torch.float64) * spread
    xy = base + torch.rand(40, 3, 1, generator=g, dtype=torch.float64) * long_side + jitter
    px = (torch.arange(w, dtype=torch.float64) + 0.5).repeat(h)[:, None]
    py = (torch.arange(h, dtype=torch.float64) + 0.5).repeat_interleave(w)[:, None]
    for dtype in (torch.float32, torch.float64):
        for tri in xy:
            screen = torch.cat([tri, torch.ones(3, 1, dtype=torch.float64)], 1).to(dtype)
            coef, ok = _bary_coefficients(screen[None])
            if not ok[0]:
                continue
            c = coef[0].expand(h * w, 3, 3)
            lam = torch.addcmul(torch.addcmul(c[:, :, 2], c[:, :, 0], px.to(dtype)), c[:, :, 1], py.to(dtype))
            expected = (lam >= -INSIDE_EPS).all(dim=-1).reshape(h, w)
            got = rasterize(screen[None], torch.arange(3)[None], h, w, perspective=False).mask[0]
            assert torch.equal(got, expected)
