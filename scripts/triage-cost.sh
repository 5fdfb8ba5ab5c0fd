#!/usr/bin/env bash
# What a triage run costs, in instructions: N deliveries to a phishing_triage source are queued by a
# `tw-cli serve` that runs no triage (`--triage-workers 0`), then a server on the same files with one
# triage worker drains them under `valgrind --tool=callgrind` until no job is left. The profile holds
# the drain (and the server's start): divide by N.
#
#   cargo build --release -p tw-cli
#   scripts/triage-cost.sh 1000
#   callgrind_annotate --inclusive=yes callgrind.triage.<pid> | grep -E 'writer::run \[|engine::run \['
#
# The writer's share (`tw_store::sqlite::writer::run`) is what every delivery also waits for; the
# playbook engine (`tw_core::triage::engine::run`) runs on the low-priority playbook threads.
# Environment: TW_BIN (default target/release/tw-cli, or $CARGO_TARGET_DIR/release/tw-cli).
set -euo pipefail

n=${1:-1000}
bin=${TW_BIN:-${CARGO_TARGET_DIR:-target}/release/tw-cli}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p tw-cli" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "triage-cost.sh needs valgrind" >&2; exit 1; }
dir=$(mktemp -d /tmp/tw-triage-cost.XXXX)
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
secret=s3cr3t-triage-cost-secret
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
ready() { for _ in $(seq 600); do curl -sf "$url/api/health" >/dev/null && return 0; sleep 0.2; done; echo "the server did not start" >&2; exit 1; }
left() {
    python3 -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(c.execute(\"SELECT COUNT(*) FROM triage_jobs WHERE status IN ('pending','running')\").fetchone()[0])" "$dir/data/tw.db"
}

key=$("$bin" api-key create --name cost --data-dir "$dir/data" 2>/dev/null | tail -1)
taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --triage-workers 0 >"$dir/log" 2>&1 &
server=$!
ready
TW_URL=$url "$bin" --api-key "$key" webhook add cost --secret "$secret" --auto-triage true --playbook phishing_triage >/dev/null
taskset -c 1 "$bin" bench --url "$url" --source cost --secret "$secret" --no-floor --json --concurrency 16 --requests "$n" >/dev/null 2>&1
kill "$server"; wait "$server" 2>/dev/null || true
echo "queued: $(left) jobs"

taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="callgrind.triage.%p" \
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --triage-workers 1 >"$dir/log" 2>&1 &
server=$!
for _ in $(seq 3600); do
    sleep 1
    [ "$(left)" = 0 ] && break
done
echo "left: $(left) jobs"
kill "$server"; wait "$server" 2>/dev/null || true
server=
echo "profile: $(ls -t callgrind.triage.* | head -1)"
