#!/bin/sh
# Next prior (see docs/default_prior.md, "Next prior (in progress)"). Pass --resume to continue.
cd "$(dirname "$0")/.."
exec nice -n 19 .venv/bin/palm train --data runs/synth256 --out runs/prior256ft --preset cpu \
  --subjects 0000,0001,0002,0003,0004,0005,0006,0007,0008,0009,0010,0011,0012,0013,0014,0015,0016,0017,0018,0019 --views MCU_01,MCU_02,MCU_03,MCU_04,MCU_05,MCU_06 --frames 0,1 \
  --set checkpoint_every=100 --set model.pbr.estimator=sg \
  --set model.pbr.light_grid=[2,4] --set model.pbr.global_illumination=false \
  --set model.sampler.secondary_samples=12 --set model.sampler.secondary_importance=0 --resume --allow-changes --set max_steps=2600 --set model.density.beta_min=0.0005 "$@"
