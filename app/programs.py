"""Loads the GLSL programs of ``shaders/``: one file per program, stages selected by ``#define``.

A program file holds every stage; the loader prepends ``#version 330``, a ``#define
VERTEX_SHADER`` / ``FRAGMENT_SHADER`` line and any caller defines, and expands
``#include "name.glsl"`` from ``shaders/include/`` (once per file). Built programs are cached per
(context, file, defines).
"""

from __future__ import annotations

import re
from pathlib import Path

from palm.assets import SHADERS

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)
_CACHE: dict[tuple[int, str, tuple], object] = {}


def expand_includes(source: str, folder: Path = SHADERS / "include", seen: set[str] | None = None) -> str:
    """Replace every ``#include "x.glsl"`` line by that file's (recursively expanded) text."""
    seen = set() if seen is None else seen

    def repl(match: re.Match) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return expand_includes((folder / name).read_text(), folder, seen)

    return _INCLUDE.sub(repl, source)


def stage_source(name: str, stage: str, defines: dict[str, object] | None = None) -> str:
    """Full GLSL text of one stage (``"VERTEX_SHADER"`` or ``"FRAGMENT_SHADER"``) of ``shaders/<name>``."""
    body = expand_includes((SHADERS / name).read_text())
    lines = ["#version 330 core", f"#define {stage}"]
    lines += [f"#define {k} {v}" for k, v in sorted((defines or {}).items())]
    return "\n".join(lines) + "\n#line 1\n" + body


def load_program(ctx, name: str, defines: dict[str, object] | None = None):
    """A cached ``moderngl.Program`` for ``shaders/<name>`` with ``defines``."""
    key = (id(ctx), name, tuple(sorted((defines or {}).items())))
    if key not in _CACHE:
        _CACHE[key] = ctx.program(
            vertex_shader=stage_source(name, "VERTEX_SHADER", defines),
            fragment_shader=stage_source(name, "FRAGMENT_SHADER", defines),
        )
    return _CACHE[key]


def forget(ctx) -> None:
    """Drop the cached programs of a context that is being released."""
    for key in [k for k in _CACHE if k[0] == id(ctx)]:
        del _CACHE[key]
