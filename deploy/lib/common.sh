# shellcheck shell=bash
# Shared by install-agent.sh and install-collector.sh (sourced, not run): flags
# common to both, dry-run aware actions, idempotent file installs, systemd.
#
# Every action goes through `act`, which prints what it does (or, with --dry-run,
# what it would do) and changes nothing in dry-run mode. Files are installed only
# when their content or mode differs, so a second run reports "unchanged".

ROOT=/
DRY_RUN=0
# Read by the installers that source this file.
# shellcheck disable=SC2034
UNINSTALL=0
# shellcheck disable=SC2034
PURGE=0
START=1
CHANGED=0

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# Path on the target system -> path under --root.
rooted() {
	if [ "$ROOT" = / ]; then
		printf '%s' "$1"
	else
		printf '%s%s' "${ROOT%/}" "$1"
	fi
}

# True when installing onto the running system (not into a scratch root).
live() { [ "$ROOT" = / ]; }

act() {
	if [ "$DRY_RUN" = 1 ]; then
		say "would run: $*"
	else
		"$@"
	fi
}

# install_file SRC DEST MODE [OWNER:GROUP]: DEST is a target-system path.
install_file() {
	local src=$1 dest=$2 mode=$3 owner=${4:-}
	local real
	real=$(rooted "$dest")
	if [ -f "$real" ] && cmp -s "$src" "$real" &&
		[ "$(stat -c %a "$real")" = "${mode#0}" ]; then
		say "unchanged $dest"
		return 0
	fi
	if [ "$DRY_RUN" = 1 ]; then
		say "would install $dest (mode $mode)"
		CHANGED=1
		return 0
	fi
	mkdir -p "$(dirname "$real")"
	local tmp="$real.vigil-new"
	cp "$src" "$tmp"
	chmod "$mode" "$tmp"
	if [ -n "$owner" ] && live; then
		chown "$owner" "$tmp"
	fi
	mv -f "$tmp" "$real"
	say "installed $dest"
	CHANGED=1
}

# install_text TEXT DEST MODE [OWNER:GROUP]
install_text() {
	local tmp
	tmp=$(mktemp)
	printf '%s' "$1" >"$tmp"
	install_file "$tmp" "$2" "$3" "${4:-}"
	rm -f "$tmp"
}

remove_path() {
	local real
	real=$(rooted "$1")
	if [ -e "$real" ] || [ -L "$real" ]; then
		act rm -rf "$real"
		[ "$DRY_RUN" = 1 ] || say "removed $1"
	else
		say "absent $1"
	fi
}

ensure_user() {
	local user=$1 home=$2
	if ! live; then
		say "not creating user $user under --root (do it on the node)"
		return 0
	fi
	if id "$user" >/dev/null 2>&1; then
		say "user $user exists"
		return 0
	fi
	local nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/bin/false
	act useradd --system --no-create-home --home-dir "$home" --shell "$nologin" "$user"
}

# Checks that the binary runs here and prints its version.
check_binary() {
	local bin=$1
	[ -n "$bin" ] || die "no binary found: pass --binary PATH"
	[ -f "$bin" ] || die "binary $bin does not exist"
	[ -x "$bin" ] || die "binary $bin is not executable"
	local version
	version=$("$bin" --version 2>&1) || die "binary $bin does not run here: $version"
	say "binary $bin: $version"
}

# The first of: --binary, next to this script, the repository's target dirs, PATH.
find_binary() {
	local name=$1 here=$2 c
	for c in "$here/$name" "$here/../target/release/$name" "$here/../target/debug/$name"; do
		if [ -x "$c" ]; then
			printf '%s' "$c"
			return 0
		fi
	done
	command -v "$name" 2>/dev/null || true
}

# set_key FILE KEY VALUE: replaces the first line `KEY = ""` (the generated
# default) with `KEY = "VALUE"`; dies when the line is not there.
set_key() {
	local file=$1 key=$2 value=$3
	grep -q "^$key = \"\"$" "$file" || die "$file has no line '$key = \"\"' to set"
	local escaped=${value//\\/\\\\}
	escaped=${escaped//&/\\&}
	escaped=${escaped//|/\\|}
	sed -i "0,/^$key = \"\"\$/s||$key = \"$escaped\"|" "$file"
}

systemd_enable() {
	local unit=$1
	if live; then
		if ! command -v systemctl >/dev/null 2>&1; then
			warn "no systemctl: start $unit by other means"
			return 0
		fi
		act systemctl daemon-reload
		act systemctl enable "$unit"
		if [ "$START" = 1 ]; then
			if [ "$CHANGED" = 1 ]; then
				act systemctl restart "$unit"
			else
				act systemctl start "$unit"
			fi
			if [ "$DRY_RUN" = 0 ] && ! systemctl is-active --quiet "$unit"; then
				die "$unit did not start: journalctl -u $unit"
			fi
		fi
	elif command -v systemctl >/dev/null 2>&1; then
		# Offline: only the [Install] symlinks, no daemon involved.
		act systemctl --quiet --root="$ROOT" enable "$unit" ||
			die "systemctl --root=$ROOT enable $unit failed"
		[ "$DRY_RUN" = 1 ] || say "enabled $unit in $ROOT"
	fi
}

systemd_disable() {
	local unit=$1
	if ! command -v systemctl >/dev/null 2>&1; then
		return 0
	fi
	if live; then
		if systemctl list-unit-files "$unit" >/dev/null 2>&1; then
			act systemctl disable --now "$unit" || true
		fi
	elif [ -e "$(rooted "/etc/systemd/system/$unit")" ]; then
		act systemctl --quiet --root="$ROOT" disable "$unit" || true
	fi
}

# The flags every installer takes, for its --help.
# --uninstall: stops and removes the unit and the binary, and with --purge also the
# paths given after the first five arguments (configuration, tokens, data) and the
# service user; then exits. KEPT says what stays without --purge.
# Usage: uninstall UNIT UNIT_PATH BIN_PATH USER KEPT [PURGED_PATH...]
uninstall() {
	local unit=$1 unit_path=$2 bin_path=$3 user=$4 kept=$5 path
	shift 5
	systemd_disable "$unit"
	remove_path "$unit_path"
	remove_path "$bin_path"
	if live && command -v systemctl >/dev/null 2>&1; then act systemctl daemon-reload; fi
	if [ "$PURGE" = 1 ]; then
		for path in "$@"; do remove_path "$path"; done
		if live && id "$user" >/dev/null 2>&1; then act userdel "$user"; fi
	else
		say "kept $kept (--purge removes them)"
	fi
	say "uninstalled"
	exit 0
}

common_usage() {
	cat <<USAGE
  --root DIR     install into DIR instead of / (no users, no running services;
                 the unit is enabled with systemctl --root)
  --dry-run      say what would change, change nothing
  --uninstall    stop and remove the service, unit and binary; configuration,
                 tokens and data stay unless --purge is given too
  --purge        with --uninstall: also remove configuration, tokens, data, user
  --no-start     install and enable, but do not (re)start the service
  -h, --help     this help
USAGE
}
