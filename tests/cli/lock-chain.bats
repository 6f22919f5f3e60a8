#!/usr/bin/env bats
# Locks on the backing chain: qbak reads backing files holding QEMU's
# consistent-read permission and not sharing write or resize, as QEMU's own
# backing links do.  A chain whose base is open read-write elsewhere (as
# the top of a running VM) is refused with exit 4; a base that a running VM
# merely reads through its overlay is not.  A qcow v1 image stays locked
# although libqcow reads it through a descriptor of its own.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_oracle qemu-storage-daemon qemu-system-common
    require_qbak
}

setup() {
    setup_tmpdir
    qemu-img create -q -f qcow2 base.qcow2 16M
    qemu-io -f qcow2 -c 'write -P 1 0 1M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
}

teardown() {
    kill_daemons
}

# qsd LOCKED-IMG ARGS...: a qemu-storage-daemon in the background, as a
# running VM; returns once LOCKED-IMG is locked (qemu-img info without -U
# fails).
qsd() {
    local img=$1 pid
    shift
    qemu-storage-daemon "$@" </dev/null >qsd.log 2>&1 3>&- &
    pid=$!
    track_pid "$pid"
    for _ in $(seq 200); do
        [ -d "/proc/$pid" ] || fail "qemu-storage-daemon exited: $(cat qsd.log)"
        qemu-img info "$img" >/dev/null 2>&1 || return 0
        sleep 0.05
    done
    fail "qemu-storage-daemon did not lock $img within 10 s"
}

@test "a base image open read-write elsewhere makes reading the chain exit 4" {
    qsd base.qcow2 --blockdev driver=file,node-name=f,filename=base.qcow2 \
        --blockdev driver=qcow2,node-name=q,file=f
    run --separate-stderr qbak map top.qcow2
    [ "$status" -eq 4 ] || fail "exit $status: $stderr"
    [[ $stderr == "qbak: "*base.qcow2* ]] || fail "$stderr"
    run --separate-stderr qbak map -U top.qcow2
    [ "$status" -eq 0 ] || fail "-U: exit $status: $stderr"
}

@test "a base that a running VM reads through its overlay can be read" {
    qsd top.qcow2 \
        --blockdev driver=file,node-name=bf,filename=base.qcow2,read-only=on \
        --blockdev driver=qcow2,node-name=b,file=bf,read-only=on \
        --blockdev driver=file,node-name=tf,filename=top.qcow2 \
        --blockdev driver=qcow2,node-name=t,file=tf,backing=b
    run --separate-stderr qbak map base.qcow2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    # ... but its overlay, open read-write, is refused
    run --separate-stderr qbak map top.qcow2
    [ "$status" -eq 4 ] || fail "top: exit $status: $stderr"
}

# qbak_at_last_read ARGS...: run `qbak ARGS...` in the background, stopped
# by a fail point at its last read, when every layer is open and locked;
# its pid in QBAK_PID.
qbak_at_last_read() {
    local reads
    QBAK_FAILPOINT_COUNT=$T/count "$QBAK" "$@" >/dev/null
    reads=$(awk '$1 == "read" { print $2 }' "$T/count")
    [ "$reads" -gt 0 ]
    QBAK_FAILPOINT=read:$reads:stop "$QBAK" "$@" >/dev/null 2>&1 &
    QBAK_PID=$!
    for _ in $(seq 100); do
        [ "$(ps -o stat= -p "$QBAK_PID" 2>/dev/null | cut -c1)" = T ] && return 0
        sleep 0.05
    done
    fail "qbak did not stop"
}

# qemu_write_refused IMG: qemu-io cannot write IMG, for a lock; then the
# stopped qbak goes on.
qemu_write_refused() {
    run --separate-stderr qemu-io -c 'write 0 512' "$1"
    kill -CONT "$QBAK_PID"
    wait "$QBAK_PID" || true
    [ "$status" -ne 0 ] || fail "qemu-io wrote to $1 while qbak was reading it"
    [[ $stderr == *"lock"* ]] || fail "$stderr"
}

@test "while qbak reads a chain, QEMU cannot open its base read-write" {
    qbak_at_last_read map top.qcow2
    qemu_write_refused base.qcow2
}

# libqcow opens a qcow v1 file again by name: the locked descriptor must
# stay open all the same.
@test "while qbak reads a qcow v1 image, QEMU cannot open it read-write" {
    qemu-img create -q -f qcow old.qcow 16M
    qemu-io -f qcow -c 'write -P 1 0 1M' old.qcow >/dev/null
    qbak_at_last_read map old.qcow
    qemu_write_refused old.qcow
}
