#!/usr/bin/env bash
# Deletes the demo's keys: the worker hashes, queues and streams.
set -euo pipefail
source "$(dirname "$0")/env.sh"
for id in $(rcli lrange "$WORKER_TYPE:started:q" 0 -1) 1 2 3 4; do
  rcli del "$WORKER_TYPE:$id:h" >/dev/null
done
for key in "$WORKER_TYPE:h" "$WORKER_TYPE:start:q" "$WORKER_TYPE:started:q" "$WORKER_TYPE:failed:q" \
  "$WORKER_TYPE:req:x" "$WORKER_TYPE:res:x"; do
  echo "del $key: $(rcli del "$key")"
done
