#!/usr/bin/env bash
# Power-cut check for the embedded store: a `tw-cli serve` on SQLite pinned to CPU 0 takes
# `tw-cli bench --url` load from CPU 1, is killed with SIGKILL mid-load (its writer, sync thread
# and checkpointer all busy), and is started again on the same files. Every delivery the load saw
# acknowledged must be an incident afterwards (more may be: committed, killed before the answer),
# and SQLite's integrity check must pass.
#
#   cargo build --release -p tw-cli
#   scripts/kill-under-load.sh            # kill after 6 s of a 12 s load
#   KILL_AFTER=9 scripts/kill-under-load.sh
#
# Environment: TW_BIN (default target/release/tw-cli, or $CARGO_TARGET_DIR/release/tw-cli),
# KILL_AFTER (seconds, default 6). Needs python3 (its sqlite3 module reads the store).
set -euo pipefail

bin=${TW_BIN:-${CARGO_TARGET_DIR:-target}/release/tw-cli}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p tw-cli" >&2; exit 1; }
dir=$(mktemp -d /tmp/tw-kill-under-load.XXXX)
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
secret=s3cr3t-kill-under-load-secret
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
serve() {
    taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" >>"$dir/log" 2>&1 &
    server=$!
    for _ in $(seq 600); do curl -sf "$url/api/health" >/dev/null && return; sleep 0.1; done
    echo "the server did not start:" >&2
    cat "$dir/log" >&2
    exit 1
}

key=$("$bin" api-key create --name kill --data-dir "$dir/data" 2>/dev/null | tail -1)
serve
TW_URL=$url "$bin" --api-key "$key" webhook add kill --secret "$secret" >/dev/null
taskset -c 1 "$bin" bench --url "$url" --source kill --secret "$secret" --no-floor --json --concurrency 64 --duration 12s \
    >"$dir/bench.json" 2>/dev/null &
load=$!
sleep "${KILL_AFTER:-6}"
kill -9 "$server"
wait "$server" 2>/dev/null || true
server=
wal=$(stat -c %s "$dir/data/tw.db-wal" 2>/dev/null || echo 0)
wait "$load" || true

acked=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["product"]["ok_2xx"])' "$dir/bench.json")
serve
stored=$(curl -sf -H "Authorization: Bearer $key" "$url/api/incidents?per_page=1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["meta"]["total"])')
kill "$server"
wait "$server" 2>/dev/null || true
server=
integrity=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' "$dir/data/tw.db")
echo "acknowledged $acked, incidents after restart $stored, WAL at the kill $((wal / 1024 / 1024)) MiB, integrity $integrity"
if [ "$stored" -lt "$acked" ] || [ "$integrity" != ok ]; then
    echo "FAILED: acknowledged deliveries were lost or the store is damaged" >&2
    exit 1
fi
