#!/usr/bin/env bash
# Builds the release binaries and runs the fault -> webhook latency benchmark: Vigil
# (agent -> collector -> webhook) beside Debian's Prometheus 2.42 + Alertmanager 0.25
# scraping the same agent (see tests/src/bin/alert-bench.rs). Arguments go to
# alert-bench, e.g. --trials 50, --skip-defaults (about 1.5 minutes instead of about 7),
# --skip-prometheus. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
for peer in /usr/bin/prometheus /usr/bin/prometheus-alertmanager; do
  [ -x "$peer" ] || echo "alert-bench.sh: $peer is missing (tests/run.sh installs it)" >&2
done
cargo build --release -p vigil-agent -p vigil-collector -p vigil-e2e --bins
# Which code was measured: the commit and whether the tree had changes on top.
echo "git: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)" \
  "($(git status --short 2>/dev/null | wc -l) paths changed since)"
echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/alert-bench "$@"
