#!/usr/bin/env bash
# One command for a GPU machine (issue 18): the CUDA tests, then the benchmarks with absolute times, device named.
#   bash bench/gpu.sh [OUT_DIR]      # default bench/results/gpu; ~10 minutes on one H200-class GPU
# Installs nothing: run it in the environment the README's install command made.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu}; mkdir -p "$OUT"
export MPLBACKEND=Agg
SECONDS=0
python - <<'PY' | tee "$OUT/device.txt"
import torch, platform
assert torch.cuda.is_available(), "bench/gpu.sh needs a CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"{torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}, {platform.machine()}")
PY
echo "== CUDA tests"; timeout 240 python -m pytest tests/test_cuda.py tests/test_flow.py tests/test_contract.py -k "cuda" -q -p no:cacheprovider 2>&1 | tail -25 | tee "$OUT/pytest_cuda.txt"
echo "== step cost (bench/flowify_cost.py --device cuda)"; timeout 120 python bench/flowify_cost.py --device cuda --quick --out "$OUT/flowify_cost.json" 2>&1 | tail -20
echo "== the Flowification paper's networks (bench/flowify_cost.py --paper --device cuda)"; timeout 240 python bench/flowify_cost.py --paper conv2,mlp,conv1 --device cuda --quick --rounds 1 --out "$OUT/flowify_cost_paper.json" 2>&1 | tail -5
echo "== benchmarks (bench/run.py --device cuda --quick: the digits)"; timeout 240 python bench/run.py --device cuda --quick --out "$OUT" 2>&1 | tail -30
echo "== sampling throughput (bench/sampling.py --device cuda)"; timeout 240 python bench/sampling.py --device cuda --n 1024 --out "$OUT" 2>&1 | tail -35
echo "== training with torch.compile (flownb train --compile inductor on cuda, 200 steps)"; timeout 240 python -m flownb.cli train --device cuda --compile inductor --max-steps 200 --out "$OUT/compiled-run" --quiet 2>&1 | tail -5
echo "== bench/gpu.sh done after $SECONDS s; results in $OUT"
