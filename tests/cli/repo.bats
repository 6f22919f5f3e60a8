#!/usr/bin/env bats
# Repository mode: qbak backup / list / restore, checked with QEMU's tools
# (qemu-img compare, check, info --backing-chain), never by qbak reading
# its own output back.

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# points REPO: the point ids, oldest first (from the records' file names,
# not from qbak): "...Z", then "...Z-2", "...Z-3", ... within a second.
points() {
    local f
    for f in "$1"/points/*.json; do
        [ -e "$f" ] || continue
        basename "$f" .json
    done | sort -t- -k1,1 -k2,2n
}

# check_repo REPO: every file of the repository is a clean qcow2 whose
# whole chain QEMU opens, and its manifest lists exactly what QEMU reads in
# it (tests/cli/manifest-check.py, hashes by xxhsum).
check_repo() {
    local f out
    for f in "$1"/disks/*/*.qcow2; do
        check_clean "$f"
        qemu-img info --backing-chain "$f" >/dev/null ||
            fail "qemu-img info --backing-chain $f failed"
        [ -e "${f%.qcow2}.manifest" ] || fail "$f has no manifest"
        out=$(python3 "$QBAK_SRCDIR/tests/cli/manifest-check.py" \
              "${f%.qcow2}.manifest" "$f" 2>&1) ||
            fail "manifest of $f: $out"
    done
}

# restores_to REPO POINT DISK COPY: POINT of DISK restores (qcow2 and raw)
# to what COPY holds.
restores_to() {
    local repo=$1 point=$2 disk=$3 copy=$4 out
    out=$BATS_TEST_TMPDIR/restored-$point-$disk
    rm -f "$out.qcow2" "$out.raw"
    run --separate-stderr qbak restore --at "$point" --disk "$disk" \
        "$repo" "$out.qcow2"
    [ "$status" -eq 0 ] || fail "restore $point $disk: exit $status: $stderr"
    same_disk "$out.qcow2" "$copy"
    check_clean "$out.qcow2"
    [ -z "$(qemu-img info --output=json "$out.qcow2" |
            jq -r '."backing-filename" // empty')" ] ||
        fail "restore $point $disk: not standalone"
    run --separate-stderr qbak restore --at "$point" --disk "$disk" -O raw \
        "$repo" "$out.raw"
    [ "$status" -eq 0 ] || fail "restore -O raw $point $disk: $stderr"
    run qemu-img compare -f raw -F qcow2 "$out.raw" "$copy"
    [ "$status" -eq 0 ] || fail "raw restore of $point $disk differs: $output"
    rm -f "$out.qcow2" "$out.raw"
}

# level REPO POINT DISK: the level the record gives (jq on the file).
level() {
    jq -r --arg d "$3" '.disks[] | select(.name == $d) | .level' \
        "$1/points/$2.json"
}

reason() {
    jq -r --arg d "$3" '.disks[] | select(.name == $d) | .reason' \
        "$1/points/$2.json"
}

# backup ARGS... REPO: qbak backup, which must succeed; in a second after
# everything already in REPO, so every run is its own second (ids stay
# readable).
backup() {
    wait_past_repo "${!#}"
    run --separate-stderr qbak backup "$@"
    [ "$status" -eq 0 ] || fail "qbak backup $*: exit $status: $stderr"
}

@test "repo: the first run creates the repository, says so, and takes a full" {
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 0x11 0 3M' vda.qcow2 >/dev/null
    run --separate-stderr qbak backup vda.qcow2 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [[ $stderr == *"created the repository repo"* ]] || fail "stderr: $stderr"
    [ -z "$output" ]                     # quiet for cron
    p=$(points repo)
    [ "$(level repo "$p" vda)" = full ]
    check_repo repo
    cp vda.qcow2 copy.qcow2
    restores_to repo "$p" vda copy.qcow2
    # The repository's bitmap is in the disk, named after the repository.
    id=$(jq -r .id repo/config)
    qemu-img info --output=json vda.qcow2 |
        jq -e --arg b "qbak-$id-$p" '."format-specific".data.bitmaps |
            map(.name) | index($b) != null' >/dev/null ||
        fail "no bitmap qbak-$id-$p in vda.qcow2"
    # A second run says nothing about creating.
    backup vda.qcow2 repo
    [[ $stderr != *created* ]]
}

@test "repo: a month of nights with writes, zeroes, discards, compressed writes, a grow and a disk added" {
    qemu-img create -q -f qcow2 vda.qcow2 96M
    qemu-img create -q -f qcow2 vdb.qcow2 32M
    qemu-io -c 'write -P 0x01 0 8M' vda.qcow2 >/dev/null
    qemu-io -c 'write -P 0x02 0 2M' vdb.qcow2 >/dev/null
    local night disks
    for night in $(seq 1 12); do
        case $((night % 4)) in
            0) qemu-io -c "write -P $night $((night * 3))M 512k" vda.qcow2 ;;
            1) qemu-io -c "write -z $((night * 2))M 1M" vda.qcow2 ;;
            2) qemu-io -c "discard $((night))M 256k" vda.qcow2 ;;
            3) qemu-io -c "write -c -P $night $((night * 4))M 64k" vda.qcow2 ;;
        esac >/dev/null
        qemu-io -c "write -P $((night + 100)) $((night * 5))M 64k" vda.qcow2 >/dev/null
        [ "$night" -eq 7 ] && qemu-img resize -q vda.qcow2 128M
        [ "$night" -ge 7 ] && qemu-io -c "write -P 7 120M 1M" vda.qcow2 >/dev/null
        if [ "$night" -ge 5 ]; then
            qemu-io -c "write -P $night $((night))M 128k" vdb.qcow2 >/dev/null
            disks="vda.qcow2 vdb.qcow2"
        else
            disks=vda.qcow2
        fi
        # shellcheck disable=SC2086
        backup $disks repo
        p=$(points repo | tail -1)
        cp vda.qcow2 "copy-$p-vda.qcow2"
        [ "$night" -ge 5 ] && cp vdb.qcow2 "copy-$p-vdb.qcow2"
    done
    [ "$(points repo | wc -l)" -eq 12 ]
    check_repo repo
    local first=1
    for p in $(points repo); do
        restores_to repo "$p" vda "copy-$p-vda.qcow2"
        if [ -e "copy-$p-vdb.qcow2" ]; then
            restores_to repo "$p" vdb "copy-$p-vdb.qcow2"
        fi
        if [ $first -eq 1 ]; then
            [ "$(level repo "$p" vda)" = full ]
            first=0
        else
            [ "$(level repo "$p" vda)" = incremental ] ||
                fail "$p vda: $(level repo "$p" vda): $(reason repo "$p" vda)"
        fi
    done
    # The disk added at night 5 got a full of its own, then incrementals.
    p5=$(points repo | sed -n 5p)
    p6=$(points repo | sed -n 6p)
    [ "$(level repo "$p5" vdb)" = full ]
    [ "$(level repo "$p6" vdb)" = incremental ]
    # The grown disk's point says so, and its file has the new size.
    p7=$(points repo | sed -n 7p)
    [[ $(reason repo "$p7" vda) == *grew* ]]
    [ "$(qemu-img info --output=json "repo/disks/vda/$p7.qcow2" |
         jq '."virtual-size"')" -eq $((128 << 20)) ]
    # list names every point, oldest first, with each disk's level.
    run --separate-stderr qbak list --json repo
    [ "$status" -eq 0 ]
    [ "$(jq -r '.points[].id' <<<"$output")" = "$(points repo)" ]
    [ "$(jq -r '.points[4].disks[] | select(.name == "vdb") | .level' <<<"$output")" = full ]
    # The whole folder moved elsewhere still restores.
    mv repo moved
    restores_to moved "$(points moved | tail -1)" vda \
        "copy-$(points moved | tail -1)-vda.qcow2"
}

@test "repo: every disk of a point into a folder" {
    qemu-img create -q -f qcow2 a.qcow2 16M
    qemu-img create -q -f raw b.img 8M
    qemu-io -c 'write -P 5 1M 1M' a.qcow2 >/dev/null
    qemu-io -f raw -c 'write -P 6 2M 1M' b.img >/dev/null
    backup a.qcow2 b.img=data repo
    run --separate-stderr qbak restore repo out
    [ "$status" -eq 0 ] || fail "$stderr"
    same_disk out/a.qcow2 a.qcow2
    run qemu-img compare -F raw out/data.qcow2 b.img
    [ "$status" -eq 0 ] || fail "$output"
    run --separate-stderr qbak restore -O raw repo outraw
    [ "$status" -eq 0 ]
    run qemu-img compare -f raw -F raw outraw/data.raw b.img
    [ "$status" -eq 0 ]
}

@test "repo: two repositories on one disk keep their own chains" {
    qemu-img create -q -f qcow2 vda.qcow2 32M
    qemu-img bitmap --add vda.qcow2 mine
    for i in 1 2 3 4 5 6; do
        qemu-io -c "write -P $i $((i * 2))M 1M" vda.qcow2 >/dev/null
        if [ $((i % 2)) -eq 1 ]; then backup vda.qcow2 onsite; r=onsite
        else backup vda.qcow2 offsite; r=offsite; fi
        cp vda.qcow2 "copy-$r-$(points $r | tail -1).qcow2"
    done
    for r in onsite offsite; do
        [ "$(points $r | wc -l)" -eq 3 ]
        for p in $(points $r); do
            restores_to "$r" "$p" vda "copy-$r-$p.qcow2"
        done
        p=$(points $r | tail -1)
        [ "$(level $r "$p" vda)" = incremental ]
    done
    # The user's own bitmap is still there and still records writes.
    qemu-img info --output=json vda.qcow2 |
        jq -e '."format-specific".data.bitmaps | map(select(.name == "mine"))
               | length == 1' >/dev/null
}

@test "repo: a disk shrunk and grown again gets a full, with that reason" {
    qemu-img create -q -f qcow2 vda.qcow2 32M
    qemu-io -c 'write -P 1 0 32M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    qemu-img resize -q --shrink vda.qcow2 16M
    qemu-img resize -q vda.qcow2 32M
    backup vda.qcow2 repo
    p=$(points repo | tail -1)
    [ "$(level repo "$p" vda)" = full ]
    [[ $(reason repo "$p" vda) == *shrunk* ]] || fail "$(reason repo "$p" vda)"
    run --separate-stderr qbak list repo
    [[ $output == *shrunk* ]]
    restores_to repo "$p" vda vda.qcow2
    # A plain shrink: full too.
    qemu-img resize -q --shrink vda.qcow2 8M
    backup vda.qcow2 repo
    p=$(points repo | tail -1)
    [ "$(level repo "$p" vda)" = full ]
    [[ $(reason repo "$p" vda) == *shrank* ]]
    restores_to repo "$p" vda vda.qcow2
}

# data_of REPO POINT DISK: the data bytes the point's file itself holds
# (qemu-img map, depth 0).
data_of() {
    qemu-img map -f qcow2 --output=json "$1/disks/$3/$2.qcow2" |
        jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0'
}

# zero_of REPO POINT DISK: the zero clusters' bytes the file itself holds.
zero_of() {
    qemu-img map -f qcow2 --output=json "$1/disks/$3/$2.qcow2" |
        jq '[.[] | select(.depth == 0 and .zero and (.data | not)) | .length] | add // 0'
}

# bitmap_clean IMG NAME: QEMU serves bitmap NAME of IMG with no dirty
# extent, and qemu-img info shows it enabled and not in use.
bitmap_clean() {
    local map
    map=$(qemu_bitmap_map "$1" "$2") || fail "nbdinfo of bitmap $2 failed"
    [ "$(jq '[.[] | select(.type == 1)] | length' <<<"$map")" -eq 0 ] ||
        fail "bitmap $2 is dirty right after the backup: $map"
    qemu_info "$1" | jq -e --arg n "$2" \
        '.["format-specific"].data.bitmaps[] | select(.name == $n) | .flags == ["auto"]' \
        >/dev/null || fail "bitmap $2 is not enabled and consistent"
}

@test "repo: a removed or in-use bitmap gives an incremental by checksums of only the changed clusters; the next run is bitmap-based" {
    require_bitmap_oracles
    qemu-img create -q -f qcow2 vda.qcow2 32M
    qemu-io -c 'write -P 1 0 12M' -c 'write -P 2 20M 4M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    id=$(jq -r .id repo/config)
    p=$(points repo | tail -1)
    # Three changed runs: data, data, data become zeroes (6 clusters).
    qemu-io -c 'write -P 3 1M 128k' -c 'write -P 4 9M 64k' \
        -c 'write -z 21M 192k' vda.qcow2 >/dev/null
    qemu-img bitmap --remove vda.qcow2 "qbak-$id-$p"
    backup vda.qcow2 repo
    p=$(points repo | tail -1)
    [ "$(level repo "$p" vda)" = incremental ]
    [[ $(reason repo "$p" vda) == "checksums ("*missing* ]] || fail "$(reason repo "$p" vda)"
    [ "$(data_of repo "$p" vda)" -le $(( (2 + 1 + 2) * 65536 )) ] ||
        fail "the incremental holds $(data_of repo "$p" vda) bytes of data"
    [ "$(zero_of repo "$p" vda)" -ge $((192 * 1024)) ]
    restores_to repo "$p" vda vda.qcow2
    check_repo repo
    bitmap_clean vda.qcow2 "qbak-$id-$p"

    # The next run copies by the new bitmap.
    qemu-io -c 'write -P 5 30M 1M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    p=$(points repo | tail -1)
    [ "$(reason repo "$p" vda)" = "changes since point $(points repo | tail -2 | head -1)" ]
    [ "$(data_of repo "$p" vda)" -eq 1048576 ]
    restores_to repo "$p" vda vda.qcow2

    # A program that wrote the disk and died leaves the bitmaps in_use.
    qemu-io -c 'write -P 6 4M 64k' -c 'write -P 7 25M 64k' vda.qcow2 >/dev/null
    leave_bitmaps_in_use vda.qcow2
    backup vda.qcow2 repo
    p=$(points repo | tail -1)
    [[ $(reason repo "$p" vda) == "checksums ("*"in use"* ]] || fail "$(reason repo "$p" vda)"
    [ "$(data_of repo "$p" vda)" -le $(( (1 + 1 + 2) * 65536 )) ]
    restores_to repo "$p" vda vda.qcow2
    check_clean vda.qcow2
    bitmap_clean vda.qcow2 "qbak-$id-$p"
    qemu-io -c 'write -P 8 0 64k' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    p=$(points repo | tail -1)
    [[ $(reason repo "$p" vda) == "changes since point"* ]]
    [ "$(data_of repo "$p" vda)" -eq 65536 ]
    restores_to repo "$p" vda vda.qcow2
}

@test "repo: a raw disk backed up 5 times holds only what changed in each incremental" {
    qemu-img create -q -f raw disk.img 48M
    qemu-io -f raw -c 'write -P 1 0 16M' disk.img >/dev/null
    backup -f raw disk.img repo
    cp disk.img "copy-$(points repo).img"
    for k in 1 2 3 4; do
        qemu-io -f raw -c "write -P $((k + 1)) $((k * 3))M 192k" \
            -c "write -z $((k * 2 + 20))M 64k" -c "write -P 9 $((k + 30))M 64k" \
            disk.img >/dev/null
        backup -f raw disk.img repo
        p=$(points repo | tail -1)
        cp disk.img "copy-$p.img"
        [ "$(level repo "$p" disk)" = incremental ]
        [[ $(reason repo "$p" disk) == "checksums (a raw disk holds no bitmap)"* ]]
        # 192k + 64k of data changed (the zeroes were zeroes already, but
        # the k-th 64k of 0x09 was written by the run before for k > 1).
        [ "$(data_of repo "$p" disk)" -le $(( (3 + 1) * 65536 )) ] ||
            fail "point $p holds $(data_of repo "$p" disk) bytes of data"
    done
    for p in $(points repo); do
        out=$BATS_TEST_TMPDIR/r.raw
        rm -f "$out"
        run --separate-stderr qbak restore --at "$p" --disk disk -O raw repo "$out"
        [ "$status" -eq 0 ] || fail "$stderr"
        cmp "$out" "copy-$p.img" || fail "point $p restores wrong"
    done
    check_repo repo
}

@test "repo: --full and --full-every" {
    qemu-img create -q -f qcow2 vda.qcow2 16M
    backup vda.qcow2 repo
    backup vda.qcow2 repo
    [ "$(level repo "$(points repo | tail -1)" vda)" = incremental ]
    backup --full vda.qcow2 repo
    p=$(points repo | tail -1)
    [ "$(level repo "$p" vda)" = full ]
    [[ $(reason repo "$p" vda) == *"asked for"* ]]
    backup --full-every 2 vda.qcow2 repo
    backup --full-every 2 vda.qcow2 repo
    [ "$(level repo "$(points repo | tail -1)" vda)" = incremental ]
    backup --full-every 2 vda.qcow2 repo
    [ "$(level repo "$(points repo | tail -1)" vda)" = full ]
    restores_to repo "$(points repo | tail -1)" vda vda.qcow2
}

@test "repo: two runs at once: one runs, the other exits 4 naming it and writes nothing" {
    qemu-img create -q -f qcow2 vda.qcow2 16M
    qemu-io -c 'write -P 1 0 4M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    qemu-io -c 'write -P 2 0 1M' vda.qcow2 >/dev/null
    # The first run stops itself at its first write.
    QBAK_FAILPOINT=write:1:stop "$QBAK" backup vda.qcow2 repo &
    pid=$!
    track_pid "$pid"
    for _ in $(seq 100); do
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = T ] && break
        sleep 0.05
    done
    [ "$(awk '{print $3}' "/proc/$pid/stat")" = T ] || fail "first run did not stop"
    before=$(find repo -type f | sort | xargs sha256sum)
    wait_past_repo repo
    run --separate-stderr qbak backup vda.qcow2 repo
    [ "$status" -eq 4 ] || fail "exit $status: $stderr"
    [[ $stderr == *"pid $pid"* ]] || fail "holder not named: $stderr"
    [ "$(find repo -type f | sort | xargs sha256sum)" = "$before" ]
    kill -CONT "$pid"
    wait "$pid"
    [ "$(points repo | wc -l)" -eq 2 ]
    restores_to repo "$(points repo | tail -1)" vda vda.qcow2
}

@test "repo: two first runs at once share the repository one of them makes: never exit 2" {
    qemu-img create -q -f qcow2 vda.qcow2 16M
    qemu-img create -q -f qcow2 vdb.qcow2 16M
    local i a b
    for i in 1 2 3 4 5; do
        "$QBAK" backup vda.qcow2 "repo$i" 2>"a$i.err" & a=$!
        "$QBAK" backup vdb.qcow2 "repo$i" 2>"b$i.err" & b=$!
        wait "$a" && sa=0 || sa=$?
        wait "$b" && sb=0 || sb=$?
        [[ $sa$sb == 00 || $sa$sb == 04 || $sa$sb == 40 ]] ||
            fail "round $i: exits $sa and $sb: $(cat "a$i.err" "b$i.err")"
        [ "$(points "repo$i" | wc -l)" -eq $(( (sa == 0) + (sb == 0) )) ] ||
            fail "round $i: $(points "repo$i")"
        [ "$sa" -ne 0 ] || restores_to "repo$i" \
            "$(basename "$(grep -l '"vda"' "repo$i"/points/*.json)" .json)" vda vda.qcow2
    done
}

@test "repo: kill -9 at any point of a run leaves every earlier point and no unfinished one" {
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 1 0 24M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    cp vda.qcow2 copy1.qcow2
    p1=$(points repo)
    qemu-io -c 'write -P 2 4M 8M' vda.qcow2 >/dev/null
    # Count the I/O calls of one run, then crash a run at spread points.
    cp -r repo repo-count
    cp vda.qcow2 count.qcow2
    QBAK_FAILPOINT_COUNT=$BATS_TEST_TMPDIR/count "$QBAK" backup count.qcow2=vda repo-count
    total=$(awk '{s += $2} END {print s}' "$BATS_TEST_TMPDIR/count")
    [ "$total" -gt 10 ] || fail "only $total I/O calls counted"
    for k in 1 2 3 4 5 6 7 8 9 10; do
        n=$((total * k / 11 + 1))
        wait_past_repo repo
        run env QBAK_FAILPOINT="any:$n:abort" "$QBAK" backup vda.qcow2 repo
        [ "$status" -ne 0 ] || [ "$(points repo | wc -l)" -gt 1 ] || true
        # Whatever happened, every listed point restores, and the first
        # one is intact.
        restores_to repo "$p1" vda copy1.qcow2
        [ "$(points repo | head -1)" = "$p1" ]
        if [ "$(points repo | wc -l)" -gt 1 ]; then
            restores_to repo "$(points repo | tail -1)" vda vda.qcow2
            break
        fi
        run --separate-stderr qbak list --json repo
        [ "$status" -eq 0 ]
        [ "$(jq '.points | length' <<<"$output")" -eq 1 ]
    done
    # The next run completes, and leaves no file that no record names.
    backup vda.qcow2 repo
    restores_to repo "$(points repo | tail -1)" vda vda.qcow2
    check_repo repo
    for f in repo/disks/vda/*.qcow2; do
        jq -e --arg f "disks/vda/$(basename "$f")" \
            '[.disks[].file] | index($f) != null' \
            $(grep -l "$(basename "$f")" repo/points/*.json | head -1) >/dev/null ||
            fail "$f is named by no record"
    done
}

# kept_data FILE: the data bytes FILE itself holds (not its backing
# files), as qemu-img map reads its committed metadata; 0 if it is no
# qcow2 image yet (a run killed before its first checkpoint).
kept_data() {
    qemu-img info -f qcow2 "$1" >/dev/null 2>&1 || { echo 0; return; }
    qemu-img map -f qcow2 --output=json "$1" |
        jq '[.[] | select(.depth == 0 and .data) | .length] | add // 0'
}

# point_reads_as REPO POINT COPY: QEMU reads vda's file of POINT, through
# its backing chain in the repository, as COPY (what qbak restore
# flattens; restores_to checks that too, at the end of the tests).
point_reads_as() {
    run qemu-img compare -f qcow2 -F qcow2 "$1/disks/vda/$2.qcow2" "$3"
    [ "$status" -eq 0 ] || fail "point $2 does not read as $3: $output"
}

# killed_then_continued REPO N NEWWRITE ARGS...: a backup of vda.qcow2
# into REPO killed at its N-th I/O call (checkpoints after every request)
# lists no new point and leaves every earlier one restorable; then, after
# the guest writes NEWWRITE (a qemu-io command of 1 MiB), the next run
# copies at most what the killed run had not made durable plus that
# write, and its point restores exactly.  Prints nothing; fails loudly.
killed_then_continued() {
    local repo=$1 n=$2 write=$3; shift 3
    local before after f kept=0 planned
    before=$(points "$repo" | wc -l)
    planned=$(jq -r '.planned' "$BATS_TEST_TMPDIR/plan")
    run env QBAK_CHECKPOINT_SECONDS=0 QBAK_FAILPOINT="any:$n:abort" \
        "$QBAK" backup "$@" vda.qcow2 "$repo"
    [ "$status" -ne 0 ] || fail "the run at call $n was not killed"
    if [ "$(points "$repo" | wc -l)" -gt "$before" ]; then
        # Killed after its record (removing the old bitmaps): the point is
        # complete, and nothing is left to continue.
        p=$(points "$repo" | tail -1)
        [ "$(points "$repo" | wc -l)" -eq $((before + 1)) ]
        cp vda.qcow2 "copy-$p.qcow2"
        point_reads_as "$repo" "$p" vda.qcow2
        return 0
    fi
    run --separate-stderr qbak list --json "$repo"
    [ "$(jq '.points | length' <<<"$output")" -eq "$before" ]
    for p in $(points "$repo"); do
        point_reads_as "$repo" "$p" "copy-$p.qcow2"
    done
    for f in "$repo"/disks/vda/*.qcow2; do
        [ -e "$repo/points/$(basename "$f" .qcow2).json" ] && continue
        kept=$((kept + $(kept_data "$f")))
    done
    qemu-io -c "$write" vda.qcow2 >/dev/null
    run --separate-stderr qbak backup --json "$@" vda.qcow2 "$repo"
    [ "$status" -eq 0 ] || fail "the next run: exit $status: $stderr"
    after=$(jq '.disks[0]."bytes-this-run"' <<<"$output")
    [ "$after" -le $((planned - kept + 1048576)) ] ||
        fail "call $n: copied $after bytes; $planned planned, $kept kept"
    p=$(points "$repo" | tail -1)
    cp vda.qcow2 "copy-$p.qcow2"
    point_reads_as "$repo" "$p" vda.qcow2
    [ "$(points "$repo" | wc -l)" -eq $((before + 1)) ]
    check_clean "$repo/disks/vda/$p.qcow2"
}

@test "repo: a run killed at 10 instants of a full and of an incremental is continued, never redone" {
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 1 0 20M' -c 'write -z 20M 4M' -c 'write -P 2 24M 20M' \
        vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    p1=$(points repo)
    cp vda.qcow2 "copy-$p1.qcow2"
    # Count the I/O calls of one full with a checkpoint after every request.
    cp -r repo repo-count
    cp vda.qcow2 count.qcow2
    QBAK_CHECKPOINT_SECONDS=0 QBAK_FAILPOINT_COUNT=$BATS_TEST_TMPDIR/count \
        "$QBAK" backup --full count.qcow2=vda repo-count
    total=$(awk '$1 == "any" {print $2}' "$BATS_TEST_TMPDIR/count")
    [ "$total" -gt 40 ] || fail "only $total I/O calls counted"
    echo '{"planned": 41943040}' >"$BATS_TEST_TMPDIR/plan"
    for k in 1 2 3 4 5 6 7 8 9 10; do
        killed_then_continued repo $((total * k / 11 + 1)) \
            "write -P $((k + 16)) $((k * 2))M 1M" --full
    done
    # Incrementals: 12 MiB dirty in scattered runs, killed at spread calls.
    rm -rf repo-count
    cp -r repo repo-count
    cp vda.qcow2 count.qcow2
    for i in 0 1 2 3 4 5; do
        qemu-io -c "write -P $((40 + i)) $((i * 10 + 2))M 2M" count.qcow2 >/dev/null
    done
    QBAK_CHECKPOINT_SECONDS=0 QBAK_FAILPOINT_COUNT=$BATS_TEST_TMPDIR/count \
        "$QBAK" backup count.qcow2=vda repo-count
    total=$(awk '$1 == "any" {print $2}' "$BATS_TEST_TMPDIR/count")
    echo '{"planned": 12582912}' >"$BATS_TEST_TMPDIR/plan"
    for k in 1 2 3 4 5 6 7 8 9 10; do
        for i in 0 1 2 3 4 5; do
            qemu-io -c "write -P $((40 + i + k)) $((i * 10 + 2))M 2M" \
                vda.qcow2 >/dev/null
        done
        killed_then_continued repo $((total * k / 11 + 1)) \
            "write -P $((k + 60)) $((k * 5 + 1))M 1M"
        [ "$(level repo "$(points repo | tail -1)" vda)" = incremental ]
    done
    restores_to repo "$(points repo | head -1)" vda "copy-$(points repo | head -1).qcow2"
    restores_to repo "$(points repo | tail -1)" vda vda.qcow2
    check_repo repo
}

@test "repo: kill -9 while a checkpointed full runs; the next run continues it" {
    qemu-img create -q -f qcow2 vda.qcow2 256M
    qemu-io -c 'write -P 7 0 192M' vda.qcow2 >/dev/null
    # Stopped at a write two thirds into the run (counted on a copy: how
    # many writes a request takes is the copy loop's business), then
    # killed with SIGKILL.
    cp vda.qcow2 count.qcow2
    QBAK_CHECKPOINT_SECONDS=0 QBAK_FAILPOINT_COUNT=$BATS_TEST_TMPDIR/count \
        "$QBAK" backup count.qcow2=vda repo-count
    local writes
    writes=$(awk '$1 == "write" {print $2}' "$BATS_TEST_TMPDIR/count")
    [ "$writes" -gt 40 ] || fail "only $writes writes counted"
    QBAK_CHECKPOINT_SECONDS=0 QBAK_FAILPOINT=write:$((writes * 2 / 3)):stop \
        "$QBAK" backup vda.qcow2 repo 3>&- &
    pid=$!
    for _ in $(seq 100); do
        [ "$(ps -o stat= -p $pid | cut -c1)" = T ] && break
        sleep 0.1
    done
    [ "$(ps -o stat= -p $pid | cut -c1)" = T ] || fail "qbak did not stop"
    kill -9 $pid
    wait $pid || true
    [ -z "$(points repo)" ]
    f=$(ls repo/disks/vda/*.qcow2)
    kept=$(kept_data "$f")
    [ "$kept" -gt 0 ] || fail "no checkpoint before the kill"
    check_clean "$f"
    wait_past_repo repo
    run --separate-stderr qbak backup --json vda.qcow2 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq '.disks[0]."bytes-this-run"' <<<"$output")" -le $((201326592 - kept)) ]
    [ "$(jq '.disks[0]."bytes-copied"' <<<"$output")" -eq 201326592 ]
    [[ "$(jq -r '.disks[0].reason' <<<"$output")" == *"continues the interrupted run"* ]]
    restores_to repo "$(points repo)" vda vda.qcow2
    check_repo repo
}

@test "repo: a raw disk that later reads as qcow2 is refused" {
    qemu-img create -q -f raw disk.img 16M
    backup -f raw disk.img repo
    # The guest writes a qcow2 header at the start of its disk.
    qemu-img create -q -f qcow2 evil.qcow2 16M
    dd if=evil.qcow2 of=disk.img bs=64k count=1 conv=notrunc status=none
    wait_past_repo repo
    run --separate-stderr qbak backup disk.img repo
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [[ $stderr == *"was raw"* ]] || fail "$stderr"
    [ "$(points repo | wc -l)" -eq 1 ]
    # Told it is raw, it is backed up as what it is.
    backup -f raw disk.img repo
    p=$(points repo | tail -1)
    out=$BATS_TEST_TMPDIR/r.raw
    run qbak restore --at "$p" --disk disk -O raw repo "$out"
    [ "$status" -eq 0 ]
    cmp "$out" disk.img
    # -f that disagrees with the first backup is a usage error.
    run --separate-stderr qbak backup -f qcow2 disk.img repo
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
}

@test "repo: names: default, DISK=NAME, two disks with one name refused" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    mkdir sub
    qemu-img create -q -f qcow2 sub/a.qcow2 8M
    run --separate-stderr qbak backup a.qcow2 sub/a.qcow2 repo
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    [[ $stderr == *"'a'"* ]]
    [ ! -e repo/points ]
    backup a.qcow2 sub/a.qcow2=second repo
    p=$(points repo)
    [ "$(jq -r '[.disks[].name] | join(",")' "repo/points/$p.json")" = a,second ]
    run --separate-stderr qbak backup a.qcow2=.hidden repo
    [ "$status" -eq 2 ]
}

@test "repo: damaged or foreign files in a repository are refused, never followed" {
    qemu-img create -q -f qcow2 vda.qcow2 8M
    backup vda.qcow2 repo
    # Not a repository: a folder with other things in it.
    mkdir other && echo hi > other/file
    run --separate-stderr qbak backup vda.qcow2 other
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    [ ! -e other/config ]
    run --separate-stderr qbak list other
    [ "$status" -eq 3 ]
    # A stray file among the points.
    echo '{}' > repo/points/notes.txt
    run --separate-stderr qbak list repo
    [ "$status" -eq 3 ] || fail "exit $status"
    [[ $stderr == *notes.txt* ]] || fail "$stderr"
    rm repo/points/notes.txt
    # A record that is not what qbak writes.
    p=$(points repo)
    cp "repo/points/$p.json" saved.json
    jq '.disks[0].file = "../../etc/passwd"' saved.json > "repo/points/$p.json"
    run --separate-stderr qbak restore --disk vda repo out.qcow2
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [ ! -e out.qcow2 ]
    cp saved.json "repo/points/$p.json"
    # A link planted for a disk's folder: never written through.
    mkdir elsewhere
    mv repo/disks/vda repo/disks/vda.real
    ln -s "$PWD/elsewhere" repo/disks/vda
    run --separate-stderr qbak backup vda.qcow2 repo
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [ -z "$(ls elsewhere)" ]
}

@test "repo: --overlay boots from the repository without copying" {
    qemu-img create -q -f qcow2 vda.qcow2 32M
    qemu-io -c 'write -P 9 1M 2M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    p=$(points repo)
    before=$(sha256sum repo/disks/vda/*.qcow2)
    run --separate-stderr qbak restore --overlay --disk vda repo ov.qcow2
    [ "$status" -eq 0 ] || fail "$stderr"
    [ "$(stat -c %s ov.qcow2)" -lt 1048576 ]
    same_disk ov.qcow2 vda.qcow2
    qemu-io -c 'write -P 1 0 1M' ov.qcow2 >/dev/null
    [ "$(sha256sum repo/disks/vda/*.qcow2)" = "$before" ]
    check_clean ov.qcow2
}

@test "repo: restore --at TIME picks the newest point at or before it" {
    qemu-img create -q -f qcow2 vda.qcow2 8M
    qemu-io -c 'write -P 1 0 1M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    cp vda.qcow2 c1.qcow2
    p1=$(points repo)
    t1=$(jq -r .time "repo/points/$p1.json")
    # (backup runs in a second after p1's: wait_past_repo)
    qemu-io -c 'write -P 2 0 1M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    run --separate-stderr qbak restore --at "$t1" --disk vda repo r1.qcow2
    [ "$status" -eq 0 ] || fail "$stderr"
    same_disk r1.qcow2 c1.qcow2
    run --separate-stderr qbak restore --at latest --disk vda repo r2.qcow2
    same_disk r2.qcow2 vda.qcow2
    run --separate-stderr qbak restore --at 2001-01-01 --disk vda repo r3.qcow2
    [ "$status" -eq 2 ]
    [ ! -e r3.qcow2 ]
    run --separate-stderr qbak restore --at nonsense --disk vda repo r4.qcow2
    [ "$status" -eq 2 ]
}

@test "repo: a raw disk wrapped in a qcow2 with data_file keeps its bitmap: incrementals by bitmap" {
    qemu-img create -q -f raw disk.raw 32M
    qemu-io -f raw -c 'write -P 1 0 8M' disk.raw >/dev/null
    qemu-img create -q -f qcow2 -o data_file=disk.raw,data_file_raw=on \
        wrap.qcow2 32M
    backup wrap.qcow2 repo
    cp disk.raw "copy-$(points repo).raw"
    for k in 1 2; do
        qemu-io -c "write -P $((k + 1)) $((k * 3))M 128k" wrap.qcow2 >/dev/null
        backup wrap.qcow2 repo
        p=$(points repo | tail -1)
        cp disk.raw "copy-$p.raw"
        [ "$(reason repo "$p" wrap)" = "changes since point $(points repo | tail -2 | head -1)" ]
        [ "$(data_of repo "$p" wrap)" -eq $((128 * 1024)) ]
    done
    for p in $(points repo); do
        out=$BATS_TEST_TMPDIR/r.raw
        rm -f "$out"
        run --separate-stderr qbak restore --at "$p" --disk wrap -O raw repo "$out"
        [ "$status" -eq 0 ] || fail "$stderr"
        cmp "$out" "copy-$p.raw" || fail "point $p restores wrong"
    done
    check_repo repo
}
