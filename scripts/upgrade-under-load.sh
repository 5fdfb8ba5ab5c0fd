#!/usr/bin/env bash
# A PostgreSQL schema upgrade under load: an instance of the OLD build serves deliveries (after
# filling the store with FILL incidents) while the NEW build starts on the same database and
# migrates it. Prints the old instance's bench (every request should be 2xx, every incident
# stored), the schema version after and the incidents counted, and the log lines of both that
# speak of errors or migrations. The database is created and dropped.
#
#   scripts/upgrade-under-load.sh /tmp/tw-before target/release/tw-cli
#
# Environment: PGURL (default postgres://postgres@127.0.0.1:5432), FILL (default 100000), N
# (deliveries during the upgrade, default 40000).
set -euo pipefail
old=${1:?usage: upgrade-under-load.sh OLD_BIN NEW_BIN}
new=${2:?usage: upgrade-under-load.sh OLD_BIN NEW_BIN}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432}
db=tw_upgrade_$$
dir=$(mktemp -d /tmp/tw-upgrade.XXXX)
secret=s3cr3t-upgrade-under-load
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$pgurl/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
psql -q "$pgurl/postgres" -c "CREATE DATABASE $db" >/dev/null
key=$("$old" api-key create --name upgrade --data-dir "$dir/a" --database-url "$pgurl/$db" 2>/dev/null | tail -1)
mkdir -p "$dir/b"
cp "$dir/a/master.key" "$dir/b/"
pa=$((20000 + RANDOM % 10000))
pb=$((30000 + RANDOM % 10000))
up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/api/health" >/dev/null && return; sleep 0.1; done; echo "no answer on $1" >&2; exit 1; }
"$old" serve --listen "127.0.0.1:$pa" --data-dir "$dir/a" --database-url "$pgurl/$db" >"$dir/old.log" 2>&1 &
pids+=($!)
up "$pa"
TW_URL="http://127.0.0.1:$pa" "$old" --api-key "$key" webhook add upgrade --secret "$secret" >/dev/null
load() { "$old" bench --url "http://127.0.0.1:$pa" --source upgrade --secret "$secret" --api-key "$key" --no-floor --json "$@"; }
load --concurrency 64 --requests "${FILL:-100000}" >/dev/null 2>&1
load --concurrency 16 --requests "${N:-40000}" >"$dir/bench.json" 2>/dev/null &
bench=$!
sleep 1
"$new" serve --listen "127.0.0.1:$pb" --data-dir "$dir/b" --database-url "$pgurl/$db" >"$dir/new.log" 2>&1 &
pids+=($!)
up "$pb"
wait "$bench" || true
python3 - "$dir/bench.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); p = o["product"]
print("old build under load:", round(p["throughput_rps"]), "req/s, p99", p["latency_ms"]["p99"], "ms, max", p["latency_ms"]["max"], "ms, statuses", p.get("statuses"), ", incidents check", "ok" if o.get("incidents", {}).get("ok") else "FAILED")
PY
echo "schema version after: $(psql -Atq "$pgurl/$db" -c 'SELECT max(version) FROM schema_migrations'), incidents: $(psql -Atq "$pgurl/$db" -c 'SELECT count(*) FROM incidents')"
grep -iE "error|migration" "$dir/old.log" "$dir/new.log" | grep -v NOTICE | head -10 || true
