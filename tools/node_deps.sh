#!/usr/bin/env bash
# Install the Node packages palm-studio's export tests use (the Khronos glTF validator,
# npm package `gltf-validator`) into tools/node/node_modules, once.
# Does nothing when they are present; never fails the build when node/npm is missing
# (the glTF validation test then skips with a reason).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="$here/node"
if [ -f "$prefix/node_modules/gltf-validator/package.json" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "node_deps: npm not found; install Node.js (tools/system_deps.sh) to run the glTF validator" >&2
  exit 0
fi
echo "node_deps: installing gltf-validator into $prefix/node_modules" >&2
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error >/dev/null || \
  echo "node_deps: npm install failed (offline?); the glTF validation test will skip" >&2
exit 0
