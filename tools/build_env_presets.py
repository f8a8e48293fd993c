"""Build the shipped environment presets in ``assets/envmaps/`` from the 8 CC0 studio-light maps.

For each map ``<name>.exr`` of ``../shared/data/hdri/blender_studiolights/`` (Blender's studio
lights, Poly Haven originals by Greg Zaal, CC0) this fits 64 spherical Gaussians and writes

* ``<name>.json``     the SG lobes (palm-sg-v1) with the fit errors and the source;
* ``<name>.png``      a 128 x 64 tone-mapped preview of the original map (thumbnail);
* ``<name>_sg.png``   a 128 x 64 preview of the SG fit;

plus ``LICENSE.txt`` (the CC0 notice shipped with the maps) and ``ATTRIBUTION.md``.

    python tools/build_env_presets.py [--src DIR] [--out DIR] [--lobes 64] [--only studio,city]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SRC = ROOT.parent / "shared" / "data" / "hdri" / "blender_studiolights"
NAMES = ("city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset")

ATTRIBUTION = """# Environment presets: attribution

The presets in this folder are spherical-Gaussian fits (64 lobes, `<name>.json`) and small
previews (`<name>.png`: the original map, `<name>_sg.png`: the fit) of the eight studio-light
environment maps that ship with Blender (`datafiles/studiolights/world/*.exr`: city, courtyard,
forest, interior, night, studio, sunrise, sunset).

Those maps are 1K versions of HDRIs by **Greg Zaal** from **Poly Haven** (https://polyhaven.com),
released under **CC0** (public domain dedication); see `LICENSE.txt` for the original notice with
the source HDRI of each map. No attribution is legally required; we give it gladly.

Regenerate with `python tools/build_env_presets.py`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder with the CC0 .exr maps")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "envmaps", help="output folder")
    parser.add_argument("--lobes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--only", default="", help="comma-separated subset of the names")
    args = parser.parse_args(argv)

    import shutil

    from palm.imageio import load_hdr, write_image
    from palm.io import atomic_write
    from palm.render.envmap import downsample_equirect
    from palm.render.sg import fit_sg, save_sg, sg_to_equirect

    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(NAMES)
    for name in names:
        src = args.src / f"{name}.exr"
        image = load_hdr(src)
        lobes, report = fit_sg(image, n_lobes=args.lobes, steps=args.steps)
        meta = {"name": name, "source": f"blender_studiolights/{name}.exr", "license": "CC0-1.0", **report}
        save_sg(args.out / f"{name}.json", lobes, meta)
        write_image(args.out / f"{name}.png", downsample_equirect(image, 64))
        write_image(args.out / f"{name}_sg.png", sg_to_equirect(lobes, 64))
        print(
            f"{name:<10} rel_error {report['rel_error']:.3f}  irradiance_rel_error "
            f"{report['irradiance_rel_error']:.4f}  ({report['seconds']:.1f} s)",
            flush=True,
        )
    with atomic_write(args.out / "LICENSE.txt") as tmp:
        shutil.copyfile(args.src / "license.txt", tmp)
    with atomic_write(args.out / "ATTRIBUTION.md") as tmp:
        tmp.write_text(ATTRIBUTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
