#!/usr/bin/env bash
# Sends one request to the demo worker (demo/cli.ts xadd-req) and prints its reply.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
ref=$(random_hex 6)
echo "ref=$ref"
denorun_script demo/cli.ts xadd-req "$ref" >/dev/null
reply=$(rcli --raw brpop "res:$ref" "${REPLY_TIMEOUT:-8}" | sed -n 2p)
if [ -z "$reply" ]; then
  echo "no reply for $ref within ${REPLY_TIMEOUT:-8}s: is the worker running?" >&2
  exit 1
fi
echo "$reply"
