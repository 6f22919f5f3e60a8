#!/usr/bin/env bats
# qbak map, checked against `qemu-img map --output=json`: every byte must
# agree on present, zero, data and depth (compare-map.py).

bats_require_minimum_version 1.5.0
load helpers

M=$((1 << 20))

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

@test "map: 64 KiB clusters with scattered, run, zero, discard and compressed writes" {
    mkimage a.qcow2 --size 64M --fill 2M --dirty 3% --runs 3 --zero-writes 5 \
        --discards 5 --compressed 5 --seed 11
    check_map a.qcow2
}

@test "map: zlib compressed clusters" {
    qemu-img create -q -f qcow2 -o compression_type=zlib z.qcow2 8M
    qemu_io_fmt qcow2 z.qcow2 "write -c -P 0x22 0 64k" "write -c -P 0x33 256k 128k" \
        "write -c -z 1M 64k" "write -P 0x44 2M 64k" "write -c -P 0x55 8128k 64k"
    check_map z.qcow2
}

@test "map: zstd compressed clusters" {
    qemu-img create -q -f qcow2 -o compression_type=zstd z.qcow2 8M
    qemu_io_fmt qcow2 z.qcow2 "write -c -P 0x22 0 64k" "write -c -P 0x33 256k 128k" \
        "write -P 0x44 2M 64k" "write -c -P 0x55 8128k 64k"
    check_map z.qcow2
}

@test "map: zstd image made by mkimage with compressed writes" {
    qemu-img create -q -f qcow2 -o compression_type=zstd a.qcow2 32M
    mkimage a.qcow2 --no-create --size 32M --dirty 2% --zero-writes 3 --discards 3 \
        --compressed 8 --seed 12
    check_map a.qcow2
}

@test "map: extended_l2 subcluster writes, zeroes and discards" {
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k e.qcow2 4M
    qemu_io_fmt qcow2 e.qcow2 "write -P 1 4k 4k" "write -z 8k 4k" \
        "write -P 2 64k 64k" "write -z 72k 4k" "discard 96k 32k" \
        "write -P 3 1M 2k" "write -P 4 1026k 1k" "write -z 2M 64k" \
        "write -P 5 3M 64k" "discard 3M 64k"
    check_map e.qcow2
}

@test "map: extended_l2 with a backing file (unallocated subclusters fall through)" {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu_io_fmt qcow2 base.qcow2 "write -P 1 0 256k"
    qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 e.qcow2 4M
    qemu_io_fmt qcow2 e.qcow2 "write -P 2 4k 4k" "write -z 16k 2k" "write -P 3 1M 4k"
    check_map e.qcow2
}

@test "map: 512 B clusters" {
    qemu-img create -q -f qcow2 -o cluster_size=512 s.qcow2 4M
    qemu_io_fmt qcow2 s.qcow2 "write -P 1 0 512" "write -P 2 1536 2k" \
        "write -z 8k 1k" "write -P 3 1M 64k" "discard 1040k 1k" \
        "write -c -P 4 2M 512"
    check_map s.qcow2
}

@test "map: 2 MiB clusters" {
    qemu-img create -q -f qcow2 -o cluster_size=2M b.qcow2 32M
    qemu_io_fmt qcow2 b.qcow2 "write -P 1 0 4k" "write -P 2 6M 2M" \
        "write -z 10M 2M" "write -P 3 16M 2M" "discard 16M 2M" \
        "write -c -P 4 20M 2M" "write -P 5 $((32 * M - 512)) 512"
    check_map b.qcow2
}

# QEMU looks through to holes in the host file (zero: true, data: true) when
# it detects metadata preallocation (qcow2_detect_metadata_preallocation:
# clusters with refcount > 0 >= max(real*10/9, real+2), real = allocated
# file bytes / cluster size).
@test "map: preallocation=metadata image reports host-file holes as zero" {
    qemu-img create -q -f qcow2 -o preallocation=metadata p.qcow2 8M
    qemu_io_fmt qcow2 p.qcow2 "write -P 1 64k 4k" "write -z 1M 64k"
    check_map p.qcow2
}

@test "map: qcow2 v2 (compat=0.10) image with zero writes" {
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M
    qemu_io_fmt qcow2 v2.qcow2 "write -P 1 0 64k" "write -z 64k 64k" \
        "write -z 1M 128k" "write -c -P 2 2M 64k" "discard 0 64k"
    check_map v2.qcow2
}

@test "map: image grown and shrunk by qemu-img resize" {
    mkimage r.qcow2 --size 32M --fill 1M --dirty 3% --zero-writes 3 --seed 13
    qemu-img resize -q r.qcow2 $((48 * M + 512))
    qemu_io_fmt qcow2 r.qcow2 "write -P 9 $((40 * M)) 64k" "write -P 9 $((48 * M)) 512"
    qemu-img resize -q --shrink r.qcow2 $((24 * M + 1536))
    check_map r.qcow2
}

@test "map: image with nothing written is one unallocated extent" {
    qemu-img create -q -f qcow2 empty.qcow2 16M
    check_map empty.qcow2
}

@test "map: top of a 3-deep backing chain" {
    make_chain
    check_map top.qcow2
}

@test "map: middle of a 3-deep backing chain" {
    make_chain
    check_map mid.qcow2
}

@test "map: qcow2 over a raw backing file" {
    truncate -s 2M base.raw
    dd if=/dev/urandom of=base.raw bs=64k seek=4 count=2 conv=notrunc status=none
    qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 4M
    qemu_io_fmt qcow2 top.qcow2 "write -P 3 0 64k" "write -z 256k 64k"
    check_map top.qcow2
}

@test "map: backing file missing exits 3" {
    make_chain
    rm mid.qcow2
    run --separate-stderr qbak map top.qcow2 --json
    [ "$status" -eq 3 ] || fail "exit $status, expected 3; stderr: $stderr"
}

@test "map: data_file_raw image" {
    qemu-img create -q -f qcow2 -o data_file=d.raw,data_file_raw=on d.qcow2 16M
    qemu_io_fmt qcow2 d.qcow2 "write -P 1 0 64k" "write -P 2 5M 1M" \
        "write -z 5M 64k" "discard 6M 64k" "write -P 3 $((16 * M - 64 * 1024)) 64k"
    check_map d.qcow2
}

@test "map: external data file without data_file_raw" {
    qemu-img create -q -f qcow2 -o data_file=d.raw d.qcow2 16M
    qemu_io_fmt qcow2 d.qcow2 "write -P 1 0 64k" "write -P 2 5M 1M" \
        "write -z 5M 64k" "discard 6M 64k"
    check_map d.qcow2
}

@test "map: raw image with holes" {
    truncate -s 4M r.raw
    dd if=/dev/urandom of=r.raw bs=64k seek=3 count=2 conv=notrunc status=none
    dd if=/dev/urandom of=r.raw bs=64k seek=40 count=1 conv=notrunc status=none
    dd if=/dev/zero of=r.raw bs=64k seek=20 count=1 conv=notrunc status=none
    check_map r.raw raw
}

@test "map: raw image with a size that is not a multiple of 4 KiB" {
    truncate -s $((M + 512)) r.raw
    dd if=/dev/urandom of=r.raw bs=512 seek=2048 count=1 conv=notrunc status=none
    check_map r.raw raw
}

@test "map: qcow v1 image" {
    qemu-img create -q -f qcow v1.qcow 4M
    qemu_io_fmt qcow v1.qcow "write -P 1 0 64k" "write -P 2 1M 4k" \
        "write -c -P 3 2M 4k" "write -P 4 $((4 * M - 512)) 512"
    check_map v1.qcow qcow
}
