#!/usr/bin/env bash
# Kv benchmark: one order of 3 replicas on loopback, 256-byte values, 10,000 keys.
# Runs puts and linearizable gets at 64 clients, puts at 1 client, and the herald failover
# probe, RUNS times each; prints one JSON line per run. Results go to bench/RESULTS.md.
#
#   cargo build --release --workspace && bench/kv.sh [RUNS] [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN_DIR:-$here/../target/release}
runs=${1:-3}
secs=${2:-10}
ctl="$bin/radiantctl"
dir=$(mktemp -d /tmp/radiant-bench-XXXX)
trap '"$ctl" demo down --dir "$dir/demo" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$ctl" --output json demo --nodes 3 --station 3 --detach --dir "$dir/demo" > "$dir/demo.json" 2>/dev/null
addrs=$(python3 -c "import json;d=json.load(open('$dir/demo/demo.json'));print(' '.join(n['addr'] for n in d['nodes']))")
first=${addrs%% *}
"$ctl" --output json join --bondsmith "${addrs// /,}" $addrs > /dev/null
until "$ctl" --endpoint "$first" --output json status | python3 -c "import json,sys;d=json.load(sys.stdin);sys.exit(0 if d['shards']['assigned']==d['shards']['total'] else 1)"; do
    sleep 0.2
done

for r in $(seq 1 "$runs"); do
    "$ctl" -e "$first" -o json bench --op put --clients 64 --seconds "$secs" --value-size 256 --keys 10000 | python3 -c "import json,sys;print(json.dumps(json.load(sys.stdin)))"
    "$ctl" -e "$first" -o json bench --op get --clients 64 --seconds "$secs" --value-size 256 --keys 10000 | python3 -c "import json,sys;print(json.dumps(json.load(sys.stdin)))"
    "$ctl" -e "$first" -o json bench --op put --clients 1 --seconds "$secs" --value-size 256 --keys 10000 | python3 -c "import json,sys;print(json.dumps(json.load(sys.stdin)))"
done
