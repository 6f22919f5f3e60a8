#!/usr/bin/env bats
# qbak copy: a backup chain of one full and five incrementals from one source
# that a guest keeps writing to (mkimage: scattered, zeroed, discarded and
# compressed clusters) and that grows and shrinks between two incrementals.
# Every point of the chain must read exactly as the source did when it was
# taken (qemu-img compare against a cp of the source made at that moment),
# through relative backing names that survive moving the folder.

bats_require_minimum_version 1.5.0
load helpers

M=$((1 << 20))

# The chain, built once in setup_file:
#   step 0: src made by mkimage (bitmap b0), full backup with b0 on-success
#           (the anchor), then zero cluster 0 and discard the cluster at
#           2 MiB, which both hold data in the full backup
#   step k (1..5): mkimage writes with seed 20+k, then an incremental
#           chain/inc<k>.qcow2 --backing inc<k-1>.qcow2 (full.qcow2 for k=1)
#   between inc2 and inc3: grow by 16 MiB (to 80 MiB) and write in the new
#           area; between inc4 and inc5: shrink by 8 MiB (to 72 MiB)
# (mkimage's compressed writes fail on allocated clusters: seeds 20..25 are
# ones where they all land on unallocated clusters.)
# src_<k>.qcow2 is a cp of the source right after step k's backup.
# Each qbak run's exit status and stderr are kept in the file folder, so a
# qbak failure fails the tests that look at it, not setup_file.

# qbak_step NAME ARGS...: run qbak ARGS..., keep NAME.rc, NAME.json, NAME.err.
qbak_step() {
    local name=$1 rc=0
    shift
    qbak "$@" --json >"$F/$name.json" 2>"$F/$name.err" || rc=$?
    echo "$rc" >"$F/$name.rc"
}

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    mkdir chain

    mkimage src.qcow2 --size 64M --fill 4M --bitmap b0 --dirty 1% --runs 1 \
        --zero-writes 3 --discards 3 --compressed 2 --seed 20
    # the step 0 checks need data (not zeroes) in the full backup where
    # step 1 zeroes and discards
    qemu-io -f qcow2 -c 'read -P 0 0 64k' src.qcow2 >/dev/null 2>&1 &&
        fail "mkimage left zeroes at offset 0: the zero-write check would prove nothing"
    qemu-io -f qcow2 -c 'read -P 0 2M 64k' src.qcow2 >/dev/null 2>&1 &&
        fail "mkimage left zeroes at offset 2M: the discard check would prove nothing"
    qbak_step full copy src.qcow2 chain/full.qcow2 --sync full \
        --bitmap b0 --bitmap-mode on-success
    cp src.qcow2 src_0.qcow2

    local k size=64M prev=full.qcow2
    for k in 1 2 3 4 5; do
        case $k in
        1)  qemu_io_fmt qcow2 src.qcow2 "write -z 0 64k" "discard 2M 64k" ;;
        3)  qemu-img resize -q src.qcow2 +16M
            size=80M
            qemu_io_fmt qcow2 src.qcow2 "write -P 0x33 $((70 * M)) 64k" ;;
        5)  qemu-img resize -q --shrink src.qcow2 -8M
            size=72M ;;
        esac
        mkimage src.qcow2 --no-create --size "$size" --dirty 1% \
            --zero-writes 3 --discards 3 --compressed 2 --seed $((20 + k))
        # relative backing name, resolved in the target's folder (chain/)
        qbak_step "inc$k" copy src.qcow2 "chain/inc$k.qcow2" \
            --sync incremental --bitmap b0 --backing "$prev"
        cp src.qcow2 "src_$k.qcow2"
        prev=inc$k.qcow2
    done
}

teardown_file() {
    kill_daemons
}

setup() {
    require_common_oracles
    require_qbak
    cd "$F" || return
}

teardown() {
    kill_daemons
}

# step_ok NAME: qbak's run NAME exited 0.
step_ok() {
    local rc
    rc=$(cat "$F/$1.rc")
    [ "$rc" -eq 0 ] || fail "qbak copy for $1: exit $rc: $(cat "$F/$1.err")"
}

# all_steps_ok: every qbak run of the chain exited 0.
all_steps_ok() {
    local s
    for s in full inc1 inc2 inc3 inc4 inc5; do step_ok "$s"; done
}

@test "copy-chain: qemu-img resize works on a qcow2 with persistent bitmaps" {
    # the chain's grow and shrink ran in setup_file; the sizes prove it
    [ "$(qemu_size src_2.qcow2)" -eq $((64 * M)) ] || fail "src_2: $(qemu_size src_2.qcow2)"
    [ "$(qemu_size src_3.qcow2)" -eq $((80 * M)) ] || fail "grow refused: src_3 is $(qemu_size src_3.qcow2)"
    [ "$(qemu_size src_5.qcow2)" -eq $((72 * M)) ] || fail "shrink refused: src_5 is $(qemu_size src_5.qcow2)"
    [ "$(qemu_bitmap_names src_5.qcow2)" = b0 ] || fail "bitmaps after resize: $(qemu_bitmap_names src_5.qcow2)"
}

@test "copy-chain: every qbak copy of the chain exits 0" {
    all_steps_ok
}

@test "copy-chain: the full backup compares identical to the source as it was" {
    step_ok full
    qemu-img compare chain/full.qcow2 src_0.qcow2
}

@test "copy-chain: every incremental compares identical to the source as it was then" {
    all_steps_ok
    local k
    for k in 1 2 3 4 5; do
        run --separate-stderr qemu-img compare "chain/inc$k.qcow2" "src_$k.qcow2"
        [ "$status" -eq 0 ] || fail "inc$k vs src_$k: $output $stderr"
    done
}

@test "copy-chain: every target passes qemu-img check" {
    all_steps_ok
    local t
    for t in full inc1 inc2 inc3 inc4 inc5; do
        run --separate-stderr qemu-img check "chain/$t.qcow2"
        [ "$status" -eq 0 ] || fail "qemu-img check $t: $output $stderr"
    done
}

@test "copy-chain: the source passes qemu-img check after six backups" {
    all_steps_ok
    qemu-img check src.qcow2
}

@test "copy-chain: each target's virtual size is the source's size at that point" {
    all_steps_ok
    local k
    for k in 0 1 2 3 4 5; do
        local t=inc$k
        [ "$k" -eq 0 ] && t=full
        [ "$(qemu_size "chain/$t.qcow2")" -eq "$(qemu_size "src_$k.qcow2")" ] ||
            fail "$t: $(qemu_size "chain/$t.qcow2"), source was $(qemu_size "src_$k.qcow2")"
    done
}

@test "copy-chain: each incremental stores its backing as the relative name given, format qcow2" {
    all_steps_ok
    local k prev=full.qcow2 info
    for k in 1 2 3 4 5; do
        info=$(qemu_info "chain/inc$k.qcow2")
        [ "$(jq -r '.["backing-filename"]' <<<"$info")" = "$prev" ] ||
            fail "inc$k backing: $(jq -r '.["backing-filename"]' <<<"$info"), want $prev"
        [ "$(jq -r '.["backing-filename-format"]' <<<"$info")" = qcow2 ] ||
            fail "inc$k backing format: $(jq -r '.["backing-filename-format"]' <<<"$info")"
        prev=inc$k.qcow2
    done
}

@test "copy-chain: QEMU reads the chain's top with qemu-io" {
    all_steps_ok
    run --separate-stderr qemu-io -f qcow2 -c 'read 0 1M' -c "read $((71 * M)) 1M" chain/inc5.qcow2
    [ "$status" -eq 0 ] || fail "qemu-io: $output $stderr"
    [[ $output != *"error"* && $output != *"failed"* ]] || fail "qemu-io: $output"
}

@test "copy-chain: a zeroed cluster reads as zeroes through the incremental, not the full's data" {
    all_steps_ok
    # offset 0 holds data in the full backup (checked in setup_file)
    run --separate-stderr qemu-io -f qcow2 -c 'read -P 0 0 64k' chain/full.qcow2
    [[ $output == *"Pattern verification failed"* ]] || fail "full.qcow2 reads zeroes at 0: $output"
    run --separate-stderr qemu-io -f qcow2 -c 'read -P 0 0 64k' chain/inc1.qcow2
    [ "$status" -eq 0 ] && [[ $output != *"failed"* ]] || fail "inc1 at 0: $output $stderr"
}

@test "copy-chain: a discarded cluster reads as zeroes through the incremental, not the full's data" {
    all_steps_ok
    run --separate-stderr qemu-io -f qcow2 -c 'read -P 0 2M 64k' chain/full.qcow2
    [[ $output == *"Pattern verification failed"* ]] || fail "full.qcow2 reads zeroes at 2M: $output"
    run --separate-stderr qemu-io -f qcow2 -c 'read -P 0 2M 64k' chain/inc1.qcow2
    [ "$status" -eq 0 ] && [[ $output != *"failed"* ]] || fail "inc1 at 2M: $output $stderr"
}

@test "copy-chain: data written in the grown area is in the incremental after the grow" {
    all_steps_ok
    run --separate-stderr qemu-io -f qcow2 -c "read -P 0x33 $((70 * M)) 64k" chain/inc3.qcow2
    [ "$status" -eq 0 ] && [[ $output != *"failed"* ]] || fail "inc3 at 70M: $output $stderr"
}

@test "copy-chain: the bitmap is cleared after every incremental (JSON and QEMU agree)" {
    all_steps_ok
    local s
    for s in full inc1 inc2 inc3 inc4 inc5; do
        [ "$(jq -r .bitmap.state "$s.json")" = cleared ] || fail "$s: $(jq -c .bitmap "$s.json")"
    done
    [ "$(qemu_bitmap_counts src_5.qcow2 | jq .b0)" -eq 0 ] ||
        fail "QEMU's count of b0 after inc5: $(qemu_bitmap_counts src_5.qcow2)"
}

@test "copy-chain: the moved folder still opens as a chain of six images" {
    all_steps_ok
    mkdir -p "$BATS_TEST_TMPDIR/else/where"
    cp -a chain "$BATS_TEST_TMPDIR/else/where/"
    local top=$BATS_TEST_TMPDIR/else/where/chain/inc5.qcow2
    run --separate-stderr qemu-img info -U --backing-chain --output=json "$top"
    [ "$status" -eq 0 ] || fail "qemu-img info --backing-chain: $stderr"
    [ "$(jq length <<<"$output")" -eq 6 ] || fail "chain length: $(jq length <<<"$output")"
    # every image of the chain is found in the new folder
    run jq -r '.[].filename' <<<"$output"
    [ "$(grep -c "^$BATS_TEST_TMPDIR/else/where/chain/" <<<"$output")" -eq 6 ] ||
        fail "images outside the moved folder: $output"
}

@test "copy-chain: every point of the moved chain compares identical to the source as it was" {
    all_steps_ok
    mkdir -p "$BATS_TEST_TMPDIR/moved"
    mv chain "$BATS_TEST_TMPDIR/moved/"
    local k rc=0 t
    for k in 0 1 2 3 4 5; do
        t=inc$k
        [ "$k" -eq 0 ] && t=full
        qemu-img compare "$BATS_TEST_TMPDIR/moved/chain/$t.qcow2" "src_$k.qcow2" >&2 || rc=1
    done
    mv "$BATS_TEST_TMPDIR/moved/chain" .
    [ "$rc" -eq 0 ] || fail "a point of the moved chain differs from its source"
}
