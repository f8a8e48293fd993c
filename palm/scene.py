"""A renderable scene (prior or avatar + pose + camera + environment), shared by ``palm render``,
``palm export render --renderer neural`` and the studio's neural view.

Outside an avatar's own photo view, the hand is presented upright and framed palm to the camera by
:func:`palm.render.views.framing_camera` (the framing of every renderer), lit by
:func:`palm.render.environment.display_light`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from palm.jobs import Emit, Progress, null_emit

#: Own-view renders of an avatar without a working camera are scaled to at most this long side.
OWN_VIEW_MAX_SIDE = 256
#: Marching-cubes resolution of the mesh the raster renderer bakes when the avatar has no refined one.
RASTER_MESH_RES = 96


@dataclass
class Scene:
    model: object  # PalmNet
    frame: object  # palm.model.Frame
    camera: object  # palm.render.rays.Camera
    light: torch.Tensor  # (K, 7)
    background: torch.Tensor  # (3,) linear
    prior_hash: str = ""
    mirror: bool = False
    """Flip the image left-right: a left-hand avatar (the fitted right hand, seen by the camera of the
    mirrored photo, or of the mirrored view: :func:`load_scene`)."""
    renderer: str = "neural"
    """``neural``: PALM-Net's volume renderer; ``raster``: ``mesh`` (an avatar's refined mesh of the
    photo-detail stage, or a bake) through the z-buffer rasteriser with SG shading and shadows
    (seconds). :func:`load_scene` picks ``raster`` unless told otherwise."""
    mesh: object = None
    """The :class:`palm.bake.BakedAvatar` the raster renderer shows."""


def load_scene(
    prior=None, avatar=None, pose=None, env=None, res=None, azimuth=None, elevation=10.0, device="cpu",
    left: bool = False,
    shape_sigmas=None,
    appearance_sigmas=None,
    renderer: str = "raster",
) -> Scene:
    """Build a scene from command-line style arguments (see ``palm render --help``)."""
    from palm.avatar import load_avatar
    from palm.hand import load_pose
    from palm.model import Frame
    from palm.prior import load_prior
    from palm.render.environment import display_light
    from palm.render.views import framing_camera, present_upright

    p = load_prior(prior, device=device)
    model = p.model
    own_view = avatar is not None and pose is None and res is None and azimuth is None
    if avatar is not None:
        av = load_avatar(avatar, prior_hash=p.content_hash)
        z_s, z_a = av.shape_code.to(device), av.appearance_code.to(device)
        betas = torch.as_tensor(av.betas, device=device)
        light = av.light.to(device)
    else:
        av = None
        z_s, z_a = p.codes_from_coeffs(_coeffs(p.pca_shape, shape_sigmas, "--shape-pca"),
                                       _coeffs(p.pca_appearance, appearance_sigmas, "--appearance-pca"))
        betas = torch.zeros(model.hand.n_betas, device=device)
        light = None
    if env is not None or light is None:
        light, _ = display_light(env)
        light = light.to(device)
    if own_view:
        # the photo's view at the resolution personalisation worked at (the crop around the hand),
        # or the whole photo scaled so that its long side is at most OWN_VIEW_MAX_SIDE
        from palm.render.rays import Camera

        if renderer == "raster":  # fast enough for the photo's own resolution
            camera = av.camera_obj().to(device)
        elif "work_camera" in av.extra:
            camera = Camera.from_dict(av.extra["work_camera"], "avatar.json").to(device)
        else:
            camera = av.camera_obj()
            camera = camera.scaled(min(1.0, OWN_VIEW_MAX_SIDE / max(camera.height, camera.width))).to(device)
        pose_t = torch.as_tensor(av.pose, device=device)
        transl = torch.as_tensor(av.transl, device=device)
    else:
        pose_np = present_upright(load_pose(pose or "relaxed"))
        pose_t = torch.as_tensor(pose_np, device=device)
        transl = torch.zeros(3, device=device)
        with torch.no_grad():
            posed = model.hand(pose_t[None], betas[None], transl[None])
        if av is not None and av.left:  # frame the left hand M X (M: x -> -x) as any hand
            m = torch.tensor([-1.0, 1.0, 1.0], device=device)
            seen = framing_camera(posed.vertices[0] * m, res or 256, azimuth or 0.0, elevation,
                                  joints=posed.joints[0] * m, left=True)
            camera, light = left_hand_view(seen.to(device), light)
        else:
            camera = framing_camera(posed.vertices[0], res or 256, azimuth or 0.0, elevation,
                                    joints=posed.joints[0]).to(device)
    gain = av.extra.get("albedo_gain") if av is not None else None
    frame = Frame(shape_code=z_s, appearance_code=z_a, pose=pose_t, betas=betas, transl=transl,
                  albedo_gain=None if gain is None else torch.tensor(gain, dtype=torch.float32, device=device))
    mesh = None
    if renderer == "raster":
        from palm.bake import RIG_FILL, bake_from_prior

        mesh = av.extra.get("mesh") if av is not None else None
        if mesh is None:
            mesh = bake_from_prior(p, resolution=RASTER_MESH_RES, betas=betas, shape_code=z_s, appearance_code=z_a,
                                   rig_fill=RIG_FILL)
    return Scene(model=model, frame=frame, camera=camera, light=light,
                 background=torch.ones(3, device=device), prior_hash=p.content_hash,
                 mirror=bool(av is not None and av.left), renderer=renderer, mesh=mesh)


def left_hand_view(camera, light: torch.Tensor):
    """What shows the left hand ``M X`` (``M``: x -> -x), the mirror image of the right hand ``X``
    that the fields and the baked meshes hold, to ``camera`` under ``light``: ``X`` seen by the
    mirrored camera (:func:`palm.render.views.mirrored_camera`) under the mirrored light
    (:func:`palm.render.sg.sg_mirror`), its image then flipped left to right (``Scene.mirror``).
    Exact for both renderers. Returns ``(Camera, (K, 7) lobes)``."""
    from palm.render.rays import Camera
    from palm.render.sg import sg_mirror
    from palm.render.views import mirrored_camera

    K, Rt = mirrored_camera(camera.K.cpu().numpy(), camera.Rt.cpu().numpy(), camera.width)
    mirrored = Camera(torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(Rt, dtype=torch.float32),
                      camera.height, camera.width).to(camera.K.device)
    return mirrored, sg_mirror(light)


def render_scene(scene: Scene, image: str = "pbr", emit: Emit = null_emit, cancel=None) -> torch.Tensor:
    """(H, W, 4) linear RGB with straight (not premultiplied) alpha = rendered opacity.

    The hand is rendered over a black background, so the composited colour is premultiplied by
    the opacity; dividing by it gives the straight colour that PNG/EXR alpha expects.
    """
    from palm.render.color import srgb_to_linear

    if scene.renderer == "raster":
        return _render_raster(scene, image, emit)
    out = scene.model.render_image(
        scene.camera, scene.frame, light=scene.light, background=torch.zeros_like(scene.background),
        pbr=(image == "pbr"), progress=lambda i, n: emit(Progress(i, n, "rendering")), cancel=cancel,
    )
    premult = srgb_to_linear((out["rgb_pbr"] if image == "pbr" else out["rgb_rf"]).clamp(0, 1))
    alpha = out["opacity"].clamp(0, 1)
    rgb = torch.where(alpha > 1e-4, premult / alpha.clamp(min=1e-4), torch.zeros_like(premult))
    image = torch.cat([rgb, alpha], dim=-1)
    return image.flip(1) if scene.mirror else image


def _render_raster(scene: Scene, image: str, emit: Emit) -> torch.Tensor:
    """The scene's mesh posed by the frame, rasterised and shaded with shadows (:func:`palm.detail.render_mesh`)."""
    from palm.detail import render_mesh
    from palm.errors import PalmError
    from palm.hand.lbs import bone_transforms

    if image != "pbr":
        raise PalmError("--image", "the radiance-field image needs --renderer neural")
    emit(Progress(0, 1, "rendering"))
    f = scene.frame
    bones = bone_transforms(scene.model.hand, f.pose.cpu(), f.betas.cpu(), joints=scene.mesh.joints)
    rgba = render_mesh(scene.mesh, bones, f.transl.cpu().numpy(), scene.camera.to("cpu"), scene.light.cpu())
    emit(Progress(1, 1, "rendering"))
    out = torch.from_numpy(rgba)
    return out.flip(1) if scene.mirror else out


def _coeffs(space, sigmas, flag):
    """PCA coefficients from values in standard deviations of each component (None: the mean)."""
    from palm.errors import PalmError

    if sigmas is None:
        return None
    if space is None:
        raise PalmError(flag, "the prior has no PCA space (run 'palm pca RUN')")
    if len(sigmas) > space.n_components:
        raise PalmError(flag, f"the prior's space has {space.n_components} components, got {len(sigmas)} values")
    c = torch.zeros(space.n_components)
    c[: len(sigmas)] = torch.as_tensor(sigmas, dtype=torch.float32)
    return c * space.explained_variance.float().clamp(min=0).sqrt()
