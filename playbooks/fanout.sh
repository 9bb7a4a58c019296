#!/usr/bin/env bash
# Fan radiantd out to a list of hosts, then bootstrap the station and join the rest.
#
#   playbooks/fanout.sh HOSTS_FILE
#
# HOSTS_FILE has one host per line: `TARGET ADDRESS [NAME]`, where TARGET is what the remote
# shell connects to (an ssh destination, a network namespace...) and ADDRESS the IP radiantd
# advertises. Blank lines and lines starting with # are ignored. The first $STATION hosts
# form the station; the others join as satellites.
#
# Environment:
#   STATION=3          station size (1, 3 or 5)
#   PORT=7400          radiantd port on every host
#   RADIANTD=...       local radiantd binary to install (default: beside this repo's release build)
#   RADIANTCTL=...     local radiantctl binary (default: same directory as RADIANTD)
#   REMOTE="ssh -o BatchMode=yes"   how to run a shell on TARGET (it runs `$REMOTE TARGET sh -s`)
#   INSTALL=1          copy radiantd to the host with $COPY (0: it is already there as $REMOTE_BIN)
#   COPY="scp -q"      how to copy: `$COPY FILE TARGET:PATH`
#   REMOTE_BIN=/usr/local/bin/radiantd
#   REMOTE_CONF=/etc/radiant/radiantd.toml   ({name} is replaced by the host's name)
#   REMOTE_DATA=/var/lib/radiant             ({name} is replaced by the host's name)
#   USE_SYSTEMD=auto   start with systemd when the host has it (auto|1|0)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
hosts_file=${1:?usage: fanout.sh HOSTS_FILE}
STATION=${STATION:-3}
PORT=${PORT:-7400}
RADIANTD=${RADIANTD:-$here/../target/release/radiantd}
RADIANTCTL=${RADIANTCTL:-$(dirname "$RADIANTD")/radiantctl}
REMOTE=${REMOTE:-ssh -o BatchMode=yes}
INSTALL=${INSTALL:-1}
COPY=${COPY:-scp -q}
REMOTE_BIN=${REMOTE_BIN:-/usr/local/bin/radiantd}
REMOTE_CONF=${REMOTE_CONF:-/etc/radiant/radiantd.toml}
REMOTE_DATA=${REMOTE_DATA:-/var/lib/radiant}
USE_SYSTEMD=${USE_SYSTEMD:-auto}

die() { echo "fanout: $*" >&2; exit 1; }
[ -x "$RADIANTCTL" ] || die "radiantctl not found at $RADIANTCTL (cargo build --release)"
[ "$INSTALL" = 0 ] || [ -x "$RADIANTD" ] || die "radiantd not found at $RADIANTD (cargo build --release)"

targets=() addrs=() names=()
while read -r target addr name _; do
    case "$target" in ''|'#'*) continue ;; esac
    [ -n "${addr:-}" ] || die "$hosts_file: host $target has no address"
    targets+=("$target"); addrs+=("$addr:$PORT"); names+=("${name:-$target}")
done < "$hosts_file"
n=${#targets[@]}
[ "$n" -ge "$STATION" ] || die "$n hosts listed, the station needs $STATION"

# The script each host runs: write the config, start radiantd, wait until it listens.
host_script() {
    local name=$1 addr=$2
    local conf=${REMOTE_CONF//\{name\}/$name} data=${REMOTE_DATA//\{name\}/$name}
    cat <<SCRIPT
set -e
mkdir -p "$(dirname "$conf")" "$data"
cat > "$conf" <<TOML
name = "$name"
listen = "$addr"
data_dir = "$data"
TOML
"$REMOTE_BIN" --check-config --config "$conf" >/dev/null
if [ "$USE_SYSTEMD" = 1 ] || { [ "$USE_SYSTEMD" = auto ] && [ -d /run/systemd/system ] && [ "$conf" = /etc/radiant/radiantd.toml ]; }; then
    systemctl enable --now radiantd
else
    nohup "$REMOTE_BIN" --config "$conf" >> "$data/radiantd.log" 2>&1 < /dev/null &
fi
SCRIPT
}

if [ "$INSTALL" != 0 ]; then
    for i in "${!targets[@]}"; do
        echo "installing radiantd on ${targets[$i]}"
        $COPY "$RADIANTD" "${targets[$i]}:$REMOTE_BIN"
    done
fi

# Start every host at once, like pdsh would; each host gets its own config on stdin.
pids=()
for i in "${!targets[@]}"; do
    echo "starting radiantd on ${targets[$i]} (${addrs[$i]})"
    host_script "${names[$i]}" "${addrs[$i]}" | $REMOTE "${targets[$i]}" sh -s &
    pids+=($!)
done
for p in "${pids[@]}"; do
    wait "$p" || die "starting radiantd failed on a host (see above)"
done

station=$(IFS=,; echo "${addrs[*]:0:$STATION}")
echo "bootstrapping the station: $station"
"$RADIANTCTL" bootstrap --station "$station"
if [ "$n" -gt "$STATION" ]; then
    echo "joining ${addrs[*]:$STATION}"
    "$RADIANTCTL" join --bondsmith "$station" "${addrs[@]:$STATION}"
fi
"$RADIANTCTL" --endpoint "${addrs[0]}" status
