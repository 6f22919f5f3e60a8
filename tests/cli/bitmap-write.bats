#!/usr/bin/env bats
# qbak bitmap add / remove / clear / enable / disable / merge, checked
# against QEMU: the random side-by-side run with `qemu-img bitmap`
# (bitmap-sidebyside.py), QEMU reading and re-storing what qbak wrote,
# refcount growth, QEMU 7.2's defaults and limits, v2 and in_use images,
# the corrupted corpus, and the --image transaction form.
# Crash safety is bitmap-crash.bats; locking is lock.bats.

bats_require_minimum_version 1.5.0
load helpers

SIDEBYSIDE=$QBAK_CLI_TESTDIR/bitmap-sidebyside.py
CORPUS_SCRIPT=$QBAK_SRCDIR/tests/corpus/make-corrupt-corpus.py

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
}

teardown_file() {
    kill_daemons
}

setup() {
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# info_bitmaps IMG: the bitmaps array of qemu-img info, compact JSON.
info_bitmaps() {
    qemu_info "$1" | jq -c '.["format-specific"].data.bitmaps // []'
}

# ---------------------------------------------------------------------
# Side by side with qemu-img bitmap

@test "side by side: 200 random operations, seed 1, 64 KiB clusters, same as qemu-img" {
    python3 "$SIDEBYSIDE" --qbak "$QBAK" --seed 1 --steps 200 --workdir "$T/sbs"
}

@test "side by side: 200 random operations, seed 2, 64 KiB clusters, same as qemu-img" {
    python3 "$SIDEBYSIDE" --qbak "$QBAK" --seed 2 --steps 200 --workdir "$T/sbs"
}

@test "side by side: 60 random operations, 512 B clusters, same as qemu-img" {
    python3 "$SIDEBYSIDE" --qbak "$QBAK" --seed 3 --steps 60 --cluster-size 512 \
        --full-every 10 --workdir "$T/sbs"
}

# ---------------------------------------------------------------------
# QEMU uses what qbak wrote

# qbak_made IMG: three bitmaps added by qbak to an empty 8 MiB image:
# e (64k, enabled), e512 (512 B, enabled), d (disabled).
qbak_made() {
    qemu-img create -q -f qcow2 "$1" 8M
    qbak bitmap add "$1" e
    qbak bitmap add --granularity 512 "$1" e512
    qbak bitmap add --disabled "$1" d
}

@test "qemu-io guest writes dirty exactly the enabled bitmaps qbak added" {
    qbak_made img.qcow2
    run --separate-stderr qemu-io -f qcow2 -c 'write -P 1 1M 64k' \
        -c 'write -P 2 3146240 1000' img.qcow2     # 3 MiB + 512
    [ "$status" -eq 0 ] || fail "qemu-io: exit $status: $stderr"
    [ -z "$stderr" ] || fail "qemu-io complained: $stderr"
    [ "$(dirty_ranges img.qcow2 e)" = "[[1048576,65536],[3145728,65536]]" ] ||
        fail "bitmap e: $(dirty_ranges img.qcow2 e)"
    [ "$(dirty_ranges img.qcow2 e512)" = "[[1048576,65536],[3146240,1024]]" ] ||
        fail "bitmap e512: $(dirty_ranges img.qcow2 e512)"
    [ "$(dirty_ranges img.qcow2 d)" = "[]" ] || fail "disabled bitmap d: $(dirty_ranges img.qcow2 d)"
}

@test "qemu-img bitmap --clear on a qbak-written bitmap works and qbak list agrees" {
    qbak_made img.qcow2
    qemu_io_fmt qcow2 img.qcow2 'write -P 1 0 1M'
    run --separate-stderr qemu-img bitmap --clear img.qcow2 e
    [ "$status" -eq 0 ] || fail "qemu-img bitmap --clear: exit $status: $stderr"
    [ -z "$stderr" ] || fail "qemu-img complained: $stderr"
    check_clean img.qcow2
    run --separate-stderr qbak bitmap list --json img.qcow2
    [ "$status" -eq 0 ] || fail "qbak bitmap list: exit $status: $stderr"
    got=$(jq -c '[.[] | [.name, .granularity, .flags, .["dirty-bytes"]]]' <<<"$output")
    want='[["e",65536,["auto"],0],["e512",512,["auto"],1048576],["d",65536,[],0]]'
    [ "$got" = "$want" ] || fail "qbak bitmap list: $got, expected $want"
    check_dump img.qcow2 e512
}

# ---------------------------------------------------------------------
# Allocation: new refcount blocks and a larger refcount table

# reftable IMG: refcount_table_clusters (header offset 56) and the file size.
reftable() {
    python3 - "$1" <<'EOF'
import os, struct, sys
with open(sys.argv[1], 'rb') as f:
    h = f.read(60)
print(struct.unpack('>I', h[56:60])[0], os.path.getsize(sys.argv[1]))
EOF
}

@test "512 B clusters: repeated add/merge/clear/remove grow the refcount table, qemu-img check clean after each" {
    no_debug_trap
    # 64 MiB at 512 B granularity: 16 KiB of bitmap = 32 data clusters.
    qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 64M
    qemu-img bitmap --add -g 512 img.qcow2 b0
    local cmds=() rt size cov need len off=0 k
    for k in $(seq 0 31); do cmds+=("write -q -P 9 $((k * 2 * 1048576 + 1024)) 512"); done
    qemu_io_fmt qcow2 img.qcow2 "${cmds[@]}"
    # Guest data until the file is ~160 KiB short of what the refcount table
    # covers (clusters * 64 refcount blocks * 256 clusters * 512 B), so qbak's
    # own allocations must add refcount blocks and then grow the table.
    for _ in 1 2 3 4 5; do
        read -r rt size < <(reftable img.qcow2)
        cov=$((rt * 64 * 256 * 512))
        need=$((cov - size - 160 * 1024))
        [ "$need" -ge 65536 ] || break
        len=$((need * 96 / 100 / 512 * 512))
        qemu_io_fmt qcow2 img.qcow2 "write -q -P 7 $off $len"
        off=$((off + len))
    done
    read -r rt0 size < <(reftable img.qcow2)
    check_clean img.qcow2
    step() {
        run --separate-stderr qbak bitmap "$@"
        [ "$status" -eq 0 ] || fail "qbak bitmap $*: exit $status: $stderr"
        run qemu-img check img.qcow2
        [ "$status" -eq 0 ] || fail "after qbak bitmap $*: qemu-img check exit $status: $output"
    }
    # (not $i: bats' run clobbers it)
    for k in $(seq 1 16); do
        step add --granularity 512 img.qcow2 "b$k"
        step merge img.qcow2 "b$k" b0
        if [ $((k % 4)) -eq 0 ]; then step clear img.qcow2 "b$((k - 1))"; fi
        if [ $((k % 5)) -eq 0 ]; then step remove img.qcow2 "b$((k - 3))"; fi
    done
    read -r rt1 size < <(reftable img.qcow2)
    [ "$rt1" -gt "$rt0" ] ||
        fail "the refcount table did not grow ($rt0 clusters): the fixture no longer exercises it"
    want=$(dirty_ranges img.qcow2 b0)
    [ "$want" != "[]" ] || fail "b0 is clean: the fixture is wrong"
    for k in 1 4 6 13 16; do
        [ "$(dirty_ranges img.qcow2 "b$k")" = "$want" ] || fail "merged bitmap b$k differs from b0"
    done
    for k in 3 11 15; do
        [ "$(dirty_ranges img.qcow2 "b$k")" = "[]" ] || fail "cleared bitmap b$k is not clean"
    done
    for k in 2 7 12; do
        ! qemu_bitmap_names img.qcow2 | grep -qx "b$k" || fail "removed b$k is still there"
    done
    check_dump img.qcow2 b16
    # QEMU writes through all of them and stores them again
    qemu_io_fmt qcow2 img.qcow2 'write -q -P 3 60M 1M'
    check_clean img.qcow2
}

# ---------------------------------------------------------------------
# Defaults and limits as qemu-img 7.2

# default_granularity CLUSTER: qbak's default granularity equals QEMU's on a
# twin image; prints it.
default_granularity() {
    qemu-img create -q -f qcow2 -o cluster_size="$1" a.qcow2 8M
    cp a.qcow2 b.qcow2
    run --separate-stderr qbak bitmap add a.qcow2 x
    [ "$status" -eq 0 ] || fail "qbak bitmap add: exit $status: $stderr"
    qemu-img bitmap --add b.qcow2 x
    [ "$(qemu_granularity a.qcow2 x)" = "$(qemu_granularity b.qcow2 x)" ] ||
        fail "qbak: $(qemu_granularity a.qcow2 x), qemu-img: $(qemu_granularity b.qcow2 x)"
    qemu_granularity a.qcow2 x
}

@test "bitmap add: default granularity is 64 KiB for 64 KiB clusters, as qemu-img" {
    [ "$(default_granularity 64k)" = 65536 ]
}

@test "bitmap add: default granularity is 4 KiB for 512 B clusters, as qemu-img" {
    [ "$(default_granularity 512)" = 4096 ]
}

@test "bitmap add: default granularity is 64 KiB for 2 MiB clusters, as qemu-img" {
    [ "$(default_granularity 2M)" = 65536 ]
}

@test "bitmap add: a 1023-byte name is accepted and QEMU serves the bitmap" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    name=$(printf 'n%.0s' $(seq 1023))
    run --separate-stderr qbak bitmap add img.qcow2 "$name"
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(qemu_bitmap_names img.qcow2)" = "$name" ] || fail "qemu-img info does not show it"
    qemu_io_fmt qcow2 img.qcow2 'write -P 1 0 64k'
    [ "$(dirty_ranges img.qcow2 "$name")" = "[[0,65536]]" ]
}

@test "bitmap add: a 1024-byte name is refused with exit 2, image unchanged" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    refused_unchanged 2 img.qcow2 bitmap add img.qcow2 "$(printf 'n%.0s' $(seq 1024))"
}

@test "bitmap add: an empty name is refused with exit 2, image unchanged" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    refused_unchanged 2 img.qcow2 bitmap add img.qcow2 ""
}

@test "bitmap add: granularity 256 is refused with exit 2" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    refused_unchanged 2 img.qcow2 bitmap add --granularity 256 img.qcow2 x
}

@test "bitmap add: granularity 3000 (not a power of two) is refused with exit 2" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    refused_unchanged 2 img.qcow2 bitmap add --granularity 3000 img.qcow2 x
}

@test "bitmap add: granularity 4G is refused with exit 2" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    refused_unchanged 2 img.qcow2 bitmap add --granularity 4G img.qcow2 x
}

@test "bitmap add: an existing name is refused with exit 2, image unchanged" {
    qemu-img create -q -f qcow2 img.qcow2 8M
    qemu-img bitmap --add img.qcow2 x
    refused_unchanged 2 img.qcow2 bitmap add img.qcow2 x
}

# ---------------------------------------------------------------------
# v2 images and in_use bitmaps

@test "bitmap add: a v2 (compat=0.10) image is refused with exit 3 naming v2" {
    qemu-img create -q -f qcow2 -o compat=0.10 img.qcow2 8M
    refused_unchanged 3 img.qcow2 bitmap add img.qcow2 x
    [[ $stderr =~ v2|compat=0.10|version\ 2 ]] || fail "message does not say v2: $stderr"
}

# in_use_image IMG: bitmaps 'stale' and 'stale2' left in_use by a killed
# qemu-storage-daemon, then 'fresh' (consistent) added; all three dirty.
in_use_image() {
    qemu-img create -q -f qcow2 "$1" 8M
    qemu-img bitmap --add "$1" stale
    qemu-img bitmap --add -g 4k "$1" stale2
    qemu_io_fmt qcow2 "$1" 'write -P 1 0 1M'
    leave_bitmaps_in_use "$1"
    qemu-img bitmap --add "$1" fresh
    qemu_io_fmt qcow2 "$1" 'write -P 2 2M 1M'
}

@test "bitmap remove: an in_use bitmap is removed, qemu-img check clean" {
    in_use_image img.qcow2
    run --separate-stderr qbak bitmap remove img.qcow2 stale
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(qemu_bitmap_names img.qcow2 | tr '\n' ' ')" = "stale2 fresh " ] ||
        fail "bitmaps left: $(qemu_bitmap_names img.qcow2 | tr '\n' ' ')"
    check_clean img.qcow2
    check_dump img.qcow2 fresh
}

in_use_refused() {
    in_use_image img.qcow2
    refused_unchanged 3 img.qcow2 bitmap "$@"
    [[ $stderr == *"in use"* ]] || fail "message does not say 'in use': $stderr"
}

@test "bitmap clear: an in_use bitmap is refused with exit 3" {
    in_use_refused clear img.qcow2 stale
}

@test "bitmap enable: an in_use bitmap is refused with exit 3" {
    in_use_refused enable img.qcow2 stale
}

@test "bitmap disable: an in_use bitmap is refused with exit 3" {
    in_use_refused disable img.qcow2 stale
}

@test "bitmap merge: into an in_use bitmap is refused with exit 3" {
    in_use_refused merge img.qcow2 stale fresh
}

@test "bitmap merge: from an in_use bitmap is refused with exit 3" {
    in_use_refused merge img.qcow2 fresh stale2
}

# ---------------------------------------------------------------------
# The corrupted corpus (tests/corpus/make-corrupt-corpus.py, cases.tsv:
# case, image, command, regex, qemu).  Write commands run on the cases whose
# command is info, bitmap-* or none (none = the corrupt bit, which only the
# writing commands refuse), except:
#   - command map (l1-offset-past-eof, l2-offset-unaligned, l2-offset-past-eof,
#     l1-entry-reserved, data-offset-unaligned, data-offset-past-eof,
#     compressed-offset-past-eof): the damage is in L1/L2/data clusters,
#     which bitmap writes never read;
#   - backing-missing, backing-loop, backing-self-loop: the damage is in the
#     backing chain, which bitmap writes do not open (qemu-img bitmap opens
#     without the backing chain and succeeds on all three).

corpus() {
    if [ ! -f "$BATS_FILE_TMPDIR/corpus/cases.tsv" ]; then
        [ -f "$CORPUS_SCRIPT" ] || fail "corpus script $CORPUS_SCRIPT is missing"
        python3 "$CORPUS_SCRIPT" "$BATS_FILE_TMPDIR/corpus" >/dev/null
    fi
    echo "$BATS_FILE_TMPDIR/corpus"
}

# corpus_refuses OP ARGS...: OP with ARGS (IMG stands for the image) exits 3
# on every selected case with one line matching the case's regex, and the
# file stays byte-identical.
# Each case costs three processes (cp, qbak, cmp): the message is checked
# with bash (=~ is the same POSIX extended regex as grep -E; nocasematch
# makes it grep -i), without bats' DEBUG trap.
corpus_refuses() {
    local op=$1 dir case image cmd re qemu n=0 failures=() args a status stderr
    shift
    no_debug_trap
    dir=$(corpus)
    while IFS=$'\t' read -r case image cmd re qemu; do
        [[ $case == \#* ]] && continue
        [[ $cmd == map ]] && continue
        [[ $case == backing-* ]] && continue
        n=$((n + 1))
        cp "$dir/$image" img.qcow2
        args=()
        for a in "$@"; do args+=("${a/#IMG/img.qcow2}"); done
        status=0
        qbak bitmap "$op" "${args[@]}" >/dev/null 2>err.txt || status=$?
        stderr=
        IFS= read -r -d '' stderr <err.txt || true
        while [[ $stderr == *$'\n' ]]; do stderr=${stderr%$'\n'}; done
        if [ "$status" -ne 3 ]; then
            failures+=("$case: exit $status, expected 3: $stderr")
        elif [[ $stderr == *$'\n'* ]]; then
            failures+=("$case: not one line: $stderr")
        else
            shopt -s nocasematch
            [[ $stderr =~ $re ]] || failures+=("$case: message does not match /$re/: $stderr")
            shopt -u nocasematch
        fi
        # byte-identical to the corpus image it was copied from
        cmp -s img.qcow2 "$dir/$image" || failures+=("$case: the file changed")
    done <"$dir/cases.tsv"
    [ "$n" -gt 40 ] || fail "only $n corpus cases selected: is cases.tsv complete?"
    if [ "${#failures[@]}" -gt 0 ]; then
        printf '%s\n' "${failures[@]}" >&2
        fail "${#failures[@]} of $n corpus cases not refused properly by bitmap $op"
    fi
}

@test "corrupted corpus: bitmap add refuses every case with exit 3, file unchanged" {
    corpus_refuses add IMG new
}

@test "corrupted corpus: bitmap remove refuses every case with exit 3, file unchanged" {
    corpus_refuses remove IMG b0
}

@test "corrupted corpus: bitmap clear refuses every case with exit 3, file unchanged" {
    corpus_refuses clear IMG b0
}

@test "corrupted corpus: bitmap enable refuses every case with exit 3, file unchanged" {
    corpus_refuses enable IMG b0
}

@test "corrupted corpus: bitmap disable refuses every case with exit 3, file unchanged" {
    corpus_refuses disable IMG b0
}

@test "corrupted corpus: bitmap merge refuses every case with exit 3, file unchanged" {
    corpus_refuses merge IMG b0 b0
}

# ---------------------------------------------------------------------
# Transactions: --image A --image B

two_images() {
    qemu-img create -q -f qcow2 A.qcow2 8M
    qemu-img create -q -f qcow2 B.qcow2 8M
    qemu-img bitmap --add A.qcow2 a0
    qemu-img bitmap --add -g 4k B.qcow2 b0
    qemu_io_fmt qcow2 A.qcow2 'write -P 1 0 1M'
    qemu_io_fmt qcow2 B.qcow2 'write -P 2 1M 1M'
}

@test "transaction: bitmap add --image A --image B adds to both" {
    two_images
    run --separate-stderr qbak bitmap add --image A.qcow2 --image B.qcow2 x
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(qemu_bitmap_names A.qcow2 | tr '\n' ' ')" = "a0 x " ]
    [ "$(qemu_bitmap_names B.qcow2 | tr '\n' ' ')" = "b0 x " ]
    check_clean A.qcow2
    check_clean B.qcow2
}

@test "transaction: when B already has the name, neither image changes" {
    two_images
    qemu-img bitmap --add B.qcow2 x
    before_a=$(info_bitmaps A.qcow2)
    refused_unchanged 2 B.qcow2 bitmap add --image A.qcow2 --image B.qcow2 x
    [ "$(info_bitmaps A.qcow2)" = "$before_a" ] || fail "A changed: $(info_bitmaps A.qcow2)"
    check_clean A.qcow2
}

@test "transaction: bitmap remove --image A --image B, B lacking the name, changes neither" {
    two_images
    qemu-img bitmap --add A.qcow2 x
    before_a=$(info_bitmaps A.qcow2)
    refused_unchanged 3 B.qcow2 bitmap remove --image A.qcow2 --image B.qcow2 x
    [ "$(info_bitmaps A.qcow2)" = "$before_a" ] || fail "A changed: $(info_bitmaps A.qcow2)"
}

# has_x IMG: how many of IMG's bitmaps are named x (1 or 0), as QEMU
# sees them; counted in bash, not by a grep -c process.
has_x() {
    local names name k=0
    names=$(qemu_bitmap_names "$1") || true
    while IFS= read -r name; do
        [ "$name" != x ] || k=$((k + 1))
    done <<<"$names"
    echo "$k"
}

@test "transaction: an I/O error in B's phase after A's commit puts A back" {
    no_debug_trap
    two_images
    cp A.qcow2 A0.qcow2
    cp B.qcow2 B0.qcow2
    before_a=$(info_bitmaps A.qcow2)
    QBAK_FAILPOINT_COUNT=$T/count qbak bitmap add --image A.qcow2 --image B.qcow2 x
    count=$(awk '$1 == "any" { print $2 }' count)
    # The calls after A's commit and before B's: a crash there leaves A with
    # x and B without.
    local after_a=() n failures=()
    for n in $(seq "$count"); do
        cp A0.qcow2 A.qcow2
        cp B0.qcow2 B.qcow2
        QBAK_FAILPOINT=any:$n:abort qbak bitmap add --image A.qcow2 --image B.qcow2 x \
            2>/dev/null || true
        if [ "$(has_x A.qcow2)" = 1 ] && [ "$(has_x B.qcow2)" = 0 ]; then after_a+=("$n"); fi
    done
    [ "${#after_a[@]}" -gt 0 ] || fail "no call of $count lies between A's commit and B's"
    for n in "${after_a[@]}"; do
        cp A0.qcow2 A.qcow2
        cp B0.qcow2 B.qcow2
        QBAK_FAILPOINT=any:$n:eio run --separate-stderr qbak bitmap add \
            --image A.qcow2 --image B.qcow2 x
        [ "$status" -eq 1 ] || { failures+=("any:$n: exit $status, expected 1: $stderr"); continue; }
        [ "$(info_bitmaps A.qcow2)" = "$before_a" ] ||
            failures+=("any:$n: A not put back: $(info_bitmaps A.qcow2)")
        [ "$(has_x B.qcow2)" = 0 ] || failures+=("any:$n: B has x")
        for img in A.qcow2 B.qcow2; do
            run qemu-img check "$img"
            [ "$status" -eq 0 ] || failures+=("any:$n: qemu-img check $img: exit $status: $output")
        done
    done
    echo "calls between A's commit and B's: ${after_a[*]}" >&3
    if [ "${#failures[@]}" -gt 0 ]; then
        printf '%s\n' "${failures[@]}" >&2
        fail "${#failures[@]} of ${#after_a[@]} failures in B's phase did not put A back"
    fi
}

@test "transaction: an I/O error at any call leaves both images old (exit 1) or both new (exit 0)" {
    no_debug_trap
    two_images
    cp A.qcow2 A0.qcow2
    cp B.qcow2 B0.qcow2
    QBAK_FAILPOINT_COUNT=$T/count qbak bitmap add --image A.qcow2 --image B.qcow2 x
    count=$(awk '$1 == "any" { print $2 }' count)
    local n failures=() a b
    for n in $(seq "$count"); do
        cp A0.qcow2 A.qcow2
        cp B0.qcow2 B.qcow2
        QBAK_FAILPOINT=any:$n:eio run --separate-stderr qbak bitmap add \
            --image A.qcow2 --image B.qcow2 x
        a=$(has_x A.qcow2)
        b=$(has_x B.qcow2)
        if ! { [ "$status" -eq 1 ] && [ "$a$b" = 00 ]; } &&
           ! { [ "$status" -eq 0 ] && [ "$a$b" = 11 ]; }; then
            failures+=("any:$n: exit $status, A has x: $a, B has x: $b: $stderr")
        fi
        for img in A.qcow2 B.qcow2; do
            run qemu-img check "$img"
            [ "$status" -eq 0 ] || [ "$status" -eq 3 ] ||
                failures+=("any:$n: qemu-img check $img: exit $status: $output")
        done
    done
    if [ "${#failures[@]}" -gt 0 ]; then
        printf '%s\n' "${failures[@]}" >&2
        fail "${#failures[@]} of $count fail points broke all-or-none"
    fi
}
