"""Small triangle-mesh helpers of the hand layer: boundary loops, wrist sealing, welding.

A MANO-style hand mesh is open at the wrist. The SDF pretraining needs a closed surface with a
reliable inside/outside test, so the wrist opening is closed by a fan of extra triangles
(``seal_faces``) that use only existing vertices. Rigs whose vertices are split along UV seams
(the open rig) also carry ``weld_index``: for every vertex, the id of the geometric vertex it is a
copy of, so that the sealed mesh can be made watertight again.
"""

from __future__ import annotations

import numpy as np


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges, each ordered along the faces' own edge direction.

    Args:
        faces: (F, 3) int triangle indices, consistently oriented.

    Returns:
        list of (L,) int arrays; loop ``l`` has the boundary half-edges ``l[i] -> l[i+1]``.
    """
    faces = np.asarray(faces, dtype=np.int64)
    half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=0)
    pairs = {(int(a), int(b)) for a, b in half}
    nxt: dict[int, int] = {}
    for a, b in pairs:
        if (b, a) not in pairs:
            nxt[a] = b
    loops: list[np.ndarray] = []
    seen: set[int] = set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        cur = nxt[start]
        while cur != start and cur in nxt and cur not in seen:
            loop.append(cur)
            seen.add(cur)
            cur = nxt[cur]
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def seal_faces(faces: np.ndarray) -> np.ndarray:
    """Fan triangles that close every boundary loop, oriented like the surrounding surface.

    The fan starts at the first vertex of each loop and reverses the loop's half-edges, so the
    union ``faces + seal`` has every edge shared by exactly two faces with opposite directions.

    Args:
        faces: (F, 3) int triangle indices of an open, consistently oriented mesh.

    Returns:
        (S, 3) int64 extra triangles (``S = sum(L - 2)`` over loops).
    """
    out = []
    for loop in boundary_loops(faces):
        for i in range(1, len(loop) - 1):
            out.append((loop[0], loop[i + 1], loop[i]))
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


def weld_representatives(weld_index: np.ndarray) -> np.ndarray:
    """First vertex of every weld group.

    Args:
        weld_index: (V,) int, group id of each vertex, ids ``0..U-1`` all used.

    Returns:
        (U,) int64 vertex index representing each group.
    """
    weld_index = np.asarray(weld_index, dtype=np.int64)
    n = int(weld_index.max()) + 1 if weld_index.size else 0
    rep = np.full(n, -1, dtype=np.int64)
    # reversed assignment leaves the first occurrence in place
    order = np.arange(weld_index.size)[::-1]
    rep[weld_index[order]] = order
    return rep
