"""The viewport renderer: a skinned, SG-lit avatar mesh drawn with moderngl into an offscreen FBO.

The renderer never creates windows. It takes a moderngl context: inside the studio the context of
Dear PyGui's own window (``moderngl.create_context()`` after the viewport is shown, see
``DESIGN.md``); headless (bench, tests) a standalone EGL context from :func:`standalone_context`.
Posing changes only the 16 bone matrices (uniforms); lighting only the SG uniforms, the
pre-integrated light maps (:mod:`app.prefilter`, recomputed when the environment itself changes,
not when it turns) and the background texture. Two mesh programs: the pre-integrated lighting
(default, a few texture fetches per pixel) and the exact per-pixel ``shade_sg`` loop over the lobes
(``preintegrated = False``). :meth:`AvatarRenderer.render` returns the image top row first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.actions import env_image, turn_environment, y_rotation
from app.camera import OrbitCamera, gl_projection
from app.programs import load_program
from palm.bake import closed_outward

MAX_LOBES = 64
ENV_TEX_HEIGHT = 128


def standalone_context():
    """A headless moderngl context: EGL (no display needed), else the platform default."""
    import moderngl

    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception:  # noqa: BLE001 - fall back to GLX/WGL where EGL is missing
        return moderngl.create_standalone_context()


@dataclass(frozen=True)
class SGUniforms:
    """SG lobes as the shader reads them: unit axes (K,3), sharpness (K,), amplitude (K,3)."""

    axis: np.ndarray
    sharpness: np.ndarray
    amplitude: np.ndarray


def sg_uniforms(lobes: np.ndarray) -> SGUniforms:
    """Raw lobes (K, 7) -> the shader's values (``palm.render.sg.sg_decode``)."""
    import torch

    from palm.render.sg import sg_decode

    xi, lam, mu = sg_decode(torch.as_tensor(np.asarray(lobes, np.float32)).reshape(-1, 7))
    return SGUniforms(xi.numpy(), lam.numpy(), mu.numpy())


FRONT_FACE = "cw"
"""Winding of an outward face on screen: counter-clockwise in the world, clockwise after
:func:`app.camera.gl_projection` (OpenCV's y-down camera keeps image row 0 at the top, a mirror)."""


def vertex_data(avatar) -> np.ndarray:
    """Interleaved per-vertex data of a :class:`palm.bake.BakedAvatar`: (V, 27) float32.

    Layout: position 3, normal 3, albedo 3, (roughness, metallic) 2, skin weights 16.
    """
    n = len(avatar.vertices)
    return np.concatenate(
        [
            np.asarray(avatar.vertices, np.float32).reshape(n, 3),
            np.asarray(avatar.normals, np.float32).reshape(n, 3),
            np.asarray(avatar.albedo, np.float32).reshape(n, 3),
            np.asarray(avatar.roughness, np.float32).reshape(n, 1),
            np.asarray(avatar.metallic, np.float32).reshape(n, 1),
            np.asarray(avatar.skin_weights, np.float32).reshape(n, 16),
        ],
        axis=1,
    )


class AvatarRenderer:
    """Draws one avatar with one environment into an offscreen RGBA8 framebuffer.

    Args:
        ctx: a moderngl context (current on the calling thread).
        width, height: image size in pixels.
    """

    def __init__(self, ctx, width: int, height: int):
        self.ctx = ctx
        self.programs = {flag: load_program(ctx, "mesh_sg.glsl", {"MAX_LOBES": MAX_LOBES, "PREINTEGRATED": int(flag)})
                         for flag in (True, False)}
        self.preintegrated = True
        self.bg_prog = load_program(ctx, "background.glsl")
        self.fbo = None
        self.resize(width, height)
        tri = np.array([-1, -1, 3, -1, -1, 3], np.float32)
        self._bg_vbo = ctx.buffer(tri.tobytes())
        self._bg_vao = ctx.vertex_array(self.bg_prog, [(self._bg_vbo, "2f", "in_ndc")])
        self._mesh_vaos: dict = {}
        self._mesh_buffers: list = []
        self.env_texture = None
        self.irradiance_texture = None
        self.specular_texture = None
        self._light_key: bytes | None = None
        self.n_lobes = 0
        self.bones = np.tile(np.eye(4, dtype=np.float32), (16, 1, 1))
        self.exposure = 0.0
        self.show_environment = True
        self.flat_color = (0.18, 0.18, 0.2)
        self.has_avatar = False
        self.closed = False
        """The avatar is a closed, outward-wound surface: back faces are culled (same image, faster)."""
        self.draw_avatar = True
        self.draw_background = True
        """False: no environment pass, the image's alpha is 0 where no avatar was drawn (overlays)."""
        self.renders = 0
        """Images drawn so far (the studio's idle frames must not add to it)."""

    def resize(self, width: int, height: int) -> None:
        """Recreate the framebuffer at ``width`` x ``height`` (no-op when the size is unchanged)."""
        width, height = max(int(width), 1), max(int(height), 1)
        if self.fbo is not None and self.size == (width, height):
            return
        if self.fbo is not None:
            self.fbo.release()
            self._color.release()
            self._depth.release()
        self.size = (int(width), int(height))
        self._color = self.ctx.renderbuffer(self.size, components=4)
        self._depth = self.ctx.depth_renderbuffer(self.size)
        self.fbo = self.ctx.framebuffer(color_attachments=[self._color], depth_attachment=self._depth)

    @property
    def mesh_prog(self):
        """The mesh program in use (pre-integrated or exact lighting)."""
        return self.programs[self.preintegrated]

    def set_avatar(self, avatar) -> None:
        """Upload a :class:`palm.bake.BakedAvatar` (replaces the previous one)."""
        for obj in [*self._mesh_buffers, *self._mesh_vaos.values()]:
            obj.release()
        vbo = self.ctx.buffer(vertex_data(avatar).tobytes())
        ibo = self.ctx.buffer(np.asarray(avatar.faces, np.int32).tobytes())
        fmt = "3f 3f 3f 2f 4f 4f 4f 4f"
        names = ["in_position", "in_normal", "in_albedo", "in_material", "in_w0", "in_w1", "in_w2", "in_w3"]
        self._mesh_vaos = {flag: self.ctx.vertex_array(prog, [(vbo, fmt, *names)], index_buffer=ibo)
                           for flag, prog in self.programs.items()}
        self._mesh_buffers = [vbo, ibo]
        self.has_avatar = True
        # the bakers know it; a mesh of unknown make (a file) is checked once here
        known = getattr(avatar, "closed", None)
        self.closed = known if known is not None else closed_outward(avatar.vertices, avatar.faces)

    def set_bones(self, bone_transforms: np.ndarray) -> None:
        """Bone matrices (16, 4, 4): rest -> posed world."""
        self.bones = np.asarray(bone_transforms, np.float32).reshape(16, 4, 4)

    def set_environment(self, lobes: np.ndarray, rotation: float = 0.0, exposure: float = 0.0) -> None:
        """SG lobes (K, 7) turned by ``rotation`` radians about +y; ``exposure`` in stops."""
        base = np.ascontiguousarray(np.asarray(lobes, np.float32).reshape(-1, 7)[:MAX_LOBES])
        lobes = turn_environment(base, rotation)
        u = sg_uniforms(lobes)
        k = len(lobes)
        axis_sharp = np.zeros((MAX_LOBES, 4), np.float32)
        amp = np.zeros((MAX_LOBES, 3), np.float32)
        axis_sharp[:k, :3], axis_sharp[:k, 3], amp[:k] = u.axis, u.sharpness, u.amplitude
        exact = self.programs[False]
        exact["u_sg_lobe"].write(axis_sharp.tobytes())
        exact["u_sg_mu"].write(amp.tobytes())
        exact["u_n_lobes"].value = k
        self.n_lobes = k
        self._set_preintegrated(base, rotation)
        image = env_image(lobes, ENV_TEX_HEIGHT)
        if self.env_texture is None or self.env_texture.size != (image.shape[1], image.shape[0]):
            if self.env_texture is not None:
                self.env_texture.release()
            self.env_texture = self.ctx.texture((image.shape[1], image.shape[0]), 3, dtype="f4")
            self.env_texture.repeat_y = False
        self.env_texture.write(np.ascontiguousarray(image).tobytes())
        self.exposure = float(exposure)

    def _set_preintegrated(self, lobes: np.ndarray, rotation: float) -> None:
        """Pre-integrated maps of the unrotated ``lobes`` (recomputed only when they change) and the
        rotation uniform ``u_env_from_world = R_y(rotation)^T``."""
        from app.prefilter import SPECULAR_LOG2_D0, preintegrate

        key = lobes.tobytes()
        if key != self._light_key:
            maps = preintegrate(lobes)
            for tex in (self.irradiance_texture, self.specular_texture):
                if tex is not None:
                    tex.release()
            irr, spec = maps.irradiance, maps.specular
            self.irradiance_texture = self.ctx.texture((irr.shape[1], irr.shape[0]), 3, irr.tobytes(), dtype="f4")
            self.specular_texture = self.ctx.texture_array((spec.shape[2], spec.shape[1], spec.shape[0]), 3,
                                                           np.ascontiguousarray(spec).tobytes(), dtype="f4")
            for tex in (self.irradiance_texture, self.specular_texture):
                tex.repeat_y = False
            self._light_key = key
            self.spec_layers = spec.shape[0]
        prog = self.programs[True]
        prog["u_env_from_world"].write(y_rotation(rotation).tobytes())  # column-major: R_y^T in GLSL
        prog["u_spec_log2_d0"].value = SPECULAR_LOG2_D0
        prog["u_spec_layers"].value = self.spec_layers

    def render(self, camera: OrbitCamera, coarse: int = 1, expand: bool = True) -> np.ndarray:
        """Draw and read back the image: (H, W, 4) uint8 sRGB, row 0 = top.

        ``coarse > 1`` draws the same view at ``1/coarse`` of the size per side (into a corner of the
        framebuffer, same projection): a frame that follows the user's input at a fraction of the
        cost. It comes back enlarged to (H, W) by pixel repetition, or with ``expand=False`` as it
        was drawn, (H // coarse, W // coarse, 4) (at least one pixel per side).
        """
        full_w, full_h = self.size
        coarse = max(1, int(coarse))
        width, height = max(1, full_w // coarse), max(1, full_h // coarse)
        view = camera.world_to_camera()
        proj = gl_projection(camera.intrinsics(full_w, full_h), full_w, full_h, 0.01, 50.0)
        eye = camera.eye().astype(np.float32)
        scale = float(2.0**self.exposure)
        ctx = self.ctx
        self.fbo.use()
        ctx.viewport = (0, 0, width, height)
        ctx.disable(ctx.CULL_FACE | ctx.BLEND)
        ctx.enable(ctx.DEPTH_TEST)
        self.fbo.clear(0.0, 0.0, 0.0, 1.0 if self.draw_background else 0.0, depth=1.0, viewport=(0, 0, width, height))
        self.renders += 1
        if self.env_texture is not None and self.draw_background:
            bg = self.bg_prog
            bg["u_inv_view_proj"].write(np.linalg.inv(proj @ view).astype(np.float32).T.tobytes())
            bg["u_eye"].value = tuple(eye)
            bg["u_exposure_scale"].value = scale
            bg["u_show_env"].value = 1.0 if self.show_environment else 0.0
            bg["u_flat_color"].value = self.flat_color
            self.env_texture.use(0)
            bg["u_env"].value = 0
            self._bg_vao.render()
        if self._mesh_vaos and self.draw_avatar:
            p = self.mesh_prog
            if self.preintegrated and self.irradiance_texture is not None:
                self.irradiance_texture.use(1)
                self.specular_texture.use(2)
                p["u_irradiance"].value = 1
                p["u_specular"].value = 2
            p["u_bones"].write(np.ascontiguousarray(self.bones.transpose(0, 2, 1)).tobytes())
            p["u_view"].write(view.astype(np.float32).T.tobytes())
            p["u_proj"].write(proj.astype(np.float32).T.tobytes())
            p["u_eye"].value = tuple(eye)
            p["u_exposure_scale"].value = scale
            if self.closed:  # no back face can show: llvmpipe then sets up half the triangles
                ctx.front_face = FRONT_FACE
                ctx.enable(ctx.CULL_FACE)
            self._mesh_vaos[self.preintegrated].render()
        ctx.disable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        data = self.fbo.read(viewport=(0, 0, width, height), components=4, alignment=1)
        image = np.frombuffer(data, np.uint8).reshape(height, width, 4)
        if coarse == 1 or not expand:
            return image
        big = np.repeat(np.repeat(image, coarse, axis=0), coarse, axis=1)[:full_h, :full_w]
        return np.pad(big, ((0, full_h - big.shape[0]), (0, full_w - big.shape[1]), (0, 0)), mode="edge")

    def release(self) -> None:
        for obj in [self._bg_vao, self._bg_vbo, *self._mesh_vaos.values(), *self._mesh_buffers, self.env_texture,
                    self.irradiance_texture, self.specular_texture, self.fbo, self._color, self._depth]:
            if obj is not None:
                obj.release()
