#!/usr/bin/env bash
# Installs vigil-collector on this host: binary, /etc/vigil/collector.toml, token
# files, optional TLS certificates, a hardened systemd unit, the vigil-collector
# user. Idempotent: a second run changes nothing and says "unchanged".
#
# Secure by default: the collector refuses to listen on its default 0.0.0.0
# addresses without tokens, so unless token files are given (or already
# installed) this script generates them: a fleet token for the agents and an
# admin and a read token for the API, in root-owned files readable by the
# collector's group. It prints where they are, never their values.
set -euo pipefail

PROG=install-collector.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$HERE/lib/common.sh"

usage() {
	cat <<USAGE
usage: $PROG [options]
  --binary PATH          vigil-collector to install [default: next to this
                         script, ../target/release, ../target/debug, or on PATH]
  --config PATH          collector.toml to install [default: the collector's
                         defaults, --print-default-config]; an existing
                         /etc/vigil/collector.toml is kept unless --force-config
  --force-config         replace an existing /etc/vigil/collector.toml
  --token-file PATH      OTLP tokens (TOKEN or node=NAME TOKEN per line)
                         -> /etc/vigil/collector-tokens [default: generated]
  --api-token-file PATH  API tokens (read TOKEN / admin TOKEN per line)
                         -> /etc/vigil/collector-api-tokens [default: generated]
  --tls-cert PATH        PEM certificate chain -> /etc/vigil/tls/collector.pem
  --tls-key PATH         its PEM key -> /etc/vigil/tls/collector.key
  --tls-client-ca PATH   require client certificates signed by this CA
$(common_usage)
USAGE
}

BINARY=
CONFIG=
FORCE_CONFIG=0
TOKEN_FILE=
API_TOKEN_FILE=
TLS_CERT=
TLS_KEY=
TLS_CLIENT_CA=
while [ $# -gt 0 ]; do
	case $1 in
	--binary) BINARY=${2:?--binary needs a path}; shift ;;
	--config) CONFIG=${2:?--config needs a path}; shift ;;
	--force-config) FORCE_CONFIG=1 ;;
	--token-file) TOKEN_FILE=${2:?--token-file needs a path}; shift ;;
	--api-token-file) API_TOKEN_FILE=${2:?--api-token-file needs a path}; shift ;;
	--tls-cert) TLS_CERT=${2:?--tls-cert needs a path}; shift ;;
	--tls-key) TLS_KEY=${2:?--tls-key needs a path}; shift ;;
	--tls-client-ca) TLS_CLIENT_CA=${2:?--tls-client-ca needs a path}; shift ;;
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
if { [ -n "$TLS_CERT" ] && [ -z "$TLS_KEY" ]; } || { [ -z "$TLS_CERT" ] && [ -n "$TLS_KEY" ]; }; then
	die "--tls-cert and --tls-key go together"
fi
if [ -n "$TLS_CLIENT_CA" ] && [ -z "$TLS_CERT" ]; then
	die "--tls-client-ca needs --tls-cert and --tls-key"
fi

UNIT=vigil-collector.service
BIN_PATH=/usr/local/bin/vigil-collector
CONF_PATH=/etc/vigil/collector.toml
TOKENS_PATH=/etc/vigil/collector-tokens
API_TOKENS_PATH=/etc/vigil/collector-api-tokens
TLS_DIR=/etc/vigil/tls
UNIT_PATH=/etc/systemd/system/$UNIT
STATE_DIR=/var/lib/vigil-collector

if [ "$UNINSTALL" = 1 ]; then
	uninstall "$UNIT" "$UNIT_PATH" "$BIN_PATH" vigil-collector \
		"$CONF_PATH, tokens, certificates and $STATE_DIR" \
		"$CONF_PATH" "$TOKENS_PATH" "$API_TOKENS_PATH" "$TLS_DIR" "$STATE_DIR"
fi

# 32 random bytes as hex: no character a header or a TOML line cannot carry.
random_token() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# install_secret SRC|"" DEST HEADER LINE-PREFIXES...: installs SRC, or when none
# is given and DEST does not exist yet, a generated file.
install_secret() {
	local src=$1 dest=$2 header=$3
	shift 3
	if [ -n "$src" ]; then
		[ -r "$src" ] || die "$src is not readable"
		install_file "$src" "$dest" 0640 root:vigil-collector
	elif [ -e "$(rooted "$dest")" ]; then
		say "kept existing $dest"
	else
		local text="$header"$'\n' prefix
		for prefix in "$@"; do
			text+="$prefix$(random_token)"$'\n'
		done
		install_text "$text" "$dest" 0640 root:vigil-collector
		[ "$DRY_RUN" = 1 ] || say "generated tokens in $dest (root-readable; values not shown)"
	fi
}

[ -n "$BINARY" ] || BINARY=$(find_binary vigil-collector "$HERE")
check_binary "$BINARY"
ensure_user vigil-collector "$STATE_DIR"
install_file "$BINARY" "$BIN_PATH" 0755

install_secret "$TOKEN_FILE" "$TOKENS_PATH" \
	"# OTLP tokens: a bare TOKEN is the fleet's; node=NAME TOKEN binds one node. Copy the fleet token to each agent's --token-file." ""
install_secret "$API_TOKEN_FILE" "$API_TOKENS_PATH" \
	"# HTTP API tokens: read TOKEN (queries, lists) or admin TOKEN (silences, approvals, kill switch)." "admin " "read "
if [ -n "$TLS_CERT" ]; then
	install_file "$TLS_CERT" "$TLS_DIR/collector.pem" 0644
	install_file "$TLS_KEY" "$TLS_DIR/collector.key" 0640 root:vigil-collector
	[ -z "$TLS_CLIENT_CA" ] || install_file "$TLS_CLIENT_CA" "$TLS_DIR/client-ca.pem" 0644
fi

if [ -e "$(rooted "$CONF_PATH")" ] && [ "$FORCE_CONFIG" = 0 ]; then
	say "kept existing $CONF_PATH (--force-config replaces it)"
else
	conf=$(mktemp)
	trap 'rm -f "$conf"' EXIT
	if [ -n "$CONFIG" ]; then
		cp "$CONFIG" "$conf"
	else
		"$BINARY" --print-default-config >"$conf"
		set_key "$conf" token_file "$TOKENS_PATH"
		set_key "$conf" api_token_file "$API_TOKENS_PATH"
		if [ -n "$TLS_CERT" ]; then
			set_key "$conf" cert_file "$TLS_DIR/collector.pem"
			set_key "$conf" key_file "$TLS_DIR/collector.key"
			[ -z "$TLS_CLIENT_CA" ] || set_key "$conf" client_ca_file "$TLS_DIR/client-ca.pem"
		fi
	fi
	install_file "$conf" "$CONF_PATH" 0644
fi

install_file "$HERE/systemd/$UNIT" "$UNIT_PATH" 0644
systemd_enable "$UNIT"
if [ "$DRY_RUN" = 1 ]; then
	say "dry run: nothing was changed"
elif [ "$CHANGED" = 0 ]; then
	say "already installed, nothing changed"
else
	say "installed vigil-collector into $ROOT"
fi
