#!/usr/bin/env bash
# Sends one request to the demo workers and prints its ref and reply (denorun xadd-req).
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$DENORUN" xadd-req "$WORKER_TYPE" --timeout "${REPLY_TIMEOUT:-8}" "$@"
