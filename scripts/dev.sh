#!/usr/bin/env bash
# One entry point for set-up, build, demo and tests; the README's commands and .ci/run call it.
#
#   scripts/dev.sh demo       install, build, run examples/cpu-small.toml embedded (no daemon, CPU)
#   scripts/dev.sh test       install, build, run every test suite with ctest
#   scripts/dev.sh sanitize   build a second tree with AddressSanitizer + UBSan (no CUDA) and test it
#   scripts/dev.sh fuzz [S]   build the libFuzzer targets with clang and run each for S seconds (default 60)
#   scripts/dev.sh build      install and build only
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), LOOM_CMAKE_ARGS (extra
# arguments for cmake), SKIP_INSTALL=1 to skip the package step.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}

install() { [[ ${SKIP_INSTALL:-0} == 1 ]] || bash scripts/install-deps.sh; }

configure_and_build() {  # dir, extra cmake args...
  local dir=$1; shift
  local generator=()
  [[ -f $dir/CMakeCache.txt ]] || generator=(-G Ninja)
  # shellcheck disable=SC2086
  cmake -S . -B "$dir" "${generator[@]}" "$@" ${LOOM_CMAKE_ARGS:-}
  cmake --build "$dir" -j "$jobs"
}

run_tests() {  # dir
  ctest --test-dir "$1" --output-on-failure -j "$jobs"
}

case ${1:-} in
  demo)
    install
    configure_and_build "$build_dir"
    "$build_dir/bin/loom" run examples/cpu-small.toml --out "$build_dir/demo"
    ;;
  test)
    install
    configure_and_build "$build_dir"
    run_tests "$build_dir"
    ;;
  sanitize)
    install
    configure_and_build "${build_dir}-asan" -DLOOM_CUDA=OFF -DLOOM_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug \
      "-DLOOM_SANITIZE=address;undefined"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
      run_tests "${build_dir}-asan"
    ;;
  fuzz)
    install
    seconds=${2:-60}
    CC=clang CXX=clang++ configure_and_build "${build_dir}-fuzz" -DLOOM_CUDA=OFF -DLOOM_TESTS=OFF \
      -DLOOM_BENCH=OFF -DLOOM_FUZZ=ON
    for target in "${build_dir}-fuzz"/bin/fuzz_*; do
      corpus="${build_dir}-fuzz/corpus/$(basename "$target")"
      mkdir -p "$corpus"
      echo "fuzz: $(basename "$target") for ${seconds}s"
      "$target" -max_total_time="$seconds" -max_len=65536 -timeout=5 -rss_limit_mb=2048 \
        "$corpus" tests/fuzz/seeds 2>&1 | tail -n 3
    done
    ;;
  build)
    install
    configure_and_build "$build_dir"
    ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
