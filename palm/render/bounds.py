"""Upper bounds on sizes read from files and flags, derived from memory (one place).

A bound turns an absurd number in a file or on the command line into a clear error before any
memory is allocated. Each bound is far above what a real input needs.
"""

MAX_LOBES = 1024
"""SG lobes in a light (the paper uses 64). A fit holds ``64 x 128 x K x 3`` floats: 100 MB at 1024."""
MAX_SG_AMPLITUDE = 1e9
"""Largest SG amplitude (linear radiance); the brightest real HDR suns are below 1e6."""
MAX_SG_SHARPNESS = 1e5
"""Largest SG sharpness (a lobe of about 0.3 degrees); the fitter clamps at this value too."""
MAX_RADIANCE = 1e9
"""Largest pixel value an environment map may hold (linear); larger values are corrupt data."""
MAX_MAP_PIXELS = 16384 * 8192
"""Largest environment map (a 16k equirect; its float32 RGB copy is 1.6 GB)."""
