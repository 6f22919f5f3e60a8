#!/usr/bin/env bats
# qbak's metadata writes keep what they do not understand: unknown header
# extensions and the backing file name byte-identical, unknown autoclear
# bits cleared (as QEMU's qcow2 format requires of a writer that does not
# know them), and work for every refcount width.  Oracles:
# qemu-img check/info, and the header parsed independently by
# header-rewrite.py.

bats_require_minimum_version 1.5.0
load helpers

HR=$BATS_TEST_DIRNAME/header-rewrite.py

setup_file() {
    require_common_oracles
    require_qbak
}

setup() {
    setup_tmpdir
}

bitmap_names() {
    qemu-img info -U --output=json "$1" |
        jq -r '[."format-specific".data.bitmaps // [] | .[].name] | join(",")'
}

@test "an unknown header extension survives bitmap writes byte-identical" {
    qemu-img create -q -f qcow2 a.qcow2 16M
    python3 "$HR" add-ext a.qcow2 7a7a0001 0102030405
    before=$(python3 "$HR" exts a.qcow2 | grep '^7a7a0001')
    [ -n "$before" ]
    qbak bitmap add a.qcow2 b0
    qemu-io -f qcow2 -c 'write 0 64k' a.qcow2 >/dev/null
    qbak bitmap add a.qcow2 b1
    qbak bitmap remove a.qcow2 b0
    after=$(python3 "$HR" exts a.qcow2 | grep '^7a7a0001')
    [ "$before" = "$after" ] || fail "extension changed: '$before' -> '$after'"
    [ "$(bitmap_names a.qcow2)" = "b1" ]
    check_clean a.qcow2
}

@test "an unknown autoclear bit is cleared by a bitmap write" {
    qemu-img create -q -f qcow2 a.qcow2 16M
    python3 "$HR" set-autoclear a.qcow2 7
    [ "$(python3 "$HR" autoclear a.qcow2)" -eq 128 ]
    qbak bitmap add a.qcow2 b0
    # bit 7 gone, bit 0 (bitmaps consistent) set
    [ "$(python3 "$HR" autoclear a.qcow2)" -eq 1 ]
    check_clean a.qcow2
}

@test "the backing file name and format are kept byte-identical" {
    qemu-img create -q -f qcow2 base.qcow2 16M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    before=$(python3 "$HR" backing top.qcow2)
    qbak bitmap add top.qcow2 b0
    qbak bitmap add top.qcow2 b1 --granularity 512
    [ "$(python3 "$HR" backing top.qcow2)" = "$before" ]
    [ "$(qemu-img info -U --output=json top.qcow2 | jq -r '."backing-filename-format"')" = qcow2 ]
    check_clean top.qcow2
}

@test "bitmap writes work for every refcount width (1..64 bits)" {
    for bits in 1 2 4 8 16 32 64; do
        qemu-img create -q -f qcow2 -o refcount_bits=$bits r$bits.qcow2 32M
        qemu-io -f qcow2 -c 'write -P 1 0 4M' r$bits.qcow2 >/dev/null
        qbak bitmap add r$bits.qcow2 b0 --granularity 4k
        qemu-io -f qcow2 -c 'write -P 2 8M 1M' r$bits.qcow2 >/dev/null
        qbak bitmap add r$bits.qcow2 b1
        qbak bitmap merge r$bits.qcow2 b1 b0
        qbak bitmap remove r$bits.qcow2 b0
        check_clean r$bits.qcow2
        [ "$(bitmap_names r$bits.qcow2)" = "b1" ] || fail "refcount_bits=$bits"
        [ "$(qbak bitmap list --json r$bits.qcow2 | jq '.[0]."dirty-bytes"')" -eq 1048576 ] ||
            fail "refcount_bits=$bits: wrong dirty bytes"
    done
}

@test "the dirty flag (lazy refcounts after a crash) refuses writes with exit 3" {
    qemu-img create -q -f qcow2 -o lazy_refcounts=on a.qcow2 16M
    # incompatible bit 0 (dirty), as QEMU leaves it after a crash
    python3 - a.qcow2 <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(72); v = struct.unpack('>Q', f.read(8))[0] | 1
    f.seek(72); f.write(struct.pack('>Q', v))
PY
    sum=$(sha256sum <a.qcow2)
    run --separate-stderr qbak bitmap add a.qcow2 b0
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [[ $stderr == *"qemu-img check -r all"* ]] || fail "$stderr"
    [ "$(sha256sum <a.qcow2)" = "$sum" ]
}
