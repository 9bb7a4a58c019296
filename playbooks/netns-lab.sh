#!/usr/bin/env bash
# A lab of "hosts" in network namespaces on this machine, to test fanout.sh end to end
# without real machines. Needs root and iproute2. Hosts get addresses in 198.18.0.0/24
# (a range reserved for benchmarking), joined by a bridge whose address the operator uses.
#
#   playbooks/netns-lab.sh up N      create N hosts (rlab1..rlabN) and a hosts file
#   playbooks/netns-lab.sh run N     up, then fanout.sh over them (station of 3)
#   playbooks/netns-lab.sh down      stop radiantd in the lab and remove it
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
LAB=${LAB:-/tmp/radiant-lab}
BRIDGE=rlab0
PREFIX=198.18.0

up() {
    local n=$1
    mkdir -p "$LAB"
    ip link show "$BRIDGE" >/dev/null 2>&1 || {
        ip link add "$BRIDGE" type bridge
        ip addr add "$PREFIX.254/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    }
    : > "$LAB/hosts"
    for i in $(seq 1 "$n"); do
        local ns=rlab$i
        if ! ip netns list | grep -qw "$ns"; then
            ip netns add "$ns"
            ip link add "v$ns" type veth peer name eth0 netns "$ns"
            ip link set "v$ns" master "$BRIDGE" up
            ip -n "$ns" addr add "$PREFIX.$i/24" dev eth0
            ip -n "$ns" link set eth0 up
            ip -n "$ns" link set lo up
        fi
        echo "$ns $PREFIX.$i $ns" >> "$LAB/hosts"
    done
    echo "lab hosts in $LAB/hosts"
}

down() {
    for ns in $(ip netns list | awk '/^rlab[0-9]+/ {print $1}'); do
        ip netns pids "$ns" | xargs -r kill 2>/dev/null || true
    done
    sleep 1
    for ns in $(ip netns list | awk '/^rlab[0-9]+/ {print $1}'); do
        ip netns pids "$ns" | xargs -r kill -9 2>/dev/null || true
        ip link del "v$ns" 2>/dev/null || true
        ip netns del "$ns"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$LAB"
}

case "${1:-}" in
    up) up "${2:-6}" ;;
    down) down ;;
    run)
        up "${2:-6}"
        bin=${BIN_DIR:-$here/../target/release}
        REMOTE="ip netns exec" INSTALL=0 REMOTE_BIN="$bin/radiantd" RADIANTCTL="$bin/radiantctl" \
            REMOTE_CONF="$LAB/{name}/radiantd.toml" REMOTE_DATA="$LAB/{name}/data" USE_SYSTEMD=0 \
            "$here/fanout.sh" "$LAB/hosts"
        ;;
    *) echo "usage: $0 up N | run N | down" >&2; exit 2 ;;
esac
