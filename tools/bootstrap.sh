#!/usr/bin/env bash
# Installs Spindle's pinned toolchain into the git-ignored .toolchain/ when something is
# missing: Deno from the npm package `deno`, Zig from PyPI `ziglang`, and — only when
# SPINDLE_SYSTEM_LIBS=1, which tools/deno sets for the tests, `deno task ok`, the benchmarks
# and `build --all` — OpenBLAS and oneTBB from Debian (when apt can be used): the main job
# (`infer`, the default build) needs neither. Idempotent; silent when everything is present.
set -euo pipefail

DENO_VERSION=2.9.6
ZIG_VERSION=0.15.2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
toolchain="$root/.toolchain"
deno_bin="$toolchain/node_modules/.bin/deno"
zig_bin="$toolchain/zig/ziglang/zig"

say() { echo "bootstrap: $*" >&2; }
die() {
  echo "bootstrap: error: $*" >&2
  exit 1
}

install_deno() {
  if "$deno_bin" --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then return; fi
  command -v npm >/dev/null || die "npm is needed to install Deno $DENO_VERSION (npm package 'deno'): install Node.js and npm, then run tools/bootstrap.sh again"
  say "installing Deno $DENO_VERSION from npm into .toolchain/"
  mkdir -p "$toolchain"
  npm install --prefix "$toolchain" --no-audit --no-fund --loglevel=error --save-exact "deno@$DENO_VERSION" >&2 ||
    die "'npm install deno@$DENO_VERSION' failed; check access to the npm registry"
  "$deno_bin" --version >/dev/null 2>&1 || die "Deno was installed but '$deno_bin --version' fails"
}

install_zig() {
  if [ "$("$zig_bin" version 2>/dev/null)" = "$ZIG_VERSION" ]; then return; fi
  local python
  python=$(command -v python3 || command -v python || true)
  [ -n "$python" ] || die "Python 3 with pip is needed to install Zig $ZIG_VERSION (PyPI package 'ziglang'): install python3-pip"
  say "installing Zig $ZIG_VERSION from PyPI into .toolchain/zig/"
  rm -rf "$toolchain/zig"
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$toolchain/zig" \
    "ziglang==$ZIG_VERSION" >&2 || die "'pip install ziglang==$ZIG_VERSION' failed; check access to PyPI"
  [ "$("$zig_bin" version 2>/dev/null)" = "$ZIG_VERSION" ] || die "Zig was installed but '$zig_bin version' is not $ZIG_VERSION"
}

have_library() {
  local name=$1
  for dir in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
    [ -e "$dir/$name" ] && return 0
  done
  return 1
}

# OpenBLAS backs -Dblas=openblas (tested in CI beside the native default) and is the GEMM
# benchmarks' baseline; oneTBB and libgomp are the pool benchmarks' baselines. Without apt,
# the openblas configurations are skipped.
install_system_libraries() {
  local wanted=()
  have_library libopenblas.so || wanted+=(libopenblas-dev)
  have_library libtbb.so || wanted+=(libtbb-dev)
  [ ${#wanted[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    have_library libopenblas.so ||
      say "OpenBLAS is not installed and apt-get cannot be used here: only -Dblas=native (the default) can be built (install libopenblas-dev for -Dblas=openblas)"
    return
  fi
  say "installing ${wanted[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${wanted[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq "${wanted[@]}" >/dev/null 2>&1 ||
      say "apt-get install ${wanted[*]} failed: building with -Dblas=native where OpenBLAS is missing"
  fi
}

install_deno
install_zig
if [ "${SPINDLE_SYSTEM_LIBS:-0}" = 1 ]; then install_system_libraries; fi
