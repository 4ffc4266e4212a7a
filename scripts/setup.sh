#!/usr/bin/env bash
# Create or update the project's environment: Debian libraries that `import bpy` needs, and a virtualenv in
# .venv with the pinned requirements. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BPY_DEBIAN_LIBS=(libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libgl1 libegl1)
missing=()
if command -v dpkg-query >/dev/null; then
  for lib in "${BPY_DEBIAN_LIBS[@]}"; do
    dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || missing+=("$lib")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian libraries for Blender's Python module: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: warning: Blender's Python module needs these Debian packages: ${missing[*]} (run as root to install)" >&2
  fi
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the requirement files or the package description change. The engine itself goes in
# editable (bench/ and scripts/ import it; edits take effect at once), built with the setuptools in .venv.
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-batch.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing requirements and the engine into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$wanted" > "$stamp"
fi
