"""``palm doctor``: what this machine has (torch, CUDA, optional accelerators, OpenGL, GUI, MANO)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from palm.cli.common import common, print_json

_GL_PROBE = """
import moderngl
ctx = moderngl.create_standalone_context(backend="egl")
print(ctx.info["GL_RENDERER"] + " | OpenGL " + ctx.info["GL_VERSION"])
"""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def opengl_renderer(timeout: float = 20.0) -> str | None:
    """The OpenGL renderer string of a headless EGL context, probed in a child process.

    A child process keeps a broken driver from taking this process down with it.
    """
    try:
        out = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def mano_path(explicit: str | None = None) -> Path | None:
    """The MANO_RIGHT.pkl to use: ``--mano``, else ``$PALM_MANO_PATH``, else none."""
    from palm.hand.mano import find_mano

    return find_mano(explicit)


def report(mano: str | None = None, probe_gl: bool = True) -> dict[str, Any]:
    """A dict of what this machine offers palm-studio (the keys are stable: the studio and checks read them)."""
    import torch

    from palm import backends

    cuda = torch.cuda.is_available()
    mano_file = mano_path(mano)
    return {
        "palm_studio": __import__("palm").__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "device": "cuda" if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "tinycudann": backends.has_tcnn(),
        "nvdiffrast": backends.has_nvdiffrast(),
        "opengl_renderer": opengl_renderer() if probe_gl else None,
        "dearpygui": _version("dearpygui"),
        "moderngl": _version("moderngl"),
        "display": os.environ.get("DISPLAY"),
        "mano_found": bool(mano_file and mano_file.is_file()),
        "mano_path": str(mano_file) if mano_file else None,
    }


def run_doctor(args) -> int:
    info = report(args.mano)
    if args.json:
        print_json(info)
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value if value is not None else '-'}")
    if not info["mano_found"]:
        print("\nno MANO file: the embedded open hand rig is used (set PALM_MANO_PATH or pass --mano PATH).")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common()],
        help="show what this machine has (torch, CUDA, tiny-cuda-nn, nvdiffrast, OpenGL, Dear PyGui, MANO)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_doctor)
