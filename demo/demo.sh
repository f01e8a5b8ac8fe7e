#!/usr/bin/env bash
# The README's demo: sets up the machine (only what the demo needs: redis-server, libclang for
# the build, V8's archive), builds denorun, starts a private redis-server on a
# free port (unless REDIS_URL is set), supervises two demo workers (demo/run.sh), sends them
# three requests (demo/xadd.sh), shows their status, and drains them with SIGTERM.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash .ci/setup.sh --demo >/dev/null
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
WORKERS=2 demo/run.sh &
supervisor=$!
for id in 1 2; do
  until [ -n "$(redis-cli -u "$REDIS_URL" hget demo-worker:$id:h pid)" ]; do
    kill -0 $supervisor 2>/dev/null || { echo "the workers did not start" >&2; exit 1; }
    sleep 0.1
  done
done
for _ in 1 2 3; do
  demo/xadd.sh
done
"${CARGO_TARGET_DIR}/release/denorun" status demo-worker
kill -TERM $supervisor
wait $supervisor
echo "supervisor exited with $?; response stream length: $(redis-cli -u "$REDIS_URL" xlen demo-worker:res:x)"
