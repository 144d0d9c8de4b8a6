#!/usr/bin/env bash
# Installs what loom builds and tests with, from Debian's packages. Safe to run again: apt-get
# skips what is already there. CUDA and NCCL are not Debian packages: loom uses /usr/local/cuda
# when it exists and builds without CUDA otherwise.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libcaf-dev                 # C++ Actor Framework 0.17 (actors, control plane)
  libtoml11-dev              # experiment files
  libboost-test-dev          # test suites
  libucx-dev ucx-utils       # data plane between processes and hosts; ucx_perftest for benchmarks
  libopenblas-dev            # CPU GEMMs
  libsqlite3-dev             # the daemon's experiment store
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libbenchmark-dev           # bench/
  librsvg2-bin               # rsvg-convert: timeline SVG -> PNG
  iproute2                   # network namespaces for the multi-host tests
  clang libclang-rt-14-dev   # libFuzzer targets
  chromium                   # renders `loom compare` pages in a test
  procps psmisc              # pgrep/pkill/killall used by the daemon tests
)

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
