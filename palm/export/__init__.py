"""Export: meshes (OBJ/PLY/skinned PBR glTF), stills, turntables and environments.

Everything here takes a :class:`palm.bake.BakedAvatar` (a canonical skinned mesh with per-vertex
PBR material) and writes files other tools open. Import from the submodules:

- :mod:`palm.export.textures`: the ``xatlas`` UV atlas, tangents and baked PBR textures.
- :mod:`palm.export.gltf`: the skinned glTF 2.0 binary writer and a small GLB reader.
- :mod:`palm.export.mesh`: :func:`~palm.export.mesh.export_mesh` (OBJ + MTL + PNGs, PLY, GLB).
- :mod:`palm.export.preview`: raster stills, turntables (MP4/GIF) and environments (EXR/JSON).

Images go through :mod:`palm.imageio`, every file through :func:`palm.io.atomic_write`.
"""
