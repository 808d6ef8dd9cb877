#!/usr/bin/env bash
# Runs install-agent.sh (or install-collector.sh) on many hosts over ssh, in
# parallel, and ends with a summary of what succeeded and what failed.
#
#   deploy/install-fleet.sh HOSTS [options] [-- INSTALL-ARGS...]
#
# HOSTS is a file with one host per line ([user@]host, blank lines and # comments
# skipped), or `-` for standard input. For each host the installer, its library,
# the binary and every file named in INSTALL-ARGS are packed into one tar stream,
# unpacked into a temporary directory on the host, run there (with sudo unless
# --no-sudo), and removed. `%h` in INSTALL-ARGS becomes the host's name.
# Each host's output goes to LOG-DIR/HOST.log.
set -euo pipefail

PROG=install-fleet.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	cat <<USAGE
usage: $PROG HOSTS [options] [-- INSTALL-ARGS...]
  --component agent|collector  which installer to run [default: agent]
  --binary PATH        the binary to ship [default: as the installer finds it]
  --parallel N         hosts at once [default: 16]
  --ssh CMD            ssh command, split on spaces [default: ssh -o BatchMode=yes
                       -o ConnectTimeout=10]
  --no-sudo            run the installer as the ssh user (it must be root)
  --log-dir DIR        per-host logs [default: a new temporary directory]
  -h, --help           this help
INSTALL-ARGS go to the installer on every host (see its --help); files they
name (--config, --token-file, --ca-file, --tls-*) are shipped along.
USAGE
}

die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 2
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
case $1 in -h | --help) usage; exit 0 ;; esac
HOSTS=$1
shift
COMPONENT=agent
BINARY=
PARALLEL=16
SSH="ssh -o BatchMode=yes -o ConnectTimeout=10"
SUDO=sudo
LOG_DIR=
while [ $# -gt 0 ]; do
	case $1 in
	--component) COMPONENT=${2:?}; shift ;;
	--binary) BINARY=${2:?}; shift ;;
	--parallel) PARALLEL=${2:?}; shift ;;
	--ssh) SSH=${2:?}; shift ;;
	--no-sudo) SUDO= ;;
	--log-dir) LOG_DIR=${2:?}; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) usage >&2; die "unknown argument: $1 (installer arguments go after --)" ;;
	esac
	shift
done
INSTALL_ARGS=("$@")
case $COMPONENT in agent | collector) ;; *) die "--component must be agent or collector" ;; esac
[[ $PARALLEL =~ ^[1-9][0-9]*$ ]] || die "--parallel must be a positive number"

if [ "$HOSTS" = - ]; then
	host_text=$(cat)
else
	[ -r "$HOSTS" ] || die "hosts file $HOSTS is not readable"
	host_text=$(cat "$HOSTS")
fi
hosts=()
while IFS= read -r line; do
	line=${line%%#*}
	line=$(printf '%s' "$line" | tr -d '[:space:]')
	[ -n "$line" ] && hosts+=("$line")
done <<<"$host_text"
[ ${#hosts[@]} -gt 0 ] || die "no hosts in $HOSTS"

if [ -z "$LOG_DIR" ]; then LOG_DIR=$(mktemp -d -t vigil-fleet.XXXXXX); fi
mkdir -p "$LOG_DIR"

# The bundle: installer, library, unit files, binary, and the files the
# installer arguments name (rewritten to their place in the bundle).
STAGE=$(mktemp -d -t vigil-fleet-stage.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
cp "$HERE/install-$COMPONENT.sh" "$STAGE/"
mkdir -p "$STAGE/lib" "$STAGE/systemd" "$STAGE/files"
cp "$HERE/lib/common.sh" "$STAGE/lib/"
cp "$HERE/systemd/vigil-$COMPONENT.service" "$STAGE/systemd/"
if [ -z "$BINARY" ]; then
	for c in "$HERE/../target/release/vigil-$COMPONENT" "$HERE/vigil-$COMPONENT"; do
		if [ -x "$c" ]; then BINARY=$c; break; fi
	done
fi
if [ -z "$BINARY" ] || [ ! -x "$BINARY" ]; then
	die "no vigil-$COMPONENT binary: pass --binary PATH"
fi
cp "$BINARY" "$STAGE/vigil-$COMPONENT"
args=(--binary "./vigil-$COMPONENT")
n=0
i=0
while [ $i -lt ${#INSTALL_ARGS[@]} ]; do
	a=${INSTALL_ARGS[$i]}
	case $a in
	--config | --token-file | --ca-file | --api-token-file | --tls-cert | --tls-key | --tls-client-ca)
		f=${INSTALL_ARGS[$((i + 1))]:-}
		[ -r "$f" ] || die "$a $f is not readable"
		n=$((n + 1))
		cp "$f" "$STAGE/files/$n-$(basename "$f")"
		chmod 0600 "$STAGE/files/$n-$(basename "$f")"
		args+=("$a" "./files/$n-$(basename "$f")")
		i=$((i + 2))
		continue
		;;
	--binary) die "give --binary before --, to $PROG" ;;
	esac
	args+=("$a")
	i=$((i + 1))
done

# One host: ship the bundle, run the installer, clean up. Status in LOG_DIR.
install_one() {
	local host=$1 log="$LOG_DIR/$1.log" a quoted=""
	for a in "${args[@]}"; do
		quoted+=" $(printf '%q' "${a//%h/$host}")"
	done
	local remote="d=\$(mktemp -d) && trap 'rm -rf \"\$d\"' EXIT && tar -C \"\$d\" -xf - && cd \"\$d\" && $SUDO bash ./install-$COMPONENT.sh$quoted"
	local rc=0
	# shellcheck disable=SC2086 # SSH is a command line split on purpose
	tar -C "$STAGE" -cf - . | $SSH "$host" "$remote" >"$log" 2>&1 || rc=$?
	printf '%s\n' "$rc" >"$LOG_DIR/$host.rc"
}

printf '%s: installing vigil-%s on %d host(s), %d at a time; logs in %s\n' \
	"$PROG" "$COMPONENT" ${#hosts[@]} "$PARALLEL" "$LOG_DIR"
running=0
for host in "${hosts[@]}"; do
	install_one "$host" &
	running=$((running + 1))
	if [ "$running" -ge "$PARALLEL" ]; then
		wait -n || true
		running=$((running - 1))
	fi
done
wait || true

ok=()
failed=()
for host in "${hosts[@]}"; do
	rc=$(cat "$LOG_DIR/$host.rc" 2>/dev/null || echo "?")
	if [ "$rc" = 0 ]; then
		ok+=("$host")
	else
		reason=$(grep -E 'error|denied|refused|timed out|not found|No route' "$LOG_DIR/$host.log" 2>/dev/null | tail -n1)
		[ -n "$reason" ] || reason=$(tail -n1 "$LOG_DIR/$host.log" 2>/dev/null)
		failed+=("$host (exit $rc): ${reason:-no output}")
	fi
done
echo "==== summary: ${#ok[@]} succeeded, ${#failed[@]} failed (of ${#hosts[@]}) ===="
for host in "${ok[@]}"; do echo "ok     $host"; done
for f in "${failed[@]}"; do echo "FAILED $f"; done
[ ${#failed[@]} -eq 0 ]
