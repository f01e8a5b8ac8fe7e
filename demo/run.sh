#!/usr/bin/env bash
# Sets up the demo worker in Redis, as the 2021 demo did, then runs it with its secret on
# stdin: a random AES key and IV, the secret JSON encrypted with them (demo/encrypt.ts), the
# type hash and worker hash, the start queue and the request stream's consumer group.
# Needs only denorun and redis-cli. REQUEST_LIMIT (default 10) requests, then it exits.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"

secret=$(random_hex 16)
iv=$(random_hex 16)
secret_json='{ "password": "hello", "type": "demo-worker" }'
encrypted_json=$(echo "$secret $iv $(printf %s "$secret_json" | base64 -w0)" | "$DENORUN" run demo/encrypt.ts)

for key in "$WORKER_TYPE:h" "$WORKER_TYPE:start:q" "$WORKER_TYPE:started:q" "$WORKER_TYPE:req:x" "$WORKER_TYPE:res:x"; do
  if [ "$(rcli exists "$key")" = 1 ]; then
    echo "🛑 $key exists: run demo/clean.sh first (or redis-cli del $key)" >&2
    exit 1
  fi
done

setup_hash() {
  rcli hset "$1" \
    workerUrl "${WORKER_URL:-$root/demo/worker.ts}" \
    workerType "$WORKER_TYPE" \
    workerVersion "${WORKER_VERSION:-local}" \
    requestStream "$WORKER_TYPE:req:x" \
    responseStream "$WORKER_TYPE:res:x" \
    encryptedAlg aes-128-cbc \
    encryptedIv "$iv" \
    encryptedJson "$encrypted_json" >/dev/null
}

setup_hash "$WORKER_TYPE:h"
for id in 1; do
  setup_hash "$WORKER_TYPE:$id:h"
  rcli hset "$WORKER_TYPE:$id:h" consumerId "$id" requestLimit "${REQUEST_LIMIT:-10}" \
    denoOptions "${WORKER_DENO_OPTIONS:---allow-env=REDIS_URL}" >/dev/null
  rcli lpush "$WORKER_TYPE:start:q" "$id" >/dev/null
done
rcli xgroup create "$WORKER_TYPE:req:x" worker '$' mkstream >/dev/null

echo "worker-v0 $secret" | exec "$DENORUN" "$WORKER_TYPE:1:h"
