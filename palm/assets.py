"""Where shipped data lives: ``assets/`` and ``shaders/`` of the source tree (one place)."""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root (palm/ and app/ are run from the source tree; see README).
ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("PALM_ASSETS", ROOT / "assets"))
SHADERS = ROOT / "shaders"

HANDS = ASSETS / "hands"
POSES = ASSETS / "poses"
ENVMAPS = ASSETS / "envmaps"
PRIORS = ASSETS / "priors"
MODELS = ASSETS / "models"

DEFAULT_PRIOR = PRIORS / "default"
DEFAULT_ENV = "studio"


def asset(*parts: str) -> Path:
    """Path of a shipped asset, e.g. ``asset("envmaps", "studio.json")``."""
    return ASSETS.joinpath(*parts)

#: The licence-clear material beside the repository (HDR maps, photos, models); used by the tools
#: that build assets and by tests, never needed at run time.
SHARED = Path(os.environ.get("PALM_SHARED", ROOT.parent / "shared"))
