#!/usr/bin/env bash
# Builds the release binaries and runs the agent beside node_exporter (see
# tests/src/bin/agent-bench.rs). Arguments go to agent-bench, e.g. --seconds 30.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v prometheus-node-exporter >/dev/null 2>&1 || {
  echo "prometheus-node-exporter is missing: ./tests/run.sh installs it" >&2
  exit 1
}
cargo build --release -p vigil-agent -p vigil-e2e --bins
exec target/release/agent-bench "$@"
