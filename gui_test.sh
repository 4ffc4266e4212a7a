#!/usr/bin/env bash
# The GUI scenarios in a real, interactive Blender 4.3 (see tests/gui/run_gui.py): sets up .venv and the Debian 13
# chroot if missing, then runs the scenarios (all, or those named) and writes out/gui/report.md and screenshots.
# Needs root; about 4 minutes on 2 cores once set up. Not part of ./test.sh.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
scripts/gui_setup.sh
.venv/bin/python tests/gui/run_gui.py "$@"
