#!/usr/bin/env bash
# Install the system packages palm-studio needs, when they are missing (Debian/Ubuntu):
#   Xvfb + xauth (virtual X server for the GUI and its tests), Mesa EGL/GL (OpenGL without a GPU),
#   Node.js + npm (the Khronos glTF validator used by the export tests).
# Does nothing when everything is present; never fails the build on a non-Debian system.
set -u
missing=()
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb xauth)
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' || missing+=(libegl1)
ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so.0' || missing+=(libegl-mesa0 libgl1-mesa-dri)
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1' || missing+=(libgl1 libglx-mesa0)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "system_deps: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: not a Debian system; please install: ${missing[*]}" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system_deps: need root to install: ${missing[*]}" >&2; exit 0; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || \
  echo "system_deps: apt-get failed for: ${missing[*]}" >&2
exit 0
