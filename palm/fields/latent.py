"""Per-subject latent codes and their PCA space (spec section 5.6).

Conditioning layout: ``cond = [z_p (32), z_s (32), z_a (32)]``; the geometry network uses
``[z_p, z_s]``, radiance and material use ``[z_p, z_a]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from palm.config import LatentConfig
from palm.errors import PalmError
from palm.io import atomic_write


class SubjectCodes(nn.Module):
    """Learnable shape and appearance codes of ``n_subjects`` training subjects, init ``N(0,1) * init_std``.

    ``forward(subject (B,) long) -> (z_s (B, shape_dim), z_a (B, appearance_dim))``.
    """

    def __init__(self, n_subjects: int, cfg: LatentConfig):
        super().__init__()
        self.cfg = cfg
        self.shape = nn.Embedding(n_subjects, cfg.shape_dim)
        self.appearance = nn.Embedding(n_subjects, cfg.appearance_dim)
        with torch.no_grad():
            self.shape.weight.normal_().mul_(cfg.init_std)
            self.appearance.weight.normal_().mul_(cfg.init_std)

    @property
    def n_subjects(self) -> int:
        return self.shape.num_embeddings

    def forward(self, subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shape(subject), self.appearance(subject)


@dataclass
class PCASpace:
    """A linear code space ``z = mean * add_mean + coeffs @ basis``.

    Attributes:
        mean: ``(D,)`` mean code.
        basis: ``(K, D)`` orthonormal principal axes (rows), by decreasing variance.
        explained_variance: ``(K,)`` variance of the training codes along each axis.
        explained_variance_ratio: ``(K,)`` fraction of the total variance.
        add_mean: add the mean when decoding (the release does not; see ``LatentConfig.pca_add_mean``).
    """

    mean: torch.Tensor
    basis: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    add_mean: bool = True

    @property
    def n_components(self) -> int:
        return self.basis.shape[0]

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    def _offset(self) -> torch.Tensor:
        return self.mean if self.add_mean else torch.zeros_like(self.mean)

    def decode(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` coefficients -> ``(B, D)`` codes (differentiable in ``coeffs``)."""
        return self._offset().to(coeffs) + coeffs @ self.basis.to(coeffs)

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` codes -> ``(B, K)`` coefficients (orthogonal projection onto the span)."""
        return (codes - self._offset().to(codes)) @ self.basis.to(codes).T

    def sample_coeffs(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """``(n, K)`` coefficients ``~ N(0, explained_variance)``."""
        eps = torch.randn(n, self.n_components, generator=rng, dtype=self.basis.dtype)
        return eps * self.explained_variance.sqrt().to(eps)

    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """``(n, D)`` random codes drawn from the PCA Gaussian."""
        return self.decode(self.sample_coeffs(n, rng))

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat ``{prefix.name: tensor}`` dict for safetensors."""
        return {
            f"{prefix}.mean": self.mean.detach().float().contiguous(),
            f"{prefix}.basis": self.basis.detach().float().contiguous(),
            f"{prefix}.explained_variance": self.explained_variance.detach().float().contiguous(),
            f"{prefix}.explained_variance_ratio": self.explained_variance_ratio.detach().float().contiguous(),
            f"{prefix}.add_mean": torch.tensor([1 if self.add_mean else 0], dtype=torch.int32),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, path: str | os.PathLike = "") -> PCASpace:
        """Inverse of :meth:`to_tensors`; a missing key raises :class:`PalmError` naming ``path``."""
        try:
            return cls(
                mean=tensors[f"{prefix}.mean"],
                basis=tensors[f"{prefix}.basis"],
                explained_variance=tensors[f"{prefix}.explained_variance"],
                explained_variance_ratio=tensors[f"{prefix}.explained_variance_ratio"],
                add_mean=bool(int(tensors[f"{prefix}.add_mean"][0])),
            )
        except KeyError as exc:
            raise PalmError(path, f"missing tensor {exc.args[0]} in the PCA file") from None


def save_pca(path: str | os.PathLike, spaces: dict[str, PCASpace]) -> None:
    """Write several PCA spaces (e.g. ``{"shape": ..., "appearance": ...}``) to one safetensors file."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, space in spaces.items():
        tensors.update(space.to_tensors(name))
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp))


def load_pca(path: str | os.PathLike, names: tuple[str, ...] = ("shape", "appearance")) -> dict[str, PCASpace]:
    """Read the spaces written by :func:`save_pca`; a missing/corrupt file raises :class:`PalmError`."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise PalmError(path, "PCA file not found")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types for corrupt files
        raise PalmError(path, f"cannot read the PCA file ({exc})") from None
    return {name: PCASpace.from_tensors(tensors, name, path) for name in names}


def fit_pca(codes: torch.Tensor, k: int, add_mean: bool = True) -> PCASpace:
    """Centred PCA (as sklearn's) of ``codes (S, D)`` with ``k`` components.

    Axes are sorted by decreasing variance and signed so that each axis' largest-magnitude entry is
    positive. Variances use ``S - 1`` degrees of freedom. If ``k`` exceeds the rank available
    (``min(S - 1, D)``), the extra axes are zero with zero variance, so ``decode`` keeps ``k`` inputs.

    Returns:
        :class:`PCASpace` with ``basis (k, D)``.
    """
    codes = codes.detach().double()
    n_samples, dim = codes.shape
    mean = codes.mean(0)
    centred = codes - mean
    _, sing, vt = torch.linalg.svd(centred, full_matrices=False)
    total = (centred**2).sum() / max(n_samples - 1, 1)
    var = sing**2 / max(n_samples - 1, 1)
    n_keep = min(k, vt.shape[0], max(n_samples - 1, 0))
    basis = torch.zeros(k, dim, dtype=torch.float64)
    ev = torch.zeros(k, dtype=torch.float64)
    basis[:n_keep] = vt[:n_keep]
    ev[:n_keep] = var[:n_keep]
    idx = basis.abs().argmax(1, keepdim=True)
    signs = torch.sign(basis.gather(1, idx)).squeeze(1)
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    ratio = ev / total if float(total) > 0 else torch.zeros_like(ev)
    return PCASpace(mean.float(), basis.float(), ev.float(), ratio.float(), add_mean=add_mean)
