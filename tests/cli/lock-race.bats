#!/usr/bin/env bats
# Two qbak writers started at the same instant on one image: at most one
# of them may go ahead.  qbak takes QEMU's lock bytes and only then looks
# for another holder, so of two racing writers at least one sees the other
# and exits 4 (both may back off, as two racing QEMUs may); had it tested
# first and locked afterwards, both could pass the test and both write,
# losing one change.
#
# Each writer runs with the fail point read:1:stop (tests/FAILPOINTS.md):
# it stops, its locks held, before reading a byte.  A round lets both go
# only when each has stopped or exited, so the two always overlap: a
# writer that finished early cannot make a later one succeed honestly.
# Both stopped means both hold write access: the bug.  In every other
# round one writer stops instead at lock:1, between taking its lock bytes
# and checking them: a writer that checked first and locked afterwards
# lets the other through there, and both exit 0 within a few rounds.
#
# Rounds (RACE_ROUNDS, default 1000 per pair of commands) run in batches
# from lock-race-rounds.sh, a small loop of its own, on one image that
# keeps every round's outcome, so the oracles at the end of each batch
# (qemu-img check, qemu-img info bitmap names, qemu-nbd + nbdinfo contents)
# see every round: a bitmap lost in any round is missing at the batch
# check.  Each round costs two qbak runs and no other process; the rounds
# are checked without bats' DEBUG trap, which would cost more than the
# checks, and the bitmaps are mapped by one nbdinfo running its own qemu-nbd.

bats_require_minimum_version 1.5.0
load helpers

ROUNDS=${RACE_ROUNDS:-1000}
BATCH=100

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
}

ROUNDS_SH=$QBAK_CLI_TESTDIR/lock-race-rounds.sh

setup() {
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# batch FIRST LAST 'ARGS A' 'ARGS B': run rounds FIRST..LAST; their
# results, "N EXIT_A EXIT_B", go to the file rounds.
batch() {
    "$ROUNDS_SH" "$QBAK" "$@" >rounds 3>&- ||
        fail "rounds $1..$2 did not complete: $(tail -1 rounds)"
}

# busy_line FILE IMG: FILE holds exactly one line, the lock error for IMG.
busy_line() {
    local -a lines
    mapfile -t lines <"$1"
    [ "${#lines[@]}" -eq 1 ] && [[ ${lines[0]} == "qbak: $2: image is locked"* ]] ||
        fail "expected one lock error line for $2, got: ${lines[*]}"
}

# check_round ROUND: at most one winner, the loser exits 4 with the lock
# error; sets WON to a, b or none.  RA and RB are the exit codes.
check_round() {
    EA=e.$1.a EB=e.$1.b
    case "$RA,$RB" in
        0,4) WON=a; busy_line "$EB" "$IMG" ;;
        4,0) WON=b; busy_line "$EA" "$IMG" ;;
        4,4) WON=none; busy_line "$EA" "$IMG"; busy_line "$EB" "$IMG" ;;
        *) fail "round $1: exits $RA and $RB (both went ahead, or another" \
                "error): $(cat "$EA" "$EB")" ;;
    esac
    if [ "$WON" = none ]; then BOTH_LOST=$((BOTH_LOST + 1)); fi
}

# race_image IMG: 1 MiB, 64 KiB clusters, bitmap d dirty over 0..64k and 512k..576k.
race_image() {
    qemu-img create -q -f qcow2 "$1" 1M
    qemu-img bitmap --add "$1" d
    qemu_io_fmt qcow2 "$1" 'write -P 1 0 64k' 'write -P 2 512k 64k'
}

# bitmap_ranges IMG NAME: dirty_ranges IMG NAME (QEMU's dirty extents as
# compact JSON), from nbd_bitmap_map: two processes for the map.
bitmap_ranges() {
    local map
    map=$(nbd_bitmap_map "$1" "$2") || return
    jq -ce 'if all(.[]; .type == 0 or .type == 1)
            then [.[] | select(.type == 1) | [.offset, .length]]
            else error("unexpected extent type") end' <<<"$map"
}

# names IMG: the bitmap names QEMU sees, sorted, on one line.
names() {
    qemu_bitmap_names "$1" | sort | tr '\n' ' '
}

@test "lock race: bitmap add and bitmap add (other names): one of them, never both" {
    no_debug_trap
    BOTH_LOST=0
    local round=0 expect
    race_image base.qcow2
    local dirty_d
    dirty_d=$(bitmap_ranges base.qcow2 d)
    [ -n "$dirty_d" ]
    while [ "$round" -lt "$ROUNDS" ]; do
        IMG=img.qcow2
        cp base.qcow2 "$IMG"
        expect="d"
        local end=$((round + BATCH))
        [ "$end" -le "$ROUNDS" ] || end=$ROUNDS
        batch $((round + 1)) "$end" "bitmap add $IMG x@N@" "bitmap add $IMG y@N@"
        while read -r n RA RB; do
            round=$n
            check_round "$round"
            case $WON in
                a) expect+=" x$round" ;;
                b) expect+=" y$round" ;;
            esac
        done <rounds
        [ "$round" -eq "$end" ]
        check_clean --leaks-ok "$IMG"
        expect=$(tr ' ' '\n' <<<"$expect" | sort | tr '\n' ' ')
        [ "$(names "$IMG")" = "$expect" ] ||
            fail "after round $round: QEMU sees bitmaps '$(names "$IMG")'," \
                 "the exit codes say '$expect'"
        # contents: the bitmap that was there keeps its dirty ranges; a
        # winner's new bitmap is empty
        [ "$(bitmap_ranges "$IMG" d)" = "$dirty_d" ]
        local last=${expect% }
        last=${last##* }
        [ "$last" = d ] || [ "$(bitmap_ranges "$IMG" "$last")" = "[]" ]
        rm -f e.*
    done
    echo "# $ROUNDS rounds, both writers backed off in $BOTH_LOST" >&3
}

@test "lock race: copy --sync incremental twice on one bitmap: one target, never two" {
    no_debug_trap
    BOTH_LOST=0
    local round=0 first ta tb
    race_image base.qcow2
    qemu-img bitmap --add base.qcow2 b
    qemu_io_fmt qcow2 base.qcow2 'write -P 3 128k 64k' 'write -P 4 960k 64k'
    [ "$(bitmap_ranges base.qcow2 b)" = "[[131072,65536],[983040,65536]]" ]
    while [ "$round" -lt "$ROUNDS" ]; do
        IMG=img.qcow2
        cp base.qcow2 "$IMG"
        first=
        local end=$((round + BATCH))
        [ "$end" -le "$ROUNDS" ] || end=$ROUNDS
        batch $((round + 1)) "$end" "copy $IMG ta@N@.qcow2 --sync incremental --bitmap b --no-backing" \
            "copy $IMG tb@N@.qcow2 --sync incremental --bitmap b --no-backing"
        while read -r n RA RB; do
            round=$n
            ta=ta$round.qcow2 tb=tb$round.qcow2
            check_round "$round"
            case $WON in
                a) [ -e "$ta" ] && [ ! -e "$tb" ] && [ ! -e "$tb.part" ] ||
                       fail "round $round: a won, targets: $(ls ta"$round"* tb"$round"* 2>&1)"
                   [ -n "$first" ] || first=$ta ;;
                b) [ -e "$tb" ] && [ ! -e "$ta" ] && [ ! -e "$ta.part" ] ||
                       fail "round $round: b won, targets: $(ls ta"$round"* tb"$round"* 2>&1)"
                   [ -n "$first" ] || first=$tb ;;
                none) [ ! -e "$ta" ] && [ ! -e "$tb" ] &&
                      [ ! -e "$ta.part" ] && [ ! -e "$tb.part" ] ;;
            esac
        done <rounds
        [ "$round" -eq "$end" ]
        check_clean --leaks-ok "$IMG"
        [ "$(names "$IMG")" = "b d " ]
        [ -n "$first" ] || fail "no round of the batch ending at $round had a winner"
        # the batch's first winner copied the dirty clusters and cleared
        # b; every later one found b clean
        check_clean --leaks-ok "$first"
        qemu-io -r -f qcow2 -c 'read -P 3 128k 64k' -c 'read -P 4 960k 64k' \
            "$first" >/dev/null
        [ "$(bitmap_ranges "$IMG" b)" = "[]" ]
        [ "$(bitmap_ranges "$IMG" d)" = "$(bitmap_ranges base.qcow2 d)" ]
        rm -f t[ab]*.qcow2 e.*
    done
    echo "# $ROUNDS rounds, both writers backed off in $BOTH_LOST" >&3
}

@test "lock race: copy --sync incremental and bitmap clear on one bitmap: never both" {
    no_debug_trap
    BOTH_LOST=0
    local round=0 t copies=0
    race_image base.qcow2
    qemu-img bitmap --add base.qcow2 b
    while [ "$round" -lt "$ROUNDS" ]; do
        IMG=img.qcow2
        cp base.qcow2 "$IMG"
        local end=$((round + BATCH))
        [ "$end" -le "$ROUNDS" ] || end=$ROUNDS
        # b dirty at the start of the batch: the first round decides
        # whether the copy saw those clusters
        qemu_io_fmt qcow2 "$IMG" 'write -P 5 256k 64k'
        local batch_first=$((round + 1)) first_won=
        batch $((round + 1)) "$end" "copy $IMG t@N@.qcow2 --sync incremental --bitmap b --no-backing" \
            "bitmap clear $IMG b"
        while read -r n RA RB; do
            round=$n
            t=t$round.qcow2
            check_round "$round"
            if [ "$round" -eq "$batch_first" ]; then first_won=$WON; fi
            case $WON in
                a) [ -e "$t" ] || fail "round $round: the copy won, no $t"
                   copies=$((copies + 1)) ;;
                *) [ ! -e "$t" ] && [ ! -e "$t.part" ] ||
                       fail "round $round: the copy lost, yet $t exists" ;;
            esac
        done <rounds
        [ "$round" -eq "$end" ]
        check_clean --leaks-ok "$IMG"
        [ "$(names "$IMG")" = "b d " ]
        # either way b ends clean; if the batch's first round was the
        # copy's, its target holds the cluster b had marked
        [ "$(bitmap_ranges "$IMG" b)" = "[]" ]
        if [ "$first_won" = a ]; then
            check_clean --leaks-ok "t$batch_first.qcow2"
            qemu-io -r -f qcow2 -c 'read -P 5 256k 64k' "t$batch_first.qcow2" >/dev/null
        fi
        rm -f t[0-9]*.qcow2 e.*
    done
    echo "# $ROUNDS rounds, the copy won $copies, both backed off in $BOTH_LOST" >&3
}
