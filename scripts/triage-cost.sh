#!/usr/bin/env bash
# What a triage job costs: N deliveries to a phishing_triage source are queued by a `tw-cli serve`
# that runs no triage (`--triage-workers 0`), then a server on the same files drains them until
# no job is left.
#
#   cargo build --release -p tw-cli
#   scripts/triage-cost.sh callgrind 1000    # instructions (valgrind), one triage worker
#   callgrind_annotate --inclusive=yes callgrind.triage.<pid> | grep -E 'writer::run \[|PreparedPlaybook::run \['
#   scripts/triage-cost.sh drain 5000        # jobs per second, CPU per job by thread
#   BENCH_ARGS="--format mixed --payload-bytes 4096" scripts/triage-cost.sh drain 3000
#   DRAIN_ARGS="--triage-workers 1" scripts/triage-cost.sh drain 5000
#
# `callgrind` (also a bare N, as in `triage-cost.sh 1000`) drains under `valgrind --tool=callgrind`
# with one triage worker; the profile holds the drain (and the server's start): divide by N. The
# writer's share (`tw_store::sqlite::writer::run`) is what every delivery also waits for; the
# playbook engine (`tw_core::triage::engine::PreparedPlaybook::run`) runs on the low-priority
# playbook threads.
#
# `drain` runs the server pinned to CPU 0 with its default triage workers and prints the jobs per
# second, each thread's user and system CPU per job (start-up included) and how busy the core was.
#
# Environment: TW_BIN (default target/release/tw-cli, or $CARGO_TARGET_DIR/release/tw-cli);
# BENCH_ARGS, more `tw-cli bench` flags for the deliveries queued; DRAIN_ARGS, more `serve` flags
# for the draining server (`drain`). Needs python3 (its sqlite3 module counts the jobs left).
set -euo pipefail

case ${1:-} in
    callgrind | drain) mode=$1; n=${2:-1000} ;;
    '' | *[!0-9]*) echo "usage: triage-cost.sh callgrind|drain N" >&2; exit 2 ;;
    *) mode=callgrind; n=$1 ;;
esac
bin=${TW_BIN:-${CARGO_TARGET_DIR:-target}/release/tw-cli}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p tw-cli" >&2; exit 1; }
[ "$mode" = drain ] || command -v valgrind >/dev/null || { echo "triage-cost.sh callgrind needs valgrind" >&2; exit 1; }
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
ready() { for _ in $(seq 600); do curl -sf "$url/api/health" >/dev/null && return 0; sleep 0.1; done; echo "the server did not start" >&2; exit 1; }
left() {
    python3 -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True); print(c.execute(\"SELECT COUNT(*) FROM triage_jobs WHERE status IN ('pending','running')\").fetchone()[0])" "$dir/data/tw.db"
}

key=$("$bin" api-key create --name cost --data-dir "$dir/data" 2>/dev/null | tail -1)
taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" --triage-workers 0 >"$dir/log" 2>&1 &
server=$!
ready
TW_URL=$url "$bin" --api-key "$key" webhook add cost --secret "$secret" --auto-triage true --playbook phishing_triage >/dev/null
# shellcheck disable=SC2086
taskset -c 1 "$bin" bench --url "$url" --source cost --secret "$secret" --no-floor --json --concurrency 16 --requests "$n" ${BENCH_ARGS:-} >/dev/null 2>&1
kill "$server"; wait "$server" 2>/dev/null || true
server=
queued=$(left)

if [ "$mode" = callgrind ]; then
    echo "queued: $queued jobs"
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
    exit 0
fi

# shellcheck disable=SC2086
taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" ${DRAIN_ARGS:-} >"$dir/log" 2>&1 &
server=$!
t0=$(date +%s.%N)
while [ "$(left)" != 0 ]; do sleep 0.05; done
t1=$(date +%s.%N)
# Every thread's user and system ticks since the server started.
threads=$(for t in /proc/"$server"/task/*; do printf '%s ' "$(tr ' ' _ <"$t/comm")"; sed 's/^.*) //' "$t/stat" | awk '{print $12, $13}'; done)
python3 - "$queued" "$t0" "$t1" "$threads" <<'PY'
import os, sys
n, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
rows = {}
for line in sys.argv[4].splitlines():
    name, u, s = line.split()
    r = rows.setdefault(name, [0, 0])
    r[0] += int(u); r[1] += int(s)
us = lambda ticks: ticks / hz * 1e6 / n
total = 0
for name, (u, s) in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
    if u + s:
        print(f"  {name:<18} user {us(u):6.1f}  system {us(s):6.1f}  us/job")
        total += u + s
seconds = t1 - t0
print(f"{n} jobs in {seconds:.2f} s: {n / seconds:.0f} jobs/s, server CPU {us(total):.0f} us/job (start-up included), core busy {total / hz / seconds * 100:.0f}%")
PY
