#!/usr/bin/env bash
# One device-machine session (see /work/.library/device): install the two wheels the GPU image lacks, check the CUDA
# path against the CPU path, then print the time-to-quality and extraction tables on CUDA. Results go to $OUT.
#   Here:   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl libigl==2.6.3 trimesh==5.2.0
#           cp ../shared/meshes/{bunny,bunny00,knot2}.ply .devdata/
#   There:  bash bench/gpu_session.sh  (with .whl and .devdata carried; about 10 minutes)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"

echo "=== engine tests with CUDA as the auto device (GPU results against the CPU references in the tests) ==="
timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/engine 2>&1 | tail -15 | tee "$OUT/tests.txt"

echo "=== time to quality on CUDA (default fit vs the i3d baseline, limited to 60 s) ==="
timeout 300 python3 bench/time_to_quality.py .devdata/knot2.ply .devdata/bunny.ply --threads 8 --every 100 \
    --baseline-limit-s 60 --json "$OUT/time_to_quality.json" 2>&1 | tee "$OUT/time_to_quality.txt"

echo "=== one fit step on CUDA: autograd against the explicit pass, eager and compiled (FitConfig.compiled_step) ==="
timeout 180 python3 bench/fit_step.py --device cuda --steps 50 2>&1 | tee "$OUT/fit_step.txt"

echo "=== extraction on CUDA (a model fitted above: knot2, 256^3 and 512^3) ==="
timeout 60 python3 -c "
from engine.fit import fit_sdf, preset
from engine.mesh_io import load_mesh
fit_sdf(load_mesh('.devdata/knot2.ply'), preset('fast', steps=300)).save('$OUT/knot2.pt')"
timeout 120 python3 bench/extraction_speed.py "$OUT/knot2.pt" --resolution 256 512 --threads 8 2>&1 | tee "$OUT/extraction.txt"
