#!/usr/bin/env bash
# The main job, on the bundled bunny: set up the environment if needed, then
#  1. the engine alone: fit, extract and measure -> out/demo/{mesh.ply,model.pt,metrics.json};
#  2. Blender (its Python module, headless): install the extension, Fit + Curvature Colours through its operators,
#     save the .blend and render with Cycles -> out/blender_demo/{bunny.blend,bunny.png}.
# Both use the small `tiny` network so the whole demo runs in about 2-3 minutes on 2 CPU cores; the default
# preset (`fast`) is what bench/fit_quality.py measures.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/python -m engine fit data/bunny.ply -o out/demo --preset tiny --steps 1500 --resolution 192
.venv/bin/python scripts/blender_demo.py -o out/blender_demo
