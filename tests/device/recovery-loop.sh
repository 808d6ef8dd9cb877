#!/usr/bin/env bash
# The recovery loop on a real GPU machine: a collector with a rule that fires for
# every GPU (temperature >= 0) and names a recovery script; the release agent on the
# real driver, with a recovery directory holding a read-only script that calls the
# real nvidia-smi for the GPU the alert names. Saves the actions audit, the script's
# output as found in the log index, the agent's /metrics and the kernel log. Nothing
# changes the GPU's settings.
#
# Build first:  cargo build --release -p vigil-agent -p vigil-collector
# Then on the GPU machine, from the repository root:  OUT=/tmp/out tests/device/recovery-loop.sh
# (Seen on an H200, driver 580: see README.md, "Real NVML".)
set -u
OUT=${OUT:-/tmp/vigil-recovery-loop}
B=${BIN:-target/release}
mkdir -p "$OUT"
D=$(mktemp -d)
mkdir -p "$D/rec" && chmod 755 "$D/rec"
cat > "$D/rec/report-gpu" <<'S'
#!/bin/sh
set -eu
echo "report-gpu: node $VIGIL_NODE gpu $VIGIL_LABEL_GPU alert $VIGIL_ALERT_NAME action $VIGIL_ACTION_ID"
nvidia-smi --query-gpu=index,name,uuid,temperature.gpu,power.draw,clocks.sm,ecc.errors.uncorrected.volatile.total --format=csv -i "$VIGIL_LABEL_GPU"
S
chmod 755 "$D/rec/report-gpu"
cat > "$D/rules.yml" <<'R'
groups:
- name: device
  interval: 1s
  rules:
  - alert: DeviceCheck
    expr: DCGM_FI_DEV_GPU_TEMP >= 0
    recovery: {script: report-gpu, args_from_labels: [gpu]}
R
nvidia-smi -L > "$OUT/nvidia-smi-L.txt" 2>&1
"$B/vigil-collector" --data-dir "$D/c" --listen 127.0.0.1:9436 --otlp-grpc 127.0.0.1:4317 --otlp-http 127.0.0.1:4318 --rules "$D/rules.yml" > "$OUT/collector.log" 2>&1 &
C=$!
sleep 1
"$B/vigil-agent" --listen 127.0.0.1:9435 --collector http://127.0.0.1:4317 --state-dir "$D/a" --interval 1 --recovery-dir "$D/rec" > "$OUT/agent.log" 2>&1 &
A=$!
for _ in $(seq 1 40); do
  sleep 1
  curl -s localhost:9436/api/v1/actions > "$OUT/actions.json"
  grep -q '"state":"succeeded"' "$OUT/actions.json" && break
done
sleep 2
curl -s localhost:9435/metrics > "$OUT/metrics.txt"
src=$(grep -o 'recovery:[0-9a-f-]*' "$OUT/actions.json" | head -1)
curl -s --get --data-urlencode "q=source:\"$src\"" localhost:9436/api/v1/logs/search > "$OUT/logs.json"
curl -s --get --data-urlencode 'q=source:kernel' --data-urlencode 'limit=20' localhost:9436/api/v1/logs/search > "$OUT/kernel.json"
curl -s localhost:9436/api/v1/alerts > "$OUT/alerts.json"
kill $A; wait $A; kill $C; wait $C
grep -o '"state":"[a-z_]*"' "$OUT/actions.json"
grep -o '"body":"[^"]*"' "$OUT/logs.json"
