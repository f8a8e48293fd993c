"""Geometry network (spec section 5.2): canonical point + ``[z_p, z_s]`` -> SDF (metres) + feature.

Units. The MLP sees ``2 p_hat - 1 = (x - c) / h`` (the canonical cube mapped to ``[-1, 1]^3``) in its
first three input columns, so the sphere initialisation makes its raw SDF channel
``~ |2 p_hat - 1| - 0.5`` in these normalised units. We multiply that channel by the half side ``h``
of the canonical cube (a fixed constant, not learned) so that the returned SDF is in metres with
``|d sdf / d x| ~ 1``: at initialisation it is a sphere of radius ``0.5 h`` (about 6.9 cm) around the
cube centre ``c``. The feature vector ``f`` is the raw 13-vector with its channel 0 replaced by that
metric SDF (so ``f[:, 0] == sdf``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from palm.config import PalmNetConfig
from palm.fields.encoding import HashGridEncoding, to_unit_cube
from palm.fields.mlp import ConditionedMLP


class GeometryNetwork(nn.Module):
    """Conditioned SDF network with its own hash grid.

    ``forward(x_canon (N, 3) metres, cond (N, 64) = [z_p, z_s]) -> (sdf (N,) metres, feature (N, 13))``.
    """

    def __init__(self, cfg: PalmNetConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.geometry
        self.encoding = HashGridEncoding(cfg.hash_geometry, backend=cfg.encoding_backend)
        self.cond_dim = cfg.latent.pose_dim + cfg.latent.shape_dim
        self.mlp = ConditionedMLP(
            in_dim=self.encoding.out_dim,
            cond_dim=self.cond_dim,
            out_dim=g.feature_dim,
            hidden_dim=g.hidden_dim,
            n_hidden_layers=g.n_hidden_layers,
            softplus_beta=g.softplus_beta,
            use_weight_norm=g.weight_norm,
            sphere_init=True,
            radius=g.sphere_init_radius,
        )
        #: metres per normalised SDF unit: the canonical cube's half side ``h``.
        self.sdf_scale = float(cfg.canonical.half_side)

    @property
    def feature_dim(self) -> int:
        return self.cfg.geometry.feature_dim

    def set_step(self, step: int | None) -> int:
        """Progressive level mask of the geometry grid (``None``: all levels)."""
        return self.encoding.set_step(step)

    def forward(self, x_canon: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SDF and feature.

        Args:
            x_canon: ``(N, 3)`` canonical points, metres.
            cond: ``(N, 64)`` conditioning ``[z_p, z_s]``.

        Returns:
            ``sdf (N,)`` metres (negative inside) and ``feature (N, 13)`` with ``feature[:, 0] == sdf``.
        """
        h = self.encoding(to_unit_cube(x_canon, self.cfg.canonical))
        raw = self.mlp(h, cond)
        sdf = raw[:, 0] * self.sdf_scale
        feature = torch.cat([sdf[:, None], raw[:, 1:]], dim=-1)
        return sdf, feature

    def gradient(
        self, x_canon: torch.Tensor, cond: torch.Tensor, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF, feature and the analytic gradient ``d sdf / d x_canon``.

        Args:
            x_canon: ``(N, 3)`` metres. If it carries a graph (e.g. the IFT-corrected canonical point),
                the gradient is taken with respect to it and, with ``create_graph``, stays differentiable.
            cond: ``(N, 64)``.
            create_graph: keep the graph of the gradient (training: eikonal loss, normals in losses).

        Returns:
            ``sdf (N,)``, ``feature (N, 13)``, ``grad (N, 3)`` (per metre).
        """
        with torch.enable_grad():
            x = x_canon if x_canon.requires_grad else x_canon.detach().requires_grad_(True)
            sdf, feature = self(x, cond)
            (grad,) = torch.autograd.grad(
                sdf, x, grad_outputs=torch.ones_like(sdf), create_graph=create_graph, retain_graph=True
            )
        if not create_graph:
            grad = grad.detach()
        return sdf, feature, grad

    def curvature(
        self,
        x_canon: torch.Tensor,
        cond: torch.Tensor,
        normal: torch.Tensor,
        create_graph: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Curvature term ``kappa`` (spec section 5.2).

        ``t = n x r`` with ``r ~ U[0,1)^3`` normalised (``t`` not renormalised); the gradient is
        evaluated again at ``x + eps t`` and ``kappa = arccos(clamp(n . n', -1+1e-6, 1-1e-6)) / pi``.

        Args:
            x_canon: ``(N, 3)`` metres.
            cond: ``(N, 64)``.
            normal: ``(N, 3)`` unit SDF gradient at ``x_canon`` (canonical space).
            create_graph: keep the graph (training).
            generator: random source for ``r``.

        Returns:
            ``kappa (N,)`` in ``[0, 1]``.
        """
        src = generator.device if generator is not None else "cpu"  # draw where the generator lives
        r = torch.rand(normal.shape, generator=generator, dtype=normal.dtype, device=src).to(normal.device)
        r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        tangent = torch.cross(normal, r, dim=-1)
        x_shift = x_canon + self.cfg.geometry.curvature_eps * tangent
        _, _, grad_shift = self.gradient(x_shift, cond, create_graph=create_graph)
        n_shift = grad_shift / grad_shift.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cos = (normal * n_shift).sum(-1).clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        return torch.arccos(cos) / math.pi
