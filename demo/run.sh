#!/usr/bin/env bash
# Sets up the demo worker type in Redis, as the 2021 demo did, then supervises its workers with
# the secret on stdin: a random AES key, the secret JSON encrypted with it (denorun encrypt)
# into the type hash and each worker hash, the workers' ids on the start queue, and the request
# stream's consumer group. Needs only denorun and redis-cli. WORKERS (default 1) workers, each
# restarted after REQUEST_LIMIT (default 10) requests; SIGTERM or Ctrl-C drains and stops.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"

for key in "$WORKER_TYPE:h" "$WORKER_TYPE:start:q" "$WORKER_TYPE:started:q" "$WORKER_TYPE:req:x" "$WORKER_TYPE:res:x"; do
  if [ "$(rcli exists "$key")" = 1 ]; then
    echo "🛑 $key exists: run demo/clean.sh first (or redis-cli del $key)" >&2
    exit 1
  fi
done

secret=$(random_hex 16)
secret_json='{ "password": "hello", "type": "demo-worker" }'
encrypt_into() { printf '%s' "$secret_json" | "$DENORUN" encrypt --key "$secret" --hset "$1" >/dev/null; }

rcli hset "$WORKER_TYPE:h" \
  workerUrl "${WORKER_URL:-$root/demo/worker.ts}" \
  workerType "$WORKER_TYPE" \
  workerVersion "${WORKER_VERSION:-local}" \
  requestStream "$WORKER_TYPE:req:x" \
  responseStream "$WORKER_TYPE:res:x" \
  denoOptions "${WORKER_DENO_OPTIONS:---allow-env=REDIS_URL}" >/dev/null
encrypt_into "$WORKER_TYPE:h"
for id in $(seq 1 "${WORKERS:-1}"); do
  "$DENORUN" setup-worker "$WORKER_TYPE" "$id" --request-limit "${REQUEST_LIMIT:-10}" --start >/dev/null
  encrypt_into "$WORKER_TYPE:$id:h"
done
"$DENORUN" create-req-stream "$WORKER_TYPE" >/dev/null

# exec, and no pipeline, so that signals reach the supervisor itself.
exec "$DENORUN" supervise "$WORKER_TYPE" < <(echo "worker-v0 $secret")
