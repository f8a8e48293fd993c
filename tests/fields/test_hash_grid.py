"""Hash-grid encoding: the PyTorch twin against a brute-force per-point reference of tiny-cuda-nn's
grid (written independently with Python integers), the level mask, the parameter layout, and
(GPU only) weight transfer to tiny-cuda-nn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from palm.backends import has_cuda, has_tcnn
from palm.config import PRESETS, HashGridConfig
from palm.fields.encoding import HashGridEncoding, active_levels, grid_levels, n_params

PRIMES = (1, 2654435761, 805459861)

# Mix of dense and hashed levels: resolutions 4, 7, 11, 17, 27, 42 with T = 1024.
SMALL = HashGridConfig(
    n_levels=6,
    n_features_per_level=2,
    log2_hashmap_size=10,
    base_resolution=4,
    per_level_scale=1.6,
    start_level=2,
    start_step=100,
    update_steps=10,
)


def reference_layout(cfg: HashGridConfig) -> list[tuple[float, int, int, int]]:
    """(scale, resolution, offset, size) per level, from the tcnn rules (float32 scale, as on the GPU)."""
    out, offset = [], 0
    f32 = np.float32
    for level in range(cfg.n_levels):
        scale = float(
            f32(f32(np.exp2(f32(level) * np.log2(f32(cfg.per_level_scale)))) * f32(cfg.base_resolution)) - f32(1)
        )
        res = math.ceil(scale) + 1
        size = min(2**cfg.log2_hashmap_size, ((res**3 + 7) // 8) * 8)
        out.append((scale, res, offset, size))
        offset += size
    return out


def reference_encode(p: list[float], params: list[float], cfg: HashGridConfig) -> list[float]:
    """One point, loops over levels and the 8 corners."""
    feats = []
    n_feat = cfg.n_features_per_level
    for scale, res, offset, size in reference_layout(cfg):
        pos = [float(np.float32(c * scale + 0.5)) for c in p]  # fmaf: one float32 rounding
        cell = [math.floor(v) for v in pos]
        frac = [v - c for v, c in zip(pos, cell)]
        acc = [0.0] * n_feat
        for corner in range(8):
            weight, coord = 1.0, []
            for dim in range(3):
                bit = (corner >> dim) & 1
                weight *= frac[dim] if bit else 1.0 - frac[dim]
                coord.append(cell[dim] + bit)
            if res**3 <= size:
                index = coord[0] + coord[1] * res + coord[2] * res * res
            else:
                index = 0
                for dim in range(3):
                    index ^= (coord[dim] * PRIMES[dim]) % 2**32
            index %= size
            for f in range(n_feat):
                acc[f] += weight * params[(offset + index) * n_feat + f]
        feats.extend(acc)
    return feats


def test_layout_matches_tcnn_rules():
    levels = grid_levels(SMALL)
    ref = reference_layout(SMALL)
    assert [lv.resolution for lv in levels] == [r[1] for r in ref] == [4, 7, 11, 17, 27, 42]
    assert [lv.offset for lv in levels] == [r[2] for r in ref]
    assert [lv.size for lv in levels] == [64, 344, 1024, 1024, 1024, 1024]
    assert [lv.dense for lv in levels] == [True, True, False, False, False, False]
    assert n_params(SMALL) == (64 + 344 + 4 * 1024) * 2


def test_param_count_hand_computed():
    # level 0: scale 15 -> res 16 -> 4096 entries (dense); level 1: scale 31 -> res 32 -> hashed, 4096.
    cfg = HashGridConfig(n_levels=2, base_resolution=16, per_level_scale=2.0, log2_hashmap_size=12)
    enc = HashGridEncoding(cfg, backend="torch")
    assert enc.params.numel() == 2 * 4096 * 2
    assert [lv.dense for lv in enc.levels] == [True, False]
    # paper preset: every level's size is min(2^19, multiple of 8 >= R^3)
    paper = PRESETS["paper"].model.hash_geometry
    expected = sum(r[3] for r in reference_layout(paper)) * paper.n_features_per_level
    assert n_params(paper) == expected


def test_init_is_uniform_1e4():
    enc = HashGridEncoding(SMALL, backend="torch")
    assert enc.params.abs().max() <= 1e-4
    assert enc.params.std() > 3e-5  # not all zero: U(-1e-4, 1e-4) has std 5.8e-5


def test_twin_matches_brute_force_reference():
    torch.manual_seed(0)
    enc = HashGridEncoding(SMALL, backend="torch")
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)  # large values so that any indexing error shows
    p = torch.rand(40, 3)
    p[0] = torch.tensor([1.0, 1.0, 1.0])  # upper border (dense-level wraparound as in tcnn)
    p[1] = torch.tensor([0.0, 0.0, 0.0])
    out = enc(p)
    assert out.shape == (40, SMALL.out_dim)
    torch.testing.assert_close(out[:, :3], 2 * p - 1)
    params = enc.params.detach().double().tolist()
    ref = torch.tensor([reference_encode(pt, params, SMALL) for pt in p.double().tolist()], dtype=torch.float32)
    assert (out[:, 3:].detach() - ref).abs().max() < 1e-6


def test_gradients_flow_to_params_and_points():
    enc = HashGridEncoding(SMALL, backend="torch")
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    p = torch.rand(16, 3, requires_grad=True)
    enc(p).sum().backward()
    assert enc.params.grad is not None and enc.params.grad.abs().sum() > 0
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # finite-difference check of d out / d p on one level-interior point
    x = torch.tensor([[0.31, 0.52, 0.77]], dtype=torch.float32, requires_grad=True)
    y = enc(x)[0, 3:].sum()
    (g,) = torch.autograd.grad(y, x)
    eps = 1e-4  # well inside one cell of every level at this point
    for d in range(3):
        e = torch.zeros(1, 3)
        e[0, d] = eps
        fd = float((enc(x + e)[0, 3:].sum() - enc(x - e)[0, 3:].sum()).detach()) / (2 * eps)
        assert abs(fd - float(g[0, d])) < 2e-2 * max(1.0, abs(fd))


def test_progressive_level_mask():
    assert active_levels(SMALL, 0) == 2
    assert active_levels(SMALL, 100) == 2
    assert active_levels(SMALL, 119) == 3
    assert active_levels(SMALL, 10_000) == 6
    assert active_levels(SMALL, None) == 6
    enc = HashGridEncoding(SMALL, backend="torch")
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    p = torch.rand(32, 3)
    full = enc(p)
    assert enc.set_step(115) == 3
    part = enc(p)
    torch.testing.assert_close(part[:, : 3 + 3 * 2], full[:, : 3 + 3 * 2])
    assert (part[:, 3 + 3 * 2 :] == 0).all()
    assert (full[:, 3 + 3 * 2 :] != 0).any()


def test_torch_backend_refuses_unknown():
    with pytest.raises(ValueError):
        HashGridEncoding(SMALL, backend="cuda")


@pytest.mark.gpu
def test_tcnn_weight_transfer_equal_outputs():
    if not has_tcnn() or not has_cuda():
        pytest.skip("needs tinycudann")
    cfg = dataclass_replace_levels(PRESETS["cpu"].model.hash_geometry)
    gpu = HashGridEncoding(cfg, backend="tcnn").cuda()
    twin = HashGridEncoding(cfg, backend="torch")
    with torch.no_grad():
        gpu.params.uniform_(-1.0, 1.0)
    twin.load_state_dict({k: v.cpu() for k, v in gpu.state_dict().items()})
    p = torch.rand(4096, 3)
    out_gpu = gpu(p.cuda()).cpu()
    out_twin = twin(p)
    assert (out_gpu - out_twin).abs().max() < 1e-4
    # and the other way round: twin weights into tcnn
    with torch.no_grad():
        twin.params.uniform_(-1.0, 1.0)
    gpu.load_state_dict({k: v.cuda() for k, v in twin.state_dict().items()})
    assert (gpu(p.cuda()).cpu() - twin(p)).abs().max() < 1e-4


def dataclass_replace_levels(cfg: HashGridConfig) -> HashGridConfig:
    import dataclasses

    return dataclasses.replace(cfg, n_levels=8)
