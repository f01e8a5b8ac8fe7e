#!/usr/bin/env bash
# The test command: sets up the machine (.ci/setup.sh), then builds and runs every test.
# The tests start their own redis-server on a free loopback port.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/.ci/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/denorun/target}
cd "$root"
cargo test --release --locked "$@"
