"""The training ray sampler (spec section 4 "edge sampler" + LPIPS patch)."""

from __future__ import annotations

import pytest
import torch

from palm.train.sampling import edge_map, gather_pixels, patch_origin, sample_pixels, sobel_kernels


def _box_mask(h=60, w=80, y0=20, y1=40, x0=30, x1=55):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_sobel_kernel_is_opencvs_7x7():
    kx, ky = sobel_kernels(7)
    smooth = torch.tensor([1.0, 6, 15, 20, 15, 6, 1])
    deriv = torch.tensor([-1.0, -4, -5, 0, 5, 4, 1])
    assert torch.equal(kx, smooth[:, None] * deriv[None, :])
    assert torch.equal(ky, kx.T)
    k3, _ = sobel_kernels(3)
    assert torch.equal(k3, torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]))


def test_edge_map_is_a_band_around_the_boundary():
    m = _box_mask()
    e = edge_map(m)
    # a 7x7 Sobel responds within 3 px of the boundary, 5 dilations add 5 px: band of 8 px each side
    row = e[30]
    cols = row.nonzero()[:, 0].tolist()
    assert cols == list(range(30 - 8, 30 + 8)) + list(range(55 - 8, 55 + 8))
    assert not bool(e[30, 42])  # centre of the box, > 8 px from the boundary
    assert not bool(e[0, 0])  # far background
    assert bool(e[20, 40]) and bool(e[19, 40])  # both sides of the top edge


def test_split_inside_edge_uniform_and_patch_last():
    m = _box_mask()
    e = edge_map(m)
    g = torch.Generator().manual_seed(1)
    n, p = 20, 8
    px, shape = sample_pixels(m, n, p, ((8, 1), (16, 2)), g)
    assert shape == (p, p)
    assert px.shape == (n + p * p, 2)
    # integer pixel indices (u, v): the +0.5 of the pixel centre is pixel_rays' alone
    assert px.dtype == torch.int64
    idx = px
    inside = m[idx[:, 1], idx[:, 0]]
    on_edge = e[idx[:, 1], idx[:, 0]]
    assert bool(inside[: int(0.6 * n)].all())
    assert bool(on_edge[int(0.6 * n) : int(0.6 * n) + int(0.3 * n)].all())
    # the patch: a regular grid with stride 1 or 2, row-major, inside the image
    patch = px[n:].reshape(p, p, 2)
    dx = patch[:, 1:, 0] - patch[:, :-1, 0]
    dy = patch[1:, :, 1] - patch[:-1, :, 1]
    stride = float(dx[0, 0])
    assert stride in (1.0, 2.0)
    assert torch.all(dx == stride) and torch.all(dy == stride)
    assert torch.all(patch[..., 1][:, 1:] == patch[..., 1][:, :-1])  # rows share y
    assert float(px[:, 0].min()) >= 0 and float(px[:, 0].max()) < 80
    assert float(px[:, 1].min()) >= 0 and float(px[:, 1].max()) < 60


def test_patch_stays_in_enlarged_mask_box():
    m = _box_mask()
    g = torch.Generator().manual_seed(0)
    margin = 4
    for _ in range(30):
        x0, y0 = patch_origin(m, 16, margin, g)
        assert 30 - margin <= x0 and x0 + 16 <= 55 + margin
        assert 20 - margin <= y0 and y0 + 16 <= 40 + margin


def test_both_patch_choices_are_used_and_seeded():
    m = _box_mask()
    strides = set()
    for seed in range(12):
        px, _ = sample_pixels(m, 3, 8, ((8, 1), (16, 2)), torch.Generator().manual_seed(seed))
        strides.add(float(px[-1, 0] - px[-2, 0]))
    assert strides == {1.0, 2.0}
    a, _ = sample_pixels(m, 10, 8, ((8, 1), (16, 2)), torch.Generator().manual_seed(5))
    b, _ = sample_pixels(m, 10, 8, ((8, 1), (16, 2)), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_empty_mask_falls_back_to_uniform_and_paper_counts():
    m = torch.zeros(40, 40, dtype=torch.bool)
    px, _ = sample_pixels(m, 3, 0, ((32, 1),), torch.Generator().manual_seed(0))
    assert px.shape == (3, 2)
    # paper: 3 pixels = 1 inside + 0 edge + 2 uniform, then a 32x32 patch
    px, shape = sample_pixels(_box_mask(80, 80), 3, 32, ((32, 1), (64, 2)), torch.Generator().manual_seed(0))
    assert px.shape == (3 + 1024, 2) and shape == (32, 32)


def test_choices_larger_than_image_are_skipped():
    m = _box_mask(40, 40, 10, 30, 10, 30)
    for seed in range(5):
        px, _ = sample_pixels(m, 4, 16, ((16, 1), (64, 4)), torch.Generator().manual_seed(seed))
        assert float(px[-1, 0] - px[-2, 0]) == 1.0


def test_bad_choices_raise():
    m = _box_mask()
    with pytest.raises(ValueError):
        sample_pixels(m, 4, 8, ((20, 2),))
    with pytest.raises(ValueError):
        sample_pixels(torch.ones(4, 4, dtype=torch.bool), 4, 8, ((8, 1),))


def test_gather_pixels_reads_the_pixel_under_the_centre():
    img = torch.arange(12, dtype=torch.float32).reshape(3, 4, 1)
    px = torch.tensor([[0, 0], [3, 2], [1, 2]])
    assert gather_pixels(img, px)[:, 0].tolist() == [0.0, 11.0, 9.0]
    with pytest.raises(ValueError):  # continuous coordinates are not pixels
        gather_pixels(img, px.float() + 0.5)
