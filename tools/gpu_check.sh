#!/usr/bin/env bash
# One GPU session's correctness checks (issue 10): the GPU-against-CPU tests on CUDA and on
# wgpu (the GPU's own Vulkan driver), repros and slow checks included, then the first KD steps
# on CUDA cold and warm (kernel compilations and autotune counted) via tools/gpu_bench.sh.
#
# Build here (no GPU needed), then carry BINS to the GPU machine:
#   CUDARC_CUDA_VERSION=13000 cargo test --release --no-run -p clipkd --features cuda,wgpu \
#       --test wgpu_backend --test cuda_backend
#   copy target/release/deps/{cuda,wgpu}_backend-<hash> to BINS/{cuda,wgpu}_backend and
#   target/release/clipkd to BINS/clipkd (gzip-compressed copies, NAME.gz, are unpacked)
# On the GPU machine, from the repository root:
#   BINS=dir RESULTS=dir [BUDGET_S=560] tools/gpu_check.sh
# Every part has its own time limit, and a part is skipped when the budget left is too small,
# so that what ran comes back. Results and logs: $RESULTS (packed into $OUT when set).
set -u
BINS=${BINS:-.devbin}
RESULTS=${RESULTS:-/tmp/clipkd-gpu-check}
BUDGET_S=${BUDGET_S:-560}
mkdir -p "$RESULTS"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=$CUDA_PATH/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export RUST_BACKTRACE=1
# (Python, since the GPU machine may have no gunzip.)
for f in "$BINS"/*.gz; do
  [ -f "$f" ] && python3 -c "import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[1][:-3], 'wb'))" "$f" && rm "$f"
done
chmod +x "$BINS"/* 2>/dev/null
# The NVIDIA Vulkan driver, where the loader does not find it by itself.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$RESULTS/gpu.txt"

# The seconds of the budget left, less 10 s for packing the results.
left() { echo $((BUDGET_S - SECONDS - 10)); }

# part NAME LIMIT_S CMD...: runs CMD under min(LIMIT_S, budget left), output to NAME.log.
part() {
  local name=$1 limit=$2
  shift 2
  local left=$(left)
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 30 ]; then
    echo "$name skipped: ${left}s of the budget left" | tee -a "$RESULTS/summary.txt"
    return
  fi
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
  echo "$name rc=$? wall=$((SECONDS - t0))s (limit ${limit}s)" | tee -a "$RESULTS/summary.txt"
}

# Serial and uncaptured, so that a part stopped at its limit still shows what it printed. The
# no-adapter test needs the clipkd binary at its build path: it runs in CI instead.
tests="--include-ignored --test-threads 1 --nocapture --skip no_adapter"
CLIPKD_REQUIRE_WGPU=1 part wgpu_tests "${TEST_LIMIT:-130}" "$BINS/wgpu_backend" $tests
CLIPKD_REQUIRE_CUDA=1 part cuda_tests "${TEST_LIMIT:-130}" "$BINS/cuda_backend" $tests

# The CLIP-KD step on CUDA (ViT-L-14 -> ViT-B-16, batch 128, bf16): cold (empty kernel and
# autotune cache; compilations and autotune results logged) then warm (the same cache).
export CLIPKD_KERNEL_CACHE=$RESULTS/kernel-cache
export BIN=$BINS/clipkd RESULTS
[ "$(left)" -gt 60 ] && RUST_LIMIT=$(($(left) < 200 ? $(left) : 200)) tools/gpu_bench.sh rust-kd >/dev/null
[ "$(left)" -gt 40 ] && RUST_LIMIT=$(($(left) < 130 ? $(left) : 130)) tools/gpu_bench.sh rust-kd-warm >/dev/null
[ "$(left)" -gt 60 ] && [ -z "${NO_TORCH:-}" ] && TORCH_LIMIT=$(($(left) < 90 ? $(left) : 90)) tools/gpu_bench.sh torch-amp >/dev/null

for f in "$RESULTS"/cubecl_*.log; do
  [ -f "$f" ] && echo "$(basename "$f"): $(grep -c 'START_KERNEL_COMPILATION\|Compiling' "$f") compilation lines, $(grep -ci 'fastest' "$f") autotune results" | tee -a "$RESULTS/summary.txt"
done
grep -h "^test \|worst\|differs\|losses\|skipped\|panicked" "$RESULTS"/*_tests.log | head -150
cat "$RESULTS"/*.jsonl 2>/dev/null
cat "$RESULTS/summary.txt"
rm -rf "$CLIPKD_KERNEL_CACHE"
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu_check.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
fi
