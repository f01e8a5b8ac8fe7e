# Sourced by the demo scripts: where Redis and denorun are, and small helpers.
# REDIS_URL picks the Redis (default redis://127.0.0.1:6379); DENORUN the binary.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
WORKER_TYPE=${WORKER_TYPE:-demo-worker}
if [ -z "${DENORUN:-}" ]; then
  DENORUN=${CARGO_TARGET_DIR:-$HOME/.cache/denorun/target}/release/denorun
  [ -x "$DENORUN" ] || DENORUN=$(command -v denorun || true)
fi
if [ ! -x "${DENORUN:-}" ]; then
  echo "denorun not found: build it with 'cargo build --release' or set DENORUN" >&2
  exit 1
fi

# host:port of REDIS_URL, for the scripts' --allow-net.
redis_addr=${REDIS_URL#*://}
redis_addr=${redis_addr##*@}
redis_addr=${redis_addr%%/*}
[[ $redis_addr == *:* ]] || redis_addr=$redis_addr:6379

rcli() { redis-cli -u "$REDIS_URL" "$@"; }
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
# Runs a demo script with access to the demo's Redis only.
denorun_script() { "$DENORUN" run --allow-net="$redis_addr" --allow-env=REDIS_URL "$@"; }
