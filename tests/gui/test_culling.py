"""Back-face culling in the viewport: only for closed, outward-wound meshes, and then invisible."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from app.gl_renderer import closed_outward

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # counter-clockwise seen from outside


def test_closed_outward_on_a_tetrahedron():
    assert closed_outward(TETRA_V, TETRA_F)
    assert not closed_outward(TETRA_V, TETRA_F[:, ::-1])  # wound inward: negative volume
    assert not closed_outward(TETRA_V, TETRA_F[:3])  # one face missing: open
    flipped = TETRA_F.copy()
    flipped[0] = flipped[0, ::-1]
    assert not closed_outward(TETRA_V, flipped)  # one face against the others
    assert not closed_outward(TETRA_V, np.zeros((0, 3), int))


def test_culled_render_equals_two_sided_render():
    """The prior's bake (closed) renders the same with back faces culled as two-sided; the same
    mesh with its faces turned inward, or the rig's open mesh, is not culled."""
    from app import actions
    from app.camera import OrbitCamera
    from app.gl_renderer import AvatarRenderer, standalone_context
    from palm.assets import DEFAULT_PRIOR
    from palm.bake import bake_from_prior
    from palm.hand.lbs import bone_transforms
    from palm.prior import load_prior
    from palm.render.sg import sg_init

    if not (DEFAULT_PRIOR / "prior.json").is_file():
        pytest.skip("the default prior is not installed")

    try:
        ctx = standalone_context()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no OpenGL context: {exc}")
    prior = load_prior()
    hand = prior.model.hand
    avatar = bake_from_prior(prior, resolution=40)
    r = AvatarRenderer(ctx, 160, 120)
    r.set_avatar(avatar)
    r.set_bones(bone_transforms(hand, np.zeros((16, 3), np.float32)))
    r.set_environment(sg_init(64, generator=torch.Generator().manual_seed(0)).numpy())
    r.draw_background = False
    camera = OrbitCamera()
    camera.home(np.asarray(avatar.vertices), 30.0, 20.0, 160 / 120)
    assert r.closed, "the prior's bake should be a closed, outward surface"
    culled = r.render(camera).astype(int)
    r.closed = False
    both = r.render(camera).astype(int)
    assert (culled[..., 3] > 0).sum() > 1500
    assert np.abs(culled - both).max() <= 1
    inward = dataclasses.replace(avatar, faces=np.ascontiguousarray(np.asarray(avatar.faces)[:, ::-1]))
    r.set_avatar(inward)
    assert not r.closed
    assert np.abs(r.render(camera).astype(int) - both).max() <= 1
    r.set_avatar(actions.bake_rig(hand))
    assert not r.closed  # the rig is open at the wrist: drawn two-sided
    r.release()
    ctx.release()
