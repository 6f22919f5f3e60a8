#!/bin/sh
# make demo: build a small qcow2 image with QEMU's tools, dirty a bitmap as
# a guest would, and show what qbak sees.
set -e
QBAK=${1:-build/qbak}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
img=$dir/vm.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -f qcow2 -c 'write -q -P 0x11 0 4M' "$img"
qemu-img bitmap --add "$img" nightly
qemu-io -f qcow2 -c 'write -q -P 0x22 1M 128k' -c 'write -q -z 8M 64k' "$img"
echo "== qbak info $img"
"$QBAK" info "$img"
echo "== qbak map $img"
"$QBAK" map "$img"
echo "== qbak bitmap dump $img nightly"
"$QBAK" bitmap dump "$img" nightly
echo "== a full backup, a guest write, an incremental"
"$QBAK" copy "$img" "$dir/full.qcow2" --sync full --bitmap nightly \
  --bitmap-mode on-success --json | grep -E '"(status|bytes-copied)"'
qemu-io -f qcow2 -c 'write -q -P 0x33 2M 64k' "$img"
"$QBAK" copy "$img" "$dir/inc1.qcow2" --sync incremental --bitmap nightly \
  --backing full.qcow2 --json | grep -E '"(status|bytes-copied)"'
qemu-img compare "$img" "$dir/inc1.qcow2"
"$QBAK" bitmap list "$img"
