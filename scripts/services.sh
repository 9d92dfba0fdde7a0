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
