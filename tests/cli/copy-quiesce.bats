#!/usr/bin/env bats
# qbak copy --freeze-cmd/--thaw-cmd: the freeze runs before the
# point in time, the thaw right after; once the freeze was started the thaw
# runs exactly once, whatever happens (freeze failed or timed out, backup
# failed, interrupted).  A failed or timed-out freeze aborts the backup
# before any copy (exit 1); a failed thaw is exit 1 but keeps the completed
# backup.  The hooks append their name to hooks.log.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    mkimage src.qcow2 --size 16M --fill 4M --bitmap b0 --dirty 2% --seed 3
}

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
    QBAK_PID=
    cp "$F/src.qcow2" src.qcow2
    # hook.sh NAME [EXIT [SLEEP]]: log NAME (and, for the thaw, whether the
    # target was already renamed into place), sleep, exit with EXIT
    cat >hook.sh <<'EOF'
#!/bin/sh
echo "$1" >>"$HOOK_DIR/hooks.log"
[ -e "$HOOK_DIR/t.qcow2" ] && echo "$1: target already in place" >>"$HOOK_DIR/hooks.err"
[ -n "$3" ] && sleep "$3"
exit "${2:-0}"
EOF
    export HOOK_DIR=$T
}

teardown() {
    if [ -n "${QBAK_PID:-}" ] && [ -r "/proc/$QBAK_PID/cmdline" ] &&
            tr '\0' ' ' <"/proc/$QBAK_PID/cmdline" | grep -q qbak; then
        kill -KILL "$QBAK_PID" 2>/dev/null || true
        wait "$QBAK_PID" 2>/dev/null || true
    fi
    kill_daemons
}

# hooks_were LINES...: hooks.log holds exactly these lines, and no hook saw
# the target in place.
hooks_were() {
    local want got
    want=$(printf '%s\n' "$@")
    got=$(cat hooks.log 2>/dev/null || true)
    [ "$got" = "$want" ] || fail "hooks ran as [$(echo $got)], expected [$(echo $want)]"
    [ ! -s hooks.err ] || fail "$(cat hooks.err)"
}

# copy_hooked FREEZE-ARGS THAW-ARGS [qbak options...]: `qbak copy --job
# src=src.qcow2,target=t.qcow2 --sync full` with hook.sh as freeze (with
# FREEZE-ARGS) and thaw (with THAW-ARGS).
copy_hooked() {
    local fa=$1 ta=$2
    shift 2
    run --separate-stderr qbak copy --job src=src.qcow2,target=t.qcow2 --sync full \
        --freeze-cmd "sh ./hook.sh freeze $fa" --thaw-cmd "sh ./hook.sh thaw $ta" "$@"
}

@test "quiesce: a normal run calls freeze, then thaw, once each, before the target is in place" {
    copy_hooked "" ""
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    hooks_were freeze thaw
    same_disk t.qcow2 src.qcow2
}

@test "quiesce: a failing freeze aborts before any copy (exit 1); the thaw runs once" {
    copy_hooked "1" ""
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    hooks_were freeze thaw
    [ ! -e t.qcow2 ] || fail "a target was made after a failed freeze"
    [ ! -e t.qcow2.part ] || fail "t.qcow2.part left after a failed freeze"
}

@test "quiesce: a freeze hanging past --freeze-timeout 1 is killed after 1 s (exit 1); the thaw runs once" {
    local t0 t1
    t0=$(date +%s%N)
    copy_hooked "0 30" "" --freeze-timeout 1
    t1=$(date +%s%N)
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    hooks_were freeze thaw
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "a target was made after a timed-out freeze"
    local ms=$(((t1 - t0) / 1000000))
    [ "$ms" -lt 5000 ] || fail "took $ms ms with --freeze-timeout 1"
    [ "$ms" -ge 1000 ] || fail "the freeze was killed after $ms ms, before its 1 s timeout"
}

@test "quiesce: a freeze that finishes within --freeze-timeout is not killed" {
    # 0.7 s of a 1 s timeout, three times (a timeout measured in whole
    # seconds of the clock would kill it most of the time)
    local k
    for k in 1 2 3; do
        rm -f hooks.log t.qcow2
        copy_hooked "0 0.7" "" --freeze-timeout 1
        [ "$status" -eq 0 ] || fail "run $k: exit $status: $stderr"
        hooks_were freeze thaw
    done
}

@test "quiesce: a failing thaw is exit 1, but the completed backup is kept" {
    copy_hooked "" "1"
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    hooks_were freeze thaw
    [ -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "the backup was not kept"
    same_disk t.qcow2 src.qcow2
    run --separate-stderr qemu-img check t.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img check t.qcow2: $output $stderr"
}

@test "quiesce: whichever I/O call fails, the thaw runs exactly once after the freeze" {
    # count the calls of a clean run, then fail each in turn: a failure
    # before the freeze (preparing) runs no hook; any later one, both once
    QBAK_FAILPOINT_COUNT=count qbak copy --job src=src.qcow2,target=t0.qcow2 --sync full \
        --freeze-cmd "true" --thaw-cmd "true"
    local count n rc bad=()
    count=$(awk '$1 == "any" { print $2 }' count)
    [ "$count" -gt 0 ] || fail "no I/O counted"
    for n in $(seq 1 "$count"); do
        rm -f hooks.log hooks.err t.qcow2 t.qcow2.part
        rc=0
        QBAK_FAILPOINT="any:$n:eio" qbak copy --job src=src.qcow2,target=t.qcow2 --sync full \
            --freeze-cmd "sh ./hook.sh freeze" --thaw-cmd "sh ./hook.sh thaw" \
            >/dev/null 2>err.txt || rc=$?
        local got
        got=$(tr '\n' ' ' <hooks.log 2>/dev/null || true)
        case "$got" in
        "") [ ! -e t.qcow2 ] || bad+=("N=$n: no hook ran, yet the backup completed") ;;
        "freeze thaw ") ;;
        *) bad+=("N=$n: exit $rc, hooks ran as [$got]") ;;
        esac
        [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] || bad+=("N=$n: exit $rc: $(cat err.txt)")
    done
    if [ "${#bad[@]}" -gt 0 ]; then
        printf '%s\n' "${bad[@]}" >&2
        fail "${#bad[@]} of $count fault points"
    fi
}

@test "quiesce: a backup failing in its copy (fail point) still ran the thaw once; no target" {
    # the last write to the target's data: after the thaw, during the copy
    QBAK_FAILPOINT_COUNT=count qbak copy --job src=src.qcow2,target=t0.qcow2 --sync full \
        --freeze-cmd "true" --thaw-cmd "true"
    local w
    w=$(awk '$1 == "write" { print $2 }' count)
    QBAK_FAILPOINT="write:$((w / 2)):eio" copy_hooked "" ""
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    hooks_were freeze thaw
    [ ! -e t.qcow2 ] || fail "a failed backup was renamed into place"
}

@test "quiesce: SIGINT during the copy of a large image: exit 130, the thaw ran exactly once" {
    qemu-img create -q -f qcow2 big.qcow2 4G
    qemu_io_fmt qcow2 big.qcow2 'w -P 0x5a 0 384M' 'w -P 0x33 1G 384M'
    local try
    for try in 1 2 3; do
        rm -f hooks.log hooks.err t.qcow2 t.qcow2.part
        ${VG:-} "$QBAK" copy --job src=big.qcow2,target=t.qcow2 --sync full \
            --freeze-cmd "sh ./hook.sh freeze" --thaw-cmd "sh ./hook.sh thaw" \
            >out.txt 2>err.txt 3>&- &
        QBAK_PID=$!
        sleep 0.25
        kill -INT "$QBAK_PID" 2>/dev/null || true
        status=0
        wait "$QBAK_PID" || status=$?
        QBAK_PID=
        [ "$status" -eq 0 ] || break
        # finished before the signal: more data
        qemu_io_fmt qcow2 big.qcow2 "w -P 0x4$try $((2 + try))G 1G"
    done
    [ "$status" -eq 130 ] || fail "exit $status, expected 130: $(cat err.txt)"
    hooks_were freeze thaw
    [ ! -e t.qcow2 ] || fail "an interrupted backup was renamed into place"
}

@test "quiesce: SIGINT while the freeze runs: the thaw still runs once; no target" {
    ${VG:-} "$QBAK" copy --job src=src.qcow2,target=t.qcow2 --sync full \
        --freeze-cmd "sh ./hook.sh freeze 0 1" --thaw-cmd "sh ./hook.sh thaw" \
        >out.txt 2>err.txt 3>&- &
    QBAK_PID=$!
    sleep 0.3
    kill -INT "$QBAK_PID"
    status=0
    wait "$QBAK_PID" || status=$?
    QBAK_PID=
    [ "$status" -eq 130 ] || [ "$status" -eq 1 ] || fail "exit $status: $(cat err.txt)"
    hooks_were freeze thaw
    [ ! -e t.qcow2 ] || fail "an interrupted backup was renamed into place"
}

@test "quiesce: --freeze-cmd without --thaw-cmd is a usage error (exit 2)" {
    run --separate-stderr qbak copy --job src=src.qcow2,target=t.qcow2 --sync full \
        --freeze-cmd "sh ./hook.sh freeze"
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    [[ $stderr == "qbak: "* ]] || fail "stderr: $stderr"
    [ ! -e hooks.log ] || fail "a hook ran: $(cat hooks.log)"
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "left a target"
}

@test "quiesce: --thaw-cmd without --freeze-cmd is a usage error (exit 2)" {
    run --separate-stderr qbak copy --job src=src.qcow2,target=t.qcow2 --sync full \
        --thaw-cmd "sh ./hook.sh thaw"
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    [ ! -e hooks.log ] || fail "a hook ran: $(cat hooks.log)"
}

@test "quiesce: what the hooks print goes to stderr; stdout holds one JSON document" {
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync full \
        --freeze-cmd 'echo frozen; echo frozen-err >&2' --thaw-cmd 'echo thawed' --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    local docs
    docs=$(printf '%s\n' "$output" | jq -s length) || fail "stdout is not JSON: $output"
    [ "$docs" -eq 1 ] || fail "stdout holds $docs JSON documents: $output"
    printf '%s\n' "$output" | jq -e '.target == "t.qcow2" and .status == "ok"' >/dev/null ||
        fail "unexpected JSON: $output"
    [ "$(printf '%s\n' "$stderr" | grep -cx 'frozen')" -eq 1 ] || fail "no 'frozen' line on stderr: $stderr"
    [ "$(printf '%s\n' "$stderr" | grep -cx 'frozen-err')" -eq 1 ] || fail "no 'frozen-err' line on stderr: $stderr"
    [ "$(printf '%s\n' "$stderr" | grep -cx 'thawed')" -eq 1 ] || fail "no 'thawed' line on stderr: $stderr"
    same_disk t.qcow2 src.qcow2
}

@test "quiesce: with hooks that print, a successful run without --json prints nothing on stdout" {
    run --separate-stderr qbak copy --job src=src.qcow2,target=t.qcow2 --sync full \
        --freeze-cmd 'echo frozen' --thaw-cmd 'echo thawed'
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ -z "$output" ] || fail "stdout is not empty (cron would mail it): $output"
    [ "$(printf '%s\n' "$stderr" | grep -cxE 'frozen|thawed')" -eq 2 ] || fail "hook lines not on stderr: $stderr"
}
