#!/usr/bin/env bats
# qbak copy: argument rules (QEMU's blockdev-backup rules), refusals and exit
# codes, stdout and --json, the target's backing and size, zero clusters,
# bitmap granularities and cluster sizes, and every source kind.  Contents
# are checked with qemu-img compare/check/map and qemu-io; bitmaps with
# QEMU's own dirty counts.  Side-by-side runs with QEMU's job are in
# copy-qemu.bats, a long chain in copy-chain.bats.

bats_require_minimum_version 1.5.0
load helpers

M=$((1 << 20))
K=1024

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    # src.qcow2: a source with bitmap b0 (shared, read-only: tests copy it
    # before any job that rewrites its bitmap)
    mkimage src.qcow2 --size 64M --fill 2M --bitmap b0 --dirty 1% --runs 1 \
        --zero-writes 3 --discards 3 --compressed 2 --seed 5
}

teardown_file() {
    kill_daemons
}

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# check_refused ARGS...: `qbak copy src.qcow2 t.qcow2 ARGS...` exits 2, prints
# nothing on stdout, one "qbak: " line on stderr (possibly followed by the
# usage text), and creates neither t.qcow2 nor t.qcow2.part.
check_refused() {
    cp "$F/src.qcow2" src.qcow2
    copy_usage_refused src.qcow2 t.qcow2 "$@"
}

# copy_ok ARGS...: `qbak copy ARGS...` exits 0 with an empty stderr.
copy_ok() {
    run --separate-stderr qbak copy "$@"
    [ "$status" -eq 0 ] || fail "qbak copy $*: exit $status: $stderr"
    [ -z "$stderr" ] || fail "qbak copy $*: stderr: $stderr"
}

# qbak_json ARGS...: `qbak copy ARGS... --json` exits 0; its stdout in $output.
qbak_json() {
    run --separate-stderr qbak copy "$@" --json
    [ "$status" -eq 0 ] || fail "qbak copy $* --json: exit $status: $stderr"
}

# incremental_roundtrip IMG [mkimage OPTIONS...]: with IMG's bitmap b0 and a
# full backup as anchor, guest writes, then an incremental on top of the
# full: the incremental must read as IMG and pass qemu-img check.
incremental_roundtrip() {
    local img=$1
    shift
    copy_ok "$img" full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    mkimage "$img" --no-create --dirty 1% --runs 1 --zero-writes 3 --discards 3 "$@"
    copy_ok "$img" inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2
    same_disk inc.qcow2 "$img"
    check_clean inc.qcow2
}

# ---- argument rules ------------------------------------------------------

@test "copy: missing --sync is refused (exit 2)" {
    check_refused
}

@test "copy: --sync none is refused (exit 2)" {
    check_refused --sync none
}

@test "copy: a missing TARGET is refused (exit 2)" {
    cp "$F/src.qcow2" src.qcow2
    run --separate-stderr qbak copy src.qcow2 --sync full
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    [[ $stderr == "qbak: "* ]] || fail "stderr: $stderr"
}

@test "copy: incremental without --bitmap is refused (exit 2)" {
    check_refused --sync incremental
}

@test "copy: incremental with bitmap-mode always is refused (exit 2)" {
    check_refused --sync incremental --bitmap b0 --bitmap-mode always
}

@test "copy: incremental with bitmap-mode never is refused (exit 2)" {
    check_refused --sync incremental --bitmap b0 --bitmap-mode never
}

@test "copy: incremental with an explicit bitmap-mode on-success is accepted, as by QEMU" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 t.qcow2 --sync incremental --bitmap b0 --bitmap-mode on-success \
        --no-backing
}

@test "copy: sync bitmap without --bitmap is refused (exit 2)" {
    check_refused --sync bitmap --bitmap-mode always
}

@test "copy: sync bitmap without --bitmap-mode is refused (exit 2)" {
    check_refused --sync bitmap --bitmap b0
}

@test "copy: --bitmap without --bitmap-mode is refused (exit 2)" {
    check_refused --sync full --bitmap b0
}

@test "copy: --bitmap-mode without --bitmap is refused (exit 2)" {
    check_refused --sync full --bitmap-mode on-success
}

@test "copy: bitmap-mode never with sync full is refused (exit 2)" {
    check_refused --sync full --bitmap b0 --bitmap-mode never
}

@test "copy: bitmap-mode never with sync top is refused (exit 2)" {
    check_refused --sync top --bitmap b0 --bitmap-mode never
}

@test "copy: an unknown --bitmap-mode is refused (exit 2)" {
    check_refused --sync bitmap --bitmap b0 --bitmap-mode sometimes
}

@test "copy: -O raw with sync top is refused (exit 2)" {
    check_refused --sync top -O raw
}

@test "copy: -O raw with sync incremental is refused (exit 2)" {
    check_refused --sync incremental --bitmap b0 -O raw
}

@test "copy: -O raw with --backing is refused (exit 2)" {
    qemu-img create -q -f qcow2 prev.qcow2 64M
    check_refused --sync full -O raw --backing prev.qcow2
}

@test "copy: an unknown -O format is refused (exit 2)" {
    check_refused --sync full -O vmdk
}

@test "copy: a cluster size that is not a power of two is refused (exit 2)" {
    check_refused --sync full --cluster-size 3k
}

# ---- refusals of the images ----------------------------------------------

@test "copy: an existing TARGET is refused (exit 2) and left untouched" {
    cp "$F/src.qcow2" src.qcow2
    qemu-img create -q -f qcow2 t.qcow2 1M
    local before
    before=$(sha256sum t.qcow2)
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync full
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    check_error_line
    [ "$(sha256sum t.qcow2)" = "$before" ] || fail "t.qcow2 was changed"
    [ ! -e t.qcow2.part ] || fail "t.qcow2.part left behind"
}

@test "copy: an in_use bitmap is refused (exit 3) with a message naming a full backup" {
    cp "$F/src.qcow2" src.qcow2
    require_bitmap_oracles
    leave_bitmaps_in_use src.qcow2
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync incremental --bitmap b0
    [ "$status" -eq 3 ] || fail "exit $status, expected 3: $stderr"
    check_error_line
    [[ $stderr == *full* ]] || fail "message does not name a full backup: $stderr"
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "left a target"
}

@test "copy: a missing bitmap is refused (exit 3)" {
    cp "$F/src.qcow2" src.qcow2
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync bitmap --bitmap nope --bitmap-mode never
    [ "$status" -eq 3 ] || fail "exit $status, expected 3: $stderr"
    check_error_line
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "left a target"
}

@test "copy: a source marked corrupt is refused (exit 3)" {
    cp "$F/src.qcow2" src.qcow2
    set_corrupt_bit src.qcow2
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync full
    [ "$status" -eq 3 ] || fail "exit $status, expected 3: $stderr"
    check_error_line
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "left a target"
}

# ---- outputs -------------------------------------------------------------

@test "copy: stdout is empty without --json when not a terminal" {
    cp "$F/src.qcow2" src.qcow2
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync full </dev/null
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ -z "$output" ] || fail "stdout: $output"
    [ -z "$stderr" ] || fail "stderr: $stderr"
}

@test "copy: no TARGET.part remains after a successful copy" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 t.qcow2 --sync full
    [ -f t.qcow2 ] || fail "no t.qcow2"
    [ ! -e t.qcow2.part ] || fail "t.qcow2.part left behind"
}

@test "copy: --json prints one object with every field" {
    cp "$F/src.qcow2" src.qcow2
    qbak_json src.qcow2 t.qcow2 --sync bitmap --bitmap b0 --bitmap-mode never --no-backing
    jq -e 'type == "object"' <<<"$output" >/dev/null || fail "not one JSON object: $output"
    local k
    for k in target status virtual-size cluster-size bytes-planned bytes-copied \
             clusters-copied zero-clusters bytes-skipped clusters-left seconds \
             bytes-per-second exit-code jobs; do
        jq -e --arg k "$k" 'has($k)' <<<"$output" >/dev/null || fail "no \"$k\": $output"
    done
    jq -e '.bitmap | has("state") and has("dirty-bytes")' <<<"$output" >/dev/null ||
        fail "no bitmap{state, dirty-bytes}: $output"
}

@test "copy: --json reports the target, ok, and the target's size and cluster size" {
    cp "$F/src.qcow2" src.qcow2
    qbak_json src.qcow2 t.qcow2 --sync full
    [ "$(jq -r .target <<<"$output")" = t.qcow2 ] || fail "target: $(jq .target <<<"$output")"
    [ "$(jq -r .status <<<"$output")" = ok ] || fail "status: $(jq .status <<<"$output")"
    [ "$(jq '.["virtual-size"]' <<<"$output")" -eq "$(qemu_size t.qcow2)" ] || fail "virtual-size: $output"
    [ "$(jq '.["cluster-size"]' <<<"$output")" -eq "$(qemu_info t.qcow2 | jq '.["cluster-size"]')" ] ||
        fail "cluster-size: $output"
}

@test "copy: --json counts agree: all planned bytes copied, nothing left" {
    cp "$F/src.qcow2" src.qcow2
    qbak_json src.qcow2 t.qcow2 --sync full
    jq -e '.["bytes-planned"] == .["bytes-copied"] and .["clusters-left"] == 0 and
           .["clusters-copied"] * .["cluster-size"] == .["bytes-copied"] and
           .["bytes-copied"] + .["bytes-skipped"] <= .["virtual-size"]' <<<"$output" >/dev/null ||
        fail "inconsistent counts: $output"
}

@test "copy: --json bitmap state is cleared with on-success, as QEMU counts it" {
    cp "$F/src.qcow2" src.qcow2
    require_bitmap_oracles
    qbak_json src.qcow2 t.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    [ "$(jq -r .bitmap.state <<<"$output")" = cleared ] || fail "bitmap: $(jq -c .bitmap <<<"$output")"
    [ "$(jq '.bitmap["dirty-bytes"]' <<<"$output")" -eq 0 ] || fail "bitmap: $(jq -c .bitmap <<<"$output")"
    [ "$(qemu_bitmap_counts src.qcow2 | jq .b0)" -eq 0 ] || fail "QEMU: $(qemu_bitmap_counts src.qcow2)"
}

@test "copy: --json bitmap state is unchanged with never, dirty bytes as QEMU counts them" {
    cp "$F/src.qcow2" src.qcow2
    require_bitmap_oracles
    local before
    before=$(qemu_bitmap_counts src.qcow2 | jq .b0)
    [ "$before" -gt 0 ] || fail "fixture: b0 is empty"
    qbak_json src.qcow2 t.qcow2 --sync bitmap --bitmap b0 --bitmap-mode never --no-backing
    [ "$(jq -r .bitmap.state <<<"$output")" = unchanged ] || fail "bitmap: $(jq -c .bitmap <<<"$output")"
    [ "$(jq '.bitmap["dirty-bytes"]' <<<"$output")" -eq "$before" ] ||
        fail "dirty-bytes $(jq '.bitmap["dirty-bytes"]' <<<"$output"), QEMU counted $before"
    [ "$(qemu_bitmap_counts src.qcow2 | jq .b0)" -eq "$before" ] || fail "QEMU: $(qemu_bitmap_counts src.qcow2)"
}

# ---- basic behaviours ----------------------------------------------------

@test "copy: the source's bytes are unchanged by a copy without a bitmap" {
    cp "$F/src.qcow2" src.qcow2
    local before
    before=$(sha256sum src.qcow2)
    copy_ok src.qcow2 t.qcow2 --sync full
    [ "$(sha256sum src.qcow2)" = "$before" ] || fail "src.qcow2 was written"
}

@test "copy: sync full of a qcow2 compares identical and passes qemu-img check" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 t.qcow2 --sync full
    same_disk t.qcow2 src.qcow2
    check_clean t.qcow2
}

@test "copy: the target's virtual size is the source's, also when not cluster-aligned" {
    qemu-img create -q -f qcow2 odd.qcow2 $((64 * M + 1536))
    qemu_io_fmt qcow2 odd.qcow2 "write -P 7 $((64 * M - 64 * K)) $((64 * K + 1536))"
    copy_ok odd.qcow2 t.qcow2 --sync full
    [ "$(qemu_size t.qcow2)" -eq $((64 * M + 1536)) ] || fail "size: $(qemu_size t.qcow2)"
    same_disk t.qcow2 odd.qcow2
}

@test "copy: --backing is stored as given, resolved in TARGET's folder" {
    cp "$F/src.qcow2" src.qcow2
    mkdir repo
    copy_ok src.qcow2 repo/full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    qemu_io_fmt qcow2 src.qcow2 "write -P 9 1M 64k"
    # full.qcow2 exists only in repo/, not in the working directory
    copy_ok src.qcow2 repo/inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2
    [ "$(qemu_info repo/inc.qcow2 | jq -r '.["backing-filename"]')" = full.qcow2 ] ||
        fail "backing: $(qemu_info repo/inc.qcow2 | jq -r '.["backing-filename"]')"
    same_disk repo/inc.qcow2 src.qcow2
}

@test "copy: the backing file's format given with -F is stored (raw previous backup)" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 full.raw --sync full --bitmap b0 --bitmap-mode on-success -O raw
    qemu_io_fmt qcow2 src.qcow2 "write -P 9 1M 64k"
    copy_ok src.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.raw -F raw
    [ "$(qemu_info inc.qcow2 | jq -r '.["backing-filename-format"]')" = raw ] ||
        fail "backing format: $(qemu_info inc.qcow2 | jq -r '.["backing-filename-format"]')"
    same_disk inc.qcow2 src.qcow2
}

@test "copy: a zeroed cluster in the copy set is a zero cluster when the target has a backing file" {
    qemu-img create -q -f qcow2 z.qcow2 64M
    qemu_io_fmt qcow2 z.qcow2 "write -P 1 0 4M"
    qemu-img bitmap --add z.qcow2 b0
    copy_ok z.qcow2 full.qcow2 --sync full
    qemu_io_fmt qcow2 z.qcow2 "write -z 1M 64k" "discard 2M 64k"
    copy_ok z.qcow2 inc.qcow2 --sync bitmap --bitmap b0 --bitmap-mode never --backing full.qcow2
    qemu-img map --output=json inc.qcow2 >map.json
    local o
    for o in $((1 * M)) $((2 * M)); do
        jq -e --argjson o "$o" 'any(.[]; .start <= $o and $o < .start + .length and
            .depth == 0 and .zero and (.data | not) and .present)' map.json >/dev/null ||
            fail "offset $o is not a zero cluster of inc.qcow2: $(cat map.json)"
    done
    same_disk inc.qcow2 z.qcow2
}

@test "copy: a zeroed cluster in the copy set is not allocated when the target has no backing file" {
    qemu-img create -q -f qcow2 z.qcow2 64M
    qemu_io_fmt qcow2 z.qcow2 "write -P 1 0 4M"
    qemu-img bitmap --add z.qcow2 b0
    qemu_io_fmt qcow2 z.qcow2 "write -z 1M 64k" "write -P 2 3M 64k"
    copy_ok z.qcow2 t.qcow2 --sync bitmap --bitmap b0 --bitmap-mode never --no-backing
    qemu-img map --output=json t.qcow2 >map.json
    jq -e --argjson o $((1 * M)) 'any(.[]; .start <= $o and $o < .start + .length and
        (.present | not) and (.data | not))' map.json >/dev/null ||
        fail "offset 1M is allocated in t.qcow2: $(cat map.json)"
    run --separate-stderr qemu-io -f qcow2 -c "read -P 2 $((3 * M)) 64k" -c "read -P 0 $((1 * M)) 64k" t.qcow2
    [[ $output != *failed* ]] || fail "t.qcow2: $output"
}

@test "copy: incremental with an empty bitmap copies nothing and reads as its backing" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    qbak_json src.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2
    [ "$(jq '.["clusters-copied"] + .["zero-clusters"]' <<<"$output")" -eq 0 ] ||
        fail "copied from an empty bitmap: $output"
    [ "$(python3 "$QBAK_CLI_TESTDIR/compare-alloc.py" --count inc.qcow2 | jq '.["data-clusters"]')" -eq 0 ] ||
        fail "inc.qcow2 holds data"
    same_disk inc.qcow2 src.qcow2
    check_clean inc.qcow2
}

# ---- bitmap granularities and cluster sizes -------------------------------

# granularity_case G: a source whose bitmap b0 has granularity G.
granularity_case() {
    mkimage g.qcow2 --size 64M --fill 2M --bitmap b0 --granularity "$1" --dirty 1% \
        --runs 1 --zero-writes 3 --discards 3 --compressed 2 --seed 11
    [ "$(qemu_granularity g.qcow2 b0)" -eq "$(numfmt --from=iec "${1^^}")" ] ||
        fail "fixture: granularity $(qemu_granularity g.qcow2 b0)"
    incremental_roundtrip g.qcow2 --size 64M --seed 12
}

@test "copy: incremental with a 512 B bitmap granularity is identical to the source" {
    granularity_case 512
}

@test "copy: incremental with a 4 KiB bitmap granularity is identical to the source" {
    granularity_case 4k
}

@test "copy: incremental with a 32 KiB bitmap granularity is identical to the source" {
    granularity_case 32k
}

@test "copy: incremental with a 128 KiB bitmap granularity is identical to the source" {
    granularity_case 128k
}

@test "copy: incremental with a 2 MiB bitmap granularity is identical to the source" {
    granularity_case 2M
}

@test "copy: --cluster-size 4k makes a 4 KiB-cluster target identical to the source" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 t.qcow2 --sync full --cluster-size 4k
    [ "$(qemu_info t.qcow2 | jq '.["cluster-size"]')" -eq 4096 ] ||
        fail "cluster size: $(qemu_info t.qcow2 | jq '.["cluster-size"]')"
    same_disk t.qcow2 src.qcow2
    check_clean t.qcow2
}

# 512 B clusters: an L2 table (64 entries, 32 KiB of disk) is smaller than
# a page, and the 2048 tables of a 64 MiB disk all fit in one held-back
# batch until finish.
@test "copy: --cluster-size 512 full and incremental targets are identical to the source" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success \
        --cluster-size 512
    [ "$(qemu_info full.qcow2 | jq '.["cluster-size"]')" -eq 512 ] ||
        fail "cluster size: $(qemu_info full.qcow2 | jq '.["cluster-size"]')"
    same_disk full.qcow2 src.qcow2
    check_clean full.qcow2
    mkimage src.qcow2 --no-create --size 64M --dirty 1% --zero-writes 3 --discards 3 --seed 16
    copy_ok src.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2 \
        --cluster-size 512
    same_disk inc.qcow2 src.qcow2
    check_clean inc.qcow2
}

@test "copy: --cluster-size 4k incremental on a 64 KiB full is identical to the source" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    mkimage src.qcow2 --no-create --size 64M --dirty 1% --zero-writes 3 --discards 3 --seed 13
    copy_ok src.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2 --cluster-size 4k
    same_disk inc.qcow2 src.qcow2
    check_clean inc.qcow2
}

@test "copy: a 2 MiB-cluster source gives a target identical to it (full and incremental)" {
    mkimage c.qcow2 --size 64M --cluster-size 2M --fill 2M --bitmap b0 --dirty 5% \
        --zero-writes 3 --discards 3 --compressed 2 --seed 14
    incremental_roundtrip c.qcow2 --size 64M --cluster-size 2M --seed 15
    [ "$(qemu_info full.qcow2 | jq '.["cluster-size"]')" -eq $((2 * M)) ] ||
        fail "default cluster size is not the source's: $(qemu_info full.qcow2 | jq '.["cluster-size"]')"
}

# qemu-io commands writing one 64 KiB cluster with PATTERN in each of N L2
# tables (512 MiB each) from table FIRST on, at a different place in each.
scattered_writes() {
    local pattern=$1 first=$2 n=$3 k
    for ((k = first; k < first + n; k++)); do
        printf -- "-c\0write -P %d %d 64k\0" "$pattern" \
            $((k * 512 * M + (k * 37 % 8192) * 64 * K))
    done
}

@test "copy: scattered clusters over more L2 tables than a batch holds: identical, and the data lies in long runs" {
    qemu-img create -q -f qcow2 s.qcow2 100G
    scattered_writes 0x5a 0 150 | xargs -0 qemu-io -f qcow2 s.qcow2 >/dev/null
    copy_ok s.qcow2 full.qcow2 --sync full
    same_disk full.qcow2 s.qcow2
    check_clean full.qcow2
    # The 150 data clusters, in guest order, are contiguous on the host
    # except where a batch of completed L2 tables was appended (64 tables
    # per batch for 64 KiB clusters): a few breaks, not one per cluster.
    breaks=$(qemu-img map --output=json full.qcow2 | jq '
        [.[] | select(.data) | {o: .offset, l: .length}]
        | [range(1; length) as $i | select(.[$i].o != .[$i-1].o + .[$i-1].l)]
        | length')
    [ "$breaks" -le 5 ] || fail "data of full.qcow2 breaks $breaks times on the host"
    # An incremental of 150 more scattered clusters, one of them zeroed.
    qemu-img bitmap --add s.qcow2 b0
    { scattered_writes 0xa5 20 150
      printf -- "-c\0write -z %d 64k\0" $((40 * 512 * M + (40 * 37 % 8192) * 64 * K))
    } | xargs -0 qemu-io -f qcow2 s.qcow2 >/dev/null
    copy_ok s.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2
    same_disk inc.qcow2 s.qcow2
    check_clean inc.qcow2
}

# ---- source kinds ----------------------------------------------------------

# kind_case OPTS: a qcow2 made with -o OPTS, bitmap b0, mkimage writes with
# compressed clusters; a full backup then an incremental.  mkimage's
# compressed writes fail on allocated clusters: the seeds are ones whose
# compressed clusters all land on unallocated ones.
kind_case() {
    qemu-img create -q -f qcow2 -o "$1" k.qcow2 64M
    qemu-img bitmap --add k.qcow2 b0
    mkimage k.qcow2 --no-create --size 64M --dirty 2% --runs 1 --zero-writes 3 \
        --discards 3 --compressed 6 --seed 21
    copy_ok k.qcow2 full0.qcow2 --sync full
    same_disk full0.qcow2 k.qcow2
    check_clean full0.qcow2
    incremental_roundtrip k.qcow2 --size 64M --compressed 3 --seed 24
}

@test "copy: a zlib-compressed qcow2 source is copied identically" {
    kind_case compression_type=zlib
}

@test "copy: a zstd-compressed qcow2 source is copied identically" {
    kind_case compression_type=zstd
    [ "$(qemu_info k.qcow2 | jq -r '.["format-specific"].data["compression-type"]')" = zstd ] ||
        fail "fixture is not zstd"
}

@test "copy: an extended_l2 qcow2 source is copied identically" {
    kind_case extended_l2=on
    qemu_io_fmt qcow2 k.qcow2 "write -P 3 $((5 * M + 4 * K)) 4k"
    copy_ok k.qcow2 sub.qcow2 --sync full
    same_disk sub.qcow2 k.qcow2
}

@test "copy: sync full of a backing chain copies the whole disk, without a backing file" {
    mkimage base.qcow2 --size 64M --fill 4M --dirty 2% --compressed 2 --seed 31
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    mkimage top.qcow2 --no-create --size 64M --dirty 2% --zero-writes 3 --discards 3 --seed 32
    copy_ok top.qcow2 t.qcow2 --sync full
    [ "$(qemu_info t.qcow2 | jq -r '.["backing-filename"] // "none"')" = none ] ||
        fail "t.qcow2 has a backing file"
    same_disk t.qcow2 top.qcow2
    check_clean t.qcow2
}

@test "copy: a data_file_raw qcow2 with a bitmap: full then incremental are identical" {
    qemu-img create -q -f qcow2 -o data_file=d.raw,data_file_raw=on d.qcow2 64M
    qemu-img bitmap --add d.qcow2 b0
    qemu_io_fmt qcow2 d.qcow2 "write -P 5 0 2M" "write -P 6 $((30 * M)) 64k" "write -z $((40 * M)) 64k"
    copy_ok d.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    same_disk full.qcow2 d.qcow2
    qemu_io_fmt qcow2 d.qcow2 "write -P 7 1M 64k" "write -z 0 64k" "write -P 8 $((50 * M)) 128k"
    copy_ok d.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2
    same_disk inc.qcow2 d.qcow2
    check_clean inc.qcow2
    check_clean d.qcow2
}

@test "copy: a raw source to -O raw is identical and sparse" {
    qemu-img create -q -f raw r.raw 64M
    qemu_io_fmt raw r.raw "write -P 1 0 1M" "write -P 2 $((10 * M)) 64k" "write -P 3 $((63 * M)) 1M"
    copy_ok r.raw t.raw --sync full -O raw
    run --separate-stderr qemu-img compare -f raw -F raw r.raw t.raw
    [ "$status" -eq 0 ] || fail "compare: $output $stderr"
    [ "$(stat -c %s t.raw)" -eq $((64 * M)) ] || fail "size: $(stat -c %s t.raw)"
    local used
    used=$(( $(stat -c '%b * %B' t.raw) ))
    [ "$used" -le $((4 * M)) ] || fail "t.raw is not sparse: $used bytes allocated for 2 MiB of data"
}

@test "copy: a raw source to qcow2 is identical and passes qemu-img check" {
    qemu-img create -q -f raw r.raw 64M
    qemu_io_fmt raw r.raw "write -P 1 0 1M" "write -P 2 $((10 * M)) 64k" "write -P 3 $((63 * M)) 1M"
    copy_ok r.raw t.qcow2 --sync full -O qcow2
    run --separate-stderr qemu-img compare -f raw -F qcow2 r.raw t.qcow2
    [ "$status" -eq 0 ] || fail "compare: $output $stderr"
    check_clean t.qcow2
}

@test "copy: a qcow2 source to -O raw is identical" {
    cp "$F/src.qcow2" src.qcow2
    copy_ok src.qcow2 t.raw --sync full -O raw
    run --separate-stderr qemu-img compare -f qcow2 -F raw src.qcow2 t.raw
    [ "$status" -eq 0 ] || fail "compare: $output $stderr"
}

@test "copy: a qcow v1 source (sync full) is identical" {
    qemu-img create -q -f qcow v1.qcow 64M
    qemu_io_fmt qcow v1.qcow "write -P 3 0 1M" "write -P 4 $((20 * M)) 4k" "write -P 5 $((63 * M)) 64k"
    copy_ok v1.qcow t.qcow2 --sync full
    run --separate-stderr qemu-img compare -f qcow -F qcow2 v1.qcow t.qcow2
    [ "$status" -eq 0 ] || fail "compare: $output $stderr"
    check_clean t.qcow2
}
