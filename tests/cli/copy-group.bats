#!/usr/bin/env bats
# qbak copy with several --job (one point in time for three disks), as QEMU's
# transactions with completion-mode grouped or individual: one disk failing
# midway (a fail point whose call lands in disk 2's copy), the state of
# every bitmap afterwards (qemu-nbd + nbdinfo), which targets are kept, the
# next incremental after a failed individual run, and refusals that stop
# the group before anything is written.

bats_require_minimum_version 1.5.0
load helpers

CHECK=$QBAK_CLI_TESTDIR/copy-faults-check.py

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    # d1..d3: b0 anchored at full1..3 (qemu-img convert, then b0 cleared),
    # then guest writes through qemu-io: a few scattered clusters each.
    local d
    for d in 1 2 3; do
        mkimage "d$d.qcow2" --size 16M --fill 2M --bitmap b0 --seed "$d"
        qemu-img convert -f qcow2 -O qcow2 "d$d.qcow2" "full$d.qcow2"
        qemu-img bitmap --clear "d$d.qcow2" b0
        mkimage "d$d.qcow2" --size 16M --no-create --dirty 2% --zero-writes 1 --seed "1$d"
        qemu_bitmap_map "d$d.qcow2" b0 >"d$d.before.json"
    done
    # The fail points: the first I/O call N at which disk 2 fails midway
    # through its copy (some of its clusters copied, some left) while disk 1
    # has copied everything; found by failing each call in turn.
    find_n grouped on-success 'midway' >n-grouped
    find_n grouped always 'midway' >n-grouped-always
    find_n individual on-success 'midway' >n-individual
    # ... and the first at which disk 1 fails while finishing its target
    # after all three copies (grouped completion finishes at the end).
    find_n grouped on-success 'finish' >n-grouped-finish
}

teardown_file() {
    kill_daemons
}

setup() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    setup_tmpdir
    fresh_disks
}

teardown() {
    kill_daemons
}

# fresh_disks: copies of d1..d3 in the working directory, the full backups
# beside them (read only: symbolic links).
fresh_disks() {
    local d
    for d in 1 2 3; do
        cp "$F/d$d.qcow2" "d$d.qcow2"
        ln -sf "$F/full$d.qcow2" "full$d.qcow2"
    done
}

# group_args [PREFIX [BACKING1 BACKING2 BACKING3]]: three --job options,
# disk i into PREFIXi.qcow2 (default "i") backed by fulli.qcow2.
group_args() {
    local p=${1:-i} b=("${@:2}") d
    [ "${#b[@]}" -eq 3 ] || b=(full1.qcow2 full2.qcow2 full3.qcow2)
    for d in 1 2 3; do
        echo --job "src=d$d.qcow2,target=$p$d.qcow2,bitmap=b0,backing=${b[$((d - 1))]}"
    done
}

# find_n COMPLETION MODE midway|finish: print the fail point (see
# setup_file).  Runs in a scratch directory of $F.
find_n() {
    local comp=$1 mode=$2 want=$3 n count dir=$F/scan-$1-$2-$3 d
    mkdir "$dir"
    (
        cd "$dir" || exit 1
        fresh_disks
        # shellcheck disable=SC2046
        QBAK_FAILPOINT_COUNT=count qbak copy $(group_args) $(mode_args "$mode") \
            --completion-mode "$comp" >/dev/null ||
            { echo "find_n: clean group run failed" >&2; exit 1; }
        count=$(awk '$1 == "any" { print $2 }' count)
        for n in $(seq 1 "$count"); do
            rm -f ./*.qcow2 ./*.part fp.log
            fresh_disks
            # shellcheck disable=SC2046
            QBAK_FAILPOINT="any:$n:eio" QBAK_FAILPOINT_LOG=fp.log \
                qbak copy $(group_args) $(mode_args "$mode") --completion-mode "$comp" \
                --json >out.json 2>/dev/null || true
            case $want in
            midway)
                grep -qE "^any:$n (d2\.qcow2|i2\.qcow2\.part)\$" fp.log &&
                    jq -e '.jobs[1]["bytes-copied"] > 0 and .jobs[1]["clusters-left"] > 0
                           and .jobs[0]["clusters-left"] == 0 and .jobs[0]["bytes-copied"] > 0' \
                        out.json >/dev/null && { echo "$n"; exit 0; } ;;
            finish)
                grep -qE "^any:$n i1\.qcow2\.part\$" fp.log &&
                    jq -e '.jobs[2]["bytes-copied"] > 0 and .jobs[2]["clusters-left"] == 0' \
                        out.json >/dev/null && { echo "$n"; exit 0; } ;;
            esac
        done
        echo "find_n: no I/O call of $count makes a $comp/$mode group fail at '$want'" >&2
        exit 1
    )
}

# run_group N COMPLETION MODE: the group with QBAK_FAILPOINT=any:N:eio;
# sets $status, $output (JSON), $stderr.
run_group() {
    local n=$1 comp=$2 mode=$3
    # shellcheck disable=SC2046
    QBAK_FAILPOINT="any:$n:eio" run --separate-stderr qbak copy $(group_args) \
        $(mode_args "$mode") --completion-mode "$comp" --json
}

# bitmaps_unchanged [DISKS...]: b0 of each disk (default all) equals its
# dump before the job, as QEMU reads it.
bitmaps_unchanged() {
    local d disks=("$@")
    [ "${#disks[@]}" -gt 0 ] || disks=(1 2 3)
    for d in "${disks[@]}"; do
        qemu_bitmap_map "d$d.qcow2" b0 >"d$d.after.json"
        python3 "$CHECK" same "$F/d$d.before.json" "d$d.after.json" ||
            fail "disk $d: bitmap b0 changed"
    done
}

# bitmap_cleared I: b0 of disk I is empty.
bitmap_cleared() {
    qemu_bitmap_map "d$1.qcow2" b0 >"d$1.after.json"
    python3 "$CHECK" cleared "d$1.after.json" || fail "disk $1: bitmap b0 not cleared"
}

# no_targets [PREFIX]: no PREFIX1..3.qcow2 was renamed into place.
no_targets() {
    local p=${1:-i} d
    for d in 1 2 3; do
        [ ! -e "$p$d.qcow2" ] || fail "$p$d.qcow2 was promoted"
    done
}

# nothing_written: no target and no .part of any disk, every bitmap
# unchanged, every source's guest data unchanged.
nothing_written() {
    local d
    for d in 1 2 3; do
        [ ! -e "i$d.qcow2.part" ] || fail "i$d.qcow2.part was left behind"
        run --separate-stderr qemu-img compare -f qcow2 -F qcow2 "d$d.qcow2" "$F/d$d.qcow2"
        [ "$status" -eq 0 ] || fail "disk $d: guest data changed: $output $stderr"
    done
    no_targets
}

@test "group grouped: disk 2 failing midway leaves all three bitmaps unchanged and no target" {
    run_group "$(cat "$F/n-grouped")" grouped on-success
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    no_targets
    bitmaps_unchanged
}

@test "group grouped: --json names disk 2 failed and no disk ok, every bitmap unchanged" {
    run_group "$(cat "$F/n-grouped")" grouped on-success
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    jq -e '.status == "failed"' <<<"$output" >/dev/null || fail "group status: $output"
    jq -e '.jobs[1].status == "failed" and .jobs[1].error != null' <<<"$output" >/dev/null ||
        fail "disk 2: $(jq -c '.jobs[1]' <<<"$output")"
    jq -e 'all(.jobs[]; .status == "failed" or .status == "cancelled")' <<<"$output" >/dev/null ||
        fail "statuses: $(jq -c '[.jobs[].status]' <<<"$output")"
    jq -e 'all(.jobs[]; .bitmap.state == "unchanged")' <<<"$output" >/dev/null ||
        fail "bitmaps: $(jq -c '[.jobs[].bitmap]' <<<"$output")"
}

@test "group grouped: disk 1 failing while finishing its target is reported failed; nothing promoted" {
    run_group "$(cat "$F/n-grouped-finish")" grouped on-success
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    local json=$output
    no_targets
    bitmaps_unchanged
    jq -e '.jobs[0].status == "failed" and .jobs[0].bitmap.state == "unchanged"' \
        <<<"$json" >/dev/null || fail "disk 1: $(jq -c '.jobs[0]' <<<"$json")"
    jq -e 'all(.jobs[]; .status == "failed" or .status == "cancelled")' <<<"$json" >/dev/null ||
        fail "statuses: $(jq -c '[.jobs[].status]' <<<"$json")"
}

@test "group grouped: after a failure, the same group again backs up every disk" {
    run_group "$(cat "$F/n-grouped")" grouped on-success
    [ "$status" -eq 1 ] || fail "first run: exit $status: $stderr"
    # shellcheck disable=SC2046
    run --separate-stderr qbak copy $(group_args) --sync incremental --completion-mode grouped
    [ "$status" -eq 0 ] || fail "rerun: exit $status: $stderr"
    local d
    for d in 1 2 3; do
        [ ! -e "i$d.qcow2.part" ] || fail "i$d.qcow2.part left"
        same_disk "i$d.qcow2" "d$d.qcow2"
        bitmap_cleared "$d"
    done
}

@test "group grouped, always: each bitmap holds exactly what is missing from its TARGET.part" {
    run_group "$(cat "$F/n-grouped-always")" grouped always
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    no_targets
    local d
    for d in 1 2 3; do
        qemu_bitmap_map "d$d.qcow2" b0 >"d$d.after.json"
        if [ -e "i$d.qcow2.part" ] && qemu-img check -q "i$d.qcow2.part" >/dev/null 2>&1; then
            qemu-img map --output=json "i$d.qcow2.part" >"i$d.map.json"
            python3 "$CHECK" missing "$F/d$d.before.json" "d$d.after.json" "i$d.map.json" ||
                fail "disk $d: b0 is not the clusters missing from i$d.qcow2.part"
        else
            python3 "$CHECK" same "$F/d$d.before.json" "d$d.after.json" ||
                fail "disk $d: no valid i$d.qcow2.part, but b0 changed"
        fi
    done
}

@test "group individual: disks 1 and 3 complete and clear their bitmaps; disk 2's bitmap unchanged" {
    run_group "$(cat "$F/n-individual")" individual on-success
    [ "$status" -eq 1 ] || fail "exit $status, expected 1: $stderr"
    local d json=$output
    for d in 1 3; do
        [ -e "i$d.qcow2" ] && [ ! -e "i$d.qcow2.part" ] || fail "i$d.qcow2 not in place"
        same_disk "i$d.qcow2" "d$d.qcow2"
        bitmap_cleared "$d"
    done
    [ ! -e i2.qcow2 ] || fail "the failed disk's i2.qcow2 was promoted"
    bitmaps_unchanged 2
    jq -e '.jobs[0].status == "ok" and .jobs[1].status == "failed" and .jobs[2].status == "ok"' \
        <<<"$json" >/dev/null || fail "statuses: $(jq -c '[.jobs[].status]' <<<"$json")"
}

@test "group individual: the next incremental after more writes is consistent for every disk" {
    run_group "$(cat "$F/n-individual")" individual on-success
    [ "$status" -eq 1 ] || fail "first run: exit $status: $stderr"
    local d
    for d in 1 2 3; do
        mkimage "d$d.qcow2" --size 16M --no-create --dirty 2% --seed "2$d"
    done
    # disks 1 and 3 chain on their new images; disk 2's next incremental
    # covers both intervals on top of its previous good backup
    # shellcheck disable=SC2046
    run --separate-stderr qbak copy $(group_args j i1.qcow2 full2.qcow2 i3.qcow2) \
        --sync incremental --completion-mode grouped
    [ "$status" -eq 0 ] || fail "repair run: exit $status: $stderr"
    for d in 1 2 3; do
        same_disk "j$d.qcow2" "d$d.qcow2"
        bitmap_cleared "$d"
        run --separate-stderr qemu-img check "j$d.qcow2"
        [ "$status" -eq 0 ] || fail "qemu-img check j$d.qcow2: $output $stderr"
    done
}

@test "group refusal: disk 3's bitmap missing stops the group (exit 3) with nothing written" {
    qemu-img bitmap --remove d3.qcow2 b0
    # shellcheck disable=SC2046
    run --separate-stderr qbak copy $(group_args) --sync incremental --completion-mode grouped
    [ "$status" -eq 3 ] || fail "exit $status, expected 3: $stderr"
    nothing_written
    bitmaps_unchanged 1 2
}

@test "group refusal: disk 3 locked by qemu-storage-daemon stops the group (exit 4) with nothing written" {
    local pid
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename=d3.qcow2 \
        --blockdev driver=qcow2,node-name=q,file=f </dev/null >qsd.log 2>&1 3>&- &
    pid=$!
    track_pid "$pid"
    local locked=
    for _ in $(seq 400); do
        if ! qemu-img info d3.qcow2 >/dev/null 2>&1; then locked=1; break; fi
        sleep 0.05
    done
    [ -n "$locked" ] || fail "qemu-storage-daemon did not lock d3.qcow2: $(cat qsd.log)"
    # shellcheck disable=SC2046
    run --separate-stderr qbak copy $(group_args) --sync incremental --completion-mode individual
    [ "$status" -eq 4 ] || fail "exit $status, expected 4: $stderr"
    [[ $stderr == *d3.qcow2* ]] || fail "the message does not name d3.qcow2: $stderr"
    stop_pid "$pid"
    nothing_written
    bitmaps_unchanged
}

@test "group refusal: an existing target of disk 3 stops the group (exit 2) with nothing written" {
    qemu-img create -q -f qcow2 i3.qcow2 16M
    # shellcheck disable=SC2046
    run --separate-stderr qbak copy $(group_args) --sync incremental --completion-mode grouped
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    rm i3.qcow2
    nothing_written
    bitmaps_unchanged
}
