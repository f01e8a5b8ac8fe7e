#!/usr/bin/env bash
# Prepares a fresh Debian machine to build and test denorun: redis-server (tests and demo),
# libclang-dev (bindgen in deno_runtime's native crates), prometheus and tmux (the
# observability tests), PostgreSQL (the `denorun sync` tests start their own server), Chromium
# (the web console's tests drive it headless; the product does not need it), npm (the npm
# tests' packages and Deno's CLI for comparisons), and V8's prebuilt archive from
# ../shared/v8 when this machine cannot download it. Idempotent and quick when done before.
# `setup.sh --demo` (demo/demo.sh) installs only what building denorun and running the demo
# need: redis-server, redis-cli, libclang-dev and V8's archive.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
demo_only=false
[ "${1:-}" = "--demo" ] && demo_only=true

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || missing+=(libclang-dev)
if ! $demo_only; then
command -v prometheus >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)
command -v chromium >/dev/null || missing+=(chromium)
# npm (and Node.js): Deno 2.9.6 for the comparisons, and the npm packages the npm tests install.
command -v npm >/dev/null || missing+=(npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

shared=${DENORUN_SHARED:-$root/../shared}
if [ -x "$shared/v8/install-archive.sh" ] || [ -f "$shared/v8/install-archive.sh" ]; then
  bash "$shared/v8/install-archive.sh"
fi
