"""Material network (spec section 5.5): Lipschitz MLP -> albedo, roughness, metallic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from palm.config import PalmNetConfig
from palm.fields.mlp import LipschitzMLP


@dataclass
class Material:
    """PBR material of ``N`` points."""

    albedo: torch.Tensor
    """``(N, 3)`` linear RGB in ``[0.03, 0.80]``."""
    roughness: torch.Tensor
    """``(N,)`` in ``[0.09, 0.99]``."""
    metallic: torch.Tensor
    """``(N,)`` in ``[0, 1]``."""


class MaterialNetwork(nn.Module):
    """``[h_r (67), f (13), [z_p, z_a] (64)] (N, 144) -> Material`` (sigmoid outputs, spec scales/biases)."""

    def __init__(self, cfg: PalmNetConfig):
        super().__init__()
        self.cfg = cfg
        m = cfg.material
        cond_dim = cfg.latent.pose_dim + cfg.latent.appearance_dim
        self.in_dim = cfg.hash_radiance.out_dim + cfg.geometry.feature_dim + cond_dim
        self.mlp = LipschitzMLP(self.in_dim, 5, m.hidden_dim, m.n_hidden_layers)

    def lipschitz_bound(self) -> torch.Tensor:
        """``prod_i softplus(c_i)`` (not part of the paper's loss)."""
        return self.mlp.lipschitz_bound()

    def forward(self, h_r: torch.Tensor, feature: torch.Tensor, cond: torch.Tensor) -> Material:
        """Args: ``h_r (N, 67)``, ``feature (N, 13)``, ``cond (N, 64) = [z_p, z_a]``."""
        m = self.cfg.material
        s = torch.sigmoid(self.mlp(torch.cat([h_r, feature, cond], dim=-1)))
        return Material(
            albedo=m.albedo_scale * s[:, 0:3] + m.albedo_bias,
            roughness=m.roughness_scale * s[:, 3] + m.roughness_bias,
            metallic=m.metallic_scale * s[:, 4] + m.metallic_bias,
        )
