"""A reference triangle rasteriser in plain torch (CPU or GPU), used by the data generator and tests.

It is the project's ground-truth renderer of meshes: masks, depth, normals, albedo lookups and
shadow maps of the synthetic dataset all come from here, and the tests re-rasterise registered
hands with it. Nothing here is differentiable on purpose (no soft edges): a pixel belongs to the
nearest triangle whose closed interior contains the pixel centre.

Algorithm (vectorised, no per-triangle Python loop):

1. Vertices arrive in *screen space*: continuous image coordinates ``(x, y)`` (pixel ``(u, v)``
   has its centre at ``(u + 0.5, v + 0.5)``, as in :func:`palm.render.rays.project`) and a positive
   depth ``z``.
2. Every triangle enumerates, row by row of its bounding box, the pixel centres of a span that
   contains its interior on that row (:func:`_row_spans`: the edge functions solved for ``x``,
   widened by their rounding error and a pixel, so the span never misses a centre that step 3
   accepts); a flat candidate list built with ``repeat_interleave``, processed in chunks of at
   most ``chunk`` candidates.
3. Edge functions give screen-space barycentrics; candidates with all three ``>= -1e-6`` are
   inside (shared edges belong to both triangles, so closed meshes have no cracks).
4. Depth: perspective projection interpolates ``1/z`` linearly in screen space and corrects the
   barycentrics (``b_i = (l_i / z_i) / sum_j l_j / z_j``); orthographic projection interpolates
   ``z`` directly.
5. Z-buffer with ``scatter_reduce("amin")`` over candidates; ties go to the larger face index.

Outputs: per-pixel face id (-1 = background), perspective-correct barycentrics, depth. Attributes
are interpolated with :func:`interpolate`.

Helpers build on it: :func:`rasterize_pinhole` (OpenCV camera ``K``, ``Rt``),
:func:`rasterize_uv` (a mesh unwrapped into its texture space) and :func:`shadow_visibility`
(orthographic shadow maps toward many directions at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Triangles with a vertex closer than this to the camera plane (metres) are dropped.
NEAR = 1e-4


@dataclass
class Fragments:
    """The rasteriser's per-pixel output for a batch of ``B`` images.

    Attributes:
        face_id: (B, H, W) long, index into ``faces``; -1 where no triangle covers the pixel.
        bary: (B, H, W, 3) float, barycentrics of the pixel centre in that face (perspective-correct
            for pinhole cameras); zeros on background.
        depth: (B, H, W) float, camera ``z`` (pinhole) or distance along the projection direction
            (orthographic); ``0`` on background.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, covered pixels."""
        return self.face_id >= 0


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    perspective: bool = True,
    chunk: int = 4_000_000,
) -> Fragments:
    """Z-buffered rasterisation of screen-space triangles.

    Args:
        screen: (B, V, 3) vertices: continuous image ``x`` (column), ``y`` (row), depth ``z > 0``.
        faces: (F, 3) long vertex indices shared by the batch.
        height, width: image size in pixels.
        perspective: ``True`` for pinhole projection (``1/z`` interpolation), ``False`` for
            orthographic / texture-space rasterisation (linear ``z``).
        chunk: most pixel candidates processed at once (bounds memory).

    Returns:
        :class:`Fragments` of shape (B, H, W).
    """
    if screen.dim() != 3 or screen.shape[-1] != 3:
        raise ValueError(f"screen must be (B, V, 3), got {tuple(screen.shape)}")
    device, dtype = screen.device, screen.dtype
    B = screen.shape[0]
    faces = faces.to(device=device, dtype=torch.long)
    F = faces.shape[0]
    tri = screen[:, faces]  # (B, F, 3, 3)
    tri = tri.reshape(B * F, 3, 3)
    n_pix = B * height * width

    zbuf = torch.full((n_pix,), math.inf, dtype=dtype, device=device)
    fbuf = torch.full((n_pix,), -1, dtype=torch.long, device=device)
    bbuf = torch.zeros((n_pix, 3), dtype=dtype, device=device)

    # Bounding boxes in pixel indices: centres u + 0.5 within [min x, max x].
    xs, ys, zs = tri[..., 0], tri[..., 1], tri[..., 2]
    finite = torch.isfinite(tri).all(dim=(1, 2))
    valid = finite & (zs > NEAR).all(dim=1) if perspective else finite
    u0 = torch.ceil(xs.amin(dim=1) - 0.5).clamp(min=0)
    u1 = torch.floor(xs.amax(dim=1) - 0.5).clamp(max=width - 1)
    v0 = torch.ceil(ys.amin(dim=1) - 0.5).clamp(min=0)
    v1 = torch.floor(ys.amax(dim=1) - 0.5).clamp(max=height - 1)
    bw = (u1 - u0 + 1).clamp(min=0)
    bh = (v1 - v0 + 1).clamp(min=0)
    bw = torch.where(valid, bw, torch.zeros_like(bw)).nan_to_num(0.0).long()
    bh = torch.where(valid, bh, torch.zeros_like(bh)).nan_to_num(0.0).long()
    count = bw * bh
    u0, v0 = u0.nan_to_num(0.0).long(), v0.nan_to_num(0.0).long()

    tri_ids = torch.nonzero(count > 0).squeeze(1)
    if tri_ids.numel() == 0:
        return _fragments(fbuf, bbuf, zbuf, B, height, width)
    coef, ok = _bary_coefficients(tri[tri_ids])  # only triangles that cover a pixel centre
    tri_ids, coef = tri_ids[ok], coef[ok]
    if tri_ids.numel() == 0:
        return _fragments(fbuf, bbuf, zbuf, B, height, width)
    zs = zs[tri_ids]
    span_tri, span_u, span_v, span_n = _row_spans(coef, u0[tri_ids], v0[tri_ids], bw[tri_ids], bh[tri_ids], width)
    if span_n.numel() == 0:
        return _fragments(fbuf, bbuf, zbuf, B, height, width)
    cum = torch.cumsum(span_n, 0)
    start = 0
    while start < span_n.numel():
        # Largest run of spans whose candidates fit in one chunk (at least one span).
        base = cum[start - 1] if start > 0 else torch.zeros((), dtype=cum.dtype, device=device)
        stop = int(torch.searchsorted(cum, base + chunk, right=True))
        stop = max(stop, start + 1)
        sl = slice(start, stop)
        _raster_chunk(
            coef, zs, tri_ids, span_tri[sl], span_u[sl], span_v[sl], span_n[sl], F, height, width, perspective,
            zbuf, fbuf, bbuf,
        )  # fmt: skip
        start = stop
    return _fragments(fbuf, bbuf, zbuf, B, height, width)


#: The inside test's tolerance on barycentrics (a centre on a shared edge belongs to both triangles).
INSIDE_EPS = 1e-6


def _row_spans(
    coef: torch.Tensor, u0: torch.Tensor, v0: torch.Tensor, bw: torch.Tensor, bh: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bounding-box row of each triangle, the run of pixel centres that can be inside it.

    On row ``v`` (``y = v + 0.5``) each edge function ``l_i = a_i x + b_i y + c_i >= -INSIDE_EPS``
    bounds ``x`` from one side; the bounds are relaxed by a bound on the rounding error of ``l_i``
    as :func:`_raster_chunk` evaluates it (in ``coef``'s dtype) and widened by one pixel, so the
    span holds every centre the inside test accepts (fewer candidates, same fragments).

    Args:
        coef: (T, 3, 3) barycentric coefficients (:func:`_bary_coefficients`).
        u0, v0, bw, bh: (T,) long bounding boxes (first column and row, width and height).
        width: image width (bounds ``x`` in the rounding-error estimate).

    Returns:
        span_tri (S,) index into ``coef``, span_u (S,) first column, span_v (S,) row, span_n (S,)
        pixel count (> 0), all long.
    """
    device = coef.device
    rows = bh
    t = torch.repeat_interleave(torch.arange(rows.numel(), device=device), rows)  # (R,)
    first = torch.cumsum(rows, 0) - rows
    v = v0[t] + (torch.arange(t.numel(), device=device) - first[t])
    c = coef[t].to(torch.float64)  # (R, 3, 3)
    a, b, k = c[..., 0], c[..., 1], c[..., 2]
    y = (v.to(torch.float64) + 0.5)[:, None]
    rhs = -INSIDE_EPS - b * y - k  # inside: a x >= rhs
    slack = 8.0 * torch.finfo(coef.dtype).eps * (a.abs() * (width + 1.0) + (b * y).abs() + k.abs())
    limit = rhs - slack
    safe = torch.where(a == 0, torch.ones_like(a), a)
    lo = torch.where(a > 0, limit / safe, torch.full_like(a, -math.inf)).amax(dim=1)
    hi = torch.where(a < 0, limit / safe, torch.full_like(a, math.inf)).amin(dim=1)
    first_u, last_u = u0[t], u0[t] + bw[t] - 1
    lo = lo.nan_to_num(-math.inf).clamp(first_u.to(torch.float64) - 2.0, last_u.to(torch.float64) + 2.0)
    hi = hi.nan_to_num(math.inf).clamp(first_u.to(torch.float64) - 2.0, last_u.to(torch.float64) + 2.0)
    span_u = torch.maximum(torch.ceil(lo - 0.5).long() - 1, first_u)
    span_end = torch.minimum(torch.floor(hi - 0.5).long() + 1, last_u)
    n = span_end - span_u + 1
    keep = torch.nonzero(n > 0).squeeze(1)
    return t[keep], span_u[keep], v[keep], n[keep]


def _raster_chunk(
    coef, zs, ids, span_tri, span_u, span_v, span_n, F, height, width, perspective, zbuf, fbuf, bbuf
) -> None:
    """Rasterise the row spans of triangles ``ids`` (flat batch*face indices) into the buffers, in place."""
    device = coef.device
    total = int(span_n.sum())
    span = torch.repeat_interleave(torch.arange(span_n.numel(), device=device), span_n)  # (N,)
    first = torch.cumsum(span_n, 0) - span_n
    u = span_u[span] + (torch.arange(total, device=device) - first[span])
    v = span_v[span]
    local_tri = span_tri[span]
    owner = ids[local_tri]
    c = coef[local_tri]  # (N, 3, 3): barycentric l_i = a_i x + b_i y + c_i
    px = (u.to(coef.dtype) + 0.5)[:, None]
    py = (v.to(coef.dtype) + 0.5)[:, None]
    lam = torch.addcmul(torch.addcmul(c[:, :, 2], c[:, :, 0], px), c[:, :, 1], py)
    inside = (lam >= -INSIDE_EPS).all(dim=-1)
    sel = torch.nonzero(inside).squeeze(1)
    if sel.numel() == 0:
        return
    owner, u, v, local_tri = owner[sel], u[sel], v[sel], local_tri[sel]
    lam = lam[sel].clamp(min=0.0)
    lam = lam / lam.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    z = zs[local_tri]  # (N, 3)
    if perspective:
        wz = lam / z
        depth = 1.0 / wz.sum(dim=-1)
        bary = wz * depth[:, None]
    else:
        depth = (lam * z).sum(dim=-1)
        bary = lam
    b = torch.div(owner, F, rounding_mode="floor")
    face = owner - b * F
    key = (b * height + v) * width + u
    old_z = zbuf[key]
    zbuf.scatter_reduce_(0, key, depth, reduce="amin")
    new_z = zbuf[key]
    # A pixel whose depth improved in this chunk forgets the face an earlier chunk left there;
    # among candidates at the buffer's depth the largest face index wins.
    fbuf[key[new_z < old_z]] = -1
    win = depth <= new_z
    key_w, face_w, bary_w = key[win], face[win], bary[win]
    fbuf.scatter_reduce_(0, key_w, face_w, reduce="amax")
    final = face_w == fbuf[key_w]
    bbuf[key_w[final]] = bary_w[final]


def _bary_coefficients(tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentrics as affine functions of the pixel position.

    Args:
        tri: (T, 3, 3) screen-space triangles (x, y, z).

    Returns:
        coef (T, 3, 3) with ``l_i(x, y) = coef[:, i, 0] x + coef[:, i, 1] y + coef[:, i, 2]``, and
        (T,) bool, non-degenerate triangles.
    """
    x, y = tri[..., 0], tri[..., 1]  # (T, 3)
    nxt, after = [1, 2, 0], [2, 0, 1]
    x1, y1 = x[:, nxt], y[:, nxt]  # next vertex
    x2, y2 = x[:, after], y[:, after]  # the one after
    # l_i is the signed area of (p, v_{i+1}, v_{i+2}) over the triangle's signed area.
    a = y1 - y2
    b = x2 - x1
    c = x1 * y2 - x2 * y1
    area = (a * x + b * y + c)[:, 0]
    ok = area.abs() > 1e-12
    safe = torch.where(ok, area, torch.ones_like(area))[:, None, None]
    return torch.stack([a, b, c], dim=-1) / safe, ok


def _fragments(fbuf, bbuf, zbuf, B, height, width) -> Fragments:
    covered = fbuf >= 0
    depth = torch.where(covered, zbuf, torch.zeros_like(zbuf))
    bary = torch.where(covered[:, None], bbuf, torch.zeros_like(bbuf))
    return Fragments(
        face_id=fbuf.view(B, height, width),
        bary=bary.view(B, height, width, 3),
        depth=depth.view(B, height, width),
    )


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at every covered pixel.

    Args:
        attributes: (V, C) shared by the batch, or (B, V, C) per image.
        faces: (F, 3) long.
        frags: fragments of shape (B, H, W).

    Returns:
        (B, H, W, C); zeros on background.
    """
    B, H, W = frags.face_id.shape
    if attributes.dim() == 2:
        attributes = attributes.unsqueeze(0).expand(B, -1, -1)
    C = attributes.shape[-1]
    faces = faces.to(device=attributes.device, dtype=torch.long)
    out = torch.zeros(B, H, W, C, dtype=attributes.dtype, device=attributes.device)
    bi, yi, xi = torch.nonzero(frags.mask, as_tuple=True)
    if bi.numel() == 0:
        return out
    fid = frags.face_id[bi, yi, xi]
    vid = faces[fid]  # (N, 3)
    vals = attributes[bi[:, None], vid]  # (N, 3, C)
    w = frags.bary[bi, yi, xi].to(attributes.dtype)
    out[bi, yi, xi] = (vals * w[..., None]).sum(dim=1)
    return out


def rasterize_pinhole(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    Rt: torch.Tensor,
    height: int,
    width: int,
) -> Fragments:
    """Rasterise world-space meshes seen by OpenCV pinhole cameras.

    Args:
        vertices: (V, 3) or (B, V, 3) world points.
        faces: (F, 3) long.
        K: (3, 3) or (B, 3, 3) intrinsics.
        Rt: (4, 4) or (B, 4, 4) world -> camera.
        height, width: image size.

    Returns:
        :class:`Fragments` (B, H, W); ``depth`` is the camera-space ``z`` in the units of ``vertices``.
    """
    screen = project_screen(vertices, K, Rt)
    return rasterize(screen, faces, height, width, perspective=True)


def project_screen(vertices: torch.Tensor, K: torch.Tensor, Rt: torch.Tensor) -> torch.Tensor:
    """World points -> ``(x, y, z)``: continuous image coordinates and camera depth.

    Args:
        vertices: (V, 3) or (B, V, 3).
        K: (3, 3) or (B, 3, 3).
        Rt: (4, 4) or (B, 4, 4).

    Returns:
        (B, V, 3).
    """
    if vertices.dim() == 2:
        vertices = vertices.unsqueeze(0)
    B = max(vertices.shape[0], K.shape[0] if K.dim() == 3 else 1, Rt.shape[0] if Rt.dim() == 3 else 1)
    vertices = vertices.expand(B, -1, -1)
    K = K.to(vertices.dtype).expand(B, 3, 3)
    Rt = Rt.to(vertices.dtype).expand(B, 4, 4)
    p_cam = vertices @ Rt[:, :3, :3].transpose(1, 2) + Rt[:, None, :3, 3]
    z = p_cam[..., 2:3]
    p_img = p_cam @ K.transpose(1, 2)
    xy = p_img[..., :2] / torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    return torch.cat([xy, z], dim=-1)


def rasterize_uv(uv: torch.Tensor, faces: torch.Tensor, size: int) -> Fragments:
    """Rasterise a mesh unwrapped into its texture space (a ``size`` x ``size`` texture).

    Texture convention: ``u`` to the right, ``v`` up; texel row 0 is ``v = 1`` (OBJ/glTF image
    order), i.e. ``x = u * size``, ``y = (1 - v) * size``.

    Args:
        uv: (V, 2) texture coordinates in [0, 1] (one per mesh vertex).
        faces: (F, 3) long.
        size: texture side in texels.

    Returns:
        :class:`Fragments` (1, size, size) with linear barycentrics.
    """
    screen = torch.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size, torch.ones_like(uv[:, 0])], dim=-1)
    return rasterize(screen.unsqueeze(0), faces, size, size, perspective=False)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup with the convention of :func:`rasterize_uv`.

    Args:
        texture: (T, T, C) texels (row 0 = ``v = 1``).
        uv: (..., 2) texture coordinates.

    Returns:
        (..., C).
    """
    shape = uv.shape[:-1]
    grid = torch.stack([uv[..., 0] * 2 - 1, (1 - uv[..., 1]) * 2 - 1], dim=-1).reshape(1, 1, -1, 2)
    img = texture.permute(2, 0, 1).unsqueeze(0).to(uv.dtype)
    out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.reshape(*shape, texture.shape[-1])


def orthographic_frames(dirs: torch.Tensor) -> torch.Tensor:
    """Right-handed orthonormal frames whose third axis is each direction.

    Args:
        dirs: (D, 3) unit directions.

    Returns:
        (D, 3, 3) rows ``e1, e2, d``.
    """
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    helper = torch.where(
        (d[:, 1].abs() < 0.9)[:, None],
        torch.tensor([0.0, 1.0, 0.0], dtype=d.dtype, device=d.device).expand_as(d),
        torch.tensor([1.0, 0.0, 0.0], dtype=d.dtype, device=d.device).expand_as(d),
    )
    e1 = torch.linalg.cross(helper, d)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(d, e1)
    return torch.stack([e1, e2, d], dim=1)


def shadow_visibility(
    points: torch.Tensor,
    normals: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    dirs: torch.Tensor,
    resolution: int = 128,
    bias_texels: float = 1.5,
    offset_texels: float = 1.0,
    batch: int = 64,
) -> torch.Tensor:
    """Binary visibility of points toward directions by orthographic shadow maps of the mesh.

    For each direction ``l`` the mesh is rasterised orthographically looking along ``-l`` into a
    ``resolution``-square depth map that covers the mesh's bounding sphere. A point (moved by
    ``offset_texels`` along its normal, to leave its own surface) is visible toward ``l`` when
    its distance from the light plane is at most the map's nearest depth plus ``bias_texels``
    texels, or when it falls outside the map.

    Args:
        points: (N, 3) surface points (e.g. the vertices).
        normals: (N, 3) unit normals at the points.
        vertices: (V, 3) occluding mesh.
        faces: (F, 3) long.
        dirs: (D, 3) unit directions toward the light.
        resolution: shadow-map side in texels.
        bias_texels, offset_texels: depth bias and normal offset, in texels of the map.
        batch: shadow maps rasterised at once.

    Returns:
        (N, D) float in {0, 1}.
    """
    centre = 0.5 * (vertices.amin(0) + vertices.amax(0))
    radius = float((vertices - centre).norm(dim=-1).max()) * 1.02 + 1e-6
    texel = 2 * radius / resolution
    frames = orthographic_frames(dirs.to(vertices.dtype))  # (D, 3, 3)
    p = points + normals * (offset_texels * texel)
    out = []
    for start in range(0, dirs.shape[0], batch):
        fr = frames[start : start + batch]  # (b, 3, 3)
        local_v = (vertices - centre) @ fr.transpose(1, 2)  # (b, V, 3)
        screen = torch.stack(
            [
                (local_v[..., 0] + radius) / texel,
                (local_v[..., 1] + radius) / texel,
                radius - local_v[..., 2],  # distance from the light plane, > 0
            ],
            dim=-1,
        )
        frags = rasterize(screen, faces, resolution, resolution, perspective=False)
        local_p = (p - centre) @ fr.transpose(1, 2)  # (b, N, 3)
        col = torch.floor((local_p[..., 0] + radius) / texel).long()
        row = torch.floor((local_p[..., 1] + radius) / texel).long()
        inside_map = (col >= 0) & (col < resolution) & (row >= 0) & (row < resolution)
        col_c, row_c = col.clamp(0, resolution - 1), row.clamp(0, resolution - 1)
        bidx = torch.arange(fr.shape[0], device=points.device)[:, None].expand_as(col_c)
        occ_depth = frags.depth[bidx, row_c, col_c]
        covered = frags.face_id[bidx, row_c, col_c] >= 0
        depth_p = radius - local_p[..., 2]
        lit = ~inside_map | ~covered | (depth_p <= occ_depth + bias_texels * texel)
        out.append(lit.T.to(points.dtype))
    return torch.cat(out, dim=1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: (V, 3) or (B, V, 3).
        faces: (F, 3) long, counter-clockwise seen from outside.

    Returns:
        Same shape as ``vertices``.
    """
    batched = vertices.dim() == 3
    v = vertices if batched else vertices.unsqueeze(0)
    faces = faces.to(device=v.device, dtype=torch.long)
    tri = v[:, faces]  # (B, F, 3, 3)
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])  # (B, F, 3)
    n = torch.zeros_like(v)
    for k in range(3):
        n.index_add_(1, faces[:, k], fn)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return n if batched else n[0]


def cluster_mesh(vertices: torch.Tensor, faces: torch.Tensor, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A coarse proxy of a mesh by vertex clustering (for shadow maps, not for display).

    Vertices in the same ``cell``-sized grid cube are merged into their mean; triangles that
    collapse are dropped. The proxy deviates from the mesh by at most ``cell * sqrt(3)``.

    Args:
        vertices: (V, 3). faces: (F, 3) long. cell: cube side (units of ``vertices``).

    Returns:
        vertices (U, 3), faces (G, 3) long.
    """
    key = torch.floor(vertices / cell).long()
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    sums = torch.zeros(uniq.shape[0], 3, dtype=vertices.dtype, device=vertices.device)
    sums.index_add_(0, inverse, vertices)
    counts = torch.bincount(inverse, minlength=uniq.shape[0]).to(vertices.dtype)
    merged = sums / counts[:, None]
    f = inverse[faces.to(vertices.device)]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return merged, f[keep]
