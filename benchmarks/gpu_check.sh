#!/usr/bin/env bash
# One prepared GPU check, unattended, in under 8 minutes on one GPU: the CUDA-only tests (pytest -m cuda) and the
# benchmarks with GPU-sized settings, then the figures in one block at the end.
#
#     bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a CUDA GPU
#
# Python: the first of $PYTHON, ./.gpu-venv, python3 that imports torch (with CUDA), torchvision, timm and datasets
# is used as it is; otherwise ./.gpu-venv is made (system site packages visible, so a preinstalled torch is reused)
# and the package is installed into it with its test extras (uv when present, else pip). Every step has its own
# time limit and the whole run a deadline, so a slow step costs its own figures, not the others'.
# The full log goes to gpu_check.log (and $OUT/gpu_check.log when $OUT is set).

set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-460}))  # under 8 minutes, with room to print
LOG=gpu_check.log
: > "$LOG"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

say() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# step NAME SECONDS CMD...: runs CMD with at most SECONDS (less if the deadline is nearer), output to the log
step() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt 20 ]; then say "SKIPPED $name: the deadline is reached"; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "START $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  local what="ok"; [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="TIMED OUT"; [ $rc -ne 0 ] && [ "$what" = ok ] && what="FAILED rc=$rc"
  say "END $name: $what in $(($(date +%s) - t0))s"
  return $rc
}

usable() {  # a Python that has what the checks import, and sees a GPU
  "$1" - <<'EOF' >> "$LOG" 2>&1
import datasets, timm, torch, torchvision, pytest  # noqa: F401
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "torchvision",
      torchvision.__version__, "timm", timm.__version__, "device", torch.cuda.get_device_name(0))
EOF
}

PY=""
for candidate in ${PYTHON:-} .gpu-venv/bin/python python3 python; do
  if command -v "$candidate" > /dev/null 2>&1 && usable "$candidate"; then PY=$candidate; break; fi
done
if [ -z "$PY" ]; then
  say "no ready Python: making .gpu-venv"
  python3 -m venv --system-site-packages .gpu-venv >> "$LOG" 2>&1 || { say "python3 -m venv failed"; exit 1; }
  if command -v uv > /dev/null 2>&1; then
    step "install (uv)" 240 uv pip install --python .gpu-venv/bin/python -e ".[test]"
  else
    step "install (pip)" 300 .gpu-venv/bin/python -m pip install -q -e ".[test]"
  fi
  usable .gpu-venv/bin/python && PY=.gpu-venv/bin/python || { say "the venv cannot import torch with CUDA"; exit 1; }
fi
say "python: $PY"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$LOG"

# the CUDA-only tests (printing their measured differences: -s), one process
step "pytest -m cuda" 150 "$PY" -m pytest -p no:cacheprovider -o addopts="" -m cuda -s -rs -q tests/test_gpu.py
# build throughput against forward-only, bounded top-k and --top-k all, Pillow decoding in the workers
step "bench_build (--decode cpu)" 150 "$PY" benchmarks/bench_build.py --device cuda --classes 4 \
  --images-per-class 256 --batch-size 128
# the same with the GPU decoder, bounded top-k
step "bench_build (--decode gpu)" 130 "$PY" benchmarks/bench_build.py --device cuda --decode gpu --modes bounded \
  --classes 4 --images-per-class 256 --batch-size 128
step "bench_evaluate" 75 "$PY" benchmarks/bench_evaluate.py --device cuda --model resnet50 --classes 10 \
  --per-class 40 --batch-size 256
step "bench_scan" 45 "$PY" benchmarks/bench_scan.py

echo
echo "================ figures ($(($(date +%s) - START)) s) ================"
grep -E "^\[gpu_check|passed|failed|skipped|SKIPPED|: decode max|^device |^model forward-only|ratio|SUMMARY|peak RSS|decode pipeline alone|cores per|^evaluat|^forward-only|per batch|merge" "$LOG"
[ -n "${OUT:-}" ] && cp "$LOG" "$OUT/gpu_check.log"
exit 0
