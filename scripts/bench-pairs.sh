#!/usr/bin/env bash
# Compares two builds of tw-cli on the intake, in alternating runs of `tw-cli bench --pin`, so
# that both meet the same hours of a shared machine (throughput on these VMs moves by 20-40% from
# one hour to the next; a run of one build then a run of the other is the only fair comparison).
#
#   cp target/release/tw-cli /tmp/before      # build, copy, change, build again
#   scripts/bench-pairs.sh /tmp/before target/release/tw-cli 4
#   scripts/bench-pairs.sh /tmp/before target/release/tw-cli 3 --requests 20000 --no-floor --auto-triage
#
# Arguments: the two binaries, the number of pairs (default 3), then any `tw-cli bench` flags
# (default: --concurrency 64 --requests 30000). One line per run: the build, req/s, p99, peak RSS,
# the floor's req/s and the ratio (when the floor runs), and the incident check. Exits non-zero
# when a run fails (a lost incident fails the bench).
set -euo pipefail

a=${1:?usage: bench-pairs.sh BIN_A BIN_B [PAIRS] [bench flags...]}
b=${2:?usage: bench-pairs.sh BIN_A BIN_B [PAIRS] [bench flags...]}
pairs=${3:-3}
shift $(($# < 3 ? $# : 3))
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--concurrency 64 --requests 30000)
for bin in "$a" "$b"; do
    [ -x "$bin" ] || { echo "no executable $bin" >&2; exit 1; }
done

status=0
for i in $(seq "$pairs"); do
    for bin in "$a" "$b"; do
        out=$("$bin" bench --pin "${flags[@]}" 2>&1) || status=1
        line=$(awk '
            /^product / {printf "req/s %s  p99 %s ms  rss %s %s", $4, $7, $10, $11}
            /^floor /   {printf "  floor %s", $4}
            /^product\/floor/ {printf "  ratio %s", $2}
            /^triage /  {printf "  triage %s/s", $(NF-1)}
            /^incidents/ {printf "  incidents %s", $2}' <<<"$out")
        echo "pair $i  $bin  $line"
    done
done
exit $status
