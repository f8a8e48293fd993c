"""Radiance network (spec section 5.4): view-dependent linear-RGB radiance of the RF branch.

The network owns the *radiance* hash grid; :meth:`RadianceNetwork.encode` gives its features
``h_r (N, 67)``, which the material network reuses (compute them once per batch).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from palm.config import PalmNetConfig
from palm.fields.encoding import HashGridEncoding, to_unit_cube
from palm.fields.sh import expand_band_weights, n_coeffs, sh_band_weights, sh_encode_unit


def reflect(view_dir: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Mirror ``w = -d`` about ``n``: ``w_r = 2 (w . n) n - w``.

    Args:
        view_dir: ``(N, 3)`` unit ray directions ``d`` (camera -> point), world.
        normal: ``(N, 3)`` unit normals, world.

    Returns:
        ``(N, 3)`` unit reflected directions.
    """
    w = -view_dir
    return 2.0 * (w * normal).sum(-1, keepdim=True) * normal - w


class RadianceNetwork(nn.Module):
    """``[h_r (67), f (13), SH(w_r) (16), n (3), [z_p, z_a] (64)] -> sigmoid -> linear RGB (N, 3)``.

    2 hidden ReLU layers of 64, PyTorch default weight init, zero biases, no weight norm.
    """

    def __init__(self, cfg: PalmNetConfig):
        super().__init__()
        self.cfg = cfg
        r = cfg.radiance
        self.encoding = HashGridEncoding(cfg.hash_radiance, backend=cfg.encoding_backend)
        self.sh_dim = n_coeffs(r.sh_degree)
        self.cond_dim = cfg.latent.pose_dim + cfg.latent.appearance_dim
        self.in_dim = self.encoding.out_dim + cfg.geometry.feature_dim + self.sh_dim + 3 + self.cond_dim
        dims = [self.in_dim] + [r.hidden_dim] * r.n_hidden_layers + [3]
        layers = [nn.Linear(a, b) for a, b in itertools.pairwise(dims)]
        for layer in layers:
            nn.init.zeros_(layer.bias)
        self.layers = nn.ModuleList(layers)
        self.register_buffer("sh_weights", torch.ones(self.sh_dim), persistent=False)

    def set_step(self, step: int | None) -> None:
        """Progressive level mask of the radiance grid and progressive SH bands (``None``: all on)."""
        self.encoding.set_step(step)
        r = self.cfg.radiance
        bands = sh_band_weights(step, r.sh_start_step, r.sh_full_step, r.sh_degree)
        self.sh_weights.copy_(expand_band_weights(bands).to(self.sh_weights))

    def encode(self, x_canon: torch.Tensor) -> torch.Tensor:
        """Radiance hash features ``h_r``: ``(N, 3)`` canonical metres -> ``(N, 67)``."""
        return self.encoding(to_unit_cube(x_canon, self.cfg.canonical))

    def forward(
        self,
        h_r: torch.Tensor,
        feature: torch.Tensor,
        view_dir: torch.Tensor,
        normal: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """Radiance.

        Args:
            h_r: ``(N, 67)`` from :meth:`encode`.
            feature: ``(N, 13)`` geometry feature ``f``.
            view_dir: ``(N, 3)`` unit ray directions (world, camera -> point).
            normal: ``(N, 3)`` unit world normals.
            cond: ``(N, 64)`` ``[z_p, z_a]``.

        Returns:
            ``(N, 3)`` linear RGB in ``(0, 1)``.
        """
        w_r = reflect(view_dir, normal)
        sh = sh_encode_unit((w_r + 1.0) / 2.0, self.cfg.radiance.sh_degree) * self.sh_weights
        h = torch.cat([h_r, feature, sh, normal, cond], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return torch.sigmoid(h)
