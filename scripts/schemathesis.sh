#!/usr/bin/env bash
# Runs schemathesis (the property-based API tester) with every check (scripts/schemathesis.toml) against a live `tw-cli serve`
# on a fresh data dir, driven by the server's own /api/openapi.json, and fails on any failure.
#
#   scripts/schemathesis.sh [path/to/tw-cli]      (default: target/debug/tw-cli)
#
# Bounded: a fixed seed, a fixed number of examples per operation and a time budget, so CI runs
# the same requests every time. Needs `st` (pip install schemathesis). The server runs with its
# per-address failure budget off: schemathesis sends requests without the key on purpose (the
# `ignored_auth` check), which would otherwise get its address throttled, and the API key budget
# for playbook tests off for the same reason; everything else is the default configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/tw-cli}"
examples="${TW_SCHEMATHESIS_EXAMPLES:-30}"
budget="${TW_SCHEMATHESIS_MAX_TIME:-300}"
command -v st >/dev/null || { echo "schemathesis is not installed (pip install schemathesis)" >&2; exit 1; }

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:${port}"
key="$("$bin" api-key create --name schemathesis --scope admin --data-dir "$work/data" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
"$bin" serve --listen "127.0.0.1:${port}" --url "$url" --data-dir "$work/data" \
  --auth-failure-burst 0 --playbook-test-burst 0 --log-format json >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fsS "$url/api/health" >/dev/null 2>&1 && break; sleep 0.1; done

# One worker by default: with two, hypothesis parses sources with `ast` from two threads, which
# CPython 3.11 (before 3.11.8) can fail with "AST constructor recursion depth mismatch", reported
# as a runtime error of whichever operation was being generated (TW_SCHEMATHESIS_WORKERS=2 to try).
# From the temp dir: schemathesis keeps a cache of past failures in ./.schemathesis, which would
# make one run depend on the ones before it.
config="$(pwd)/scripts/schemathesis.toml"
cd "$work"
st --config-file "$config" run "$url/api/openapi.json" \
  --header "Authorization: Bearer ${key}" \
  --seed 20261129 \
  --max-examples "$examples" \
  --max-time "$budget" \
  --request-timeout 10 \
  --workers "${TW_SCHEMATHESIS_WORKERS:-1}" \
  --generation-deterministic \
  --report junit --report-dir "$work/report" \
  "${@:2}"
