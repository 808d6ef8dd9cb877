#!/usr/bin/env bash
# Builds the release binaries and runs the log ingest benchmark: the raw tantivy
# indexing rate (the ceiling), the end-to-end rate from a file through vigil-agent and
# vigil-collector to searchable, and their ratio (see tests/src/bin/logs-bench.rs).
# Arguments go to logs-bench (--lines N). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vigil-agent -p vigil-collector -p vigil-e2e --bins
cargo build --release -p vigil-collector --example bench_logs
echo "git: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)" \
  "($(git status --short 2>/dev/null | wc -l) paths changed since)"
echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/logs-bench "$@"
