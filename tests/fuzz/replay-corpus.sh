#!/bin/sh
# ctest: make the corrupted-image corpus, add qemu-img-made valid images
# (bitmaps, compression, extended L2, 512-byte clusters), and replay them
# all through the fuzz target.  Under the ASan+UBSan build this is the
# corpus regression test for the parsers.
set -e
REPLAY=$1
SRCDIR=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 "$SRCDIR/tests/corpus/make-corrupt-corpus.py" "$dir/corpus" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=512 "$dir/c512.qcow2" 1M
qemu-img bitmap --add -g 512 "$dir/c512.qcow2" b0
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -z 128k 4k' "$dir/c512.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o extended_l2=on,compression_type=zstd "$dir/ext.qcow2" 4M
qemu-io -f qcow2 -c 'write -P 2 4k 4k' -c 'write -c -P 3 1M 64k' "$dir/ext.qcow2" >/dev/null
"$REPLAY" "$dir"/corpus/*.qcow2 "$dir"/*.qcow2
