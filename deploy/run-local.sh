#!/usr/bin/env bash
# Starts the whole stack from the Procfile with honcho (called by `make run`).
# Each Procfile command runs under deploy/supervise.py, which restarts it when it
# exits (backoff 1 s doubling to 30 s, one log line each time), so one crash does
# not make honcho stop the others; Ctrl+C still stops everything.
# Embedded Redis unless REDIS_URL is set; the sandbox only with WA_BACKEND=sandbox.
set -euo pipefail
mkdir -p var
export WA_BACKEND="${WA_BACKEND:-neonize}"
export WA_STORE="${WA_STORE:-$PWD/var/store}"
processes="api worker beat flower"
if [ -z "${REDIS_URL:-}" ]; then
  export WAPAIR_REDIS_PORT="${WAPAIR_REDIS_PORT:-6390}"
  export REDIS_URL="redis://127.0.0.1:${WAPAIR_REDIS_PORT}/0"
  processes="redis $processes"
fi
if [ "$WA_BACKEND" = "sandbox" ]; then
  export WA_SANDBOX_URL="${WA_SANDBOX_URL:-http://127.0.0.1:8070}"
  processes="$processes sandbox"
fi
# Secrets for a local run are made once and kept in var/ (never printed by the services).
secret() { [ -s "var/$1" ] || python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "var/$1"; cat "var/$1"; }
export ADMIN_TOKEN="${ADMIN_TOKEN:-$(secret admin_token)}"
export FLOWER_USER="${FLOWER_USER:-admin}"
export FLOWER_PASSWORD="${FLOWER_PASSWORD:-$(secret flower_password)}"
# Flower reads FLOWER_BASIC_AUTH itself: the password stays off the command line.
export FLOWER_BASIC_AUTH="$FLOWER_USER:$FLOWER_PASSWORD"
# Readable logs here; production defaults to one JSON object per line.
export LOG_FORMAT="${LOG_FORMAT:-text}"
# The worker's Prometheus exporter (the API serves /metrics with the admin token).
export WORKER_METRICS_PORT="${WORKER_METRICS_PORT:-9808}"
chmod 600 var/admin_token var/flower_password 2>/dev/null || true
cat <<MSG
wapair is starting ($WA_BACKEND backend; processes: $processes)
  API      http://127.0.0.1:8000   (health: curl http://127.0.0.1:8000/health)
  Flower   http://127.0.0.1:5555   (user $FLOWER_USER, password in var/flower_password)
  Metrics  http://127.0.0.1:8000/metrics (Bearer admin token), worker: http://127.0.0.1:$WORKER_METRICS_PORT/metrics
  Redis    $REDIS_URL
MSG
[ "$WA_BACKEND" = "sandbox" ] && echo "  Sandbox  $WA_SANDBOX_URL   (phone API: POST /phone/scan)"
cat <<MSG
Create a tenant (in another terminal, from this directory):
  REDIS_URL=$REDIS_URL .venv/bin/wapair tenant add demo
  or: curl -X POST -H "Authorization: Bearer \$(cat var/admin_token)" \\
        -H 'Content-Type: application/json' -d '{"id":"demo"}' http://127.0.0.1:8000/api/admin/tenants
A process that crashes is restarted (look for "supervise[NAME]" lines). Stop with Ctrl+C.
MSG
exec honcho start -f Procfile $processes
