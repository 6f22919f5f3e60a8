#!/usr/bin/env bats
# Crash safety of qbak's bitmap writes: for add, clear, merge and
# remove, every I/O call qbak makes is in turn made to crash (fail point
# any:N:abort) or fail (any:N:eio), N = 1 .. the number of calls a clean run
# makes (QBAK_FAILPOINT_COUNT; see tests/FAILPOINTS.md).  After each:
#   - qemu-img check finds no corruption (leaked clusters are allowed after a
#     crash: QEMU too frees the old bitmap clusters only after the header
#     commit, so a crash in between leaks them, harmlessly);
#   - the bitmaps as a whole (qemu-img info's directory, in order, and every
#     bitmap's contents as qemu-nbd --bitmap + nbdinfo serve them) are in
#     the old state or the new one, which includes "none is in_use";
#   - the guest data is unchanged (qemu-img compare with the pristine image);
#   - running the command again completes it.
# An eio must make qbak exit 1 with one line on stderr and leave the old
# state, or, when the failed call came after the commit point, exit 0 with
# the new state; nothing else.
#
# The new states are made by `qemu-img bitmap` (the oracle), so a clean qbak
# run is also checked against QEMU.
#
# A fail point costs about twenty processes, all of them qbak or an oracle
# run: the enumeration runs without bats' DEBUG trap and does its polling,
# reading and comparing with bash builtins.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return

    # base.qcow2, 8 MiB: b0 (64k, enabled) and b1 (4k, disabled later) dirty
    # from guest writes, b2 (512 B) dirty from a later write only.
    qemu-img create -q -f qcow2 base.qcow2 8M
    qemu-img bitmap --add base.qcow2 b0
    qemu-img bitmap --add -g 4k base.qcow2 b1
    qemu_io_fmt qcow2 base.qcow2 "write -P 1 0 1M" "write -P 2 3M 64k" \
        "write -z 6M 128k"
    qemu-img bitmap --disable base.qcow2 b1
    qemu-img bitmap --add -g 512 base.qcow2 b2
    qemu_io_fmt qcow2 base.qcow2 "write -P 3 5M 100k" "discard 7M 64k"
    bitmap_state base.qcow2 >old.state

    # the new state of each operation, as QEMU makes it
    new_state_by_qemu add --add -g 512 new
    new_state_by_qemu clear --clear b0
    new_state_by_qemu merge --merge b0 --merge b1 b2
    new_state_by_qemu remove --remove b1
}

teardown_file() {
    kill_daemons
}

setup() {
    setup_tmpdir
    # read -t on a pipe nobody writes: a short sleep that starts no process
    mkfifo "$T/nap"
    exec {NAP_FD}<>"$T/nap"
    # one socket directory per test, reused by every qemu-nbd (unix socket
    # paths are limited to 107 bytes: keep it short)
    NBD_DIR=$(mktemp -d /tmp/qbak-crash.XXXXXX)
}

teardown() {
    kill_daemons
    rm -rf "$NBD_DIR"
}

# new_state_by_qemu OP QEMU-IMG-BITMAP-ARGS... NAME: apply the operation with
# qemu-img bitmap to a copy of base.qcow2, record its state in OP.state.
new_state_by_qemu() {
    local op=$1 n=$(($# - 1))
    shift
    cp base.qcow2 "qemu-$op.qcow2"
    qemu-img bitmap "${@:1:n-1}" "qemu-$op.qcow2" "${@:n}"
    bitmap_state "qemu-$op.qcow2" >"$op.state"
}

# bitmap_state IMG: QEMU's view of all of IMG's bitmaps as text: the bitmaps
# array of qemu-img info (names, order, granularity, flags), then each
# bitmap's nbdinfo map, all exported by one qemu-nbd.  An in_use bitmap
# shows in the flags (and qemu-nbd refuses to export it, which shows too).
bitmap_state() {
    local img=$1 info dir=$NBD_DIR pid name names=() args=() rc=0 map
    # one jq: the compact bitmaps array on the first line, then the names
    info=$(qemu_info "$img" | jq -r '(.["format-specific"].data.bitmaps // []) as $b |
        ($b | tojson), $b[].name') || return
    mapfile -t names <<<"$info"
    echo "${names[0]}"
    names=("${names[@]:1}")
    [ "${#names[@]}" -gt 0 ] || return 0
    for name in "${names[@]}"; do args+=(-B "$name"); done
    if ! qemu-nbd -r -t -f qcow2 "${args[@]}" -k "$dir/s" --pid-file "$dir/pid" \
            --fork "$img" </dev/null 3>&- 2>"$dir/err"; then
        echo "qemu-nbd refused: $(<"$dir/err")"
        return 0
    fi
    read -r pid <"$dir/pid"
    track_pid "$pid"
    for name in "${names[@]}"; do
        # nbdinfo's JSON is deterministic: no need to normalise it
        map=$(nbdinfo --json --map="qemu:dirty-bitmap:$name" \
            "nbd+unix:///?socket=$dir/s") || rc=1
        echo "$name: ${map//$'\n'/}"
    done
    quick_stop "$pid"
    return "$rc"
}

# quick_stop PID: stop_pid for the qemu-nbd this file forks, polling faster
# (it runs a few hundred times); a zombie counts as gone, since pid 1 may
# not reap the reparented daemon.
quick_stop() {
    local pid=$1 stat st k
    kill "$pid" 2>/dev/null || return 0
    for ((k = 0; k < 400; k++)); do
        { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 0
        st=${stat##*) }
        st=${st%% *}
        [ -n "$st" ] && [ "$st" != Z ] || return 0
        read -r -t 0.005 -u "$NAP_FD" || true
    done
    stop_pid "$pid" KILL
}

# no_corruption IMG: qemu-img check finds no corruption; leaks are allowed
# (exit 3 means leaks only, 2 corruption, 1 the check itself failed).
# Prints the problem and returns 1 otherwise.
no_corruption() {
    local out rc=0
    out=$(qemu-img check "$1" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
        echo "qemu-img check exit $rc: ${out//$'\n'/ }"
        return 1
    fi
}

# slurp VAR FILE: the whole of FILE in VAR, without a process.
slurp() {
    IFS= read -r -d '' "$1" <"$2" || true
}

# state_of FILE: ST=old or new when FILE holds exactly the old state or the
# operation's new state (OLD_STATE, NEW_STATE: old.state and OP.state, read
# by crash_enumerate), else ST=neither.
state_of() {
    local now
    slurp now "$1"
    if [ "$now" = "$OLD_STATE" ]; then ST=old
    elif [ "$now" = "$NEW_STATE" ]; then ST=new
    else ST=neither
    fi
}

# crash_enumerate EFFECT OP QBAK-BITMAP-ARGS...: the enumeration described
# at the top of this file, on img.qcow2 (a fresh copy of base.qcow2 for
# every N).  EFFECT is abort or eio; OP names the expected new state.  All
# failures are collected and printed together.
crash_enumerate() {
    local effect=$1 op=$2 n count rc st err msg failures=() seen_old=0 seen_new=0 why
    shift 2
    no_debug_trap
    slurp OLD_STATE "$F/old.state"
    slurp NEW_STATE "$F/$op.state"
    cp "$F/base.qcow2" img.qcow2
    rc=0
    QBAK_FAILPOINT_COUNT=$PWD/count qbak bitmap "$@" >/dev/null 2>err || rc=$?
    [ "$rc" -eq 0 ] || fail "clean run of qbak bitmap $*: exit $rc: $(cat err)"
    count=$(awk '$1 == "any" { print $2 }' count)
    [ "${count:-0}" -gt 0 ] || fail "QBAK_FAILPOINT_COUNT wrote no 'any' count: $(cat count)"
    for ((n = 1; n <= count; n++)); do
        cp "$F/base.qcow2" img.qcow2
        rc=0
        rm -f fp.log
        QBAK_FAILPOINT=any:$n:$effect QBAK_FAILPOINT_LOG=$PWD/fp.log \
            qbak bitmap "$@" >/dev/null 2>err || rc=$?
        slurp err err
        while [[ $err == *$'\n' ]]; do err=${err%$'\n'}; done
        msg=""
        bitmap_state img.qcow2 >now.state 2>&1 || msg+=" [state capture failed: $(cat now.state)]"
        state_of now.state
        st=$ST
        if [ "$effect" = abort ]; then
            [ "$rc" -eq 134 ] || msg+=" [exit $rc, expected 134 (SIGABRT); stderr: $err]"
        elif [ "$rc" -eq 1 ]; then
            [ "$st" = old ] || msg+=" [exit 1 but the state is $st, expected old]"
            if [[ $err == *$'\n'* ]] || [ -z "$err" ] || [[ $err != "qbak: "* ]] ||
                    [[ $err != *img.qcow2* ]]; then
                msg+=" [exit 1 message is not one 'qbak: ' line naming img.qcow2: $err]"
            elif [ "$(grep -o 'Input/output error' <<<"$err" | wc -l)" -ne 1 ]; then
                msg+=" [exit 1 message repeats or lacks the error text: $err]"
            fi
        elif [ "$rc" -eq 0 ]; then
            [ "$st" = new ] || msg+=" [exit 0 but the state is $st, expected new]"
        else
            msg+=" [exit $rc, expected 1 (failed, old state) or 0 (new state); stderr: $err]"
        fi
        [ "$st" != neither ] || msg+=" [bitmaps neither old nor new: $(diff "$F/old.state" now.state | head -c 600)]"
        [ "$st" != old ] || seen_old=$((seen_old + 1))
        [ "$st" != new ] || seen_new=$((seen_new + 1))
        why=$(no_corruption img.qcow2) || msg+=" [$why]"
        qemu-img compare -q -U -f qcow2 -F qcow2 "$F/base.qcow2" img.qcow2 ||
            msg+=" [guest data changed: qemu-img compare exit $?]"
        # complete the operation
        rc=0
        qbak bitmap "$@" >/dev/null 2>err || rc=$?
        if [ "$rc" -ne 0 ]; then
            if [ "$st" = new ] && { { [ "$op" = add ] && [ "$rc" -eq 2 ]; } ||
                                    { [ "$op" = remove ] && [ "$rc" -eq 3 ]; }; }; then
                :   # the new state was already there: the refusal is right
            else
                msg+=" [rerun: exit $rc: $(cat err)]"
            fi
        fi
        bitmap_state img.qcow2 >now.state 2>&1 || true
        state_of now.state
        [ "$ST" = new ] ||
            msg+=" [after the rerun the state is not new: $(diff "$F/$op.state" now.state | head -c 600)]"
        why=$(no_corruption img.qcow2) || msg+=" [after the rerun $why]"
        [ -z "$msg" ] || failures+=("any:$n:$effect ($(cat fp.log 2>/dev/null)):$msg")
    done
    echo "qbak bitmap $*: $count calls; $seen_old left the old state, $seen_new the new" >&3
    if [ "${#failures[@]}" -gt 0 ]; then
        printf '%s\n' "${failures[@]}" >&2
        fail "${#failures[@]} of $count fail points broke the rules (qbak bitmap $*)"
    fi
    # both outcomes must occur, or the commit point was never bracketed
    [ "$seen_old" -gt 0 ] || fail "no fail point left the old state"
    [ "$effect" = eio ] || [ "$seen_new" -gt 0 ] || fail "no crash left the new state"
}

# clean_run_equals_qemu OP QBAK-BITMAP-ARGS...: without fail points, qbak's
# result equals qemu-img bitmap's.
clean_run_equals_qemu() {
    local op=$1
    shift
    cp "$F/base.qcow2" img.qcow2
    run --separate-stderr qbak bitmap "$@"
    [ "$status" -eq 0 ] || fail "qbak bitmap $*: exit $status: $stderr"
    bitmap_state img.qcow2 >now.state
    diff "$F/$op.state" now.state >&2 || fail "qbak's $op differs from qemu-img's (< qemu, > qbak)"
    no_corruption img.qcow2 >&2
    run qemu-img check img.qcow2
    [ "$status" -eq 0 ] || fail "leaks or errors after a clean $op: $output"
}

@test "bitmap add: clean run equals qemu-img bitmap --add" {
    clean_run_equals_qemu add add --granularity 512 img.qcow2 new
}

@test "bitmap clear: clean run equals qemu-img bitmap --clear" {
    clean_run_equals_qemu clear clear img.qcow2 b0
}

@test "bitmap merge: clean run equals qemu-img bitmap --merge" {
    clean_run_equals_qemu merge merge img.qcow2 b2 b0 b1
}

@test "bitmap remove: clean run equals qemu-img bitmap --remove" {
    clean_run_equals_qemu remove remove img.qcow2 b1
}

@test "bitmap add: a crash at any I/O call leaves the old or new state, completable" {
    crash_enumerate abort add add --granularity 512 img.qcow2 new
}

@test "bitmap clear: a crash at any I/O call leaves the old or new state, completable" {
    crash_enumerate abort clear clear img.qcow2 b0
}

@test "bitmap merge: a crash at any I/O call leaves the old or new state, completable" {
    crash_enumerate abort merge merge img.qcow2 b2 b0 b1
}

@test "bitmap remove: a crash at any I/O call leaves the old or new state, completable" {
    crash_enumerate abort remove remove img.qcow2 b1
}

@test "bitmap add: an I/O error at any call is exit 1 and the old state, or exit 0 and the new" {
    crash_enumerate eio add add --granularity 512 img.qcow2 new
}

@test "bitmap clear: an I/O error at any call is exit 1 and the old state, or exit 0 and the new" {
    crash_enumerate eio clear clear img.qcow2 b0
}

@test "bitmap merge: an I/O error at any call is exit 1 and the old state, or exit 0 and the new" {
    crash_enumerate eio merge merge img.qcow2 b2 b0 b1
}

@test "bitmap remove: an I/O error at any call is exit 1 and the old state, or exit 0 and the new" {
    crash_enumerate eio remove remove img.qcow2 b1
}
