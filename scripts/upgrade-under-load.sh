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
. "$(dirname "$0")/pg-instances.sh"
pg_begin "$old" tw_upgrade
secret=s3cr3t-upgrade-under-load
pa=$((20000 + RANDOM % 10000))
pb=$((30000 + RANDOM % 10000))
pg_serve "$old" "$pa" old
TW_URL="http://127.0.0.1:$pa" "$old" --api-key "$key" webhook add upgrade --secret "$secret" >/dev/null
load() { "$old" bench --url "http://127.0.0.1:$pa" --source upgrade --secret "$secret" --api-key "$key" --no-floor --json "$@"; }
load --concurrency 64 --requests "${FILL:-100000}" >/dev/null 2>&1
load --concurrency 16 --requests "${N:-40000}" >"$dir/bench.json" 2>/dev/null &
bench=$!
sleep 1
pg_serve "$new" "$pb" new
wait "$bench" || true
python3 - "$dir/bench.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); p = o["product"]
print("old build under load:", round(p["throughput_rps"]), "req/s, p99", p["latency_ms"]["p99"], "ms, max", p["latency_ms"]["max"], "ms, statuses", p.get("statuses"), ", incidents check", "ok" if o.get("incidents", {}).get("ok") else "FAILED")
PY
echo "schema version after: $(psql -Atq "$pgurl/$db" -c 'SELECT max(version) FROM schema_migrations'), incidents: $(psql -Atq "$pgurl/$db" -c 'SELECT count(*) FROM incidents')"
grep -iE "error|migration" "$dir/old.log" "$dir/new.log" | grep -v NOTICE | head -10 || true
