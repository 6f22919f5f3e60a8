#!/usr/bin/env bats
# --retry N: a transient target write error is retried with backoff; without
# --retry the same error fails the job (exit 1) and the bitmap is unchanged.
# Oracles: qemu-img compare, and the bitmap's count from qemu-img's view.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_qbak
}

setup() {
    setup_tmpdir
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu-io -f qcow2 -c 'write -P 1 0 2M' src.qcow2 >/dev/null
    qemu-img bitmap --add src.qcow2 b0
    qemu-io -f qcow2 -c 'write -P 2 1M 1M' -c 'write -P 3 8M 512k' src.qcow2 >/dev/null
    qemu-img create -q -f qcow2 full.qcow2 16M
    qemu-io -f qcow2 -c 'write -P 1 0 2M' full.qcow2 >/dev/null
}

dirty_bytes() {
    qbak bitmap list --json src.qcow2 | jq '.[] | select(.name=="b0") | ."dirty-bytes"'
}

@test "copy --retry: a transient target write error is retried and the backup completes" {
    QBAK_FAILPOINT=write:3:eio run --separate-stderr qbak copy src.qcow2 inc.qcow2 \
        --sync incremental --bitmap b0 --backing full.qcow2 --retry 2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    qemu-img compare src.qcow2 inc.qcow2
    [ "$(dirty_bytes)" -eq 0 ]
}

@test "copy without --retry: the same error fails the job and leaves the bitmap" {
    before=$(dirty_bytes)
    QBAK_FAILPOINT=write:3:eio run --separate-stderr qbak copy src.qcow2 inc.qcow2 \
        --sync incremental --bitmap b0 --backing full.qcow2
    [ "$status" -eq 1 ] || fail "exit $status: $stderr"
    [[ $stderr == "qbak: "*"Input/output error"* ]] || fail "$stderr"
    [ ! -e inc.qcow2 ]
    [ "$(dirty_bytes)" -eq "$before" ]
}

# A failed fsync is final: Linux reports a write-back error once and then
# calls the pages clean, so a second fsync would succeed over lost data.
# Flush 1 of the target comes before its header write, flush 2 after it.
# Even with --retry and bitmap-mode always the target is dropped and the
# bitmap keeps every cluster (QEMU's own count).
@test "copy --retry: a failed flush of the target is final: target dropped, bitmap (mode always) unchanged" {
    require_bitmap_oracles
    before=$(qemu_bitmap_counts src.qcow2 | jq .b0)
    [ "$before" -gt 0 ]
    for n in 1 2; do
        QBAK_FAILPOINT=flush:$n:eio run --separate-stderr qbak copy src.qcow2 inc.qcow2 \
            --sync bitmap --bitmap b0 --bitmap-mode always --backing full.qcow2 --retry 2
        [ "$status" -eq 1 ] || fail "flush $n: exit $status: $stderr"
        [[ $stderr == "qbak: inc.qcow2.part: "*"flush"*"the bitmap is unchanged"* ]] ||
            fail "flush $n: $stderr"
        [ ! -e inc.qcow2 ] && [ ! -e inc.qcow2.part ] || fail "flush $n: a target was kept"
        after=$(qemu_bitmap_counts src.qcow2 | jq .b0)
        [ "$after" -eq "$before" ] || fail "flush $n: bitmap count $before -> $after"
    done
}

@test "copy -O raw --retry: a transient target write error is retried and the copy is identical" {
    # Write 1 sizes the new file (ftruncate), write 2 is the first data
    # run: it fails once, its range is deallocated again, and the retry
    # writes it.
    QBAK_FAILPOINT=write:2:eio run --separate-stderr qbak copy src.qcow2 t.raw \
        -O raw --sync full --retry 2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qemu-img compare -f raw -F qcow2 t.raw src.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img compare: $output $stderr"
}

@test "copy -O raw without --retry: the same error fails the job (exit 1)" {
    QBAK_FAILPOINT=write:2:eio run --separate-stderr qbak copy src.qcow2 t.raw \
        -O raw --sync full
    [ "$status" -eq 1 ] || fail "exit $status: $stderr"
    [[ $stderr == "qbak: t.raw.part: write at offset 0: Input/output error"* ]] || fail "$stderr"
    [ ! -e t.raw ]
}
