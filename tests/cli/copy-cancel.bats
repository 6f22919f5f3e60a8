#!/usr/bin/env bats
# qbak copy interrupted by SIGINT or SIGTERM midway through a large copy:
# exit 130, and, as after QEMU's job-cancel, the bitmap ends as its mode
# says for a failure: on-success and never unchanged, always exactly the
# clusters not copied (checked against qemu-img map of TARGET.part and
# qemu-nbd + nbdinfo's view of the bitmap);
# --resume then finishes an always job copying only what was left.

bats_require_minimum_version 1.5.0
load helpers

CHECK=$QBAK_CLI_TESTDIR/copy-faults-check.py
G=$((1 << 30))
M=$((1 << 20))

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    # big.qcow2: 4 GiB virtual, 768 MiB of guest data written after b0 was
    # added, so all of it is dirty (copying it takes ~0.5 s here).
    qemu-img create -q -f qcow2 big.qcow2 4G
    qemu-img bitmap --add big.qcow2 b0
    qemu_io_fmt qcow2 big.qcow2 'w -P 0x5a 0 256M' 'w -P 0x33 320M 256M' \
        'w -P 0x77 1G 256M'
}

setup() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    setup_tmpdir
    QBAK_PID=
}

teardown() {
    # a qbak left running by a failed test: only our own child, by pid
    if [ -n "${QBAK_PID:-}" ] && [ -r "/proc/$QBAK_PID/cmdline" ] &&
            tr '\0' ' ' <"/proc/$QBAK_PID/cmdline" | grep -q qbak; then
        kill -KILL "$QBAK_PID" 2>/dev/null || true
        wait "$QBAK_PID" 2>/dev/null || true
    fi
    kill_daemons
}

# prepare [EXTRA]: src.qcow2 (a copy of big.qcow2, plus EXTRA GiB more
# guest data at 2 GiB, also dirty in b0), pristine.qcow2 with the same guest
# data, and b0's dump before the job in before.json.
prepare() {
    local extra=${1:-0}
    rm -f src.qcow2 pristine.qcow2 t.qcow2 t.qcow2.part
    cp "$F/big.qcow2" src.qcow2
    if [ "$extra" -gt 0 ]; then
        qemu_io_fmt qcow2 src.qcow2 "w -P 0x4$extra $((2 * G)) $((extra * G))"
    fi
    cp src.qcow2 pristine.qcow2
    qemu_bitmap_map src.qcow2 b0 >before.json
}

# interrupt SIG COPY-ARGS...: run `qbak copy src.qcow2 t.qcow2 COPY-ARGS...
# --json` in the background, send SIG after 0.2 s, wait; sets $status,
# $output (the JSON on stdout) and $stderr.  If the job had already
# finished (exit 0), start again from a source with more dirty data.
interrupt() {
    local sig=$1 extra
    shift
    for extra in 0 1 2; do
        [ "$extra" -eq 0 ] || prepare "$extra"
        ${VG:-} "$QBAK" copy src.qcow2 t.qcow2 "$@" --json >out.json 2>err.txt 3>&- &
        QBAK_PID=$!
        sleep 0.2
        kill -s "$sig" "$QBAK_PID" 2>/dev/null || true
        status=0
        wait "$QBAK_PID" || status=$?
        QBAK_PID=
        output=$(cat out.json)
        stderr=$(cat err.txt)
        [ "$status" -eq 0 ] || return 0
    done
    fail "the copy finished before SIG$sig every time, even with 2 GiB more data"
}

# check_cancelled: exit 130, status "cancelled", no TARGET, a TARGET.part
# that qemu-img check finds clean, the source's guest data unchanged.
check_cancelled() {
    [ "$status" -eq 130 ] || fail "exit $status, expected 130: $stderr"
    [ "$(jq -r .status out.json)" = cancelled ] ||
        fail "--json status is not \"cancelled\": $(cat out.json)"
    [ ! -e t.qcow2 ] || fail "t.qcow2 was renamed into place after a cancel"
    run --separate-stderr qemu-img compare -f qcow2 -F qcow2 src.qcow2 pristine.qcow2
    [ "$status" -eq 0 ] || fail "the source's guest data changed: $output $stderr"
    run --separate-stderr qemu-img check src.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img check src.qcow2: $output $stderr"
}

# check_not_copied: bitmap-mode always after a cancel: --json's dirty-bytes
# is clusters-left x cluster-size, and b0 (QEMU's view) is exactly the
# clusters that qemu-img map does not show allocated in t.qcow2.part.
check_not_copied() {
    local json left cs dirty
    json=$(cat out.json)
    left=$(jq -r '.["clusters-left"]' <<<"$json")
    cs=$(jq -r '.["cluster-size"]' <<<"$json")
    dirty=$(jq -r '.bitmap["dirty-bytes"]' <<<"$json")
    [ "$(jq -r .bitmap.state <<<"$json")" = not-copied ] ||
        fail "--json bitmap state: $(jq -c .bitmap <<<"$json")"
    [ "$left" -gt 0 ] || fail "clusters-left is $left after a cancel midway"
    [ "$dirty" -eq $((left * cs)) ] ||
        fail "bitmap dirty-bytes $dirty != clusters-left $left x cluster-size $cs"
    [ -e t.qcow2.part ] || fail "no t.qcow2.part after a cancel"
    run --separate-stderr qemu-img check t.qcow2.part
    [ "$status" -eq 0 ] || fail "qemu-img check t.qcow2.part: $output $stderr"
    qemu-img map --output=json t.qcow2.part >part.map.json
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" missing before.json after.json part.map.json --cluster "$cs" \
        --granularity "$(qemu_granularity src.qcow2 b0)"
    [ "$(jq '[.[] | select(.type % 2 == 1) | .length] | add // 0' after.json)" -eq "$dirty" ] ||
        fail "QEMU counts $(jq '[.[] | select(.type % 2 == 1) | .length] | add // 0' after.json) dirty bytes, --json says $dirty"
}

# check_unchanged: b0 (QEMU's view) equals its dump before the job.
check_unchanged() {
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" same before.json after.json
}

@test "cancel: SIGINT with bitmap-mode always exits 130, bitmap holds exactly the clusters not copied" {
    prepare
    interrupt INT --sync bitmap --bitmap-mode always --bitmap b0 --no-backing
    check_cancelled
    check_not_copied
}

@test "cancel: SIGTERM with bitmap-mode always exits 130, bitmap holds exactly the clusters not copied" {
    prepare
    interrupt TERM --sync bitmap --bitmap-mode always --bitmap b0 --no-backing
    check_cancelled
    check_not_copied
}

@test "cancel: --resume after SIGINT (always) copies only what was left; the target equals the source" {
    prepare
    interrupt INT --sync bitmap --bitmap-mode always --bitmap b0 --no-backing
    check_cancelled
    local left cs
    left=$(jq -r '.["clusters-left"]' out.json)
    cs=$(jq -r '.["cluster-size"]' out.json)
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync bitmap --bitmap-mode always \
        --bitmap b0 --no-backing --resume --json
    [ "$status" -eq 0 ] || fail "--resume: exit $status: $stderr"
    [ "$(jq -r .status <<<"$output")" = ok ] || fail "--resume: $output"
    local copied
    copied=$(jq -r '.["bytes-copied"]' <<<"$output")
    [ "$copied" -le $((left * cs)) ] ||
        fail "--resume copied $copied bytes, more than the $left clusters left ($((left * cs)) bytes)"
    [ "$copied" -gt 0 ] || fail "--resume copied nothing, $left clusters were left"
    [ -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "t.qcow2 not in place after --resume"
    run --separate-stderr qemu-img compare t.qcow2 src.qcow2
    [ "$status" -eq 0 ] || fail "the resumed target differs from the source: $output $stderr"
    run --separate-stderr qemu-img check t.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img check t.qcow2: $output $stderr"
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" cleared after.json
}

@test "cancel: SIGINT with incremental (on-success) exits 130, bitmap unchanged" {
    prepare
    interrupt INT --sync incremental --bitmap b0 --no-backing
    check_cancelled
    [ "$(jq -r .bitmap.state out.json)" = unchanged ] ||
        fail "--json bitmap: $(jq -c .bitmap out.json)"
    check_unchanged
}

@test "cancel: SIGTERM with incremental (on-success) exits 130, bitmap unchanged" {
    prepare
    interrupt TERM --sync incremental --bitmap b0 --no-backing
    check_cancelled
    check_unchanged
}

@test "cancel: SIGINT with bitmap-mode never exits 130, bitmap unchanged" {
    prepare
    interrupt INT --sync bitmap --bitmap-mode never --bitmap b0 --no-backing
    check_cancelled
    check_unchanged
}

@test "cancel: after SIGINT (on-success), the same command again completes the backup" {
    prepare
    interrupt INT --sync incremental --bitmap b0 --no-backing
    check_cancelled
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync incremental --bitmap b0 --no-backing
    [ "$status" -eq 0 ] || fail "rerun: exit $status: $stderr"
    [ ! -e t.qcow2.part ] || fail "the rerun left t.qcow2.part"
    run --separate-stderr qemu-img compare t.qcow2 src.qcow2
    [ "$status" -eq 0 ] || fail "the target differs from the source: $output $stderr"
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" cleared after.json
}
