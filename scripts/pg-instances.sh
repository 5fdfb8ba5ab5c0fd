# Sourced by the scripts that run `tw-cli serve` instances on a PostgreSQL database of their own
# (`pg-two-instances.sh`, `upgrade-under-load.sh`); not run by itself.
#
# pg_begin BIN NAME: creates the database `NAME_<pid>` on $PGURL (default
# postgres://postgres@127.0.0.1:5432) and a temp dir, both removed on exit with every instance
# started by pg_serve; creates an API key with BIN into $key. Sets $pgurl, $db, $dir.
# pg_serve BIN PORT INSTANCE [CMD_PREFIX...]: starts `BIN serve` on 127.0.0.1:PORT with its own
# data dir (sharing the first instance's master key, as instances on one database must) and
# waits until it answers.

pg_begin() {
    local bin=$1 name=$2
    pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432}
    db=${name}_$$
    dir=$(mktemp -d "/tmp/tw-$name.XXXX")
    pg_pids=()
    trap pg_end EXIT
    psql -q "$pgurl/postgres" -c "CREATE DATABASE $db" >/dev/null
    key=$("$bin" api-key create --name "$name" --data-dir "$dir/first" --database-url "$pgurl/$db" 2>/dev/null | tail -1)
}

pg_end() {
    local p
    for p in "${pg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$pgurl/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    rm -rf "$dir"
}

pg_serve() {
    local bin=$1 port=$2 instance=$3
    shift 3
    mkdir -p "$dir/$instance"
    [ -e "$dir/$instance/master.key" ] || cp "$dir/first/master.key" "$dir/$instance/"
    "$@" "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/$instance" --database-url "$pgurl/$db" >"$dir/$instance.log" 2>&1 &
    pg_pids+=($!)
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && return; sleep 0.1; done
    echo "instance $instance does not answer on $port" >&2
    exit 1
}
