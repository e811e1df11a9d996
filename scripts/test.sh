#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs Graft, Redis and Chromium (for the dashboard's
# browser tests), starts PostgreSQL 15 and
# Redis on loopback spare ports, points GRAFT_DATABASE_URL / GRAFT_BROKER_URL at them, runs pytest,
# and stops both servers whatever happens. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

scripts/install.sh --dev

missing=""
command -v redis-server >/dev/null || missing="$missing redis-server"
# The dashboard's browser tests drive Debian's Chromium through Playwright (never Playwright's own download).
command -v chromium >/dev/null || missing="$missing chromium"
if [ -n "$missing" ]; then
  apt-get update -qq && apt-get install -y -qq $missing >/dev/null
fi
for tool in redis-server initdb pg_ctl chromium; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing; the integration tests need it" >&2; exit 1; }
done

SERVERS=$(mktemp -d /tmp/graft-test-servers.XXXXXX)
chmod 755 "$SERVERS"
spare_port() { .venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
REDIS_PORT=$(spare_port)
PG_PORT=$(spare_port)
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

stop_servers() {
  as_postgres pg_ctl -D "$SERVERS/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$SERVERS/redis.pid" ] && kill "$(cat "$SERVERS/redis.pid")" 2>/dev/null || true
  rm -rf "$SERVERS"
}
trap stop_servers EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$SERVERS/redis.pid" --dir "$SERVERS" --logfile "$SERVERS/redis.log"

mkdir -p "$SERVERS/pg"
[ "$(id -u)" = 0 ] && chown postgres "$SERVERS/pg"
as_postgres initdb -D "$SERVERS/pg" -A trust -U postgres >/dev/null
as_postgres pg_ctl -D "$SERVERS/pg" -l "$SERVERS/pg/server.log" -w \
  -o "-p $PG_PORT -k $SERVERS/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null

for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "test.sh: Redis did not start" >&2; exit 1; }

export GRAFT_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
export GRAFT_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
export HF_HUB_OFFLINE=1
echo "test.sh: PostgreSQL on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"
cd "$ROOT"
.venv/bin/python -m pytest "$@"
