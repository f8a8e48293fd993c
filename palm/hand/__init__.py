"""Articulated right hands in MANO conventions: one interface, two sources.

>>> from palm.hand import load_hand, load_pose
>>> hand = load_hand("open")                       # embedded CC0 rig (assets/hands/)
>>> out = hand(torch.as_tensor(load_pose("fist"))[None].float())
>>> out.vertices.shape, out.keypoints.shape        # (1, V, 3), (1, 21, 3)

``load_hand("mano", path)`` loads the user's MANO_RIGHT.pkl (or ``$PALM_MANO_PATH``) through
smplx. Both sources go through :func:`palm.hand.model.hand_from_arrays`. Frames, joint and
keypoint orders and left-hand mirroring are documented in :mod:`palm.hand.model`; pose files in
:mod:`palm.hand.poses`.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from palm.errors import PalmError

if TYPE_CHECKING:
    from palm.hand.model import HandModel

#: Public names and the module that defines them; loaded on first use (PEP 562), so importing
#: ``palm.hand.cli`` for ``palm --help`` does not import torch.
_LAZY = {
    **{name: "palm.hand.model" for name in (
        "JOINT_NAMES", "KEYPOINT_FROM_JOINT", "KEYPOINT_NAMES", "PARENTS", "HandModel", "HandOutput",
        "hand_from_arrays", "mirror_points", "mirror_transforms")},
    "mirror_pose": "palm.hand.lbs",
    "POSE_PRESETS": "palm.hand.poses",
    "load_pose": "palm.hand.poses",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'palm.hand' has no attribute '{name}'")


HAND_SOURCES = ("open", "mano")


def load_hand(source: str = "open", path: str | os.PathLike | None = None) -> HandModel:
    """Load a hand model.

    Args:
        source: "open" (the embedded CC0 rig; ``path`` may point to another rig .npz) or "mano"
            (the user's MANO_RIGHT.pkl from ``path``, else ``$PALM_MANO_PATH``).

    Raises:
        PalmError: unknown source, or a missing / malformed model file (naming the file).
    """
    from palm.hand import mano
    from palm.hand.model import hand_from_arrays

    if source == "open":
        file = path or mano.OPEN_HAND_FILE
        return hand_from_arrays(mano.open_arrays(file), "open", file)
    if source == "mano":
        file = mano.find_mano(path)
        if file is None:
            raise PalmError("--mano", f"no MANO model given: pass --mano PATH or set ${mano.MANO_ENV}")
        return hand_from_arrays(mano.mano_arrays(file), "mano", file)
    raise PalmError("--hand", f"unknown hand source '{source}' (use {' or '.join(HAND_SOURCES)})")


__all__ = [
    "HAND_SOURCES",
    "JOINT_NAMES",
    "KEYPOINT_FROM_JOINT",
    "KEYPOINT_NAMES",
    "PARENTS",
    "POSE_PRESETS",
    "HandModel",
    "HandOutput",
    "hand_from_arrays",
    "load_hand",
    "load_pose",
    "mirror_points",
    "mirror_pose",
    "mirror_transforms",
]
