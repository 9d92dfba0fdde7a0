# Sourced by scripts/test and .ci/run: makes sure the local PostgreSQL and
# Redis that the production-mode tests use are answering, starting the
# installed servers when they are not. Does nothing where they are absent
# (the production-mode tests then say so, or fail when CI=true).

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_services() {
  if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  if ! redis_up && command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  fi
  pg_up && echo "PostgreSQL: answering" || echo "PostgreSQL: not answering"
  redis_up && echo "Redis: answering" || echo "Redis: not answering"
}

# Prints the path of a schemathesis (the API fuzzer, from PyPI) of the pinned
# version, installing it into a virtual environment outside the clone the
# first time, so a fresh machine gets it from the README's test command too.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="${DOWNWATCH_PY_VENV:-/var/tmp/downwatch-py}"
  local st="$venv/bin/schemathesis"
  if ! "$st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2
  fi
  echo "$st"
}
