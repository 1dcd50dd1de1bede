#!/usr/bin/env bash
# One GPU session's measurements: PyTorch (open_clip) and clipkd on the same GPU, same step.
#
# Usage (on the GPU machine, from the repository root, with a clipkd binary built with
# `CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda`):
#   BIN=path/to/clipkd RESULTS=dir/ tools/gpu_bench.sh [torch] [torch-amp] [rust-kd] [rust-teacher]
#     [rust-student] [rust-kd-warm] [rust-kd-f32]      (default: the first five, in order)
# Needs python3 with torch (CUDA) and open_clip_torch 3.3.0 (or its wheels in .whl/).
#
# Each part has its own time limit so that one slow part cannot eat the others' time. Peak
# device memory is sampled with nvidia-smi every 100 ms for every process (the same method for
# both systems; it includes the CUDA context). Results: $RESULTS/*.jsonl, logs: $RESULTS/*.log.
set -u
# Everything goes to $RESULTS; with $OUT set (the device tool), it is packed into one archive
# there at the end.
RESULTS=${RESULTS:-/tmp/clipkd-gpu-bench}
BIN=${BIN:-target/release/clipkd}
BATCH=${BATCH:-128}
TEACHER=${TEACHER:-ViT-L-14}
STUDENT=${STUDENT:-ViT-B-16}
mkdir -p "$RESULTS"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export CLIPKD_KERNEL_CACHE=${CLIPKD_KERNEL_CACHE:-$PWD/.kernel-cache}
parts=${*:-torch rust-kd rust-teacher rust-student rust-kd-warm}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$RESULTS/gpu.txt"

if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import open_clip" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

# run_measured NAME LIMIT_S CMD...: runs CMD under a time limit, sampling device memory.
run_measured() {
  local name=$1 limit=$2
  shift 2
  local mem="$RESULTS/mem_$name.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$mem" 2>/dev/null &
  local sampler=$!
  local t0=$EPOCHREALTIME
  timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$RESULTS/$name.jsonl" 2>>"$RESULTS/$name.log"
  local rc=$?
  kill $sampler 2>/dev/null
  wait $sampler 2>/dev/null
  local peak=$(sort -n "$mem" | tail -1)
  local wall=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  echo "$name rc=$rc wall=${wall}s peak_device_mem_mib=$peak" | tee -a "$RESULTS/summary.txt"
}

# rust_bench WORKLOAD PRECISION: the clipkd bench command (a command line, not a shell function,
# since `timeout` runs it).
rust_bench() {
  echo "$BIN" bench --device cuda --precision "$2" --workloads "$1" --teacher "$TEACHER" \
    --student "$STUDENT" --batch "$BATCH" --warmup 2 --steps 10
}

nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | tee "$RESULTS/mem_idle.txt"
for part in $parts; do
  case $part in
    torch)
      # One process per precision; PyTorch's own peak (max_memory_reserved) is per workload.
      export PYTHONUNBUFFERED=1
      for p in amp-bf16 bf16; do
        run_measured "torch_$p" "${TORCH_LIMIT:-150}" python3 tools/bench_torch_kd.py \
          --device cuda --teacher "$TEACHER" --student "$STUDENT" --batch "$BATCH" --precisions "$p"
      done
      run_measured torch_tf32_f32 "${TORCH_LIMIT:-150}" python3 tools/bench_torch_kd.py \
        --device cuda --no-flops --teacher "$TEACHER" --student "$STUDENT" --batch "$BATCH" \
        --modes kd --precisions tf32,f32
      ;;
    torch-amp)
      export PYTHONUNBUFFERED=1
      run_measured torch_amp-bf16 "${TORCH_LIMIT:-150}" python3 tools/bench_torch_kd.py \
        --device cuda --teacher "$TEACHER" --student "$STUDENT" --batch "$BATCH" --precisions amp-bf16
      ;;
    rust-kd|rust-teacher|rust-student)
      # The first run on a machine pays kernel compilation and autotuning (logged); later ones
      # reuse the caches in $CLIPKD_KERNEL_CACHE.
      m=${part#rust-}
      CLIPKD_CUBECL_LOG="$RESULTS/cubecl_${m}.log" run_measured "rust_${m}_bf16" "${RUST_LIMIT:-240}" \
        $(rust_bench "$m" bf16)
      ;;
    rust-kd-warm)
      run_measured rust_kd_bf16_warm "${RUST_LIMIT:-240}" $(rust_bench kd bf16)
      ;;
    rust-kd-f32)
      run_measured rust_kd_f32 "${RUST_LIMIT:-240}" $(rust_bench kd f32)
      ;;
  esac
done
for f in "$RESULTS"/cubecl_*.log; do
  [ -f "$f" ] && echo "$(basename "$f"): $(grep -c -i 'compil' "$f") compilation lines, $(grep -c -i 'autotune\|fastest' "$f") autotune lines"
done
echo "== results"
cat "$RESULTS"/*.jsonl 2>/dev/null
cat "$RESULTS/summary.txt"
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/results.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
fi
