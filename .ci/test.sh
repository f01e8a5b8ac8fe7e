#!/usr/bin/env bash
# The test command: sets up the machine (.ci/setup.sh, and Deno 2.9.6 from npm for the
# `denorun test` comparison), then builds and runs every test.
# The tests start their own redis-server on a free loopback port.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/.ci/setup.sh"
# Deno's CLI, from npm, for the tests that compare `denorun test` with `deno test`.
deno_dir=$HOME/.cache/denorun/deno
if [ ! -x "$deno_dir/node_modules/@deno/linux-x64-glibc/deno" ]; then
  echo "test: installing Deno 2.9.6 from npm into $deno_dir"
  npm install --prefix "$deno_dir" --no-audit --no-fund --silent @deno/linux-x64-glibc@2.9.6
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/denorun/target}
cd "$root"
cargo test --release --locked "$@"
