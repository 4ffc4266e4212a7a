#!/usr/bin/env bash
# One device-machine session (see /work/.library/device): install the two wheels the GPU image lacks, sweep fit
# settings on knot2 with CUDA, then run the engine tests with CUDA as the "auto" device. Results go to $OUT.
#   Here:   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl libigl==2.6.3 trimesh==5.2.0
#   There:  bash bench/gpu_session.sh  (with .whl and .devdata carried)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"

sweep() {  # label, then --set arguments
    local label=$1; shift
    timeout 120 python3 bench/fit_quality.py .devdata/knot2.ply --threads 8 --json "$OUT/sweep_$label.json" "$@" \
        2>&1 | tail -1 | tee -a "$OUT/sweep.txt"
}
sweep base
sweep seed1 --set seed=1
sweep ema995 --set weight_averaging=0.995
sweep steps2500 --set steps=2500
sweep steps2500ema --set steps=2500 --set weight_averaging=0.995
sweep omega60 --set network.first_omega=60
sweep batch2x --set surface_batch=10000 --set volume_batch=10000
sweep sdf600 --set weights.sdf=600
sweep lr1e3 --set learning_rate=1e-3
sweep quality_ema --preset quality --set weight_averaging=0.995
sweep omega45_ema --set network.first_omega=45 --set weight_averaging=0.995

timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/engine 2>&1 | tail -15 | tee "$OUT/tests.txt"
echo "=== sweep (knot2, CUDA) ==="
cat "$OUT/sweep.txt"
