#!/usr/bin/env bats
# qbak copy side by side with QEMU's own backup job (tests/tools/qemu-backup-job,
# blockdev-backup in qemu-storage-daemon): for every valid sync x bitmap-mode
# combination, two identical copies A and B of one source, QEMU backs up A
# and qbak backs up B with the same arguments.  qbak's target must hold the
# source's disk (or, for sync=top, what QEMU's target holds), pass qemu-img
# check, leave the bitmap exactly as QEMU leaves it, and allocate no more data
# clusters than QEMU's target.  Invalid combinations are refused by both.

bats_require_minimum_version 1.5.0
load helpers

COMPARE_ALLOC=$QBAK_CLI_TESTDIR/compare-alloc.py
JOB=$QBAK_SRCDIR/tests/tools/qemu-backup-job

# The combinations, as a case name and the arguments common to both tools.
# full/top/incremental/bitmap; top runs on a source with a backing file.
combo_args() {
    case $1 in
    full)             echo "--sync full" ;;
    full-on-success)  echo "--sync full --bitmap b0 --bitmap-mode on-success" ;;
    full-always)      echo "--sync full --bitmap b0 --bitmap-mode always" ;;
    top)              echo "--sync top" ;;
    top-on-success)   echo "--sync top --bitmap b0 --bitmap-mode on-success" ;;
    top-always)       echo "--sync top --bitmap b0 --bitmap-mode always" ;;
    incremental)      echo "--sync incremental --bitmap b0" ;;
    bitmap-on-success) echo "--sync bitmap --bitmap b0 --bitmap-mode on-success" ;;
    bitmap-always)    echo "--sync bitmap --bitmap b0 --bitmap-mode always" ;;
    bitmap-never)     echo "--sync bitmap --bitmap b0 --bitmap-mode never" ;;
    *) fail "unknown combination $1" ;;
    esac
}

# run_pair CASE: in $F/CASE, QEMU's job A -> tA and qbak B -> tB.  Exit
# statuses and stderr are kept (CASE/qemu.rc, CASE/qbak.rc, *.err) for the
# tests: a qbak failure fails the tests of its case, not setup_file.
run_pair() {
    local c=$1 d=$F/$1 args rc
    read -r -a args <<<"$(combo_args "$c")"
    mkdir "$d"
    case $c in
    top*)
        # a source with a backing file, so that top differs from full
        cp "$F/base.qcow2" "$F/over.qcow2" "$d/"
        # the overlay names its backing as base.qcow2, found beside it
        cp "$d/over.qcow2" "$d/A.qcow2"
        cp "$d/over.qcow2" "$d/B.qcow2"
        rm "$d/over.qcow2" ;;
    incremental|bitmap*)
        # after a full backup on each side (the anchor), the same writes
        cp "$F/prep/A.qcow2" "$F/prep/B.qcow2" "$F/prep/fullA.qcow2" "$F/prep/fullB.qcow2" "$d/" ;;
    *)
        cp "$F/X.qcow2" "$d/A.qcow2"
        cp "$F/X.qcow2" "$d/B.qcow2" ;;
    esac
    local qb=() bb=()
    case $c in
    incremental|bitmap*) qb=(--backing "$d/fullA.qcow2"); bb=(--backing fullB.qcow2) ;;
    esac
    rc=0
    python3 "$JOB" "$d/A.qcow2" "$d/tA.qcow2" "${args[@]}" --create "${qb[@]}" \
        >"$d/qemu.out" 2>"$d/qemu.err" || rc=$?
    echo "$rc" >"$d/qemu.rc"
    rc=0
    qbak copy "$d/B.qcow2" "$d/tB.qcow2" "${args[@]}" "${bb[@]}" --json \
        >"$d/qbak.json" 2>"$d/qbak.err" || rc=$?
    echo "$rc" >"$d/qbak.rc"
}

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_oracle qemu-storage-daemon qemu-system-common
    require_qbak
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return

    # X: the source of full, incremental and bitmap
    mkimage X.qcow2 --size 64M --fill 4M --bitmap b0 --dirty 2% --runs 2 \
        --zero-writes 4 --discards 4 --compressed 3

    # over.qcow2 over base.qcow2: the source of top (b0 only in the overlay)
    mkimage base.qcow2 --size 64M --fill 4M --dirty 2% --compressed 2 --seed 2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2
    qemu-img bitmap --add over.qcow2 b0
    mkimage over.qcow2 --no-create --size 64M --dirty 2% --runs 2 \
        --zero-writes 4 --discards 4 --compressed 3 --seed 3

    # prep/: A and B after a full backup of each (QEMU's of A, qbak's of B),
    # both clearing b0 (the anchor), then the same guest writes on both
    mkdir prep
    cp X.qcow2 prep/A.qcow2
    cp X.qcow2 prep/B.qcow2
    python3 "$JOB" prep/A.qcow2 prep/fullA.qcow2 --sync full --bitmap b0 \
        --bitmap-mode on-success --create >/dev/null
    qbak copy prep/B.qcow2 prep/fullB.qcow2 --sync full --bitmap b0 \
        --bitmap-mode on-success
    local s
    for s in A B; do
        mkimage "prep/$s.qcow2" --no-create --size 64M --dirty 2% --runs 1 \
            --zero-writes 4 --discards 4 --compressed 3 --seed 7
    done

    local c
    for c in full full-on-success full-always top top-on-success top-always \
             incremental bitmap-on-success bitmap-always bitmap-never; do
        run_pair "$c"
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

# pair_ok CASE: both tools' jobs of CASE exited 0.
pair_ok() {
    local d=$F/$1
    [ "$(cat "$d/qemu.rc")" -eq 0 ] ||
        fail "QEMU's job for $1: exit $(cat "$d/qemu.rc"): $(cat "$d/qemu.out" "$d/qemu.err")"
    [ "$(cat "$d/qbak.rc")" -eq 0 ] ||
        fail "qbak copy for $1: exit $(cat "$d/qbak.rc"): $(cat "$d/qbak.err")"
}

# check_content CASE: qbak's target reads as the source (through both
# backing chains); for top, as QEMU's target (neither has a backing file).
check_content() {
    local d=$F/$1
    pair_ok "$1"
    case $1 in
    top*) qemu-img compare "$d/tA.qcow2" "$d/tB.qcow2" ;;
    *)    qemu-img compare "$d/B.qcow2" "$d/tB.qcow2" ;;
    esac
}

# pair_clean CASE IMG: qemu-img check finds IMG (tB or B) clean.
pair_clean() {
    pair_ok "$1"
    check_clean "$F/$1/$2.qcow2"
}

# check_bitmap CASE: b0 on B (qbak's source) equals b0 on A (QEMU's), as
# qemu-nbd + nbdinfo see them, and qbak's JSON state says the same.
check_bitmap() {
    local d=$F/$1
    pair_ok "$1"
    require_bitmap_oracles
    qemu_bitmap_map "$d/A.qcow2" b0 >"$d/A.b0.json"
    qemu_bitmap_map "$d/B.qcow2" b0 >"$d/B.b0.json"
    [ "$(jq -c . "$d/A.b0.json")" = "$(jq -c . "$d/B.b0.json")" ] ||
        fail "b0 after QEMU's job: $(jq -c . "$d/A.b0.json")" $'\n'"b0 after qbak's: $(jq -c . "$d/B.b0.json")"
}

# check_json_state CASE STATE: qbak's JSON reports the bitmap STATE, and
# dirty-bytes equal QEMU's own count of b0 on B.
check_json_state() {
    local d=$F/$1 count
    pair_ok "$1"
    [ "$(jq -r .bitmap.state "$d/qbak.json")" = "$2" ] ||
        fail "JSON bitmap: $(jq -c .bitmap "$d/qbak.json"), want state $2"
    count=$(qemu_bitmap_counts "$d/B.qcow2" | jq .b0)
    [ "$(jq -r '.bitmap["dirty-bytes"]' "$d/qbak.json")" = "$count" ] ||
        fail "JSON dirty-bytes $(jq -r '.bitmap["dirty-bytes"]' "$d/qbak.json"), QEMU counts $count"
}

# check_alloc CASE: qbak's target allocates no more data than QEMU's.
check_alloc() {
    pair_ok "$1"
    python3 "$COMPARE_ALLOC" "$F/$1/tA.qcow2" "$F/$1/tB.qcow2"
}

# ---- sync=full ----------------------------------------------------------

@test "copy-qemu: full: qbak's target compares identical to the source" { check_content full; }
@test "copy-qemu: full: qbak's target passes qemu-img check" { pair_clean full tB; }
@test "copy-qemu: full: the source passes qemu-img check" { pair_clean full B; }
@test "copy-qemu: full: bitmap b0 afterwards equals QEMU's" { check_bitmap full; }
@test "copy-qemu: full: no more data clusters than QEMU's target" { check_alloc full; }

@test "copy-qemu: full on-success: qbak's target compares identical to the source" { check_content full-on-success; }
@test "copy-qemu: full on-success: qbak's target passes qemu-img check" { pair_clean full-on-success tB; }
@test "copy-qemu: full on-success: the source passes qemu-img check" { pair_clean full-on-success B; }
@test "copy-qemu: full on-success: bitmap b0 afterwards equals QEMU's" { check_bitmap full-on-success; }
@test "copy-qemu: full on-success: JSON says cleared, with QEMU's dirty count" { check_json_state full-on-success cleared; }
@test "copy-qemu: full on-success: no more data clusters than QEMU's target" { check_alloc full-on-success; }

@test "copy-qemu: full always: qbak's target compares identical to the source" { check_content full-always; }
@test "copy-qemu: full always: qbak's target passes qemu-img check" { pair_clean full-always tB; }
@test "copy-qemu: full always: the source passes qemu-img check" { pair_clean full-always B; }
@test "copy-qemu: full always: bitmap b0 afterwards equals QEMU's" { check_bitmap full-always; }
@test "copy-qemu: full always: JSON says cleared, with QEMU's dirty count" { check_json_state full-always cleared; }
@test "copy-qemu: full always: no more data clusters than QEMU's target" { check_alloc full-always; }

# ---- sync=top -----------------------------------------------------------

@test "copy-qemu: top: the source's top differs from its whole disk (the case is meaningful)" {
    pair_ok top
    run --separate-stderr qemu-img compare "$F/top/B.qcow2" "$F/top/tB.qcow2"
    [ "$status" -eq 1 ] || fail "top copy equals the whole disk: status $status $output $stderr"
}
@test "copy-qemu: top: qbak's target compares identical to QEMU's" { check_content top; }
@test "copy-qemu: top: qbak's target passes qemu-img check" { pair_clean top tB; }
@test "copy-qemu: top: the source passes qemu-img check" { pair_clean top B; }
@test "copy-qemu: top: bitmap b0 afterwards equals QEMU's" { check_bitmap top; }
@test "copy-qemu: top: no more data clusters than QEMU's target" { check_alloc top; }

@test "copy-qemu: top on-success: qbak's target compares identical to QEMU's" { check_content top-on-success; }
@test "copy-qemu: top on-success: qbak's target passes qemu-img check" { pair_clean top-on-success tB; }
@test "copy-qemu: top on-success: the source passes qemu-img check" { pair_clean top-on-success B; }
@test "copy-qemu: top on-success: bitmap b0 afterwards equals QEMU's" { check_bitmap top-on-success; }
@test "copy-qemu: top on-success: JSON says cleared, with QEMU's dirty count" { check_json_state top-on-success cleared; }
@test "copy-qemu: top on-success: no more data clusters than QEMU's target" { check_alloc top-on-success; }

@test "copy-qemu: top always: qbak's target compares identical to QEMU's" { check_content top-always; }
@test "copy-qemu: top always: qbak's target passes qemu-img check" { pair_clean top-always tB; }
@test "copy-qemu: top always: the source passes qemu-img check" { pair_clean top-always B; }
@test "copy-qemu: top always: bitmap b0 afterwards equals QEMU's" { check_bitmap top-always; }
@test "copy-qemu: top always: JSON says cleared, with QEMU's dirty count" { check_json_state top-always cleared; }
@test "copy-qemu: top always: no more data clusters than QEMU's target" { check_alloc top-always; }

# ---- sync=incremental ---------------------------------------------------

@test "copy-qemu: incremental: qbak's target compares identical to the source" { check_content incremental; }
@test "copy-qemu: incremental: qbak's target passes qemu-img check" { pair_clean incremental tB; }
@test "copy-qemu: incremental: the source passes qemu-img check" { pair_clean incremental B; }
@test "copy-qemu: incremental: bitmap b0 afterwards equals QEMU's" { check_bitmap incremental; }
@test "copy-qemu: incremental: JSON says cleared, with QEMU's dirty count" { check_json_state incremental cleared; }
@test "copy-qemu: incremental: no more data clusters than QEMU's target" { check_alloc incremental; }

# ---- sync=bitmap --------------------------------------------------------

@test "copy-qemu: bitmap on-success: qbak's target compares identical to the source" { check_content bitmap-on-success; }
@test "copy-qemu: bitmap on-success: qbak's target passes qemu-img check" { pair_clean bitmap-on-success tB; }
@test "copy-qemu: bitmap on-success: the source passes qemu-img check" { pair_clean bitmap-on-success B; }
@test "copy-qemu: bitmap on-success: bitmap b0 afterwards equals QEMU's" { check_bitmap bitmap-on-success; }
@test "copy-qemu: bitmap on-success: JSON says cleared, with QEMU's dirty count" { check_json_state bitmap-on-success cleared; }
@test "copy-qemu: bitmap on-success: no more data clusters than QEMU's target" { check_alloc bitmap-on-success; }

@test "copy-qemu: bitmap always: qbak's target compares identical to the source" { check_content bitmap-always; }
@test "copy-qemu: bitmap always: qbak's target passes qemu-img check" { pair_clean bitmap-always tB; }
@test "copy-qemu: bitmap always: the source passes qemu-img check" { pair_clean bitmap-always B; }
@test "copy-qemu: bitmap always: bitmap b0 afterwards equals QEMU's" { check_bitmap bitmap-always; }
@test "copy-qemu: bitmap always: JSON says cleared, with QEMU's dirty count" { check_json_state bitmap-always cleared; }
@test "copy-qemu: bitmap always: no more data clusters than QEMU's target" { check_alloc bitmap-always; }

@test "copy-qemu: bitmap never: qbak's target compares identical to the source" { check_content bitmap-never; }
@test "copy-qemu: bitmap never: qbak's target passes qemu-img check" { pair_clean bitmap-never tB; }
@test "copy-qemu: bitmap never: the source passes qemu-img check" { pair_clean bitmap-never B; }
@test "copy-qemu: bitmap never: bitmap b0 afterwards equals QEMU's" { check_bitmap bitmap-never; }
@test "copy-qemu: bitmap never: JSON says unchanged, with QEMU's dirty count" { check_json_state bitmap-never unchanged; }
@test "copy-qemu: bitmap never: no more data clusters than QEMU's target" { check_alloc bitmap-never; }

# ---- invalid combinations: refused by both ------------------------------

# check_refused_by_both ARGS...: QEMU's job exits non-zero and qbak exits 2
# with one "qbak: " line, and neither leaves a target.
check_refused_by_both() {
    cp "$F/X.qcow2" "$BATS_TEST_TMPDIR/A.qcow2"
    cp "$F/X.qcow2" "$BATS_TEST_TMPDIR/B.qcow2"
    run --separate-stderr python3 "$JOB" "$BATS_TEST_TMPDIR/A.qcow2" \
        "$BATS_TEST_TMPDIR/tA.qcow2" "$@" --create
    [ "$status" -ne 0 ] || fail "QEMU's job accepted $*: $output"
    # refused by blockdev-backup itself (QMP error), not by a crash
    jq -e '.error | type == "string"' <<<"$output" >/dev/null ||
        fail "QEMU's job did not report a QMP error for $*: $output $stderr"
    copy_usage_refused "$BATS_TEST_TMPDIR/B.qcow2" "$BATS_TEST_TMPDIR/tB.qcow2" "$@"
}

@test "copy-qemu: refused by both: incremental without --bitmap" {
    check_refused_by_both --sync incremental
}

@test "copy-qemu: refused by both: incremental with bitmap-mode always" {
    check_refused_by_both --sync incremental --bitmap b0 --bitmap-mode always
}

@test "copy-qemu: refused by both: incremental with bitmap-mode never" {
    check_refused_by_both --sync incremental --bitmap b0 --bitmap-mode never
}

@test "copy-qemu: refused by both: sync bitmap without --bitmap" {
    check_refused_by_both --sync bitmap --bitmap-mode on-success
}

@test "copy-qemu: refused by both: sync bitmap without --bitmap-mode" {
    check_refused_by_both --sync bitmap --bitmap b0
}

@test "copy-qemu: refused by both: full with a bitmap and no mode" {
    check_refused_by_both --sync full --bitmap b0
}

@test "copy-qemu: refused by both: full with a mode and no bitmap" {
    check_refused_by_both --sync full --bitmap-mode on-success
}

@test "copy-qemu: refused by both: full with bitmap-mode never" {
    check_refused_by_both --sync full --bitmap b0 --bitmap-mode never
}

@test "copy-qemu: refused by both: top with bitmap-mode never" {
    check_refused_by_both --sync top --bitmap b0 --bitmap-mode never
}
