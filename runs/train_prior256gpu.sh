#!/bin/sh
# The GPU sitting of the prior run (2026-11-28, one H200, 480 s): from step 4600 (in the history of runs/prior256_latest/): geometry trains (normals, curvature),
# paper sampler, more rays per step. Usage: runs/train_prior256gpu.sh RUN_DIR DATA_DIR DEVICE SECONDS [extra --set ...]
RUN=$1; DATA=$2; DEV=$3; SECS=$4; shift 4
mkdir -p $RUN/checkpoints
# RUN_DIR must hold run.json and checkpoints/step_0004600.*; the sitting ran: sh runs/train_prior256gpu.sh /tmp/run DATA cuda 480
exec timeout -s INT -k 90 $SECS python3 -m palm train --data $DATA --out $RUN --device $DEV --no-tensorboard \
  --subjects 0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,0010,0011,0012,0013,0014,0015,0016,0017,0018,0019 \
  --views MCU_01,MCU_02,MCU_03,MCU_04,MCU_05,MCU_06 --frames 0,1 \
  --set checkpoint_every=100 --set model.pbr.estimator=sg \
  --set model.pbr.light_grid=[2,4] --set model.pbr.global_illumination=false \
  --set model.sampler.secondary_samples=12 --set model.sampler.secondary_importance=0 \
  --resume --allow-changes --set model.density.beta_min=0.0005 \
  --set geometry_freeze_steps=2600 --set max_steps=8000 \
  --set model.sampler.n_steps=128 --set model.sampler.importance_rounds=2 --set model.sampler.importance_samples=16 \
  --set model.sampler.occ_grid_res=64 \
  --set images_per_step=6 --set pixels_per_image=768 --set patch_size=32 --set "patch_choices=[[64,2],[128,4]]" \
  "$@"
