"""The synthetic multi-subject hand dataset: subjects, poses, a 7-camera rig, SG lighting, PALM layout.

One concept per module (nothing here re-exports them; import from the defining module):
:mod:`~palm.data.synth.config` (what defines a dataset: :class:`~palm.data.synth.config.SynthConfig`),
:mod:`~palm.data.synth.subjects` (shape and skin of a subject), :mod:`~palm.data.synth.rig`
(poses and the camera rig), :mod:`~palm.data.synth.shading` (shadows, lighting, the reference
renderer of one view) and :mod:`~palm.data.synth.generate` (the generator and its file encodings).

``palm.data.synth.generate.generate(out, SynthConfig(...))`` renders ``n_subjects x n_poses x n_views`` images with the
project's reference renderer and writes them in the PALM layout (:mod:`palm.data.palm_dataset`).

Subjects (:func:`sample_subject`) differ the way real hands do:

* shape: the hand rig's shape coefficients ``betas ~ N(0, 1)``, clipped to +-2.5;
* skin albedo: a two-chromophore model (:func:`skin_albedo`): epidermal melanin ``m`` and dermal
  haemoglobin ``h`` attenuate a bright dermis, ``a = 0.82 exp(-(3 m s_m + h s_h + c s_c))`` with
  per-channel absorption ``s_m = (0.60, 0.75, 1.00)`` (melanin, rising to the blue),
  ``s_h = (0.06, 0.95, 0.80)`` (haemoglobin: green/blue) and a constant carotene-like ``c s_c``
  (``s_c = (0, 0.05, 0.35)``). Subjects' ``m`` is stratified over ``[0.03, 1.1]`` (log scale):
  light to dark skin. The map (:func:`skin_fields`) adds lighter, pinker palms (0.3x melanin on the
  palmar side), nails (distal dorsal fingertips: pale pink plate, lower roughness, white free edge),
  flexion creases across PIP/DIP/finger bases and the three main palm lines, darker dorsal
  knuckles with fine wrinkles, and 3D value noise at 12 mm (redness), 3 mm (mottling) and 1.2 mm
  (freckles, stronger for lighter subjects);
* roughness ``0.35 .. 0.6`` per subject (palms rougher, nails 0.22) and metallic ``0 .. 0.04``
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
(bilinear; seal faces use interpolated per-vertex albedo), and the subject's metallic. The SG
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
registered hand.
"""
