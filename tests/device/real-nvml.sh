#!/usr/bin/env bash
# Runs the release agent (and a collector it ships to) against the real NVIDIA
# driver on a GPU machine, with and without a GPU load, and saves what it saw:
# the agent's /metrics under load and idle, the collector's view of the same
# series, nvidia-smi's own report, and both daemons' logs.
#
# Build first on any x86-64 machine:  cargo build --release -p vigil-agent -p vigil-collector
# Then on the GPU machine, from the repository root:  OUT=/tmp/out tests/device/real-nvml.sh
# The load is a bf16 matrix product in PyTorch when python3 has torch; without
# it the run is idle only. (Seen on an H200, driver 580: see README.md, "Real NVML".)
set -u
OUT=${OUT:-/tmp/vigil-real-nvml}
BIN=${BIN:-target/release}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

state=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; }
trap cleanup EXIT

fetch() { python3 -c 'import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=10).read().decode())' "$1"; }

echo "== driver"
nvidia-smi -L
nvidia-smi --query-gpu=index,uuid,pci.bus_id,driver_version,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.mem,utilization.gpu,memory.used,memory.total,ecc.mode.current,retired_pages.pending,remapped_rows.pending --format=csv
nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>&1
ldconfig -p | grep -i nvidia-ml
uname -r

echo "== start collector and agent"
"$BIN/vigil-collector" --data-dir "$state/collector" --listen 127.0.0.1:9436 \
    --otlp-grpc 127.0.0.1:4317 --otlp-http 127.0.0.1:4318 >"$OUT/collector.log" 2>&1 &
pids+=($!)
"$BIN/vigil-agent" --listen 127.0.0.1:9435 --state-dir "$state/agent" --interval 2 \
    --expected-gpus "$(nvidia-smi -L | wc -l)" --collector http://127.0.0.1:4317 >"$OUT/agent.log" 2>&1 &
pids+=($!)
sleep 5
fetch http://127.0.0.1:9435/metrics >"$OUT/metrics-idle.txt" || echo "agent /metrics failed"

echo "== load"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 - <<'PY' &
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + 20
while time.time() < end:
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
PY
    load=$!
    sleep 14
    fetch http://127.0.0.1:9435/metrics >"$OUT/metrics-load.txt" || echo "agent /metrics failed"
    wait "$load"
else
    echo "no torch with CUDA: idle only"
fi
sleep 6
fetch http://127.0.0.1:9435/metrics >"$OUT/metrics-after.txt"

echo "== collector view"
for q in vigil_gpu_up vigil_gpu_count 'max_over_time(DCGM_FI_DEV_GPU_UTIL[1m])' 'max_over_time(DCGM_FI_DEV_POWER_USAGE[1m])' 'max_over_time(DCGM_FI_DEV_SM_CLOCK[1m])' 'count by (__name__) ({__name__=~"DCGM_.*"})'; do
    echo "-- $q"
    fetch "http://127.0.0.1:9436/api/v1/query?query=$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1]))' "$q")"
    echo
done

echo "== GPU series seen by the agent (under load)"
grep -E '^(vigil_gpu|DCGM)' "$OUT/metrics-load.txt" 2>/dev/null | head -150
echo "== agent log"
tail -n 40 "$OUT/agent.log"
echo "== collector log"
tail -n 20 "$OUT/collector.log"
