#!/usr/bin/env bats
# QEMU-compatible image locking: qbak takes QEMU's own OFD locks,
# so a running QEMU and qbak never use an image against each other's will.
#   - While qemu-storage-daemon has the image open read-write, every qbak
#     write command and every read command without -U exits 4 with one line
#     naming the image; with -U the read commands work.
#   - While qbak holds an image (stopped by the fail point write:1:stop, see
#     tests/FAILPOINTS.md), QEMU's tools get QEMU's own lock error; after
#     SIGCONT qbak finishes.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
}

setup() {
    setup_tmpdir
    QBAK_PID=
}

teardown() {
    # a qbak stopped by a fail point: let it go, then end it
    if [ -n "$QBAK_PID" ] && tr '\0' ' ' <"/proc/$QBAK_PID/cmdline" 2>/dev/null |
            grep -q qbak; then
        kill -CONT "$QBAK_PID" 2>/dev/null || true
        kill "$QBAK_PID" 2>/dev/null || true
        wait "$QBAK_PID" 2>/dev/null || true
    fi
    kill_daemons
}

# two_bitmap_image IMG: 8 MiB, bitmaps b0 and b1 (4k), some guest data.
two_bitmap_image() {
    qemu-img create -q -f qcow2 "$1" 8M
    qemu-img bitmap --add "$1" b0
    qemu-img bitmap --add -g 4k "$1" b1
    qemu_io_fmt qcow2 "$1" 'write -P 1 0 1M'
}

# hold IMG [raw]: qemu-storage-daemon opens IMG read-write in the
# background, as a running VM would.  With "raw", the format node is raw,
# with a writable NBD export as its user (a raw node without users takes no
# permissions, so no locks): the same locks on the file, but the qcow2
# metadata is left alone.
hold() {
    local img=$1 pid more=()
    if [ "${2:-}" = raw ]; then
        more=(--blockdev driver=raw,node-name=q,file=f
              --nbd-server "addr.type=unix,addr.path=$T/qsd.sock"
              --export type=nbd,id=e,node-name=q,writable=on)
    else
        more=(--blockdev driver=qcow2,node-name=q,file=f)
    fi
    qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$img" \
        "${more[@]}" </dev/null >"$img.qsd.log" 2>&1 3>&- &
    pid=$!
    track_pid "$pid"
    # Wait until QEMU holds its locks (a loaded machine may take a while).
    for _ in $(seq 200); do
        [ -d "/proc/$pid" ] || fail "qemu-storage-daemon exited: $(cat "$img.qsd.log")"
        qemu-img info "$img" >/dev/null 2>&1 || return 0
        sleep 0.05
    done
    fail "qemu-storage-daemon did not lock $img within 10 s"
}

# locked QBAK-ARGS...: qbak exits 4 with one "qbak: " line naming img.qcow2,
# and the image is unchanged.
locked() {
    local before
    two_bitmap_image img.qcow2
    hold img.qcow2
    before=$(sha256sum <img.qcow2)
    run --separate-stderr qbak "$@"
    [ "$status" -eq 4 ] || fail "qbak $*: exit $status, expected 4: $stderr"
    check_error_line
    [[ $stderr == *img.qcow2* ]] || fail "message does not name the image: $stderr"
    [ "$(sha256sum <img.qcow2)" = "$before" ] || fail "qbak $* changed the locked image"
}

@test "lock: bitmap add on an image QEMU has open exits 4" {
    locked bitmap add img.qcow2 x
}

@test "lock: bitmap remove on an image QEMU has open exits 4" {
    locked bitmap remove img.qcow2 b0
}

@test "lock: bitmap clear on an image QEMU has open exits 4" {
    locked bitmap clear img.qcow2 b0
}

@test "lock: bitmap enable on an image QEMU has open exits 4" {
    locked bitmap enable img.qcow2 b0
}

@test "lock: bitmap disable on an image QEMU has open exits 4" {
    locked bitmap disable img.qcow2 b0
}

@test "lock: bitmap merge on an image QEMU has open exits 4" {
    locked bitmap merge img.qcow2 b0 b1
}

@test "lock: info without -U on an image QEMU has open exits 4" {
    locked info img.qcow2
}

@test "lock: map without -U on an image QEMU has open exits 4" {
    locked map img.qcow2
}

@test "lock: bitmap list without -U on an image QEMU has open exits 4" {
    locked bitmap list img.qcow2
}

@test "lock: bitmap dump without -U on an image QEMU has open exits 4" {
    locked bitmap dump img.qcow2 b0
}

@test "lock: info -U reads an image QEMU has open" {
    two_bitmap_image img.qcow2
    hold img.qcow2
    run --separate-stderr qbak info -U --json img.qcow2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq -r '.["virtual-size"]' <<<"$output")" = 8388608 ] ||
        fail "virtual-size is not 8388608: $output"
}

@test "lock: map -U reads an image QEMU has open" {
    two_bitmap_image img.qcow2
    hold img.qcow2
    run --separate-stderr qbak map -U --json img.qcow2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    printf '%s\n' "$output" >qbak-map.json
    qemu-img map -U --output=json -f qcow2 img.qcow2 >qemu-map.json
    python3 "$COMPARE_MAP" qbak-map.json qemu-map.json
}

@test "lock: bitmap list -U reads an image QEMU has open (bitmaps shown in use)" {
    two_bitmap_image img.qcow2
    hold img.qcow2
    run --separate-stderr qbak bitmap list -U --json img.qcow2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq -c '[.[] | [.name, (.flags | index("in-use") != null)]]' <<<"$output")" = '[["b0",true],["b1",true]]' ] ||
        fail "qbak bitmap list -U: $output"
}

@test "lock: bitmap dump -U reads an image QEMU has open" {
    # A qcow2 node marks every bitmap in_use on open, and an in_use bitmap
    # has no contents to dump (exit 3, by design).  A raw node with a
    # writable user takes the same locks on the file without touching the
    # qcow2 metadata, so the bitmap stays consistent.
    two_bitmap_image img.qcow2
    run --separate-stderr qbak bitmap dump --json img.qcow2 b0
    [ "$status" -eq 0 ] || fail "unlocked dump: exit $status: $stderr"
    before=$output
    hold img.qcow2 raw
    run --separate-stderr qbak bitmap dump img.qcow2 b0
    [ "$status" -eq 4 ] || fail "the raw holder does not lock the image (dump exit $status)"
    run --separate-stderr qbak bitmap dump -U --json img.qcow2 b0
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$output" = "$before" ] || fail "dump -U differs from the dump before: $output"
}

# qbak_stopped QBAK-ARGS...: start qbak with the fail point write:1:stop in
# the background and wait until it is stopped (state T) holding its locks.
qbak_stopped() {
    # exec, so that $! is qbak itself and not a subshell running the qbak
    # function
    (export QBAK_FAILPOINT=write:1:stop
     # shellcheck disable=SC2086
     exec ${VG:-} "$QBAK" "$@") </dev/null >qbak.out 2>qbak.err 3>&- &
    QBAK_PID=$!
    for _ in $(seq 200); do
        [[ $(ps -o stat= -p "$QBAK_PID") == T* ]] && return 0
        [ -d "/proc/$QBAK_PID" ] || fail "qbak exited before its fail point: $(cat qbak.err)"
        sleep 0.05
    done
    fail "qbak did not stop at write:1:stop within 10 s"
}

# qbak_finishes: SIGCONT the stopped qbak; it must exit 0.
qbak_finishes() {
    local rc=0
    kill -CONT "$QBAK_PID"
    wait "$QBAK_PID" || rc=$?
    QBAK_PID=
    [ "$rc" -eq 0 ] || fail "qbak exit $rc after SIGCONT: $(cat qbak.err)"
}

@test "lock: qemu-img info fails with QEMU's lock error while qbak bitmap add holds the image" {
    two_bitmap_image img.qcow2
    qbak_stopped bitmap add img.qcow2 x
    run --separate-stderr qemu-img info img.qcow2
    [ "$status" -ne 0 ] || fail "qemu-img info succeeded on an image qbak is writing"
    [[ $stderr == *"Failed to get"*"lock"* ]] || fail "not QEMU's lock error: $stderr"
    qbak_finishes
    [ "$(qemu_bitmap_names img.qcow2 | tr '\n' ' ')" = "b0 b1 x " ]
}

@test "lock: qemu-io fails with QEMU's lock error while qbak bitmap add holds the image" {
    two_bitmap_image img.qcow2
    qbak_stopped bitmap add img.qcow2 x
    run --separate-stderr qemu-io -c 'read 0 512' img.qcow2
    [ "$status" -ne 0 ] || fail "qemu-io succeeded on an image qbak is writing"
    [[ $stderr == *"Failed to get"*"lock"* ]] || fail "not QEMU's lock error: $stderr"
    qbak_finishes
    [ "$(qemu_bitmap_names img.qcow2 | tr '\n' ' ')" = "b0 b1 x " ]
}

@test "lock: a second qbak writer exits 4 while qbak bitmap add holds the image" {
    two_bitmap_image img.qcow2
    qbak_stopped bitmap add img.qcow2 x
    run --separate-stderr qbak bitmap add img.qcow2 y
    [ "$status" -eq 4 ] || fail "exit $status, expected 4: $stderr"
    check_error_line
    qbak_finishes
    [ "$(qemu_bitmap_names img.qcow2 | tr '\n' ' ')" = "b0 b1 x " ]
}

@test "lock: qemu-img info -U still reads while qbak bitmap add holds the image" {
    two_bitmap_image img.qcow2
    qbak_stopped bitmap add img.qcow2 x
    run --separate-stderr qemu-img info -U img.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img info -U: exit $status: $stderr"
    qbak_finishes
}
