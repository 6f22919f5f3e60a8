#!/usr/bin/env bats
# qbak copy under injected I/O faults (QBAK_FAILPOINT, common/failpoint.h):
# for a small incremental job, every I/O call N of a clean run is made to
# fail in turn (eio, enospc) or to crash the process (abort), for each
# bitmap-mode (on-success through --sync incremental, always and never
# through --sync bitmap).  After every fault: the source's guest data is
# unchanged and its metadata clean; its bitmap b0 is exactly what QEMU's
# backup job leaves after a failure (on-success and never: unchanged;
# always: the clusters not copied), read back with qemu-nbd + nbdinfo; and
# a rerun (or --resume, for always) yields a target that qemu-img compares
# identical to the source.  After every EIO with --sync incremental, --json's
# bitmap dirty-bytes must also be the count QEMU reads.
#
# Every N in 1..count(any) is run for every effect and mode (9 loops).
# Each case costs a dozen processes, all of them qbak or an oracle run; the
# loops run without bats' DEBUG trap, bitmaps are mapped by one nbdinfo that
# runs its own qemu-nbd, and the Python checks of a loop run in one process
# at its end (copy-faults-batch.py), since Python starts slowly.

bats_require_minimum_version 1.5.0
load helpers

CHECK=$QBAK_CLI_TESTDIR/copy-faults-check.py
BATCH_CHECK=$QBAK_CLI_TESTDIR/copy-faults-batch.py

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    # src0.qcow2: bitmap b0 anchored at full.qcow2 (made by qemu-img, then
    # b0 cleared), then guest writes through qemu-io: scattered clusters, a
    # 1 MiB run, a zeroed and a compressed cluster.
    mkimage src0.qcow2 --size 16M --fill 4M --bitmap b0 --seed 11
    qemu-img convert -f qcow2 -O qcow2 src0.qcow2 full.qcow2
    qemu-img bitmap --clear src0.qcow2 b0
    mkimage src0.qcow2 --size 16M --no-create --dirty 2% --runs 1 --zero-writes 1 \
        --compressed 1 --seed 12
    nbd_bitmap_map src0.qcow2 b0 >b0.before.json
    # a case's starting directory, copied whole by one cp -a: the source
    # and a symbolic link to the full backup
    mkdir case0
    cp src0.qcow2 case0/src.qcow2
    ln -s "$F/full.qcow2" case0/full.qcow2
    qemu_info src0.qcow2 | jq -r '.["cluster-size"]' >cluster
    qemu_granularity src0.qcow2 b0 >granularity
    [ "$(python3 "$CHECK" count b0.before.json)" -gt 0 ] ||
        fail "fixture: b0 has no dirty clusters"
    # the number of I/O calls of a clean run, per mode
    local m
    for m in on-success always never; do
        mkdir "clean-$m"
        cp src0.qcow2 "clean-$m/src.qcow2"
        ln -s "$F/full.qcow2" "clean-$m/full.qcow2"
        (cd "clean-$m" &&
            QBAK_FAILPOINT_COUNT=count qbak copy src.qcow2 inc.qcow2 \
                $(mode_args "$m") --bitmap b0 --backing full.qcow2) ||
            fail "fixture: clean run with bitmap-mode $m failed"
        awk '$1 == "any" { print $2 }' "clean-$m/count" >"count-$m"
        [ "$(cat "count-$m")" -gt 0 ] || fail "fixture: no I/O counted for $m"
    done
}

teardown_file() {
    kill_daemons
}

setup() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# bitmap_is WHAT DUMP: WHAT is "unchanged" (QEMU's dump equal to the one
# before the job, $B0_BEFORE) or "cleared" (no dirty extent).  Python starts
# slowly here, so the common case is decided by bash/jq and the checker only
# runs to explain a mismatch.
bitmap_is() {
    local dump=
    case $1 in
    unchanged)
        IFS= read -r -d '' dump <"$2" || true
        [ "$dump" = "$B0_BEFORE" ] ||
            python3 "$CHECK" same "$F/b0.before.json" "$2" ;;
    cleared)
        jq -e 'all(.[]; .type % 2 == 0)' "$2" >/dev/null ||
            python3 "$CHECK" cleared "$2" ;;
    esac
}

# part_valid: inc.qcow2.part exists and qemu-img check finds it a valid
# qcow2 (leaked clusters allowed: 0 or 3).  fault_once asks twice about the
# same file, so the answer is kept in PART_VALID (reset per case).
part_valid() {
    if [ -z "${PART_VALID:-}" ]; then
        local rc=0
        PART_VALID=no
        if [ -e inc.qcow2.part ]; then
            qemu-img check -q inc.qcow2.part >/dev/null 2>&1 || rc=$?
            if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then PART_VALID=yes; fi
        fi
    fi
    [ "$PART_VALID" = yes ]
}

# fp_reached N: fp.log records that fail point any:N was hit (grep -q
# "^any:N " without a process).
fp_reached() {
    local line
    [ -e fp.log ] || return 1
    while IFS= read -r line; do
        [[ $line == "any:$1 "* ]] && return 0
    done <fp.log
    return 1
}

# fault_once N EFFECT MODE: in a fresh directory, run the job with
# QBAK_FAILPOINT=any:N:EFFECT and check everything; on a violation print
# one line on stderr and return 1.  The always mode's check of the bitmap
# against a partial target is not run here but appended to $T/checks, for
# copy-faults-batch.py.  Runs in a subshell of fault_loop, which sets ARGS
# to mode_args MODE.
fault_once() {
    local n=$1 eff=$2 mode=$3 rc=0 src_rc=0 args=$ARGS
    PART_VALID=
    cp -a "$F/case0" "n$n" && cd "n$n" || return
    # shellcheck disable=SC2086
    QBAK_FAILPOINT="any:$n:$eff" QBAK_FAILPOINT_LOG=fp.log \
        qbak copy src.qcow2 inc.qcow2 $args --bitmap b0 --backing full.qcow2 \
        --json >out.json 2>err.txt || rc=$?
    fp_reached "$n" ||
        { echo "N=$n: the fail point was never reached (exit $rc)"; return 1; }

    # exit status
    case $eff in
    abort) [ "$rc" -eq 134 ] || { echo "N=$n: exit $rc, expected 134 (SIGABRT)"; return 1; } ;;
    *) [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] ||
        { echo "N=$n: exit $rc, expected 1 (or 0 past the commit point): $(cat err.txt)"; return 1; } ;;
    esac
    if [ "$rc" -eq 0 ]; then
        [ -e inc.qcow2 ] && [ ! -e inc.qcow2.part ] ||
            { echo "N=$n: exit 0 but inc.qcow2 not in place (or .part left)"; return 1; }
    fi
    if [ "$rc" -ne 0 ] && [ -e inc.qcow2 ] && [ -e inc.qcow2.part ]; then
        echo "N=$n: both inc.qcow2 and inc.qcow2.part exist"; return 1
    fi

    # the source: guest data unchanged, metadata clean (leaks after abort)
    qemu-img compare -q -f qcow2 -F qcow2 src.qcow2 "$F/src0.qcow2" >/dev/null 2>&1 ||
        { echo "N=$n: the source's guest data changed"; return 1; }
    qemu-img check -q src.qcow2 >check.txt 2>&1 || src_rc=$?
    if [ "$src_rc" -ne 0 ] && ! { [ "$eff" = abort ] && [ "$src_rc" -eq 3 ]; }; then
        echo "N=$n: qemu-img check of the source: exit $src_rc: $(cat check.txt)"; return 1
    fi

    # the bitmap, as QEMU reads it
    nbd_bitmap_map src.qcow2 b0 >after.json 2>nbd.err ||
        { echo "N=$n: qemu-nbd cannot export b0: $(cat nbd.err)"; return 1; }
    local why=""
    # --json's "bitmap" after a failure describes the bitmap as QEMU now
    # reads it: its "dirty-bytes" is the bitmap's real dirty count
    if [ "$eff" = eio ] && [ "$mode" = on-success ]; then
        local got want
        got=$(jq -r '.bitmap["dirty-bytes"] // empty' out.json 2>/dev/null || true)
        if [ -n "$got" ]; then
            want=$(jq '[.[] | select(.type % 2 == 1) | .length] | add // 0' after.json)
            [ "$got" = "$want" ] ||
                { echo "N=$n: exit $rc, --json says state $(jq -c .bitmap.state out.json) dirty-bytes $got, QEMU counts $want"; return 1; }
        fi
    fi
    case $mode in
    never)
        why=$(bitmap_is unchanged after.json 2>&1) || { echo "N=$n: never: $why"; return 1; } ;;
    on-success | always)
        if [ "$rc" -eq 0 ]; then
            why=$(bitmap_is cleared after.json 2>&1) ||
                { echo "N=$n: exit 0 but $why"; return 1; }
        elif [ "$eff" = abort ] || [ "$mode" = on-success ] || ! part_valid; then
            # a crash leaves the old or (target in place) the new state;
            # a failure leaves on-success's bitmap, and always's without
            # a finished TARGET.part, unchanged
            if ! why=$(bitmap_is unchanged after.json 2>&1); then
                if [ "$eff" = abort ] && [ -e inc.qcow2 ] && bitmap_is cleared after.json 2>/dev/null; then
                    :
                else
                    echo "N=$n: $mode, exit $rc, inc.qcow2 $([ -e inc.qcow2 ] && echo in place || echo absent), stderr: $(head -c 300 err.txt)"
                    echo "  $why"; return 1
                fi
            fi
        else
            qemu-img map --output=json inc.qcow2.part >part.map.json 2>map.err ||
                { echo "N=$n: qemu-img map inc.qcow2.part: $(cat map.err)"; return 1; }
            printf 'N=%s: always, exit %s\tmissing\t%s\t%s\t%s\t--cluster\t%s\t--granularity\t%s\n' \
                "$n" "$rc" "$F/b0.before.json" "$PWD/after.json" "$PWD/part.map.json" \
                "$CLUSTER" "$GRANULARITY" >>"$T/checks"
        fi ;;
    esac

    # finish the job: --resume into a valid TARGET.part (always), or rerun
    if [ ! -e inc.qcow2 ]; then
        local rr=0
        if [ "$mode" = always ] && part_valid; then
            # shellcheck disable=SC2086
            qbak copy src.qcow2 inc.qcow2 $args --bitmap b0 --backing full.qcow2 \
                --resume >rerun.out 2>rerun.err || rr=$?
        else
            # shellcheck disable=SC2086
            qbak copy src.qcow2 inc.qcow2 $args --bitmap b0 --backing full.qcow2 \
                >rerun.out 2>rerun.err || rr=$?
        fi
        [ "$rr" -eq 0 ] || { echo "N=$n: rerun/resume: exit $rr: $(cat rerun.err)"; return 1; }
        [ ! -e inc.qcow2.part ] || { echo "N=$n: rerun left inc.qcow2.part"; return 1; }
        nbd_bitmap_map src.qcow2 b0 >after-rerun.json 2>nbd.err ||
            { echo "N=$n: qemu-nbd after rerun: $(cat nbd.err)"; return 1; }
        if [ "$mode" = never ]; then
            why=$(bitmap_is unchanged after-rerun.json 2>&1) ||
                { echo "N=$n: after rerun: $why"; return 1; }
        else
            why=$(bitmap_is cleared after-rerun.json 2>&1) ||
                { echo "N=$n: after rerun: $why"; return 1; }
        fi
    fi
    qemu-img compare -q inc.qcow2 src.qcow2 >cmp.txt 2>&1 ||
        { echo "N=$n: the backup differs from the source: $(cat cmp.txt)"; return 1; }
    qemu-img check -q inc.qcow2 >check.txt 2>&1 ||
        { echo "N=$n: qemu-img check of the backup: $(cat check.txt)"; return 1; }
    cd ..
}

# fault_loop EFFECT MODE: fault_once for every N of a clean run's calls;
# reports every failing N.
fault_loop() {
    local eff=$1 mode=$2 count n bad=() msg
    no_debug_trap
    read -r count <"$F/count-$mode"
    read -r CLUSTER <"$F/cluster"
    read -r GRANULARITY <"$F/granularity"
    IFS= read -r -d '' B0_BEFORE <"$F/b0.before.json" || true
    ARGS=$(mode_args "$mode")
    : >"$T/checks"
    for ((n = 1; n <= count; n++)); do
        msg=$(fault_once "$n" "$eff" "$mode" 2>&1) || bad+=("$msg")
    done
    # the deferred checks, all of them, whatever the loop found; each
    # failing one is reported on a line of its own starting "N=..: "
    local nbatch=0
    if ! msg=$(python3 "$BATCH_CHECK" <"$T/checks" 2>&1); then
        bad+=("$msg")
        nbatch=$(grep -c '^N=' <<<"$msg" || true)
    fi
    echo "# $eff/$mode: $count fault points, $(grep -c '' "$T/checks") partial-target bitmap checks" >&3
    if [ "${#bad[@]}" -gt 0 ]; then
        printf '%s\n' "${bad[@]}" >&2
        fail "any:N:$eff with bitmap-mode $mode: $((${#bad[@]} - (nbatch > 0) + nbatch)) failures" \
             "of $count fault points (a point may fail twice)"
    fi
}

@test "faults: every I/O call failing with EIO, incremental (on-success); --json dirty-bytes as QEMU counts" {
    fault_loop eio on-success
}

@test "faults: every I/O call failing with EIO, bitmap-mode always" {
    fault_loop eio always
}

@test "faults: every I/O call failing with EIO, bitmap-mode never" {
    fault_loop eio never
}

@test "faults: every I/O call failing with ENOSPC, incremental (on-success)" {
    fault_loop enospc on-success
}

@test "faults: every I/O call failing with ENOSPC, bitmap-mode always" {
    fault_loop enospc always
}

@test "faults: every I/O call failing with ENOSPC, bitmap-mode never" {
    fault_loop enospc never
}

@test "faults: a crash (abort) at every I/O call, incremental (on-success)" {
    fault_loop abort on-success
}

@test "faults: a crash (abort) at every I/O call, bitmap-mode always" {
    fault_loop abort always
}

@test "faults: a crash (abort) at every I/O call, bitmap-mode never" {
    fault_loop abort never
}

# Every failure is one clear line on stderr, so cron mails say what broke.
@test "faults: every EIO gives exit 1 and one 'qbak: ' line on stderr" {
    local count n rc bad=() lines
    no_debug_trap
    read -r count <"$F/count-always"
    for ((n = 1; n <= count; n++)); do
        cp -a "$F/case0" "n$n"
        cd "n$n"
        rc=0
        QBAK_FAILPOINT="any:$n:eio" qbak copy src.qcow2 inc.qcow2 --sync bitmap \
            --bitmap-mode always --bitmap b0 --backing full.qcow2 >out.txt 2>err.txt || rc=$?
        if [ "$rc" -eq 1 ]; then
            mapfile -t lines <err.txt
            [ "${#lines[@]}" -eq 1 ] && [[ ${lines[0]} == "qbak: "* ]] ||
                bad+=("N=$n: stderr: $(cat err.txt)")
        elif [ "$rc" -ne 0 ]; then
            bad+=("N=$n: exit $rc")
        fi
        cd "$T"
    done
    if [ "${#bad[@]}" -gt 0 ]; then
        printf '%s\n' "${bad[@]}" >&2
        fail "${#bad[@]} of $count runs"
    fi
}
