"""What defines a synthetic dataset: :class:`SynthConfig` (stored in its ``meta.json``) and the rig constants."""

from __future__ import annotations

import math
from dataclasses import dataclass

GENERATOR_VERSION = "2.0"
CAMERA_IDS = tuple(f"MCU_{i:02d}" for i in range(1, 8))
#: Nominal (azimuth, elevation) in degrees of the 7 rig cameras around the hand.
RIG_ANGLES = ((0.0, 15.0), (75.0, 30.0), (-75.0, 30.0), (150.0, 10.0), (-150.0, 10.0), (25.0, 65.0), (180.0, 55.0))
#: Finger chains in MediaPipe keypoint indices (thumb, index, middle, ring, pinky).
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic dataset (stored in its ``meta.json``)."""

    n_subjects: int = 20
    n_poses: int = 3
    n_views: int = 7
    resolution: int = 128
    seed: int = 0
    envs: tuple[str, ...] | None = None
    """Environment presets / SG or HDR files to draw from; None = every installed preset."""
    supersample: int = 2
    hand: str = "open"
    """``open`` (the embedded rig) or a path to the user's MANO_RIGHT.pkl."""
    texture_size: int | None = None
    """Side of the subjects' material maps; None = 4 x the resolution as a power of two in 128..1024
    (:meth:`texture_side`: about 4 texels per millimetre of skin at 256 px, where a pixel is 1 mm)."""
    relief: bool = True
    """Shade with the subjects' relief (creases, nail folds, veins: a bump map); False = smooth normals."""
    camera_distance: float = 0.5
    hand_extent: float = 0.22
    """Metres that ``fill`` of the image side spans at the camera distance."""
    fill: float = 0.9
    shadow_resolution: int = 96
    shadow_lobe_axes: int = 16
    """Shadow maps along the axes of this many strongest lobes ..."""
    shadow_uniform_dirs: int = 32
    """... plus this many Fibonacci-sphere directions (see :func:`lobe_visibility`)."""
    shadow_proxy_cell: float = 0.003
    """Occluder = the sealed mesh clustered on a grid of this cell (metres)."""
    shadow_bias_texels: float = 2.5
    shadow_groups: int = 7
    """Lobes with their own visibility (the strongest); the others share one (see :func:`lobe_groups`)."""
    exposure: float = 1.0
    preset_probability: float = 0.5
    background: str = "env"
    """``env`` (the environment), ``black`` or ``white``."""
    torch_threads: int | None = 1
    """Intra-op threads while generating (restored afterwards): the renderer runs many small tensor
    ops, for which extra threads cost more than they give. None = leave torch's setting."""

    def texture_side(self) -> int:
        """The material maps' side in texels (``texture_size``, or the automatic choice)."""
        if self.texture_size:
            return int(self.texture_size)
        return int(min(1024, max(128, 2 ** round(math.log2(4 * self.resolution)))))
