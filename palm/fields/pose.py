"""Pose encoder and per-subject pose correction (spec section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from palm.config import LatentConfig


class PoseEncoder(nn.Module):
    """``z_p = Linear(48 -> 32)(axis-angles)`` with the root rotation zeroed (no activation).

    ``forward(pose (B, 16, 3)) -> (B, pose_dim)``.
    """

    def __init__(self, cfg: LatentConfig | None = None, n_joints: int = 16):
        super().__init__()
        cfg = cfg or LatentConfig()
        self.n_joints = n_joints
        self.linear = nn.Linear(3 * n_joints, cfg.pose_dim)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        hand = torch.cat([torch.zeros_like(pose[:, :1]), pose[:, 1:]], dim=1)
        return self.linear(hand.reshape(pose.shape[0], -1))


@dataclass
class CorrectedParams:
    """MANO parameters after the pose correction."""

    pose: torch.Tensor
    """``(B, 16, 3)`` axis-angles (row 0 global orientation)."""
    transl: torch.Tensor
    """``(B, 3)``."""
    betas: torch.Tensor
    """``(B, n_betas)``."""


class PoseCorrection(nn.Module):
    """Zero-initialised per-frame residuals of one subject: hand pose (45), global orientation (3),
    translation (3) per frame, and one shared shape residual (``n_betas``).

    Disabled (identity) in prior training; the personalisation sets ``enabled = True``.
    """

    def __init__(self, n_frames: int = 60, n_betas: int = 10):
        super().__init__()
        self.enabled = False
        self.hand_pose = nn.Parameter(torch.zeros(n_frames, 45))
        self.global_orient = nn.Parameter(torch.zeros(n_frames, 3))
        self.transl = nn.Parameter(torch.zeros(n_frames, 3))
        self.betas = nn.Parameter(torch.zeros(1, n_betas))

    def forward(
        self, frame: torch.Tensor, pose: torch.Tensor, transl: torch.Tensor, betas: torch.Tensor
    ) -> CorrectedParams:
        """Add the residuals of frames ``frame (B,)`` long to ``pose (B,16,3)``, ``transl (B,3)``,
        ``betas (B, n_betas)``; identity when not ``enabled``."""
        if not self.enabled:
            return CorrectedParams(pose, transl, betas)
        delta = torch.cat([self.global_orient[frame], self.hand_pose[frame]], dim=-1).reshape(-1, 16, 3)
        return CorrectedParams(pose + delta, transl + self.transl[frame], betas + self.betas)
