#!/usr/bin/env bash
# What one signed delivery costs the server, measured from outside it: a `tw-cli serve` on SQLite
# pinned to CPU 0, loaded from CPU 1 by `tw-cli bench --url` (c=64, ~1 KB generic alerts).
#
#   cargo build --release -p tw-cli
#   scripts/intake-cost.sh cpu 30000         # req/s, p99, server CPU time and bytes written per delivery
#   scripts/intake-cost.sh callgrind 5000    # instructions, counted only while the load runs
#   WARMUP=200000 scripts/intake-cost.sh syscalls 20000   # system calls per delivery, by thread
#   scripts/intake-cost.sh threads 30000     # user and system CPU per delivery, by thread
#   FLOOR=1 scripts/intake-cost.sh threads 30000   # the same for the bench's floor responder
#   PG=1 scripts/intake-cost.sh threads 30000      # the same on PostgreSQL, with its backends' CPU
#
# `cpu` reads the server's CPU time (user + system, all threads; the user share is printed) and bytes written from /proc
# before and after the load, and the commits from /metrics (deliveries per commit = writes / 2 /
# commits: each delivery is an incident write and a delivery record). Times move from run to run
# on a shared VM: compare two builds in alternating runs (TW_BIN=... for each).
#
# `callgrind` runs the server under `valgrind --tool=callgrind` with instrumentation switched on
# only for the load (after 500 warm-up deliveries), without the bench's incident check, and
# writes callgrind.intake.<pid> in the current directory: read it with
# `callgrind_annotate --inclusive=yes FILE` and divide by the deliveries. Counts repeat for the same
# build and input; the writer's batches are smaller under valgrind than at full speed, so the
# commit's share is larger than in a real run. SHA-256 runs in software there (no SHA
# instructions), which inflates the signature check and the body hash.
#
# `syscalls` counts the server's system calls by thread and name while the load runs
# (`perf trace -s`, as root; tracing every call slows the server, the counts do not move): what a
# page written or read again costs shows here as a number, where times drown in the machine's
# spread. With WARMUP, the store is filled first. The writer's `pread64`/`pwrite64` include the
# checkpoints it runs itself when the WAL reaches its limit (`checkpoint.rs`).
#
# `threads` reads each thread's user and system CPU time from /proc/PID/task before and after the
# load (no profiler: a profiler's own cost lands on the pinned core and inflates the kernel's
# share). With FLOOR=1 the server is the bench's floor responder (`tw-cli bench --floor-serve`: HTTP,
# HMAC, JSON parse, nothing stored) under the same load, so the two can be set side by side; its
# busy share says whether the floor was held back by the load generator rather than by its core.
#
# Environment: TW_BIN (default target/release/tw-cli, or $CARGO_TARGET_DIR/release/tw-cli);
# SOURCE_ARGS, more `webhook add` flags for the source (e.g. "--auto-triage true --playbook
# phishing_triage"); SERVE_ARGS, more `serve` flags (e.g. "--triage-workers 0"); BENCH_ARGS, more
# `tw-cli bench` flags for the load (e.g. "--alert-ids random"); STORE_DIR, an existing SQLite data
# dir to serve instead of a new one (used in place and kept), with SOURCE and SECRET naming a
# source registered there (e.g. STORE_DIR=/tmp/tw-bench-sqlite SOURCE=edr
# SECRET=bench-listing-secret-edr-0123456789abcdef after `ALERT_IDS=random INTAKE=1000
# scripts/bench-listing.sh sqlite 1000000`); WARMUP, deliveries
# sent before `cpu` or `syscalls` starts counting (default 0: a fresh server); PG=1, the store on
# a new PostgreSQL database (PGURL, default postgres://postgres@127.0.0.1:5432, names the server;
# the database is dropped afterwards), and with `threads` the CPU of PostgreSQL's processes (all
# of them, read from /proc as root) per delivery beside the server's.
set -euo pipefail

mode=${1:?usage: intake-cost.sh cpu|callgrind|syscalls|threads N}
n=${2:-30000}
bin=${TW_BIN:-${CARGO_TARGET_DIR:-target}/release/tw-cli}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p tw-cli" >&2; exit 1; }
dir=$(mktemp -d /tmp/tw-intake-cost.XXXX)
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
secret=${SECRET:-s3cr3t-intake-cost-secret}
source=${SOURCE:-cost}
# The server's data dir: a new one in $dir, or STORE_DIR (kept; e.g. a store filled by
# scripts/bench-listing.sh, with SOURCE and SECRET of a source registered there).
data=${STORE_DIR:-$dir/data}
store=()
pgdb=
if [ "${PG:-0}" = 1 ]; then
    pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432}
    pgdb="tw_intake_cost_$$"
    psql -q "$pgurl/postgres" -c "CREATE DATABASE $pgdb" >/dev/null
    store=(--database-url "$pgurl/$pgdb")
fi
key=$("$bin" api-key create --name "cost-$$" --data-dir "$data" "${store[@]}" 2>/dev/null | tail -1)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    [ -n "$pgdb" ] && psql -q "$pgurl/postgres" -c "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

[ "${FLOOR:-0}" != 1 ] || [ "$mode" = threads ] || { echo "FLOOR=1 is for threads" >&2; exit 2; }
case $mode in
    cpu | syscalls | threads)
        if [ "${FLOOR:-0}" = 1 ]; then
            taskset -c 0 "$bin" bench --floor-serve --listen "127.0.0.1:$port" --secret "$secret" >"$dir/log" 2>&1 &
        else
            taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" "${store[@]}" ${SERVE_ARGS:-} >"$dir/log" 2>&1 &
        fi
        ;;
    callgrind)
        taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="callgrind.intake.%p" \
            "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" ${SERVE_ARGS:-} >"$dir/log" 2>&1 &
        ;;
    *) echo "usage: intake-cost.sh cpu|callgrind|syscalls|threads N" >&2; exit 2 ;;
esac
server=$!
if [ "${FLOOR:-0}" = 1 ]; then
    # The floor answers any path (with 401 to an unsigned request).
    for _ in $(seq 600); do curl -s -o /dev/null "$url/" && break; sleep 0.1; done
else
    for _ in $(seq 600); do curl -sf "$url/api/health" >/dev/null && break; sleep 0.1; done
    if [ -z "${STORE_DIR:-}" ]; then
        TW_URL=$url "$bin" --api-key "$key" webhook add "$source" --secret "$secret" ${SOURCE_ARGS:-} >/dev/null
    fi
fi
load() {
    taskset -c 1 "$bin" bench --url "$url" --source "$source" --secret "$secret" --no-floor --json --concurrency 64 --requests "$1" "${@:2}" ${BENCH_ARGS:-}
}
# CPU time of the whole process (all threads): utime + stime, in clock ticks; utime; minor page faults.
ticks() { sed 's/^.*) //' "/proc/$server/stat" | awk '{print $12 + $13, $12, $8}'; }
written() { awk '/^wchar/ {print $2}' "/proc/$server/io"; }

if [ "$mode" = callgrind ]; then
    load 500 >/dev/null 2>&1
    callgrind_control -i on "$server" >/dev/null 2>&1
    load "$n" 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin)["product"]; print("deliveries", p["ok_2xx"], "req/s (under valgrind)", round(p["throughput_rps"]))'
    callgrind_control -i off "$server" >/dev/null 2>&1
    kill "$server"; wait "$server" 2>/dev/null || true
    server=
    echo "profile: $(ls -t callgrind.intake.* | head -1)"
    exit 0
fi

# A warmed-up server (WARMUP deliveries first) is past its fill-up: the in-memory log ring (20,000
# records) and the heap grow during the first tens of thousands of deliveries.
[ "${WARMUP:-0}" -gt 0 ] && load "$WARMUP" --api-key "$key" >/dev/null 2>&1

if [ "$mode" = syscalls ]; then
    command -v perf >/dev/null || { echo "syscalls needs perf (Debian's linux-perf)" >&2; exit 1; }
    perf trace -s -p "$server" -o "$dir/trace" 2>"$dir/perf.err" &
    tracer=$!
    sleep 1
    load "$n" 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin)["product"]; print("deliveries", p["ok_2xx"], "req/s (traced)", round(p["throughput_rps"]))'
    kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
    [ -s "$dir/trace" ] || { echo "perf trace recorded nothing (it needs root):" >&2; cat "$dir/perf.err" >&2; exit 1; }
    # perf trace -s: a " name (tid), N events" line per thread, then "syscall calls errors ...".
    awk -v n="$n" '
        / \([0-9]+\), [0-9]+ events/ { thread = $1; next }
        thread != "" && $2 ~ /^[0-9]+$/ && $1 ~ /^[a-z_0-9]+$/ && $2 / n >= 0.01 {
            printf "%-18s %-16s %7.3f per delivery\n", thread, $1, $2 / n
        }' "$dir/trace"
    exit 0
fi

if [ "$mode" = threads ]; then
    # One line per thread: name, utime, stime (clock ticks); names repeat (the runtime's workers).
    per_thread() { for t in /proc/"$server"/task/*; do printf '%s %s ' "$(basename "$t")" "$(cat "$t/comm" | tr ' ' _)"; sed 's/^.*) //' "$t/stat" | awk '{print $12, $13}'; done; }
    # PostgreSQL's processes, all of them (its backends, WAL writer, checkpointer): user + system ticks.
    pg_ticks() {
        [ -n "$pgdb" ] || { echo 0; return; }
        for p in $(pgrep -x postgres); do sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}'; done | awk '{s += $1} END {print s + 0}'
    }
    before=$(per_thread); pg0=$(pg_ticks)
    out=$(load "$n" 2>/dev/null)
    after=$(per_thread); pg1=$(pg_ticks)
    python3 - "$n" "$out" "$before" "$after" "$((pg1 - pg0))" "$pgdb" <<'PY'
import json, os, sys
n = int(sys.argv[1])
p = json.loads(sys.argv[2])["product"]
print("deliveries", p["ok_2xx"], " req/s", round(p["throughput_rps"]), " p99", p["latency_ms"]["p99"], "ms")
# The load's own duration: requests over throughput.
seconds = n / p["throughput_rps"]
hz = os.sysconf("SC_CLK_TCK")
parse = lambda text: {l.split()[0]: (l.split()[1], int(l.split()[2]), int(l.split()[3])) for l in text.splitlines()}
a, b = parse(sys.argv[3]), parse(sys.argv[4])
rows, total = {}, 0
for tid, (name, u1, s1) in b.items():
    _, u0, s0 = a.get(tid, (name, 0, 0))
    r = rows.setdefault(name, [0, 0])
    r[0] += u1 - u0; r[1] += s1 - s0
us = lambda ticks: ticks / hz * 1e6 / n
for name, (u, s) in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
    if u + s:
        print(f"{name:<18} user {us(u):6.1f}  system {us(s):6.1f}  us/delivery")
        total += u + s
print(f"{'all threads':<18} {us(total):6.1f} us/delivery; the core busy {total / hz / seconds * 100:.0f}% of the load's {seconds:.2f} s (ticks of {1000 // hz} ms)")
if sys.argv[6]:
    pg = int(sys.argv[5])
    print(f"{'postgres (all)':<18} {us(pg):6.1f} us/delivery, on the load generator's core (not pinned): {pg / hz / seconds * 100:.0f}% of a core")
PY
    exit 0
fi

read -r t0 u0 f0 < <(ticks); w0=$(written)
out=$(load "$n" --api-key "$key" 2>/dev/null)
read -r t1 u1 f1 < <(ticks); w1=$(written)
commits=$(curl -s "$url/metrics" | awk '/^store_commit_batch_size_count/ {c=$2} /^store_commit_batch_size_sum/ {s=$2} END {print s, c}')
python3 - "$out" "$t0" "$t1" "$w0" "$w1" "$n" $commits "$u0" "$u1" "$f0" "$f1" <<'PY'
import json, os, sys
o = json.loads(sys.argv[1]); p = o["product"]
t0, t1, w0, w1, n, writes, commits, u0, u1, f0, f1 = (float(x) for x in sys.argv[2:13])
hz = os.sysconf("SC_CLK_TCK")
print(f"req/s {p['throughput_rps']:.0f}  p99 {p['latency_ms']['p99']:.2f} ms  "
      f"server CPU {(t1 - t0) / hz * 1e6 / n:.1f} us/delivery ({(u1 - u0) / (t1 - t0) * 100:.0f}% user)  written {(w1 - w0) / n / 1024:.1f} KiB/delivery  "
      f"page faults {(f1 - f0) / n:.3f}/delivery  deliveries per commit {writes / 2 / commits:.1f}  incidents check {'ok' if o['incidents']['ok'] else 'FAILED'}")
PY
