#!/usr/bin/env bash
# The main job: set up the environment if needed, then fit the bundled bunny and write out/demo/.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/python -m engine fit data/bunny.ply -o out/demo "$@"
