"""``palm-studio`` command line: arguments, the default window size, ``--screenshot`` and the interactive run.

    palm-studio [PHOTO] [--avatar DIR] [--pose NAME|FILE] [--env NAME|FILE] [--size WxH]
    palm-studio --screenshot OUT.png --pose fist [--avatar DIR] [--env E] [--size WxH]

``--screenshot`` saves the window once every bake and job that the command line started has
finished (a generous timeout, logged when it expires), then exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from palm.errors import PalmError

#: The default window: fits a 1280x800 laptop screen; never larger than the screen when known.
DEFAULT_SIZE = (1280, 800)
MIN_SIZE = (640, 480)
SCREENSHOT_TIMEOUT_S = 900.0


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise PalmError("--size", f"expected WIDTHxHEIGHT, got '{text}'") from None
    if w < MIN_SIZE[0] or h < MIN_SIZE[1] or w > 8192 or h > 8192:
        raise PalmError("--size", f"window size {w}x{h} out of range (640x480 to 8192x8192)")
    return w, h


def screen_size() -> tuple[int, int] | None:
    """The X screen's size in pixels, or None (no display, no Xlib)."""
    if not os.environ.get("DISPLAY"):
        return None
    try:
        from Xlib import display

        d = display.Display()
        try:
            screen = d.screen()
            return int(screen.width_in_pixels), int(screen.height_in_pixels)
        finally:
            d.close()
    except Exception:  # noqa: BLE001 - unknown screen: the default stands
        return None


def default_window_size(screen: tuple[int, int] | None = None) -> tuple[int, int]:
    """1280x800, shrunk to the screen (less room for panels and title bars) when it is smaller."""
    if screen is None:
        return DEFAULT_SIZE
    sw, sh = screen
    return (max(MIN_SIZE[0], min(DEFAULT_SIZE[0], sw - 32)) if sw < DEFAULT_SIZE[0] + 32 else DEFAULT_SIZE[0],
            max(MIN_SIZE[1], min(DEFAULT_SIZE[1], sh - 72)) if sh < DEFAULT_SIZE[1] + 72 else DEFAULT_SIZE[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="palm-studio", description="PALM-Net hand avatar studio (GUI).")
    p.add_argument("photo_arg", nargs="?", metavar="PHOTO", help="a hand photo to personalise")
    p.add_argument("--photo", help="a hand photo to personalise (same as PHOTO)")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="save the window once every bake and job started by the command line has finished, then exit")
    p.add_argument("--pose", help="pose preset name or pose JSON (also applied over --avatar's pose)")
    p.add_argument("--env", help="environment preset name, SG .json, or .exr/.hdr map")
    p.add_argument("--avatar", metavar="DIR", help="personalised avatar folder")
    p.add_argument("--prior", metavar="DIR", help="prior folder (default assets/priors/default)")
    p.add_argument("--size", help="window size WIDTHxHEIGHT (default 1280x800, never larger than the screen)")
    p.add_argument("--frames", type=int, default=8,
                   help="frames drawn after the jobs finished, before --screenshot (default 8)")
    p.add_argument("--timeout", type=float, default=SCREENSHOT_TIMEOUT_S,
                   help=f"--screenshot: longest wait for the jobs, seconds (default {SCREENSHOT_TIMEOUT_S:.0f})")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    xvfb = None
    studio = None
    try:
        size = parse_size(args.size) if args.size else None
        if args.screenshot:
            from palm.io import check_output_path

            check_output_path(args.screenshot, (".png",))
        photo = args.photo or args.photo_arg
        if photo and not Path(photo).is_file():
            raise PalmError(photo, "photo not found")
        from app.xvfb import ensure_display

        want = size or DEFAULT_SIZE
        xvfb = ensure_display(max(want[0], 1600), max(want[1], 1000))
        if size is None:
            size = default_window_size(screen_size())
        from app.studio import Studio

        studio = Studio(size=size, prior=args.prior, env=args.env, pose=args.pose, avatar=args.avatar, photo=photo)
        for line in studio.controller.errors:
            print(f"warning: {line.splitlines()[0]}", file=sys.stderr)
        if args.screenshot:
            studio.screenshot(args.screenshot, warmup_frames=max(args.frames, 3), jobs_timeout_s=args.timeout)
            print(args.screenshot)
        else:
            studio.run()
        return 0
    except PalmError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if studio is not None:
            studio.close()
        if xvfb is not None:
            xvfb.stop()


def entry() -> None:
    """Console-script entry point ``palm-studio``."""
    sys.exit(main())
