#!/usr/bin/env bats
# qbak bitmap list / dump, checked against QEMU: qemu-img info for the
# bitmap directory, qemu-nbd --bitmap + nbdinfo --map for exact contents.

bats_require_minimum_version 1.5.0
load helpers

M=$((1 << 20))
K=1024

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return

    # resized.qcow2: mkimage writes (scattered, runs, zero, discard,
    # compressed) with bitmaps of granularities 512 B .. 2 MiB, one of them
    # disabled half way, through a grow and a shrink to sizes that are not
    # multiples of the coarser granularities.
    mkimage resized.qcow2 --size 64M --fill 1M --bitmap g512 --granularity 512 \
        --dirty 2% --runs 2 --zero-writes 3 --discards 3 --compressed 4 --seed 1
    qemu-img bitmap --add -g 4k resized.qcow2 g4k
    qemu-img bitmap --add -g 64k resized.qcow2 g64k
    qemu-img bitmap --add -g 1M resized.qcow2 disabled
    qemu-img bitmap --add -g 2M resized.qcow2 g2m
    mkimage resized.qcow2 --no-create --size 64M --dirty 1% --runs 1 \
        --zero-writes 2 --discards 2 --seed 2
    qemu-img bitmap --disable resized.qcow2 disabled
    qemu-img resize -q resized.qcow2 $((100 * M + 192 * K))
    mkimage resized.qcow2 --no-create --size $((100 * M + 192 * K)) --dirty 1% \
        --runs 1 --zero-writes 2 --discards 2 --seed 3
    qemu_io_fmt qcow2 resized.qcow2 "write -P 5 $((90 * M)) 64k" \
        "write -P 6 $((100 * M + 128 * K)) 64k"
    qemu-img resize -q --shrink resized.qcow2 $((80 * M + 1536))
    qemu-img bitmap --add -g 32k resized.qcow2 late
    mkimage resized.qcow2 --no-create --size $((80 * M + 1536)) --dirty 1% \
        --zero-writes 2 --discards 2 --seed 4
    qemu_io_fmt qcow2 resized.qcow2 "write -P 7 $((80 * M)) 1536"

    # crashed.qcow2: bitmap 'stale' left in_use by a killed
    # qemu-storage-daemon, then bitmap 'fresh' added and written through.
    qemu-img create -q -f qcow2 crashed.qcow2 64M
    qemu-img bitmap --add crashed.qcow2 stale
    qemu_io_fmt qcow2 crashed.qcow2 "write -P 1 0 1M"
    leave_bitmaps_in_use crashed.qcow2
    qemu-img bitmap --add -g 128k crashed.qcow2 fresh
    mkimage crashed.qcow2 --no-create --size 64M --dirty 2% --zero-writes 2 \
        --discards 2 --seed 5

    qemu-img create -q -f qcow2 plain.qcow2 16M
}

teardown_file() {
    kill_daemons
}

setup() {
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# bitmap_list_vs_qemu IMG: qbak bitmap list --json and qemu-img info agree
# on each bitmap's name, granularity and flags (in-use, auto).
bitmap_list_vs_qemu() {
    local img=$1 want got
    want=$(qemu_info "$img" | jq -S '[.["format-specific"].data.bitmaps // [] | .[] |
        {name, granularity, flags}] | sort_by(.name)')
    run --separate-stderr qbak bitmap list "$img" --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    got=$(printf '%s\n' "$output" | jq -S '[.[] |
        {name, granularity, flags}] | sort_by(.name)')
    [ "$got" = "$want" ] || fail "qbak bitmap list: $got" $'\n'"qemu-img info: $want"
}

@test "bitmap dump: 512 B granularity bitmap equals qemu-nbd's after grow and shrink" {
    check_dump "$F/resized.qcow2" g512
}

@test "bitmap dump: 4 KiB granularity bitmap equals qemu-nbd's after grow and shrink" {
    check_dump "$F/resized.qcow2" g4k
}

@test "bitmap dump: 64 KiB granularity bitmap equals qemu-nbd's after grow and shrink" {
    check_dump "$F/resized.qcow2" g64k
}

@test "bitmap dump: disabled 1 MiB bitmap equals qemu-nbd's" {
    check_dump "$F/resized.qcow2" disabled
}

@test "bitmap dump: 2 MiB granularity bitmap equals qemu-nbd's (partial last granule)" {
    check_dump "$F/resized.qcow2" g2m
}

@test "bitmap dump: bitmap added after a shrink equals qemu-nbd's" {
    check_dump "$F/resized.qcow2" late
}

@test "bitmap dump: consistent bitmap beside an in_use one equals qemu-nbd's" {
    check_dump "$F/crashed.qcow2" fresh
}

@test "bitmap dump: clean bitmap on an unwritten image is one clean extent" {
    qemu-img create -q -f qcow2 empty.qcow2 8M
    qemu-img bitmap --add empty.qcow2 b0
    check_dump empty.qcow2 b0
}

@test "bitmap dump: fully dirty bitmap is one dirty extent, as qemu-nbd says" {
    qemu-img create -q -f qcow2 full.qcow2 8M
    qemu-img bitmap --add -g 64k full.qcow2 b0
    qemu_io_fmt qcow2 full.qcow2 "write -P 1 0 8M"
    check_dump full.qcow2 b0
}

@test "bitmap dump: bitmap whose data spans many 512 B clusters equals qemu-nbd's" {
    mkimage small.qcow2 --size 32M --cluster-size 512 --bitmap b0 --granularity 512 \
        --dirty 1% --runs 2 --zero-writes 3 --discards 3 --compressed 3 --seed 6
    check_dump small.qcow2 b0
}

@test "bitmap dump: bitmap on a 2 MiB cluster image equals qemu-nbd's" {
    mkimage big.qcow2 --size 64M --cluster-size 2M --bitmap b0 --granularity 4k \
        --dirty 10% --zero-writes 2 --discards 2 --compressed 2 --seed 7
    qemu_io_fmt qcow2 big.qcow2 "write -P 3 $((33 * M + 4096)) 512"
    check_dump big.qcow2 b0
}

@test "bitmap dump: in_use bitmap exits 3" {
    run --separate-stderr qbak bitmap dump "$F/crashed.qcow2" stale --json
    [ "$status" -eq 3 ] || fail "exit $status, expected 3; stdout: $output; stderr: $stderr"
}

@test "bitmap dump: in_use bitmap error is one 'qbak: ' line naming the bitmap" {
    run --separate-stderr qbak bitmap dump "$F/crashed.qcow2" stale --json
    check_error_line
    [[ $stderr == *stale* ]] || fail "error does not name bitmap 'stale': $stderr"
}

@test "bitmap dump: unknown bitmap fails with one 'qbak: ' line naming it" {
    run --separate-stderr qbak bitmap dump "$F/resized.qcow2" nosuch --json
    [ "$status" -ne 0 ] && [ "$status" -ne 2 ] || fail "exit $status; stderr: $stderr"
    check_error_line
    [[ $stderr == *nosuch* ]] || fail "error does not name bitmap 'nosuch': $stderr"
}

@test "bitmap list: names, granularities and flags agree with qemu-img info" {
    bitmap_list_vs_qemu "$F/resized.qcow2"
}

@test "bitmap list: in_use bitmap is listed with in-use true, as qemu-img info shows" {
    bitmap_list_vs_qemu "$F/crashed.qcow2"
}

@test "bitmap list: in_use bitmap has no dirty-bytes" {
    run --separate-stderr qbak bitmap list "$F/crashed.qcow2" --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    printf '%s\n' "$output" |
        jq -e '.[] | select(.name == "stale") | .["dirty-bytes"] == null' >/dev/null ||
        fail "in_use bitmap 'stale' shows dirty-bytes: $output"
}

@test "bitmap list: dirty-bytes equals QEMU's dirty count of each bitmap" {
    # QEMU counts whole granules, so a dirty partial last granule (g2m,
    # 'write 80M 1536') counts as a full 2 MiB, as in query-block's "count".
    local img=$F/resized.qcow2 want got
    want=$(qemu_bitmap_counts "$img" | jq -S .)
    run --separate-stderr qbak bitmap list "$img" --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    got=$(printf '%s\n' "$output" | jq -S 'map({(.name): .["dirty-bytes"]}) | add // {}')
    [ "$got" = "$want" ] || fail "qbak dirty-bytes: $got" $'\n'"QEMU count: $want"
}

@test "bitmap list: image without bitmaps prints an empty array" {
    run --separate-stderr qbak bitmap list "$F/plain.qcow2" --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    printf '%s\n' "$output" | jq -e '. == []' >/dev/null || fail "expected [], got: $output"
}
