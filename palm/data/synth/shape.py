"""Hand shapes of the synthetic subjects: the rig's betas plus per-bone proportions.

The rig's shape space (``shapedirs``) is almost only overall size (its first direction scales the
hand by 13 % per unit, the other nine change the thickness by 1-2 % at most), so a subject is

1. the rig's shaped flat hand ``v_b = v_template + shapedirs @ betas`` with joints
   ``J_b = J_regressor @ v_b``;
2. per-bone proportions (:class:`Proportions`): each bone ``j`` (a finger segment, from joint ``j`` to
   its child joint, or to the fingertip vertex for a distal segment) is stretched along its axis
   ``d_j`` by ``L_j`` and its cross-section scaled by ``T_j``; the palm (joint 0) gets one affine map
   ``A`` about the wrist in the palm frame (length along the wrist-to-middle-knuckle axis, width
   across, thickness along the palm normal). The new joints follow the kinematic tree:
   ``J'_c = J_0 + A (J_c - J_0)`` for the children of the wrist, ``J'_c = J'_p + L_p (J_c - J_p)`` for
   the others. Every vertex moves with its bones, blended by its skinning weights ``w_vj``::

       v' = sum_j w_vj [J'_j + L_j ((v_b - J_j) . d_j) d_j + T_j (v_b - J_j - ((v_b - J_j) . d_j) d_j)]
            (j >= 1),   w_v0 [J_0 + A (v_b - J_0)]  (palm)

   so a stretched bone carries its children along and the joints stay inside the bends.
3. The subject's skeleton is then regressed from the new surface, ``J = J_regressor @ v'``, exactly as
   the rig does for any shaped flat hand: the posed subject is ``lbs(v', pose)`` with the rig's own
   skinning (:class:`ShapedHand`), so the flat hand ``v'`` (``<sid>/shape.npz: rest_vertices``) is
   all a reader needs to reproduce the rendered mesh in any pose.

The betas registered in ``poses.npy`` are the rig's best approximation of ``v'``
(:func:`project_betas`, a ridge least-squares fit), so a reader that knows only betas gets the
closest rig hand (the right size) and :class:`ShapedHand` recognises the subject by its betas.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from palm.hand.lbs import lbs, mirror_pose, shape_blend
from palm.hand.model import HandModel, HandOutput
from palm.hand.proportions import FINGER_JOINTS, Proportions, palm_frame, proportioned_rest

__all__ = ["FINGER_JOINTS", "SHAPE_FILE", "Proportions", "ShapedHand", "bone_lengths", "palm_frame", "project_betas",
           "read_shape", "sample_proportions", "shaped_rest"]

#: File (per subject folder) holding the subject's flat hand.
SHAPE_FILE = "shape.npz"
#: Betas of two subjects closer than this (max abs) are the same subject for :class:`ShapedHand`.
BETAS_MATCH_TOL = 1e-5


def sample_proportions(rng: np.random.Generator, amount: float = 1.0) -> Proportions:
    """Draw proportions the way real hands vary (log-normal scales, shared and per-finger parts).

    Finger length: a hand-wide factor (sd 5 %), a per-finger factor (sd 3.5 %) and a per-segment
    factor (sd 2.5 %). Thickness: hand-wide (sd 8 %), per-finger (sd 4 %) and a fingertip taper
    (sd 5 % per segment). Palm: length sd 5 %, width sd 6 %, thickness sd 8 %. ``amount`` scales
    every standard deviation. Each factor is clipped to +-2.5 sd.
    """

    def g(sd: float, size: Any = None) -> Any:
        return np.clip(rng.normal(0.0, sd * amount, size), -2.5 * sd * amount, 2.5 * sd * amount)

    length = g(0.05) + g(0.035, (5, 1)) + g(0.025, (5, 3))
    taper = g(0.05, (5, 1)) * np.array([[-1.0, 0.0, 1.0]])
    thick = g(0.08) + g(0.04, (5, 1)) + taper
    palm = np.array([g(0.05), g(0.06), g(0.08)])
    to_t = lambda a: tuple(tuple(round(float(x), 4) for x in row) for row in np.exp(a))
    return Proportions(to_t(length), to_t(thick), tuple(round(float(x), 4) for x in np.exp(palm)))


def shaped_rest(hand: HandModel, betas: Any, proportions: Proportions) -> np.ndarray:
    """The subject's flat hand ``v'`` (see the module notes).

    Args:
        hand: the rig. betas: (NB,) its shape coefficients. proportions: the subject's.

    Returns:
        (V, 3) float32 rest vertices in the rig's vertex order.
    """
    with torch.no_grad():
        vb, jb = hand.rest(torch.as_tensor(np.asarray(betas, np.float32))[None])
    v = vb[0].double().cpu().numpy()
    tips = v[hand.tip_vertex_ids.cpu().numpy()]
    out, _ = proportioned_rest(v, jb[0].double().cpu().numpy(), hand.skin_weights.double().cpu().numpy(),
                               hand.parents.cpu().numpy(), tips, proportions)
    return out.astype(np.float32)


def project_betas(hand: HandModel, rest_vertices: np.ndarray, prior_sd: float = 1e-3, limit: float = 3.0) -> np.ndarray:
    """The rig's betas closest to a flat hand: ``argmin |shapedirs b - (v - v_template)|^2 / s^2 + |b|^2``.

    ``s = prior_sd`` (metres) is the expected per-coordinate misfit, so directions that barely move
    the surface are not stretched to explain proportions they cannot express. Clipped to +-``limit``.

    Returns:
        (NB,) float32.
    """
    D = hand.shapedirs.double().cpu().numpy().reshape(-1, hand.n_betas)
    r = (np.asarray(rest_vertices, np.float64) - hand.v_template.double().cpu().numpy()).reshape(-1)
    lhs = D.T @ D / prior_sd**2 + np.eye(hand.n_betas)
    b = np.linalg.solve(lhs, D.T @ r / prior_sd**2)
    return np.clip(b, -limit, limit).round(5).astype(np.float32)


def bone_lengths(hand: HandModel, rest_vertices: Any) -> np.ndarray:
    """(5, 4) lengths (metres) of each finger's metacarpal-to-knuckle offset and its three segments.

    Row order thumb..pinky; column 0 is wrist -> first joint, columns 1-3 the segments (the last one
    to the fingertip vertex). For inspection and tests.
    """
    v = torch.as_tensor(np.asarray(rest_vertices, np.float32)).to(hand.J_regressor.device)
    J = (hand.J_regressor @ v).cpu().numpy()
    tips = v.cpu().numpy()[hand.tip_vertex_ids.cpu().numpy()]
    out = np.zeros((5, 4))
    for f, chain in enumerate(FINGER_JOINTS):
        pts = [J[0], J[chain[0]], J[chain[1]], J[chain[2]], tips[f]]
        out[f] = [np.linalg.norm(b - a) for a, b in itertools.pairwise(pts)]
    return out


class ShapedHand(HandModel):
    """The rig, with subjects whose flat hands are given vertex by vertex.

    A subject is recognised by its betas (within :data:`BETAS_MATCH_TOL`): :meth:`rest` and
    :meth:`forward` then use its flat hand instead of ``v_template + shapedirs @ betas``, with the
    rig's joint regressor and skinning, so ``forward(pose, betas)`` is the rendered subject in that
    pose. Any other betas give the rig's own hand (and keep their gradient). It is a
    :class:`~palm.hand.model.HandModel` in every other respect (faces, UVs, sealing, ``.to``).
    """

    def __init__(self, rig: HandModel, betas: Any, rest_vertices: Any):
        arrays = {
            "v_template": rig.v_template, "shapedirs": rig.shapedirs, "posedirs": rig.posedirs,
            "J_regressor": rig.J_regressor, "weights": rig.skin_weights, "parents": rig.parents,
            "f": rig.faces, "tip_vertex_ids": rig.tip_vertex_ids, "seal_faces": rig.seal_faces,
            "weld_index": rig.weld_index, "uv": rig.uv,
        }  # fmt: skip
        super().__init__({k: (None if a is None else a.detach().cpu().numpy()) for k, a in arrays.items()}, rig.name)
        self.register_buffer("subject_betas", torch.as_tensor(np.asarray(betas, np.float32)).reshape(-1, rig.n_betas))
        self.register_buffer(
            "subject_rest", torch.as_tensor(np.asarray(rest_vertices, np.float32)).reshape(-1, rig.n_vertices, 3)
        )
        if self.subject_betas.shape[0] != self.subject_rest.shape[0]:
            raise ValueError("one row of betas per subject flat hand")

    @classmethod
    def from_dataset(cls, rig: HandModel, root: str | os.PathLike) -> ShapedHand:
        """The rig with every subject of a synthetic dataset that has a ``shape.npz`` (the others use
        their betas as usual)."""
        from palm.data.palm_dataset import list_subjects, read_poses

        betas, rests = [], []
        for sid in list_subjects(root):
            path = Path(root) / sid / SHAPE_FILE
            if path.is_file():
                betas.append(read_poses(Path(root) / sid / "poses.npy").betas[: rig.n_betas])
                rests.append(subject_rest(path, rig.n_vertices))
        empty = np.zeros((0, rig.n_vertices, 3), np.float32)
        return cls(
            rig,
            np.asarray(betas, np.float32).reshape(-1, rig.n_betas),
            np.asarray(rests, np.float32) if rests else empty,
        )

    @property
    def n_subjects(self) -> int:
        return int(self.subject_rest.shape[0])

    def subject_of(self, betas: Tensor) -> Tensor:
        """(B,) index of the subject each row of ``betas (B, NB)`` belongs to, -1 for none."""
        if self.n_subjects == 0:
            return torch.full((betas.shape[0],), -1, dtype=torch.long, device=betas.device)
        diff = (betas.detach()[:, None, :] - self.subject_betas[None].to(betas.dtype)).abs().amax(-1)  # (B, S)
        best, idx = diff.min(dim=1)
        return torch.where(best <= BETAS_MATCH_TOL, idx, torch.full_like(idx, -1))

    def shaped(self, betas: Tensor) -> Tensor:
        """(B, V, 3) flat hands of ``betas (B, NB)`` (a known subject's own, else the rig's)."""
        v = shape_blend(self.v_template, self.shapedirs, betas)
        who = self.subject_of(betas)
        if bool((who >= 0).any()):
            known = who >= 0
            v = torch.where(known[:, None, None], self.subject_rest[who.clamp(min=0)].to(v.dtype), v)
        return v

    def rest(self, betas: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = self.shaped(self._betas(betas, 1))
        return v, torch.einsum("jv,bvc->bjc", self.J_regressor, v)

    def forward(
        self, pose: Tensor, betas: Tensor | None = None, transl: Tensor | None = None, left: bool = False
    ) -> HandOutput:
        dev, dt = self.v_template.device, self.v_template.dtype
        pose = torch.as_tensor(pose, dtype=dt, device=dev)
        pose = pose.reshape(pose.shape[0], -1, 3)
        b = pose.shape[0]
        betas = self._betas(betas, b)
        if bool((self.subject_of(betas) < 0).all()):
            return super().forward(pose, betas, transl, left)
        if left:
            pose = mirror_pose(pose)
        v_shaped = self.shaped(betas)
        zero = torch.zeros(1, self.n_betas, dtype=dt, device=dev)
        parts = [
            lbs(zero, pose[i : i + 1], v_shaped[i], self.shapedirs, self.posedirs, self.J_regressor, self.parents,
                self.skin_weights)
            for i in range(b)
        ]  # fmt: skip
        verts, joints, bones, frames = (torch.cat([p[k] for p in parts]) for k in range(4))
        return self.posed_output(verts, joints, bones, frames, transl, left)


def read_shape(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a subject's ``shape.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def subject_rest(path: str | os.PathLike, n_vertices: int) -> np.ndarray:
    """A subject's flat hand from its ``shape.npz``: ``rest_vertices`` (n_vertices, 3) float32, finite.

    Raises:
        PalmError: naming the file, when it cannot be read or holds anything else.
    """
    import zipfile

    from palm.errors import PalmError

    try:
        rest = np.asarray(read_shape(path)["rest_vertices"], np.float32)
    except KeyError:
        raise PalmError(path, "missing 'rest_vertices'") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise PalmError(path, f"not a readable .npz ({exc})") from None
    if rest.shape != (n_vertices, 3):
        raise PalmError(path, f"rest_vertices must be ({n_vertices}, 3) for this hand rig, got {rest.shape}")
    if not np.isfinite(rest).all():
        raise PalmError(path, "rest_vertices holds non-finite values")
    return rest


def fit_canonical_box(
    hand: HandModel, betas: Any, proportions: Proportions, margin: float = 0.004, tries: int = 12
) -> tuple[np.ndarray, np.ndarray, Proportions]:
    """The subject's flat hand, made to fit the model's canonical cube.

    The cube (``palm.config.CanonicalConfig``: the canonical box enlarged 1.2 times) is where the
    prior's geometry lives; a flat hand reaching within ``margin`` metres of its side is shrunk, by
    scaling the positive part of the size coefficient (betas[0]) and the log of every length scale
    above 1 by 0.85 per try, until it fits.

    Returns:
        rest vertices (V, 3) float32, the betas and the proportions used.
    """
    from palm.config import CanonicalConfig

    canon = CanonicalConfig()
    centre, half = np.asarray(canon.centre), canon.half_side - margin
    betas = np.asarray(betas, np.float64).copy()
    props = proportions
    for _ in range(tries):
        rest = shaped_rest(hand, betas, props)
        if (np.abs(rest - centre) <= half).all():
            break
        if betas.size and betas[0] > 0:
            betas[0] = round(0.85 * betas[0], 4)
        shrink = lambda rows: tuple(tuple(round(float(x if x <= 1 else x**0.85), 4) for x in r) for r in rows)
        props = Proportions(shrink(props.bone_length), props.bone_thickness,
                            tuple(round(float(x if x <= 1 else x**0.85), 4) for x in props.palm))  # fmt: skip
    return rest, betas.astype(np.float32), props
