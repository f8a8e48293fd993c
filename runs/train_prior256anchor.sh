#!/bin/sh
# Continuation of runs/prior256_latest (step 7057) with the SDF anchor: stage 0's SDF loss on the
# subjects' own hands kept on while the geometry trains (weights.sdf_anchor), and the Laplace
# scale's floor lowered from 1 mm to 0.4 mm (the anchor keeps the SDF metric, so the density's
# sharpness comes from beta again), beta with its own learning rate 1e-5 (from step 7214; with the
# shared 1e-3 it swung between 0.3 and 0.6 mm above the floor). Otherwise runs/train_prior256geo.sh.
# The floor went from 0.4 to 0.2 mm at step 7367 (at 0.4 mm the outline lay 1 mm outside the surface).
# The anchor's weight went from 1 to 10 at step 7520 (at 1 the zero set drifted 0.7 mm outwards).
# Pass nothing: it resumes.
cd "$(dirname "$0")/.."
exec nice -n 19 .venv/bin/palm train --data runs/synth256 --out runs/prior256anchor --device cpu --no-tensorboard \
  --subjects 0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,0010,0011,0012,0013,0014,0015,0016,0017,0018,0019 \
  --views MCU_01,MCU_02,MCU_03,MCU_04,MCU_05,MCU_06 --frames 0,1 \
  --set checkpoint_every=50 --set model.pbr.estimator=sg \
  --set model.pbr.light_grid=[2,4] --set model.pbr.global_illumination=false \
  --set model.sampler.secondary_samples=12 --set model.sampler.secondary_importance=0 \
  --resume --allow-changes --set model.density.beta_min=0.0002 \
  --set geometry_freeze_steps=2600 --set max_steps=9000 \
  --set weights.sdf_anchor=10 --set anchor_points=4096 --set lr_density=1e-5 \
  --set model.sampler.n_steps=64 --set model.sampler.importance_rounds=1 --set model.sampler.importance_samples=8 \
  --set model.sampler.occ_grid_res=32 \
  --set images_per_step=4 --set pixels_per_image=64 --set patch_size=16 --set "patch_choices=[[32,2],[64,4]]" "$@"
