#!/bin/sh
# Copy the latest complete checkpoint pair (+ run.json, launcher, log tail) of runs/prior256 to runs/prior256_latest/.
cd "$(dirname "$0")/.."
last=$(ls runs/prior256/checkpoints/step_*.json 2>/dev/null | sort | tail -1)
[ -n "$last" ] || { echo "no checkpoint"; exit 1; }
base=${last%.json}
[ -f "$base.safetensors" ] || { echo "incomplete pair $base"; exit 1; }
rm -rf runs/prior256_latest.tmp && mkdir -p runs/prior256_latest.tmp
cp -p "$base.safetensors" "$base.json" runs/prior256/run.json runs/prior256_latest.tmp/
chmod 644 runs/prior256_latest.tmp/*
tr '\r' '\n' < runs/prior256.log | grep -v '^$' | grep -v '^train \[' > runs/prior256_latest.tmp/train_log_messages.txt
tr '\r' '\n' < runs/prior256.log | grep '^train \[' | tail -1 >> runs/prior256_latest.tmp/train_log_messages.txt
rm -rf runs/prior256_latest && mv runs/prior256_latest.tmp runs/prior256_latest
du -sh runs/prior256_latest; ls -la runs/prior256_latest
