#!/usr/bin/env bash
# Builds the release binaries and runs the fault -> recovery script start latency
# benchmark (see tests/src/bin/recovery-bench.rs): a real agent and collector, one new
# Xid alert per trial, the script's own first timestamp as the end. Arguments go to
# recovery-bench, e.g. --trials 50. About 2 s a trial. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vigil-agent -p vigil-collector -p vigil-e2e --bins
# Which code was measured: the commit and whether the tree had changes on top.
echo "git: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)" \
  "($(git status --short 2>/dev/null | wc -l) paths changed since)"
echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/recovery-bench "$@"
