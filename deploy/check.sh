#!/usr/bin/env bash
# Validate the deployment files as far as this machine allows:
#   - docker compose config -q        (when the docker compose plugin is installed)
#   - YAML parse + structural asserts (python3 with PyYAML)
#   - haproxy -c                      (when haproxy is installed)
# Exits non-zero on the first failure. Run from anywhere: deploy/check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
compose=deploy/docker-compose.yml
cfg=deploy/haproxy/haproxy.cfg
checked=()
skipped=()

# A throwaway key, only so that ${TW_MASTER_KEY:?...} interpolates.
export TW_MASTER_KEY="${TW_MASTER_KEY:-0000000000000000000000000000000000000000000000000000000000000000}"

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  echo "== docker compose -f $compose config -q"
  docker compose -f "$compose" config -q
  checked+=("docker compose config")
else
  skipped+=("docker compose config (no docker compose plugin)")
fi

echo "== structural checks of $compose, $cfg and deploy/Dockerfile (python3 + PyYAML)"
python3 - "$compose" "$cfg" deploy/Dockerfile <<'PY'
import re, sys
import yaml

compose_path, cfg_path, dockerfile_path = sys.argv[1:4]
failures = []

def check(cond, what):
    print(("  ok    " if cond else "  FAIL  ") + what)
    if not cond:
        failures.append(what)

def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env

with open(compose_path) as f:
    doc = yaml.safe_load(f)
services = doc.get("services") or {}
for name in ("postgres", "tw-a", "tw-b", "haproxy"):
    check(name in services, f"service {name} exists")
if failures:
    sys.exit(1)

pg = services["postgres"]
check(str(pg.get("image", "")).startswith("postgres:15"), "postgres image is postgres:15")
check("healthcheck" in pg, "postgres has a healthcheck")
named = set((doc.get("volumes") or {}).keys())
pg_vols = [v.split(":", 1)[0] for v in pg.get("volumes", []) if isinstance(v, str)]
check(any(v in named for v in pg_vols), "postgres data is on a named volume")

a, b = services["tw-a"], services["tw-b"]
ea, eb = env_of(a), env_of(b)
master_expr = "${TW_MASTER_KEY:?set TW_MASTER_KEY (openssl rand -hex 32)}"
check(ea.get("TW_DATABASE_URL") is not None and ea.get("TW_DATABASE_URL") == eb.get("TW_DATABASE_URL"),
      "tw-a and tw-b have the same TW_DATABASE_URL")
check(re.match(r"^postgres://[^@]+@postgres:5432/", str(ea.get("TW_DATABASE_URL", ""))) is not None,
      "TW_DATABASE_URL points at the postgres service")
check(ea.get("TW_MASTER_KEY") == eb.get("TW_MASTER_KEY") == master_expr,
      "tw-a and tw-b have the same required TW_MASTER_KEY expression")
for name, svc in (("tw-a", a), ("tw-b", b)):
    build = svc.get("build") or {}
    check(isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile",
          f"{name} builds from deploy/Dockerfile")
    dep = (svc.get("depends_on") or {}).get("postgres", {}) if isinstance(svc.get("depends_on"), dict) else {}
    check(dep.get("condition") == "service_healthy", f"{name} waits for postgres to be healthy")
    test = (svc.get("healthcheck") or {}).get("test", [])
    test = " ".join(test) if isinstance(test, list) else str(test)
    check("/api/ready" in test, f"{name} healthcheck calls /api/ready")
check(a.get("image") == b.get("image"), "tw-a and tw-b run the same image")

hp = services["haproxy"]
hp_vols = [str(v) for v in hp.get("volumes", [])]
check(any(v.startswith("./haproxy/haproxy.cfg:") for v in hp_vols), "haproxy mounts haproxy/haproxy.cfg")
check(any(str(p).split(":")[-2:] == ["8080", "8080"] or str(p) == "8080:8080" for p in hp.get("ports", [])),
      "haproxy exposes port 8080")

cfg = open(cfg_path).read()
check(re.search(r"^\s*balance\s+roundrobin\b", cfg, re.M) is not None, "haproxy balances round-robin")
check(re.search(r"^\s*option\s+httpchk\s+GET\s+/api/ready\b", cfg, re.M) is not None,
      "haproxy health-checks GET /api/ready")
for name in ("tw-a", "tw-b"):
    check(re.search(rf"^\s*server\s+{name}\s+{name}:8080\b", cfg, re.M) is not None,
          f"haproxy has server {name}:8080")
check("init-addr last,libc,none" in cfg, "haproxy servers start without DNS (init-addr)")

df = open(dockerfile_path).read()
check(re.search(r"^FROM rust:\S+ AS build", df, re.M) is not None, "Dockerfile builds in the rust image")
check("cargo build --release" in df and "-p tw-cli" in df, "Dockerfile runs cargo build --release -p tw-cli")
check(re.search(r"^FROM debian:\S+-slim", df, re.M) is not None, "Dockerfile runtime is debian-slim")
check('CMD ["serve", "--listen", "0.0.0.0:8080"]' in df, "Dockerfile runs tw-cli serve --listen 0.0.0.0:8080")

if failures:
    print(f"{len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
PY
checked+=("compose/haproxy/Dockerfile structure")

if command -v haproxy >/dev/null 2>&1; then
  echo "== haproxy -c -f $cfg"
  haproxy -c -f "$cfg"
  checked+=("haproxy -c")
else
  skipped+=("haproxy -c (haproxy not installed)")
fi

echo
echo "passed: ${checked[*]/%/;}"
[ ${#skipped[@]} -eq 0 ] || echo "skipped: ${skipped[*]/%/;}"
