#!/usr/bin/env bash
# Runs every test of the workspace. Installs the real peers the tests talk to when they
# are missing (Debian's promtool and prometheus-node-exporter), builds the binaries the
# cross-process tests start, then runs `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Install the packages without starting their services: the tests start what they
  # need on ports of their own. policy-rc.d tells invoke-rc.d not to start daemons.
  policy=/usr/sbin/policy-rc.d
  placed_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    placed_policy=1
  fi
  as_root apt-get update -qq
  status=0
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" || status=$?
  if [ "$placed_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
  if [ "$status" -ne 0 ]; then
    echo "tests/run.sh: installing ${missing[*]} failed" >&2
    exit "$status"
  fi
  # Debian starts these services where it can; the tests need neither running.
  as_root pkill -x prometheus 2>/dev/null || true
  as_root pkill -x prometheus-node-exporter 2>/dev/null || true
fi

cargo build --workspace --bins

# Every test binary runs even after a failure, and the run ends with one line that
# adds up all of them.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i == "passed;") passed += $(i - 1)
         if ($i == "failed;") failed += $(i - 1)
         if ($i == "ignored;") skipped += $(i - 1)
       }
     }
     END { printf "summary: %d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$log"
exit "$status"
