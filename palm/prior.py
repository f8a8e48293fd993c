"""The prior on disk: a folder with the weights, a JSON sidecar and the PCA spaces.

```
<prior>/prior.safetensors   PalmNet state dict
<prior>/prior.json          {"format": "palm-prior-v1", "config", "n_subjects", "hand", "step",
                             "content_hash", "training": {...}}
<prior>/pca.safetensors     shape and appearance PCA spaces (mean, basis, explained variance)
<prior>/albedo.safetensors  optional: the training subjects' albedo model (palm.albedo_model)
```

``content_hash`` is the SHA-256 (first 16 hex digits) of the tensors; avatars record it so an
avatar is never applied to another prior by mistake.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from palm import config as C
from palm.assets import DEFAULT_PRIOR
from palm.errors import PalmError
from palm.io import atomic_dir, read_json

FORMAT = "palm-prior-v1"


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of named tensors, independent of dict order and device."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as plain contiguous CPU tensors (what is saved and hashed)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


@dataclass
class Prior:
    """A loaded prior: the model (eval mode), its metadata, PCA spaces and albedo model (or None)."""

    model: Any
    meta: dict[str, Any]
    path: Path
    pca: dict[str, Any] = field(default_factory=dict)
    albedo_model: Any = None

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    @property
    def pca_shape(self):
        return self.pca.get("shape")

    @property
    def pca_appearance(self):
        return self.pca.get("appearance")

    def codes_from_coeffs(self, shape_coeffs=None, appearance_coeffs=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode PCA coefficients (default zeros = the mean subject) into (z_s, z_a)."""
        dev = self.model.light.device
        out = []
        for name, coeffs in (("shape", shape_coeffs), ("appearance", appearance_coeffs)):
            space = self.pca.get(name)
            if space is None:  # no PCA yet: the mean of the training subjects' codes
                out.append(getattr(self.model.codes, name).weight.detach().mean(0).to(dev))
                continue
            c = torch.zeros(space.n_components) if coeffs is None else torch.as_tensor(coeffs, dtype=torch.float32)
            out.append(space.decode(c[None].to(space.basis.device))[0].to(dev))
        return out[0], out[1]


def save_prior(path: str | os.PathLike, model, meta: dict[str, Any] | None = None, albedo_model=None) -> str:
    """Write ``model`` (a PalmNet), its PCA spaces and an albedo model (if given) as a prior folder,
    atomically. Returns the hash."""
    from safetensors.torch import save_file

    from palm.albedo_model import FILE, save_albedo_model
    from palm.fields.latent import save_pca

    tensors = model_tensors(model)
    digest = tensor_hash(tensors)
    sidecar = {
        "format": FORMAT,
        "config": C.to_dict(model.cfg),
        "n_subjects": int(model.codes.n_subjects),
        "hand": getattr(model.hand, "name", "open"),
        "step": int(getattr(model, "step", 0)),
        "content_hash": digest,
        **(meta or {}),
    }
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / "prior.safetensors"))
        if model.pca:
            save_pca(tmp / "pca.safetensors", model.pca)
        if albedo_model is not None:
            save_albedo_model(tmp / FILE, albedo_model)
        (tmp / "prior.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return digest


def load_prior(path: str | os.PathLike | None = None, device: str | torch.device = "cpu", hand=None) -> Prior:
    """Load a prior folder (default: the shipped ``assets/priors/default``).

    Raises:
        PalmError: missing folder or files, wrong format, or tensors that do not match the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from palm.fields.latent import load_pca
    from palm.model import PalmNet

    folder = Path(path) if path is not None else DEFAULT_PRIOR
    if not folder.exists():
        raise PalmError(folder, "prior not found")
    if folder.is_file():
        folder = folder.parent
    meta = read_json(folder / "prior.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PalmError(folder / "prior.json", f"not a palm-studio prior (expected format '{FORMAT}')")
    for key in ("config", "n_subjects", "content_hash"):
        if key not in meta:
            raise PalmError(folder / "prior.json", f"missing key '{key}'")
    try:
        cfg = C.from_dict(C.PalmNetConfig, meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PalmError(folder / "prior.json", f"config from another version: {exc}") from None
    weights = folder / "prior.safetensors"
    if not weights.is_file():
        raise PalmError(weights, "file not found")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PalmError(weights, f"not a readable safetensors file ({exc})") from None
    if tensor_hash(tensors) != meta["content_hash"]:
        raise PalmError(weights, "content hash does not match prior.json (corrupt or from another prior)")
    n_subjects = meta["n_subjects"]
    rows = tensors["codes.shape.weight"].shape[0] if "codes.shape.weight" in tensors else None
    if not isinstance(n_subjects, int) or isinstance(n_subjects, bool) or n_subjects < 1 or n_subjects != rows:
        raise PalmError(folder / "prior.json", f"n_subjects must be the number of subject codes ({rows}), "
                                               f"found {str(n_subjects)[:40]}")
    if hand is None:
        from palm.hand import load_hand

        hand = load_hand(meta.get("hand", "open"))
    hand = hand.to(device)
    model = PalmNet(cfg, hand, n_subjects)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise PalmError(weights, f"weights do not match the config: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    model.set_step(None, None)
    pca = {}
    if (folder / "pca.safetensors").is_file():
        pca = load_pca(folder / "pca.safetensors")
        model.pca = pca
    from palm.albedo_model import FILE, load_albedo_model

    albedo_model = load_albedo_model(folder / FILE) if (folder / FILE).is_file() else None
    return Prior(model=model, meta=meta, path=folder, pca=pca, albedo_model=albedo_model)


__all__ = ["Prior", "load_prior", "model_tensors", "save_prior", "tensor_hash"]
