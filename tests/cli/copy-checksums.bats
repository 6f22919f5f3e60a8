#!/usr/bin/env bats
# qbak copy --sync checksums: an incremental without a bitmap, by
# comparing every cluster with the backing file's chain.  Checked with
# qemu-img compare, map and check.

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
}

# layer_data FILE: the data bytes FILE itself holds (qemu-img map).
layer_data() {
    qemu-img map -f qcow2 --output=json "$1" |
        jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0'
}

layer_zero() {
    qemu-img map -f qcow2 --output=json "$1" |
        jq '[.[] | select(.depth == 0 and .zero and (.data | not)) | .length] | add // 0'
}

@test "copy --sync checksums: a raw disk's chain holds only what changed, and restores" {
    qemu-img create -q -f raw d.img 48M
    qemu-io -f raw -c 'write -P 1 0 16M' -c 'write -P 2 30M 2M' d.img >/dev/null
    qbak copy -f raw d.img b0.qcow2 --sync full
    cp d.img c0.img
    prev=b0.qcow2
    for k in 1 2 3; do
        # Data changed in two runs (1 + 2 clusters), data become zeroes
        # (3 clusters), a discard of data, and a write of the same bytes.
        qemu-io -f raw -c "write -P $((k + 10)) $((k * 2))M 64k" \
            -c "write -P $((k + 20)) $((k + 8))M 128k" \
            -c "write -z $((k * 4 + 1))M 192k" \
            -c "discard 31M 64k" -c "write -P 2 30M 64k" d.img >/dev/null
        run --separate-stderr qbak copy --json -f raw d.img "b$k.qcow2" \
            --sync checksums --backing "$prev"
        [ "$status" -eq 0 ] || fail "exit $status: $stderr"
        [ "$(jq '."bytes-copied"' <<<"$output")" -le $((3 * 65536)) ]
        cp d.img "c$k.img"
        run qemu-img compare -f raw -F qcow2 d.img "b$k.qcow2"
        [ "$status" -eq 0 ] || fail "b$k: $output"
        check_clean "b$k.qcow2"
        [ "$(layer_data "b$k.qcow2")" -eq $((3 * 65536)) ] ||
            fail "b$k holds $(layer_data "b$k.qcow2") bytes of data"
        [ "$(layer_zero "b$k.qcow2")" -ge $((3 * 65536)) ]
        prev=b$k.qcow2
    done
    # Every file of the chain still reads as the disk did then.
    for k in 0 1 2 3; do
        run qemu-img compare -f raw -F qcow2 "c$k.img" "b$k.qcow2"
        [ "$status" -eq 0 ] || fail "b$k: $output"
    done
}

@test "copy --sync checksums: a grown disk, and the same content as a bitmap-based incremental" {
    qemu-img create -q -f qcow2 v.qcow2 16M
    qemu-img bitmap --add v.qcow2 b
    qemu-io -c 'write -P 1 0 6M' v.qcow2 >/dev/null
    qbak copy v.qcow2 full.qcow2 --sync full --bitmap b --bitmap-mode on-success
    qemu-img resize -q v.qcow2 24M
    qemu-io -c 'write -P 2 1M 1M' -c 'write -P 3 20M 64k' -c 'write -z 5M 64k' \
        v.qcow2 >/dev/null
    qbak copy v.qcow2 by-bitmap.qcow2 --sync bitmap --bitmap b \
        --bitmap-mode never --backing full.qcow2
    qbak copy v.qcow2 by-sums.qcow2 --sync checksums --backing full.qcow2
    run qemu-img compare v.qcow2 by-sums.qcow2
    [ "$status" -eq 0 ] || fail "$output"
    run qemu-img compare by-bitmap.qcow2 by-sums.qcow2
    [ "$status" -eq 0 ] || fail "$output"
    [ "$(qemu-img info --output=json by-sums.qcow2 | jq '."virtual-size"')" -eq $((24 << 20)) ]
    [ "$(layer_data by-sums.qcow2)" -le "$(layer_data by-bitmap.qcow2)" ]
    check_clean by-sums.qcow2
}

@test "copy --sync checksums: without a backing file, or with a bitmap, is refused (exit 2)" {
    qemu-img create -q -f qcow2 v.qcow2 16M
    qemu-img bitmap --add v.qcow2 b
    qbak copy v.qcow2 full.qcow2 --sync full
    run --separate-stderr qbak copy v.qcow2 t.qcow2 --sync checksums
    [ "$status" -eq 2 ] || fail "exit $status"
    [[ $stderr == *"backing file"* ]] || fail "$stderr"
    run --separate-stderr qbak copy v.qcow2 t.qcow2 --sync checksums \
        --backing full.qcow2 --bitmap b --bitmap-mode on-success
    [ "$status" -eq 2 ] || fail "exit $status"
    [ ! -e t.qcow2 ]
}
