#!/usr/bin/env bash
# Runs every test of the workspace. Installs the real peers the tests talk to when they
# are missing (Debian's prometheus with promtool, prometheus-node-exporter,
# prometheus-alertmanager, python3-aiosmtpd for a real SMTP server, tmux for the
# dashboard test, and the OpenTelemetry Python SDK in tests/.venv), builds the binaries
# the cross-process tests start, then runs `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null ||
  missing+=(python3-venv)
{ command -v promtool && [ -x /usr/bin/prometheus ]; } >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
# Debian's python3 (not one earlier in PATH) has the aiosmtpd the SMTP sink uses.
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
# tmux runs `vigil dash` in a pane of known size for tests/dash_tmux.rs.
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
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
  # (its name is longer than the 15 characters -x compares)
  as_root pkill -f '^/usr/bin/prometheus-alertmanager' 2>/dev/null || true
fi
# Under this script a missing peer (prometheus-alertmanager, aiosmtpd) fails the tests
# that need it instead of skipping them.
export VIGIL_E2E_REQUIRE_PEERS=1

# The OpenTelemetry Python SDK, a foreign OTLP sender for collector_otel_sdk.rs, in a
# venv of its own (pinned in tests/python/requirements.txt). Made once; delete
# tests/.venv to rebuild it. Under this script a missing venv fails that test instead of
# skipping it.
venv=tests/.venv
if [ ! -x "$venv/bin/python" ]; then
  echo "tests/run.sh: creating $venv with the OpenTelemetry SDK"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export VIGIL_E2E_REQUIRE_VENV=1

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
