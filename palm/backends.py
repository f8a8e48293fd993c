"""Capability probes: CUDA and the optional tiny-cuda-nn and nvdiffrast backends.

This module holds THE single guarded ``tinycudann`` import and THE single guarded
``nvdiffrast.torch`` import of the project. Everything else asks
:func:`has_tcnn` / :func:`tcnn_module` and falls back to the pure-PyTorch twins when it is missing.
Importing this module never fails and never imports ``tinycudann`` eagerly.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

_TCNN: ModuleType | None = None
_TCNN_ERROR: str | None = None
_TCNN_PROBED = False


def has_cuda() -> bool:
    """Whether PyTorch sees a CUDA device."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a probe must never raise (torch missing, broken driver)
        return False


def tcnn_module() -> ModuleType | None:
    """The ``tinycudann`` module, or ``None`` when it cannot be imported.

    The import is attempted once; ``ImportError`` (not installed) and ``OSError`` (installed but
    its CUDA libraries cannot be loaded) both mean "not available".
    """
    global _TCNN, _TCNN_ERROR, _TCNN_PROBED
    if not _TCNN_PROBED:
        _TCNN_PROBED = True
        try:
            import tinycudann  # the one guarded import

            _TCNN = tinycudann
        except (ImportError, OSError) as exc:
            _TCNN, _TCNN_ERROR = None, f"{type(exc).__name__}: {exc}"
    return _TCNN


def has_tcnn() -> bool:
    """Whether tiny-cuda-nn is importable (it still needs a CUDA device to run)."""
    return tcnn_module() is not None


_NVDR: ModuleType | None = None
_NVDR_ERROR: str | None = None
_NVDR_PROBED = False


def nvdiffrast_module() -> ModuleType | None:
    """The ``nvdiffrast.torch`` module, or ``None`` when it cannot be imported (probed once)."""
    global _NVDR, _NVDR_ERROR, _NVDR_PROBED
    if not _NVDR_PROBED:
        _NVDR_PROBED = True
        try:
            import nvdiffrast.torch as nvdr  # the one guarded import

            _NVDR = nvdr
        except (ImportError, OSError) as exc:
            _NVDR, _NVDR_ERROR = None, f"{type(exc).__name__}: {exc}"
    return _NVDR


def has_nvdiffrast() -> bool:
    """Whether nvdiffrast is importable (it rasterises on CUDA only)."""
    return nvdiffrast_module() is not None


def report() -> dict[str, Any]:
    """A JSON-ready summary of the compute capabilities (used by ``palm doctor``)."""
    info: dict[str, Any] = {"cuda": has_cuda(), "tcnn": has_tcnn(), "nvdiffrast": has_nvdiffrast()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_device"] = torch.cuda.get_device_name(0) if info["cuda"] else None
    except Exception:  # noqa: BLE001 - a probe must never raise
        info["torch"] = None
    if not info["tcnn"]:
        info["tcnn_error"] = _TCNN_ERROR
    if not info["nvdiffrast"]:
        info["nvdiffrast_error"] = _NVDR_ERROR
    return info
