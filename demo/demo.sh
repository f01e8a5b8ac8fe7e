#!/usr/bin/env bash
# The README's demo: sets up the machine, builds denorun, starts a private redis-server on a
# free port (unless REDIS_URL is set), runs the demo worker (demo/run.sh) and sends it three
# requests (demo/xadd.sh); the worker exits after the third.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash .ci/setup.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/denorun/target}
cargo build --release --locked --quiet

if [ -z "${REDIS_URL:-}" ]; then
  while :; do
    port=$(( 20000 + RANDOM % 20000 ))
    (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null || break
  done
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null' EXIT
  export REDIS_URL=redis://127.0.0.1:$port
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  echo "redis-server on 127.0.0.1:$port"
fi

demo/clean.sh >/dev/null
REQUEST_LIMIT=3 demo/run.sh &
worker=$!
until [ -n "$(redis-cli -u "$REDIS_URL" hget demo-worker:1:h pid)" ]; do
  kill -0 $worker 2>/dev/null || { echo "the worker did not start" >&2; exit 1; }
  sleep 0.1
done
for _ in 1 2 3; do
  demo/xadd.sh
done
wait $worker
echo "worker exited with $?; response stream length: $(redis-cli -u "$REDIS_URL" xlen demo-worker:res:x)"
