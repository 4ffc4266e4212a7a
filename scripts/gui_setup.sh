#!/usr/bin/env bash
# What the GUI harness (tests/gui/run_gui.py) needs, made once and kept: Xvfb on the host, and a Debian 13 (trixie)
# chroot with its Blender 4.3 package, python3-numpy (Debian's Blender runs on the system Python 3.13 without
# numpy), xdotool and ImageMagick (the scenarios send real X events and take screenshots from inside Blender) and
# Mesa (llvmpipe renders under Xvfb). ~1.8 GB in $NEURAL_SDF_GUI_ROOT (default /opt/neural-sdf-gui/trixie);
# nothing on the host is touched but its packages debootstrap and xvfb. Needs root. Safe to run again: it only does
# what is missing.
set -euo pipefail
ROOT=${NEURAL_SDF_GUI_ROOT:-/opt/neural-sdf-gui/trixie}
HOST_PACKAGES=(debootstrap xvfb)
CHROOT_PACKAGES=(blender python3-numpy xdotool imagemagick procps libgl1-mesa-dri fonts-dejavu-core)

if [ "$(id -u)" != 0 ]; then
  echo "gui_setup: needs root (debootstrap, chroot, bind mounts)" >&2
  exit 1
fi
missing=()
for package in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gui_setup: installing on the host: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  echo "gui_setup: debootstrap trixie into $ROOT (a few minutes)"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase trixie "$ROOT" http://deb.debian.org/debian >/dev/null
fi
if [ ! -x "$ROOT/usr/bin/blender" ] || [ ! -x "$ROOT/usr/bin/xdotool" ]; then
  echo "gui_setup: installing in the chroot: ${CHROOT_PACKAGES[*]} (Blender 4.3 and its libraries: ~1.5 GB)"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  for fs in proc sys dev; do mountpoint -q "$ROOT/$fs" || mount --rbind "/$fs" "$ROOT/$fs"; done
  trap 'for fs in dev sys proc; do umount -R -l "$ROOT/$fs" 2>/dev/null || true; done' EXIT
  chroot "$ROOT" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends ${CHROOT_PACKAGES[*]} >/dev/null"
fi
echo "gui_setup: $(chroot "$ROOT" blender --version 2>/dev/null | head -1) ready in $ROOT"
