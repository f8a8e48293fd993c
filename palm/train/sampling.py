"""Training ray sampler of PALM-Net: the "edge sampler" plus one LPIPS patch per image (spec section 4).

Per image, :func:`sample_pixels` returns ``n_pixels`` single pixels, split

* ``int(0.6 n)`` uniformly among the mask's pixels,
* ``int(0.3 n)`` uniformly on the mask edge (the non-zero response of a 7x7 Sobel filter of the
  mask, dilated 5 times with a 3x3 square),
* the rest uniformly over the whole image,

followed by **one patch** of ``patch_size x patch_size`` rays (row-major, last): a crop of side
``P`` placed uniformly inside the mask's bounding box enlarged by ``margin`` pixels, subsampled with
stride ``k``, where ``(P, k)`` is drawn uniformly from ``patch_choices`` (``P = patch_size * k``).
An empty pool (no mask, no edge) falls back to uniform pixels.

Pixels are integer indices ``(u, v)`` (``u`` = column, ``v`` = row), the convention of
``docs/architecture.md``: the pixel's centre ``(u + 0.5, v + 0.5)`` is taken by
:func:`palm.render.rays.pixel_rays` and nowhere else, and :func:`gather_pixels` reads pixel
``(u, v)`` itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INSIDE_FRACTION = 0.6
EDGE_FRACTION = 0.3
SOBEL_SIZE = 7
EDGE_DILATIONS = 5


def sobel_kernels(size: int = SOBEL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's separable Sobel derivative kernels of odd ``size``.

    Returns:
        ``(kx, ky)``, each ``(size, size)``: ``kx = smooth^T deriv`` (d/dx), ``ky = kx^T``.
    """
    smooth = _binomial(size - 1)  # e.g. [1, 6, 15, 20, 15, 6, 1]
    base = _binomial(size - 3)
    deriv = F.pad(base, (2, 0)) - F.pad(base, (0, 2))  # base * [-1, 0, 1], e.g. [-1, -4, -5, 0, 5, 4, 1]
    kx = smooth[:, None] * deriv[None, :]
    return kx, kx.T.contiguous()


def _binomial(order: int) -> torch.Tensor:
    """Row ``order`` of Pascal's triangle, ``(order + 1,)`` float32."""
    row = torch.tensor([1.0])
    for _ in range(order):
        row = F.pad(row, (1, 0)) + F.pad(row, (0, 1))
    return row


def edge_map(mask: torch.Tensor, sobel_size: int = SOBEL_SIZE, dilations: int = EDGE_DILATIONS) -> torch.Tensor:
    """Band around the mask boundary.

    Args:
        mask: (H, W) bool.
        sobel_size: odd Sobel kernel size.
        dilations: number of 3x3 dilations of the Sobel response.

    Returns:
        (H, W) bool, True where the (replicate-padded) Sobel gradient magnitude of the mask is
        non-zero, dilated ``dilations`` times.
    """
    m = mask.to(torch.float32)[None, None]
    kx, ky = sobel_kernels(sobel_size)
    r = sobel_size // 2
    padded = F.pad(m, (r, r, r, r), mode="replicate")
    gx = F.conv2d(padded, kx[None, None].to(m))
    gy = F.conv2d(padded, ky[None, None].to(m))
    edge = ((gx.abs() + gy.abs()) > 1e-6).to(torch.float32)
    if dilations > 0:
        k = 2 * dilations + 1  # n dilations with 3x3 == one with (2n+1)x(2n+1)
        edge = F.max_pool2d(edge, k, stride=1, padding=dilations)
    return edge[0, 0] > 0


def _draw(pool: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` flat indices drawn uniformly (with replacement) from ``pool (M,)``."""
    pick = torch.randint(0, pool.numel(), (n,), generator=generator)
    return pool[pick]


def patch_origin(
    mask: torch.Tensor, extent: int, margin: int, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` of a square crop of side ``extent`` inside the enlarged mask box.

    The crop lies inside the mask bounding box grown by ``margin`` pixels (clipped to the image);
    where that region is smaller than ``extent`` the crop is centred on it and kept in the image.

    Args:
        mask: (H, W) bool (all-empty: the whole image is the region).
        extent: crop side in pixels (<= min(H, W)).
        margin: pixels added on each side of the bounding box.
    """
    h, w = mask.shape
    if bool(mask.any()):
        rows = mask.any(1).nonzero()[:, 0]
        cols = mask.any(0).nonzero()[:, 0]
        y_lo, y_hi = max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)
        x_lo, x_hi = max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)
    else:
        y_lo, y_hi, x_lo, x_hi = 0, h, 0, w
    out = []
    for lo, hi, size in ((x_lo, x_hi, w), (y_lo, y_hi, h)):
        if hi - lo >= extent:
            start = lo + int(torch.randint(0, hi - lo - extent + 1, (1,), generator=generator))
        else:
            start = (lo + hi - extent) // 2
        out.append(min(max(start, 0), size - extent))
    return out[0], out[1]


def sample_pixels(
    mask: torch.Tensor,
    n_pixels: int,
    patch_size: int,
    patch_choices: tuple[tuple[int, int], ...],
    generator: torch.Generator | None = None,
    margin: int | None = None,
    edge: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pixels of one training image: edge-sampled singles, then one strided patch (spec section 4).

    Args:
        mask: (H, W) bool hand mask.
        n_pixels: number of single pixels (inside / edge / uniform = 60 / 30 / rest %).
        patch_size: patch side in rays (0: no patch).
        patch_choices: ``(P, k)`` pairs, crop side and stride, ``P = patch_size * k``; choices with
            ``P`` larger than the image are skipped (stride 1 when none fits).
        generator: random generator (CPU).
        margin: enlargement of the mask box for the patch (default: ``patch_size``, as the paper's
            32-px margin for 32-px patches).
        edge: precomputed :func:`edge_map` of ``mask`` (optional, saves a convolution per call).

    Returns:
        ``pixels (n_pixels + patch_size**2, 2)`` int64 pixel indices ``(u, v)``, the patch rays
        last in row-major order, and ``patch_shape = (patch_size, patch_size)`` (``(0, 0)`` when
        ``patch_size`` is 0).

    Raises:
        ValueError: a ``(P, k)`` with ``P != patch_size * k``, or an image smaller than the patch.
    """
    mask = mask.to(torch.bool).cpu()
    h, w = mask.shape
    for p, k in patch_choices if patch_size > 0 else ():
        if p != patch_size * k:
            raise ValueError(f"patch choice (P={p}, k={k}) does not give a {patch_size}-ray patch")
    n_inside = int(n_pixels * INSIDE_FRACTION)
    n_edge = int(n_pixels * EDGE_FRACTION)
    n_uniform = n_pixels - n_inside - n_edge
    flat = mask.reshape(-1)
    inside = flat.nonzero()[:, 0]
    if edge is None:
        edge = edge_map(mask) if n_edge > 0 else torch.zeros_like(mask)
    edge_pool = edge.reshape(-1).nonzero()[:, 0]
    everything = torch.arange(h * w)
    parts = []
    for pool, n in ((inside, n_inside), (edge_pool, n_edge)):
        if n == 0:
            continue
        if pool.numel() == 0:
            n_uniform += n
            continue
        parts.append(_draw(pool, n, generator))
    if n_uniform > 0:
        parts.append(_draw(everything, n_uniform, generator))
    idx = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    singles = torch.stack([idx % w, idx // w], dim=-1)
    if patch_size <= 0:
        return singles, (0, 0)
    if patch_size > min(h, w):
        raise ValueError(f"image {w}x{h} is smaller than the {patch_size}x{patch_size} patch")
    fitting = [(p, k) for p, k in patch_choices if p <= min(h, w)] or [(patch_size, 1)]
    p, k = fitting[int(torch.randint(0, len(fitting), (1,), generator=generator))]
    x0, y0 = patch_origin(mask, p, patch_size if margin is None else margin, generator)
    offs = torch.arange(patch_size) * k
    yy, xx = torch.meshgrid(y0 + offs, x0 + offs, indexing="ij")
    patch = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    return torch.cat([singles, patch]), (patch_size, patch_size)


def gather_pixels(image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Values of ``image (H, W, C)`` at integer pixels ``pixels (R, 2)`` = ``(u, v)`` -> ``(R, C)``.

    Raises:
        ValueError: non-integer pixel positions (continuous coordinates are not pixels).
    """
    if pixels.is_floating_point():
        raise ValueError("gather_pixels takes integer pixel indices (u, v), not continuous coordinates")
    h, w = image.shape[:2]
    u = pixels[:, 0].clamp(0, w - 1)
    v = pixels[:, 1].clamp(0, h - 1)
    return image[v.to(image.device), u.to(image.device)]
