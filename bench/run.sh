#!/usr/bin/env bash
# One command for the side-by-side benchmark: installs what it needs (redis-server, Deno 2.9.6
# and ioredis from npm), builds denorun and the load generator, runs every form on a private
# redis-server, prints the table and writes BENCHMARKS.md. `bench/run.sh --quick` is faster.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash .ci/setup.sh >/dev/null
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/denorun/target}
cargo build --release --locked --quiet
cargo build --release --quiet --manifest-path bench/Cargo.toml
(cd bench && npm install --no-audit --no-fund --silent)
BENCH_COMMAND="bench/run.sh $*" "$CARGO_TARGET_DIR/release/denorun-bench" run \
  --denorun "$CARGO_TARGET_DIR/release/denorun" \
  --deno "$root/bench/node_modules/@deno/linux-x64-glibc/deno" \
  --node "$(command -v node)" \
  --out "$root/BENCHMARKS.md" "$@"
