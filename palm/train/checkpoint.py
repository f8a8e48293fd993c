"""Training checkpoints: ``RUN/checkpoints/step_NNNNNNN.safetensors`` + a JSON sidecar of the same stem.

The safetensors file holds the model (``model/<name>``) and the optimiser state
(``optim/<param index>/<key>``); the sidecar holds ``step``, ``config``, ``content_hash`` (of the
model tensors, see :func:`palm.prior.tensor_hash`), the optimiser's hyper-parameters, the dataset
summary and anything else the trainer needs to resume exactly. The tensor file is written first
and the sidecar last, each atomically, so a sidecar always describes a complete tensor file; a
tensor file without its sidecar (a kill between the two) is ignored and overwritten.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from palm.errors import PalmError
from palm.io import atomic_write, read_json
from palm.prior import model_tensors, tensor_hash

_NAME = re.compile(r"^step_(\d{7})\.json$")
_TEMPORARY = re.compile(r"^\.step_\d{7}\.(safetensors|json)\.[a-z0-9_]{8}\.tmp(\.[a-z]+)?$")


def checkpoint_path(run: str | os.PathLike, step: int) -> Path:
    """``RUN/checkpoints/step_NNNNNNN.safetensors``."""
    return Path(run) / "checkpoints" / f"step_{step:07d}.safetensors"


def list_checkpoints(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (tensor file + sidecar), sorted by step."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for f in folder.iterdir():
        m = _NAME.match(f.name)
        if m and f.with_suffix(".safetensors").is_file():
            found.append((int(m.group(1)), f.with_suffix(".safetensors")))
    return sorted(found)


def clean_temporaries(run: str | os.PathLike) -> list[Path]:
    """Remove the half-written files a killed checkpoint write left in ``RUN/checkpoints``
    (``.step_NNNNNNN.<ext>.XXXXXXXX.tmp<ext>``, see :func:`palm.io.atomic_write`); returns them."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    stale = [f for f in folder.iterdir() if _TEMPORARY.match(f.name) and f.is_file()]
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def latest_checkpoint(run: str | os.PathLike) -> Path | None:
    items = list_checkpoints(run)
    return items[-1][1] if items else None


def _optim_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    run: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    sidecar: dict[str, Any],
    keep_last: int = 3,
) -> Path:
    """Write a checkpoint atomically and prune all but the newest ``keep_last``. Returns its path."""
    from safetensors.torch import save_file

    path = checkpoint_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    mt = model_tensors(model)
    tensors = {f"model/{k}": v for k, v in mt.items()}
    meta: dict[str, Any] = {"step": int(step), "content_hash": tensor_hash(mt), **sidecar}
    if optimizer is not None:
        ot, ometa = _optim_tensors(optimizer)
        tensors.update(ot)
        meta["optimizer"] = ometa
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp))
    with atomic_write(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if keep_last > 0:
        for _, old in list_checkpoints(run)[:-keep_last]:
            for f in (old.with_suffix(".json"), old):  # sidecar first: a half-pruned pair is ignored
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint: ``(model tensors, optimiser tensors, sidecar)``; verifies the content hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_json(path.with_suffix(".json"))
    for key in ("step", "config", "content_hash"):
        if key not in meta:
            raise PalmError(path.with_suffix(".json"), f"missing key '{key}'")
    if not path.is_file():
        raise PalmError(path, "checkpoint file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PalmError(path, f"not a readable checkpoint ({exc})") from None
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optim/")}
    if tensor_hash(model) != meta["content_hash"]:
        raise PalmError(path, "content hash does not match its sidecar (corrupt checkpoint)")
    return model, optim, meta


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load the optimiser state saved by :func:`save_checkpoint` (moments and step counts).

    The groups keep the settings ``optimizer`` was built with (learning rates, weight decay, ...):
    they come from this run's configuration, so a resume with ``--set lr...`` takes effect.
    """
    om = meta.get("optimizer")
    if om is None:
        return
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split("/", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, scalars in om.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(scalars)
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)
