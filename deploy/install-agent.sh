#!/usr/bin/env bash
# Installs vigil-agent on this node: binary, /etc/vigil/agent.toml, a hardened
# systemd unit, the vigil-agent user; checks for the NVIDIA driver and says what
# it found. Idempotent: a second run changes nothing and says "unchanged".
# deploy/install-fleet.sh runs it on many nodes over ssh.
set -euo pipefail

PROG=install-agent.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$HERE/lib/common.sh"

usage() {
	cat <<USAGE
usage: $PROG [options]
  --binary PATH       vigil-agent to install [default: next to this script,
                      ../target/release, ../target/debug, or on PATH]
  --config PATH       agent.toml to install [default: the agent's defaults,
                      --print-default-config]; an existing
                      /etc/vigil/agent.toml is kept unless --force-config
  --force-config      replace an existing /etc/vigil/agent.toml
  --collector URL     ship to this collector (http://host:4317, https:// for TLS)
  --token-file PATH   bearer token for the collector -> /etc/vigil/agent.token
  --ca-file PATH      CA of the collector's certificate -> /etc/vigil/collector-ca.pem
  --require-gpu       fail when no NVIDIA driver is found (default: warn)
  --recovery          turn on auto-recovery: /etc/vigil/recovery.d (root, 0755)
                      with the example scripts of deploy/recovery/, and the unit
                      drop-in vigil-agent.service.d/recovery.conf, which runs the
                      agent as root with --recovery-dir (read it first)
$(common_usage)
USAGE
}

BINARY=
CONFIG=
FORCE_CONFIG=0
COLLECTOR=
TOKEN_FILE=
CA_FILE=
REQUIRE_GPU=0
RECOVERY=0
while [ $# -gt 0 ]; do
	case $1 in
	--binary) BINARY=${2:?--binary needs a path}; shift ;;
	--config) CONFIG=${2:?--config needs a path}; shift ;;
	--force-config) FORCE_CONFIG=1 ;;
	--collector) COLLECTOR=${2:?--collector needs a URL}; shift ;;
	--token-file) TOKEN_FILE=${2:?--token-file needs a path}; shift ;;
	--ca-file) CA_FILE=${2:?--ca-file needs a path}; shift ;;
	--require-gpu) REQUIRE_GPU=1 ;;
	--recovery) RECOVERY=1 ;;
	--root) ROOT=${2:?--root needs a directory}; shift ;;
	--dry-run) DRY_RUN=1 ;;
	--uninstall) UNINSTALL=1 ;;
	--purge) PURGE=1 ;;
	--no-start) START=0 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
	shift
done
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd)
if live && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
	die "installing onto this system needs root (or use --root DIR / --dry-run)"
fi

UNIT=vigil-agent.service
BIN_PATH=/usr/local/bin/vigil-agent
CONF_PATH=/etc/vigil/agent.toml
TOKEN_PATH=/etc/vigil/agent.token
CA_PATH=/etc/vigil/collector-ca.pem
UNIT_PATH=/etc/systemd/system/$UNIT
DROP_IN_PATH=/etc/systemd/system/$UNIT.d/recovery.conf
RECOVERY_DIR=/etc/vigil/recovery.d
STATE_DIR=/var/lib/vigil-agent

if [ "$UNINSTALL" = 1 ]; then
	# The drop-in goes with the unit it changes; the recovery scripts are kept.
	remove_path "$DROP_IN_PATH"
	[ "$DRY_RUN" = 1 ] || rmdir "$(rooted "$(dirname "$DROP_IN_PATH")")" 2>/dev/null || true
	uninstall "$UNIT" "$UNIT_PATH" "$BIN_PATH" vigil-agent "$CONF_PATH, tokens, $RECOVERY_DIR and $STATE_DIR" \
		"$CONF_PATH" "$TOKEN_PATH" "$CA_PATH" "$STATE_DIR" "$RECOVERY_DIR"
fi

# The NVIDIA driver: the kernel module's version file, the NVML library, the
# device nodes. Missing is not fatal (the agent then exports host metrics only)
# unless --require-gpu. This looks at the running system even under --root.
# VIGIL_NVIDIA_VERSION_FILE replaces /proc/driver/nvidia/version (tests read
# captured files from deploy/testdata/ through it).
check_nvidia() {
	local version="" lib="" devices=0 d
	local file=${VIGIL_NVIDIA_VERSION_FILE:-/proc/driver/nvidia/version}
	if [ -r "$file" ]; then
		# The first word shaped like a version: "x86_64" comes before it in the
		# open module's line ("... Open Kernel Module for x86_64  580.159.04 ...").
		version=$(head -n1 "$file" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+(\.[0-9]+)?$/) { print $i; exit }}')
		[ -n "$version" ] || version="(unparsed: $(head -n1 "$file"))"
	fi
	if command -v ldconfig >/dev/null 2>&1; then
		lib=$(ldconfig -p 2>/dev/null | awk '/libnvidia-ml\.so\.1 /{print $NF; exit}')
	fi
	for d in /dev/nvidia[0-9]*; do
		[ -e "$d" ] && devices=$((devices + 1))
	done
	if [ -n "$version" ]; then
		say "NVIDIA driver $version found: ${lib:-libnvidia-ml.so.1 not in the loader cache}, $devices GPU device node(s)"
		[ -n "$lib" ] || warn "the agent loads libnvidia-ml.so.1: install the driver's NVML library or set [gpu] nvml_lib"
	else
		local msg="no NVIDIA driver found (no $file${lib:+; NVML at $lib}): the agent will export host metrics only"
		if [ "$REQUIRE_GPU" = 1 ]; then die "$msg"; fi
		warn "$msg"
	fi
}

[ -n "$BINARY" ] || BINARY=$(find_binary vigil-agent "$HERE")
check_binary "$BINARY"
check_nvidia
ensure_user vigil-agent "$STATE_DIR"

install_file "$BINARY" "$BIN_PATH" 0755

if [ -n "$TOKEN_FILE" ]; then
	[ -r "$TOKEN_FILE" ] || die "--token-file $TOKEN_FILE is not readable"
	install_file "$TOKEN_FILE" "$TOKEN_PATH" 0640 root:vigil-agent
fi
if [ -n "$CA_FILE" ]; then
	grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_FILE" 2>/dev/null ||
		die "--ca-file $CA_FILE holds no PEM certificate"
	install_file "$CA_FILE" "$CA_PATH" 0644
fi

if [ -e "$(rooted "$CONF_PATH")" ] && [ "$FORCE_CONFIG" = 0 ]; then
	say "kept existing $CONF_PATH (--force-config replaces it)"
	if [ -n "$COLLECTOR$TOKEN_FILE$CA_FILE" ]; then
		warn "--collector/--token-file/--ca-file change only a new config; edit $CONF_PATH or pass --force-config"
	fi
else
	conf=$(mktemp)
	trap 'rm -f "$conf"' EXIT
	if [ -n "$CONFIG" ]; then
		cp "$CONFIG" "$conf"
	else
		"$BINARY" --print-default-config >"$conf"
	fi
	[ -z "$COLLECTOR" ] || set_key "$conf" collector "$COLLECTOR"
	[ -z "$TOKEN_FILE" ] || set_key "$conf" token_file "$TOKEN_PATH"
	[ -z "$CA_FILE" ] || set_key "$conf" ca_file "$CA_PATH"
	install_file "$conf" "$CONF_PATH" 0644
fi

install_file "$HERE/systemd/$UNIT" "$UNIT_PATH" 0644
if [ "$RECOVERY" = 1 ]; then
	# The agent refuses a recovery directory or script that anyone but root (or
	# its own user) may write: root:root, 0755, each script 0755.
	if [ "$DRY_RUN" = 1 ]; then
		say "would create $RECOVERY_DIR (mode 0755)"
	else
		mkdir -p "$(rooted "$RECOVERY_DIR")"
		chmod 0755 "$(rooted "$RECOVERY_DIR")"
		if live; then chown root:root "$RECOVERY_DIR"; fi
	fi
	for script in "$HERE"/recovery/*; do
		case $script in *.md) continue ;; esac
		install_file "$script" "$RECOVERY_DIR/$(basename "$script")" 0755 root:root
	done
	install_file "$HERE/systemd/vigil-agent-recovery.conf" "$DROP_IN_PATH" 0644
fi
systemd_enable "$UNIT"
if [ "$DRY_RUN" = 1 ]; then
	say "dry run: nothing was changed"
elif [ "$CHANGED" = 0 ]; then
	say "already installed, nothing changed"
else
	say "installed vigil-agent into $ROOT"
fi
