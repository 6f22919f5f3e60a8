#!/bin/sh
# make fuzz: build the libFuzzer target with clang (ASan+UBSan) and fuzz
# the image parsers for SECONDS (default 300), starting from small images
# made here with qemu-img.  Crashes land in tests/fuzz/artifacts/ (not
# committed: reproduce them, fix, and add a corpus case to
# tests/corpus/make-corrupt-corpus.py).
set -e
SECONDS_TO_RUN=${1:-300}
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD:-$top/build-fuzz}
if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -q clang libclang-rt-dev
fi
CC=clang cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
  -DQBAK_FUZZ=ON -DQBAK_SANITIZE=ON -DQBAK_WERROR=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz-image
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/seeds" "$work/corpus" "$top/tests/fuzz/artifacts"
for cs in 512 4096; do
  img=$work/seeds/s$cs.qcow2
  qemu-img create -q -f qcow2 -o cluster_size=$cs "$img" 256k
  qemu-img bitmap --add -g 512 "$img" b0
  qemu-io -f qcow2 -c 'write -P 1 0 8k' -c 'write -z 16k 4k' \
    -c 'write -c -P 2 64k 4k' "$img" >/dev/null
done
img=$work/seeds/sx.qcow2
qemu-img create -q -f qcow2 -o cluster_size=16k,extended_l2=on,compression_type=zstd "$img" 256k
qemu-io -f qcow2 -c 'write -P 1 1k 1k' -c 'write -c -P 2 32k 16k' "$img" >/dev/null
"$build/tests/fuzz-image" -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=1024 \
  -malloc_limit_mb=768 -artifact_prefix="$top/tests/fuzz/artifacts/" \
  "$work/corpus" "$work/seeds"
