#!/usr/bin/env bash
# Times incident listings and lookups on a store filled with many incidents.
#
#   cargo build --release -p tw-cli
#   scripts/bench-listing.sh sqlite 1000000            # store in /tmp/tw-bench-sqlite
#   scripts/bench-listing.sh postgres 1000000          # database twbench on the local PostgreSQL
#
# The schema is the one the server creates: the script starts the server once on an empty store,
# stops it, then fills incidents, their payloads and the counter directly with SQL in one
# transaction (incident_counts filled as the intake and its triggers would). Then it starts the server
# again and times each request with curl, 15 runs each after one warm-up, and prints the median,
# the fastest and the slowest in milliseconds.
#
# Environment: TW_BIN (default target/release/tw-cli, or $CARGO_TARGET_DIR/release/tw-cli),
# BENCH_DIR (default /tmp/tw-bench-<engine>), BENCH_PG (default postgres://postgres@127.0.0.1:5432),
# BENCH_PORT (default 18080), RUNS (default 15), FILL=0 to time an already filled store,
# INTAKE=N to also send N signed deliveries to the filled store with `tw-cli bench --url` (the
# server pinned to CPU 0 and the load to CPU 1, as `tw-cli bench --pin` does), to a new source.
# ALERT_IDS=sequential|random sends them instead to the fill's largest source (edr, 40% of the
# incidents) with the bench's `--alert-ids` of that name; with random, the fill's alert ids are
# random too (16 hex digits), so each new dedupe key lands anywhere among the source's keys in
# the unique (source, dedupe key) index, as a vendor's GUIDs or hashes do on a store a year old.
set -euo pipefail

engine=${1:?usage: bench-listing.sh sqlite|postgres N}
n=${2:-1000000}
bin=${TW_BIN:-${CARGO_TARGET_DIR:-target}/release/tw-cli}
dir=${BENCH_DIR:-/tmp/tw-bench-$engine}
pg=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
port=${BENCH_PORT:-18080}
runs=${RUNS:-15}
fill=${FILL:-1}
url="http://127.0.0.1:$port"
year=2026

case $engine in
sqlite) db_args=(--data-dir "$dir") ;;
postgres) db_args=(--data-dir "$dir" --database-url "$pg/twbench") ;;
*) echo "engine must be sqlite or postgres" >&2; exit 2 ;;
esac

server_pid=
start_server() {
    ${INTAKE:+taskset -c 0} "$bin" serve "${db_args[@]}" --listen "127.0.0.1:$port" --log-format json >"$dir/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        curl -fsS "$url/api/health" >/dev/null 2>&1 && return 0
        kill -0 "$server_pid" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "the server did not start" >&2
    exit 1
}
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

# One row per incident, with independent, uneven shares: sources edr 40%, email-gateway 35%,
# siem 24%, cloud 1%; severities critical 0.5%, high 10%, medium 40%, low 35%, info 14.5%; status
# triaged 59%, closed 1%, open 40%. Each row has a title, a few entities, a triage result on the
# triaged ones, and a 1.5 kB payload. Written for both engines: `g` is 1..N, `ts` its receipt time.
columns="id, year, seq, source, format, title, description, severity, vendor_severity, status, event_type, event_time,
    received_at, external_id, dedupe_key, entities, delivery_count, last_delivery_at, auto_triage, playbook, request_id, triage"
# The fill's alert ids: `bench-<g>` (in order), or with ALERT_IDS=random 16 random hex digits.
# $1: the engine's expression for 16 random hex digits.
alert_id_of() {
    if [ "${ALERT_IDS:-}" = random ]; then echo "$1 || '-fill'"; else echo "'bench-' || g"; fi
}
source_of="CASE WHEN (g * 69069) % 100 < 40 THEN 'edr' WHEN (g * 69069) % 100 < 75 THEN 'email-gateway' WHEN (g * 69069) % 100 < 99 THEN 'siem' ELSE 'cloud' END"
severity_of="CASE WHEN (g * 2654435761) % 1000 < 5 THEN 'critical' WHEN (g * 2654435761) % 1000 < 105 THEN 'high' WHEN (g * 2654435761) % 1000 < 505 THEN 'medium' WHEN (g * 2654435761) % 1000 < 855 THEN 'low' ELSE 'info' END"
status_of="CASE WHEN (g * 40503) % 997 < 10 THEN 'closed' WHEN (g * 40503) % 997 < 598 THEN 'triaged' ELSE 'open' END"
entities="'[{\"kind\":\"ip\",\"value\":\"10.1.' || (g % 250) || '.' || (g % 200) || '\",\"role\":\"source\"},{\"kind\":\"user\",\"value\":\"user' || (g % 5000) || '@example.com\"},{\"kind\":\"hostname\",\"value\":\"ws-' || (g % 3000) || '\",\"role\":\"host\"}]'"
triage="CASE WHEN (g * 40503) % 997 < 598 THEN '{\"status\":\"completed\",\"job_id\":\"job-' || g || '\",\"playbook\":\"malware_triage\",\"verdict\":\"suspicious\",\"score\":55,\"attempts\":1,\"findings\":[{\"rule\":\"intel_bad_ip\",\"detail\":\"10.1.' || (g % 250) || '.1 is on the bad-ips list\",\"weight\":30},{\"rule\":\"asset_criticality\",\"detail\":\"ws-' || (g % 3000) || ' is high\",\"weight\":25}],\"recommended_actions\":[{\"action\":\"isolate_host\",\"target\":\"ws-' || (g % 3000) || '\",\"reason\":\"Suspicious verdict with score 55\"}]}' END"
# $1: the engine's expression for 1,400 digits.
payload_of() {
    echo "'{\"event_type\":\"security_alert\",\"timestamp\":\"' || ts || '\",\"data\":{\"alert_id\":\"bench-' || g || '\",\"severity\":\"high\",\"details\":{\"title\":\"Suspicious login ' || g || '\",\"pad\":\"' || $1 || '\"}}}'"
}

fill_sqlite() {
    command -v sqlite3 >/dev/null || { echo "sqlite3 is needed to fill the store" >&2; exit 1; }
    sqlite3 "$dir/tw.db" <<SQL
PRAGMA foreign_keys = ON;
PRAGMA cache_size = -262144;
BEGIN;
CREATE TEMP TABLE gen AS
    WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $n)
    SELECT g, strftime('%Y-%m-%dT%H:%M:%S', '$year-01-01', '+' || (g / 10) || ' seconds') || '.' || printf('%06d', (g % 10) * 100000) || 'Z' AS ts,
           printf('%08x-%04x-7%03x-8000-%012x', 1700000000 + g / 65536, g % 65536, g % 4096, g) AS id
    FROM s;
INSERT INTO incidents ($columns)
    SELECT id, $year, g, $source_of, 'generic', 'Suspicious login ' || g, NULL, $severity_of, 'high', $status_of,
           'security_alert', ts, ts, alert_id, 'id:' || alert_id, $entities, 1, ts, 0, NULL, 'req_' || g, $triage
    FROM (SELECT *, $(alert_id_of "lower(hex(randomblob(8)))") AS alert_id FROM gen) ORDER BY g;
-- Payloads keyed by the incident's number, year * 2^32 + seq (schema v15).
INSERT INTO incident_payloads (number, raw_payload) SELECT $year * 4294967296 + g, CAST($(payload_of "printf('%01400d', g)") AS BLOB) FROM gen ORDER BY g;
-- The intake's writer counts new incidents per batch (no insert trigger on SQLite): do the same.
INSERT INTO incident_counts (source, status, severity, n)
    SELECT source, status, severity, COUNT(*) FROM incidents GROUP BY source, status, severity
    ON CONFLICT (source, status, severity) DO UPDATE SET n = n + excluded.n;
INSERT INTO incident_counters (year, last_seq) VALUES ($year, $n)
    ON CONFLICT (year) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq);
COMMIT;
ANALYZE;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
}

fill_postgres() {
    psql "$pg/twbench" -v ON_ERROR_STOP=1 -q <<SQL
SET synchronous_commit = off;
BEGIN;
CREATE TEMP TABLE gen AS
    SELECT g, to_char(timestamptz '$year-01-01 00:00:00+00' + g * interval '100 milliseconds', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts,
           (lpad(to_hex(1700000000 + g / 65536), 8, '0') || '-' || lpad(to_hex(g % 65536), 4, '0') || '-7' || lpad(to_hex(g % 4096), 3, '0')
            || '-8000-' || lpad(to_hex(g), 12, '0'))::uuid AS id
    FROM generate_series(1::BIGINT, $n) AS g;
INSERT INTO incidents ($columns)
    SELECT id, $year, g, $source_of, 'generic', 'Suspicious login ' || g, NULL, $severity_of, 'high', $status_of, 'security_alert',
           ts::timestamptz, ts::timestamptz, alert_id, 'id:' || alert_id, $entities, 1, ts::timestamptz, false, NULL, 'req_' || g, $triage
    FROM (SELECT *, $(alert_id_of "substr(md5(g::text || random()::text), 1, 16)") AS alert_id FROM gen) AS gen ORDER BY g;
INSERT INTO incident_payloads (incident_id, raw_payload)
    SELECT id, convert_to($(payload_of "lpad(g::text, 1400, '0')"), 'UTF8') FROM gen ORDER BY id;
INSERT INTO incident_counters (year, last_seq) VALUES ($year, $n)
    ON CONFLICT (year) DO UPDATE SET last_seq = GREATEST(incident_counters.last_seq, EXCLUDED.last_seq);
COMMIT;
VACUUM ANALYZE;
SQL
}

# Milliseconds of `runs` GETs of $1: median, fastest, slowest (after one warm-up request).
time_get() {
    local path=$1 times
    curl -fsS -o /dev/null -H "Authorization: Bearer $key" "$url$path"
    times=$(for _ in $(seq "$runs"); do
        curl -fsS -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $key" "$url$path"
    done | sort -n)
    printf '%-72s %8.2f %8.2f %8.2f\n' "$path" \
        "$(echo "$times" | awk -v n="$runs" 'NR == int((n + 1) / 2) { print $1 * 1000 }')" \
        "$(echo "$times" | head -1 | awk '{ print $1 * 1000 }')" \
        "$(echo "$times" | tail -1 | awk '{ print $1 * 1000 }')"
}

# The cursor the API would hand out after incident <year>-<seq>, newest first: `<year>-<seq>`
# (`Cursor` in routes/incidents.rs).
cursor_after() {
    printf '%s-%s' "$1" "$2"
}

mkdir -p "$dir"
if [ "$fill" = 1 ]; then
    if [ "$engine" = sqlite ]; then
        rm -f "$dir/tw.db" "$dir/tw.db-wal" "$dir/tw.db-shm"
    else
        psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS twbench WITH (FORCE)" -c "CREATE DATABASE twbench"
    fi
    start_server # creates the schema
    stop_server
    echo "filling $n incidents ($engine)..."
    started=$(date +%s)
    "fill_$engine"
    echo "filled in $(($(date +%s) - started)) s"
fi
key=$("$bin" api-key create --name "bench-$RANDOM" --scope read "${db_args[@]}")
start_server

total=$(curl -fsS -H "Authorization: Bearer $key" "$url/api/incidents?per_page=1" | sed -E 's/.*"total":([0-9]+).*/\1/')
echo "$engine: $total incidents; $runs runs each, milliseconds"
printf '%-72s %8s %8s %8s\n' request median fastest slowest
time_get "/api/incidents?per_page=50"
time_get "/api/incidents?per_page=50&cursor=$(cursor_after $year $((n / 2)))"
time_get "/api/incidents?per_page=50&cursor=$(cursor_after $year 100)"
time_get "/api/incidents?per_page=50&source=edr"
time_get "/api/incidents?per_page=50&source=cloud"
time_get "/api/incidents?per_page=50&source=cloud&cursor=$(cursor_after $year $((n / 2)))"
time_get "/api/incidents?per_page=50&status=open"
time_get "/api/incidents?per_page=50&status=closed"
time_get "/api/incidents?per_page=50&status=closed&cursor=$(cursor_after $year $((n / 2)))"
time_get "/api/incidents?per_page=50&severity=high"
time_get "/api/incidents?per_page=50&severity=critical"
time_get "/api/incidents?per_page=50&severity=critical&cursor=$(cursor_after $year $((n / 2)))"
time_get "/api/incidents?per_page=50&status=open&severity=high"
time_get "/api/incidents?per_page=50&source=cloud&status=closed"
time_get "/api/incidents?per_page=50&source=siem&status=open&severity=critical"
time_get "/api/incidents?per_page=50&page=2"
# The deepest page the API serves by offset (10,000 incidents in); deeper ones are the cursor's.
time_get "/api/incidents?per_page=50&page=201"
time_get "/api/incidents/INC-$year-$((n / 2))"
time_get "/api/incidents/INC-$year-$((n / 2))/raw"
id=$(curl -fsS -H "Authorization: Bearer $key" "$url/api/incidents?per_page=1&cursor=$(cursor_after $year 17)" | sed -E 's/.*"id":"([0-9a-f-]{36})".*/\1/')
time_get "/api/incidents/$id"

if [ -n "${INTAKE:-}" ]; then
    admin=$("$bin" api-key create --name "bench-admin-$RANDOM" --scope admin "${db_args[@]}")
    secret=bench-listing-secret-$RANDOM-0123456789abcdef
    source=intake-$RANDOM
    ids=()
    if [ -n "${ALERT_IDS:-}" ]; then
        # The fill's source, registered by the first run on this store with this fixed secret.
        source=edr
        secret=bench-listing-secret-edr-0123456789abcdef
        ids=(--alert-ids "$ALERT_IDS")
        "$bin" --url "$url" --api-key "$admin" webhook add "$source" --secret "$secret" >/dev/null 2>&1 || true
    else
        "$bin" --url "$url" --api-key "$admin" webhook add "$source" --secret "$secret" >/dev/null
    fi
    echo "intake into the filled store ($INTAKE deliveries, 64 connections, source $source):"
    taskset -c 1 "$bin" bench --url "$url" --source "$source" --secret "$secret" --api-key "$admin" --requests "$INTAKE" --concurrency 64 --no-floor "${ids[@]}"
fi
