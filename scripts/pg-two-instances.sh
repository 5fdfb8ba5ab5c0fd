#!/usr/bin/env bash
# Two `tw-cli serve` on one PostgreSQL database, both pinned to CPU 0, each loaded at once by a
# `tw-cli bench --url` pinned to CPU 1 (a source each, c=64, N deliveries each). Prints each
# instance's throughput, p99 and incident check, and the sum. The database is created and dropped.
#
#   scripts/pg-two-instances.sh target/release/tw-cli 15000
#
# Environment: PGURL (default postgres://postgres@127.0.0.1:5432).
set -euo pipefail
bin=${1:?usage: pg-two-instances.sh BIN [N]}
n=${2:-15000}
. "$(dirname "$0")/pg-instances.sh"
pg_begin "$bin" tw_two_instances
ports=($((20000 + RANDOM % 10000)) $((30000 + RANDOM % 10000)))
for i in 0 1; do
    pg_serve "$bin" "${ports[$i]}" "instance$i" taskset -c 0
done
# Each source its own secret (the server refuses a secret already in use).
for i in 0 1; do
    TW_URL="http://127.0.0.1:${ports[0]}" "$bin" --api-key "$key" webhook add "two$i" --secret "s3cr3t-two-instances-$i" >/dev/null
done
sleep 2 # both instances see both sources (their caches are refreshed within about a second)
benches=()
for i in 0 1; do
    taskset -c 1 "$bin" bench --url "http://127.0.0.1:${ports[$i]}" --source "two$i" --secret "s3cr3t-two-instances-$i" --api-key "$key" \
        --concurrency 64 --requests "$n" --no-floor --json >"$dir/bench$i.json" 2>/dev/null &
    benches+=($!)
done
wait "${benches[@]}"
python3 - "$dir/bench0.json" "$dir/bench1.json" <<'PY'
import json, sys
total = 0
for f in sys.argv[1:]:
    o = json.load(open(f)); p = o["product"]; total += p["throughput_rps"]
    print(f'instance: {round(p["throughput_rps"])} req/s, p99 {p["latency_ms"]["p99"]} ms, incidents check {"ok" if o.get("incidents", {}).get("ok") else "FAILED"}')
print(f"together: {round(total)} req/s")
PY
