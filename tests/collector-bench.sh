#!/usr/bin/env bash
# Builds the release binaries and runs vigil-collector's ingest and memory benchmark
# beside Debian's Prometheus (see tests/src/bin/collector-bench.rs). Arguments go to
# collector-bench, e.g. --quick for a smoke run of about two minutes, or
# --skip-prometheus. Not part of CI: the default run takes about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vigil-agent -p vigil-collector -p vigil-e2e --bins
# Which code was measured: the commit and whether the tree had changes on top.
echo "git: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)" \
  "($(git status --short 2>/dev/null | wc -l) paths changed since)"
echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/collector-bench "$@"
