#!/usr/bin/env bats
# qbak copy onto a full target disk, side by side with QEMU's own backup job
# (tests/tools/qemu-backup-job): each target lives in its own small tmpfs
# (6 MiB) and the incremental's dirty data (12 MiB) does not fit.  Both jobs
# fail; the bitmaps afterwards are equal for on-success and never (a failed
# QEMU backup job leaves them unchanged); with always, qbak's
# bitmap holds exactly the clusters missing from its TARGET.part.  Once space
# is freed, the retry QEMU's documentation describes (or --resume, for
# always) completes the backup.
#
# Needs root to mount tmpfs: if the mount is refused the tests FAIL.

bats_require_minimum_version 1.5.0
load helpers

CHECK=$QBAK_CLI_TESTDIR/copy-faults-check.py
QEMU_JOB=$QBAK_SRCDIR/tests/tools/qemu-backup-job

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    # src.qcow2: b0 anchored at full.qcow2, then 12 MiB of guest writes
    # (twelve 1 MiB runs of incompressible data) and a few clusters
    mkimage src.qcow2 --size 32M --fill 4M --bitmap b0 --seed 21
    qemu-img convert -f qcow2 -O qcow2 src.qcow2 full.qcow2
    qemu-img bitmap --clear src.qcow2 b0
    mkimage src.qcow2 --size 32M --no-create --runs 12 --dirty 1% --seed 22
    qemu_bitmap_map src.qcow2 b0 >before.json
}

setup() {
    require_common_oracles
    require_bitmap_oracles
    require_oracle mount mount
    require_oracle umount mount
    require_qbak
    setup_tmpdir
    MOUNTS=()
    mount_tmpfs mntA
    mount_tmpfs mntB
    cp "$F/src.qcow2" A.qcow2
    cp "$F/src.qcow2" B.qcow2
}

teardown() {
    kill_daemons
    local m
    for m in "${MOUNTS[@]}"; do
        if mountpoint -q "$m"; then
            umount "$m" || umount -l "$m" || true
        fi
    done
}

# mount_tmpfs DIR: a 6 MiB tmpfs at DIR; FAILS (never skips) if refused.
mount_tmpfs() {
    mkdir -p "$1"
    if ! mount -t tmpfs -o size=6M tmpfs "$1" 2>mount.err; then
        fail "cannot mount a 6 MiB tmpfs at $T/$1 ($(cat mount.err)):" \
            "these tests need root (or CAP_SYS_ADMIN) to simulate a full target disk"
        return 1
    fi
    MOUNTS+=("$T/$1")
}

# both_fail MODE: QEMU's job on A.qcow2 into mntA, qbak on B.qcow2 into
# mntB, both incrementals on top of full.qcow2; both must fail, qbak with
# exit 1 and a message that names the lack of space.
both_fail() {
    local mode=$1
    # shellcheck disable=SC2046
    run --separate-stderr python3 "$QEMU_JOB" A.qcow2 mntA/inc.qcow2 $(mode_args "$1") \
        --bitmap b0 --create --backing "$F/full.qcow2"
    [ "$status" -ne 0 ] || fail "QEMU's job did not fail on a full disk: $output"
    [[ $output == *"No space left"* ]] || fail "QEMU's job failed otherwise: $output $stderr"
    # shellcheck disable=SC2046
    run --separate-stderr qbak copy B.qcow2 mntB/inc.qcow2 $(mode_args "$mode") \
        --bitmap b0 --backing "$F/full.qcow2" --json
    [ "$status" -eq 1 ] || fail "qbak: exit $status, expected 1: $stderr"
    [[ $stderr == *"No space left"* ]] || fail "qbak's message does not name the full disk: $stderr"
    [ ! -e mntB/inc.qcow2 ] || fail "qbak renamed a failed target into place"
    printf '%s\n' "$output" >B.out.json
}

# same_bitmaps: b0 of A (after QEMU's job) and of B (after qbak) are equal,
# and both equal the bitmap before the jobs.
same_bitmaps() {
    qemu_bitmap_map A.qcow2 b0 >A.json
    qemu_bitmap_map B.qcow2 b0 >B.json
    python3 "$CHECK" same A.json B.json || fail "qbak's b0 differs from QEMU's"
    python3 "$CHECK" same "$F/before.json" B.json || fail "b0 changed"
}

@test "enospc: incremental (on-success) on a full disk fails like QEMU's job; bitmaps equal" {
    both_fail on-success
    same_bitmaps
}

@test "enospc: bitmap-mode never on a full disk fails like QEMU's job; bitmaps equal" {
    both_fail never
    same_bitmaps
}

@test "enospc: bitmap-mode always on a full disk leaves exactly the clusters missing from TARGET.part" {
    both_fail always
    qemu_bitmap_map B.qcow2 b0 >B.json
    if [ -e mntB/inc.qcow2.part ] && qemu-img check -q mntB/inc.qcow2.part >/dev/null 2>&1; then
        qemu-img map --output=json mntB/inc.qcow2.part >part.map.json
        python3 "$CHECK" missing "$F/before.json" B.json part.map.json \
            --cluster 65536 --granularity "$(qemu_granularity B.qcow2 b0)"
    else
        python3 "$CHECK" same "$F/before.json" B.json
    fi
    local left dirty
    dirty=$(jq -r '.bitmap["dirty-bytes"]' B.out.json)
    left=$(jq '[.[] | select(.type % 2 == 1) | .length] | add // 0' B.json)
    [ "$dirty" = "$left" ] || fail "--json says $dirty dirty bytes, QEMU counts $left"
}

@test "enospc: after space is freed, the same incremental again completes the backup" {
    both_fail on-success
    mount -o remount,size=64M "$T/mntB"
    run --separate-stderr qbak copy B.qcow2 mntB/inc.qcow2 --sync incremental --bitmap b0 \
        --backing "$F/full.qcow2"
    [ "$status" -eq 0 ] || fail "retry: exit $status: $stderr"
    [ ! -e mntB/inc.qcow2.part ] || fail "the retry left inc.qcow2.part"
    run --separate-stderr qemu-img compare mntB/inc.qcow2 B.qcow2
    [ "$status" -eq 0 ] || fail "the backup differs from the source: $output $stderr"
    qemu_bitmap_map B.qcow2 b0 >B.json
    python3 "$CHECK" cleared B.json
}

@test "enospc: after space is freed, --resume (always) completes the backup" {
    both_fail always
    mount -o remount,size=64M "$T/mntB"
    # --resume continues a TARGET.part; without one (it could not be
    # finished on the full disk, and b0 was left unchanged) the same
    # command again starts afresh
    local resume=()
    [ ! -e mntB/inc.qcow2.part ] || resume=(--resume)
    run --separate-stderr qbak copy B.qcow2 mntB/inc.qcow2 --sync bitmap --bitmap-mode always \
        --bitmap b0 --backing "$F/full.qcow2" "${resume[@]}"
    [ "$status" -eq 0 ] || fail "retry ${resume[*]}: exit $status: $stderr"
    [ ! -e mntB/inc.qcow2.part ] || fail "the retry left inc.qcow2.part"
    run --separate-stderr qemu-img compare mntB/inc.qcow2 B.qcow2
    [ "$status" -eq 0 ] || fail "the backup differs from the source: $output $stderr"
    run --separate-stderr qemu-img check mntB/inc.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img check: $output $stderr"
    qemu_bitmap_map B.qcow2 b0 >B.json
    python3 "$CHECK" cleared B.json
}

@test "enospc: the message says how much space the backup needs and how much is free; no partial is left" {
    run --separate-stderr qbak copy B.qcow2 mntB/inc.qcow2 --sync incremental --bitmap b0 \
        --backing "$F/full.qcow2"
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    check_error_line
    [[ $stderr == *"No space left"*"needs up to "*"MiB"*"'mntB' has "*" free"* ]] ||
        fail "the message does not give the sizes: $stderr"
    # on-success keeps nothing: no file is left on the full disk
    [ -z "$(ls -A mntB)" ] || fail "files left on the full disk: $(ls -A mntB)"
}
