"""``palm render``: an image of a prior's hand or of a personalised avatar."""

from __future__ import annotations

from palm.cli.common import bounded_float, bounded_int, common


def register(sub) -> None:
    p = sub.add_parser(
        "render",
        parents=[common()],
        help="render a hand (prior or avatar) to an RGBA PNG or a linear EXR",
        description=(
            "Render the hand (its mesh by default, or PALM-Net's volume renderer with --renderer neural). With --avatar "
            "and no --pose/--res/--cam-azimuth, renders the avatar in its own photo's view, pose and resolution, lit "
            "by its fitted environment "
            "(or --env to relight). Otherwise the hand is shown upright, palm to the camera, orbited by --cam-azimuth."
        ),
    )
    p.add_argument("--pose", default=None, help="pose preset name (palm hand presets) or pose file (default: relaxed)")
    p.add_argument("--res", type=bounded_int(8, 8192), default=None, help="image size in pixels (default 256)")
    p.add_argument("--out", required=True, help="output .png (RGBA, alpha = opacity) or .exr (linear)")
    p.add_argument("--prior", default=None, help="prior folder (default: the shipped assets/priors/default)")
    p.add_argument("--avatar", default=None, help="avatar folder from 'palm personalize'")
    p.add_argument("--env", default=None, help="environment preset name, SG .json, or HDR/EXR file")
    p.add_argument("--cam-azimuth", type=bounded_float(-3600.0, 3600.0), default=None, help="camera azimuth in degrees, 0 = facing the palm (default 0)")
    p.add_argument("--cam-elevation", type=bounded_float(-89.0, 89.0), default=10.0, help="camera elevation in degrees")
    p.add_argument("--shape-pca", default=None, metavar="C1,C2,..",
                   help="shape PCA coefficients of the prior (in standard deviations; default: the mean subject)")
    p.add_argument("--appearance-pca", default=None, metavar="C1,C2,..",
                   help="appearance PCA coefficients of the prior (in standard deviations)")
    p.add_argument("--image", choices=("pbr", "rf"), default="pbr",
                   help="PBR image (default) or radiance-field image (--renderer neural only)")
    p.add_argument("--renderer", choices=("raster", "neural"), default="raster",
                   help="raster (default): the avatar's mesh, refined from the photo when personalised, z-buffered and "
                        "shaded with shadows in seconds; neural: PALM-Net's volume renderer (minutes on a CPU)")
    p.set_defaults(func=run_render)


def run_render(args) -> int:

    from palm.cli.common import resolve_device
    from palm.errors import PalmError
    from palm.io import check_output_path
    from palm.jobs import ConsoleProgress

    out_path = check_output_path(args.out, (".png", ".exr"))
    if args.image == "rf" and args.renderer != "neural":
        raise PalmError("--image", "the radiance-field image needs --renderer neural")
    device = resolve_device(args.device)
    from palm.scene import load_scene, render_scene

    scene = load_scene(prior=args.prior, avatar=args.avatar, pose=args.pose, env=args.env, res=args.res,
                       azimuth=args.cam_azimuth, elevation=args.cam_elevation, device=device,
                       shape_sigmas=_floats(args.shape_pca, "--shape-pca"),
                       appearance_sigmas=_floats(args.appearance_pca, "--appearance-pca"), renderer=args.renderer)
    bar = ConsoleProgress("render")
    image = render_scene(scene, image=args.image, emit=bar)
    from palm.imageio import write_image

    write_image(out_path, image.cpu().numpy())
    print(f"wrote {out_path}")
    return 0


def _floats(text, flag):
    from palm.errors import PalmError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PalmError(flag, f"expected comma-separated numbers, got '{text[:80]}'") from None
    if not all(abs(v) <= MAX_SIGMAS for v in values):  # also false for NaN
        raise PalmError(flag, f"values must be finite standard deviations within +-{MAX_SIGMAS:g}")
    return values


#: PCA coefficients beyond this many standard deviations leave the prior's subjects far behind.
MAX_SIGMAS = 10.0
