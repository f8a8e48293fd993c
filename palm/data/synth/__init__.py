"""The synthetic multi-subject hand dataset: subjects, poses, a 7-camera rig, SG lighting, PALM layout.

One concept per module (nothing here re-exports them; import from the defining module):
:mod:`~palm.data.synth.config` (what defines a dataset: :class:`~palm.data.synth.config.SynthConfig`),
:mod:`~palm.data.synth.subjects` (the draw of a subject and its skin),
:mod:`~palm.data.synth.shape` (a subject's hand: rig betas plus per-bone proportions, and the
:class:`~palm.data.synth.shape.ShapedHand` that poses it), :mod:`~palm.data.synth.rig`
(poses and the camera rig), :mod:`~palm.data.synth.shading` (shadows, lighting, relief, the
reference renderer of one view), :mod:`~palm.data.synth.generate` (the generator and its file
encodings).

``palm.data.synth.generate.generate(out, SynthConfig(...))`` renders ``n_subjects x n_poses x n_views`` images with the
project's reference renderer and writes them in the PALM layout (:mod:`palm.data.palm_dataset`).

Subjects (:func:`sample_subject`) differ the way real hands do:

* shape (:mod:`palm.data.synth.shape`): the rig's shape coefficients (overall size ``betas[0] ~
  N(0, 0.5^2)``, clipped to +-2, the rig's unit being 13 % of the hand's length; the others, which
  only thicken the hand by 1-2 %, ``N(0, 1)`` clipped to +-2.5) and per-bone proportions the rig
  cannot express: the length of every finger segment (hand-wide sd 5 %, per finger 3.5 %, per
  segment 2.5 %), its thickness (hand-wide 8 %, per finger 4 %, a fingertip taper 5 %) and the palm's
  length (5 %), width (6 %) and thickness (8 %). Bones are stretched along their axes and scaled
  across them, blended by the skinning weights; the skeleton is regressed from the new surface, so
  the hand bends at its own joints. A hand reaching out of the model's canonical cube is shrunk.
  The flat hand is written to ``<sid>/shape.npz`` (``rest_vertices``); ``poses.npy`` registers the
  rig's closest betas, which also identify the subject to ``ShapedHand``;
* skin albedo: a two-chromophore model (:func:`skin_albedo`): epidermal melanin ``m`` and dermal
  haemoglobin ``h`` attenuate a bright dermis, ``a = 0.82 exp(-(3 m s_m + h s_h + c s_c))`` with
  per-channel absorption ``s_m = (0.60, 0.75, 1.00)`` (melanin, rising to the blue),
  ``s_h = (0.06, 0.95, 0.80)`` (haemoglobin: green/blue) and a constant carotene-like ``c s_c``
  (``s_c = (0, 0.05, 0.35)``). Subjects' ``m`` is stratified over ``[0.03, 1.1]`` (log scale):
  light to dark skin. The map (:func:`skin_fields`) adds lighter, pinker palms (0.3x melanin on the
  palmar side, more carotene there), nails (distal dorsal fingertips: pink plate, pale lunula, white
  free edge, a darker groove at the nail fold), flexion creases across PIP/DIP/finger bases (double
  lines with subject-jittered spacing) and the three main palm lines, redder (``redness``: more
  haemoglobin) and darker dorsal knuckles (PIP/DIP with fine wrinkles, and the MCP knuckles),
  redder fingertips, four dorsal veins (bluish, stronger for lighter skin), and 3D value noise at
  12 mm (redness), 3 mm (mottling) and 1.2 mm (freckles, stronger for lighter subjects);
* relief (``height``, metres along the normal; a bump map, shading only): creases and palm lines
  are 0.3-0.45 mm grooves, knuckle wrinkles 0.08 mm, the nail fold a 0.2 mm groove around a
  0.12 mm raised plate, veins 0.4 mm ridges, plus 0.04 mm of fine noise. The map stores
  ``(dh/du, dh/dv)``; the renderer tilts the smooth normal by the surface gradient of ``h``
  (:func:`~palm.data.synth.shading.bumped_normals`);
* roughness ``0.35 .. 0.6`` per subject, varied across the hand: palms rougher, knuckles drier
  (+20 %), fingertip pads shinier, creases rougher, low-frequency (25 mm) oily patches of
  subject-specific amplitude, nails ``0.14 .. 0.3`` (rougher free edge); metallic ``0 .. 0.04``
  (the engine BRDF's only other specular control: ``F0 = 0.04 (1 - m) + a m``).

Poses: a preset (``palm.hand.POSE_PRESETS``) with probability ``preset_probability``, otherwise a
random convex mix of presets plus N(0, 0.08 rad) noise, clipped per component to the presets'
range widened by 0.15 rad (the joint limits); a uniformly random global orientation; the hand's
bounding-box centre is placed at the world origin (translation jitter 1 cm).

Cameras: 7 like PALM's rig (``MCU_01`` .. ``MCU_07``) on a sphere of radius ``camera_distance``
around the origin, looking at it with world +y up, per-subject jitter of 4 deg, 3 cm, 3 % focal and
1 % principal point. ``n_views < 7`` uses the first cameras.

Lighting: one environment per frame from the SG presets (``palm.render.envmap.load_environment``),
rotated about +y by a random angle, scaled so that the 95th percentile over normals of a white
Lambertian surface's radiance is ``exposure``. The background shows the environment itself (the
source HDR map when :mod:`palm.render.envmap` can find it, else the SG radiance).

Reference renderer (what a pixel is; :func:`render_view`). The rig mesh (its faces plus the
wrist seal) is rasterised (:mod:`palm.render.raster`, one sample at each pixel centre). Per pixel:
position, smooth normal (vertex normals welded across UV seams; flat on seal faces), unit view
direction ``v`` toward the camera centre, albedo and roughness from the subject's UV maps
(bilinear; seal faces use interpolated per-vertex albedo), the smooth normal tilted by the relief
map (rig faces), and the subject's metallic. The SG
lobes are split into groups (:func:`lobe_groups`: each of the ``shadow_groups`` = 7 strongest lobes
alone, the others together) and the radiance is

    L = sum_g V_g(x) * shade_sg(n, v, albedo, roughness, metallic, lobes_g)

i.e. exactly the engine's Lambert + GGX BRDF under the SG light (:func:`palm.render.brdf.shade_sg`,
deterministic) with one shadow factor per group. ``V_g`` is computed per vertex and interpolated
barycentrically (:func:`lobe_visibility`): binary visibility toward 48 directions (the axes of
the 16 strongest lobes and 32 Fibonacci-sphere directions) from orthographic 96 x 96 shadow maps of
the sealed mesh clustered on a 3 mm grid (normal offset 1 texel, depth bias 2.5 texels), averaged
with weights ``S_g(w) max(n . w, 0)`` where ``S_g`` is the group's SG radiance. So a sun-like lobe
casts hard shadows, the sky gives ambient occlusion; there is no interreflection.
Anti-aliasing: pixels whose ``supersample``^2 sub-pixel samples are all covered keep the centre
sample; partly covered pixels average their shaded and background samples in linear RGB. The
image is ``clamp(sRGB(L))`` over the background (the environment seen through the pixel, in the
same rotation and exposure). Mask, depth, normals, albedo images and keypoints come from the
pixel-centre rasterisation (no anti-aliasing), so the mask is exactly the silhouette of the
registered hand (the subject's ``shape.npz`` hand in the frame's pose); normal images show the
mesh's smooth normal, without the relief.
"""
