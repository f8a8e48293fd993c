"""Subject codes, PCA space, pose encoder and pose correction."""

from __future__ import annotations

import pytest
import torch

from palm.config import LatentConfig
from palm.errors import PalmError
from palm.fields import PCASpace, PoseCorrection, PoseEncoder, SubjectCodes, fit_pca, load_pca, save_pca


def _codes(n: int = 40, d: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, d)
    return torch.randn(n, d, generator=gen) * scales + 0.5


def test_subject_codes_init():
    torch.manual_seed(0)
    codes = SubjectCodes(7, LatentConfig())
    z_s, z_a = codes(torch.tensor([0, 6]))
    assert z_s.shape == (2, 32) and z_a.shape == (2, 32)
    assert 0 < codes.shape.weight.abs().max() < 1e-7


def test_pca_round_trip_and_sorted_variance():
    codes = _codes()
    pca = fit_pca(codes, 5)
    assert pca.basis.shape == (5, 32) and pca.mean.shape == (32,)
    torch.testing.assert_close(pca.basis @ pca.basis.T, torch.eye(5), atol=1e-5, rtol=0)
    ev = pca.explained_variance
    assert (ev[:-1] >= ev[1:]).all() and (ev > 0).all()
    assert 0 < float(pca.explained_variance_ratio.sum()) <= 1.0 + 1e-6
    coeffs = torch.randn(3, 5)
    torch.testing.assert_close(pca.project(pca.decode(coeffs)), coeffs, atol=1e-4, rtol=0)
    # the first component's variance equals the variance of the projected codes
    proj = pca.project(codes)
    torch.testing.assert_close(proj.var(0), ev, rtol=1e-3, atol=1e-5)
    # zero coefficients decode to the mean (or to zero without the mean, like the release)
    torch.testing.assert_close(pca.decode(torch.zeros(1, 5))[0], pca.mean)
    no_mean = PCASpace(pca.mean, pca.basis, ev, pca.explained_variance_ratio, add_mean=False)
    assert (no_mean.decode(torch.zeros(1, 5)) == 0).all()


def test_pca_with_few_subjects_pads():
    pca = fit_pca(_codes(n=3), 5)
    assert pca.basis.shape == (5, 32)
    assert (pca.explained_variance[2:] == 0).all() and (pca.explained_variance[:2] > 0).all()


def test_pca_sample_statistics():
    pca = fit_pca(_codes(), 5)
    coeffs = pca.sample_coeffs(20000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(coeffs.var(0), pca.explained_variance, rtol=0.05, atol=1e-4)
    assert pca.sample(4, torch.Generator().manual_seed(0)).shape == (4, 32)


def test_pca_save_load(tmp_path):
    shape, app = fit_pca(_codes(seed=1), 5), fit_pca(_codes(seed=2), 5, add_mean=False)
    path = tmp_path / "pca.safetensors"
    save_pca(path, {"shape": shape, "appearance": app})
    loaded = load_pca(path)
    torch.testing.assert_close(loaded["shape"].basis, shape.basis)
    torch.testing.assert_close(loaded["appearance"].explained_variance, app.explained_variance)
    assert loaded["shape"].add_mean and not loaded["appearance"].add_mean
    with pytest.raises(PalmError):
        load_pca(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(PalmError):
        load_pca(bad)


def test_pose_encoder_ignores_root():
    torch.manual_seed(0)
    enc = PoseEncoder(LatentConfig())
    pose = torch.randn(2, 16, 3)
    z = enc(pose)
    assert z.shape == (2, 32)
    pose2 = pose.clone()
    pose2[:, 0] = torch.randn(2, 3)
    torch.testing.assert_close(enc(pose2), z)
    pose3 = pose.clone()
    pose3[:, 5] += 0.5
    assert not torch.allclose(enc(pose3), z)


def test_pose_correction():
    corr = PoseCorrection(n_frames=60, n_betas=10)
    pose, transl, betas = torch.randn(2, 16, 3), torch.randn(2, 3), torch.randn(2, 10)
    frame = torch.tensor([3, 7])
    with torch.no_grad():
        corr.hand_pose[3, 0] = 0.1
        corr.global_orient[7, 2] = 0.2
        corr.transl[3, 1] = 0.01
        corr.betas[0, 4] = 0.5
    out = corr(frame, pose, transl, betas)
    assert out.pose is pose  # disabled: identity
    corr.enabled = True
    out = corr(frame, pose, transl, betas)
    torch.testing.assert_close(out.pose[0, 1, 0], pose[0, 1, 0] + 0.1)
    torch.testing.assert_close(out.pose[1, 0, 2], pose[1, 0, 2] + 0.2)
    torch.testing.assert_close(out.transl[0, 1], transl[0, 1] + 0.01)
    torch.testing.assert_close(out.betas[:, 4], betas[:, 4] + 0.5)
    assert PoseCorrection().hand_pose.abs().sum() == 0
