#!/usr/bin/env bats
# qbak verify: a repository read back without its source.  Damage is made
# with plain tools where QEMU's own tools say it is (qemu-img map for the
# host offset of a data cluster, dd for one byte), and every finding must
# name the right point, its dependents, and nothing else.

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

# points REPO: the point ids, oldest first.
points() {
    local f
    for f in "$1"/points/*.json; do
        [ -e "$f" ] || continue
        basename "$f" .json
    done | sort -t- -k1,1 -k2,2n
}

# backup ARGS... REPO: qbak backup, which must succeed, in a second of its
# own (wait_past_repo).
backup() {
    wait_past_repo "${!#}"
    run --separate-stderr qbak backup "$@"
    [ "$status" -eq 0 ] || fail "qbak backup $*: exit $status: $stderr"
}

# three_points: repo with a full and two incrementals of vda (64M) and of
# vdb (16M, from the second point on); P1 P2 P3 are their ids.
three_points() {
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-img create -q -f qcow2 vdb.qcow2 16M
    qemu-io -c 'write -P 0x11 0 3M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    qemu-io -c 'write -P 0x22 1M 1M' -c 'write -z 5M 1M' vda.qcow2 >/dev/null
    qemu-io -c 'write -P 0x44 0 2M' vdb.qcow2 >/dev/null
    backup vda.qcow2 vdb.qcow2 repo
    qemu-io -c 'write -P 0x33 8M 1M' vda.qcow2 >/dev/null
    qemu-io -c 'write -P 0x55 4M 1M' vdb.qcow2 >/dev/null
    backup vda.qcow2 vdb.qcow2 repo
    read -r P1 P2 P3 <<<"$(points repo | tr '\n' ' ')"
    [ -n "$P3" ] || fail "three points expected: $(points repo)"
}

# verify_json ARGS...: qbak verify --json; $status, $output (JSON),
# $stderr.
verify_json() {
    run --separate-stderr qbak verify --json "$@"
}

# state_of POINT: the state the last run reported for POINT.
state_of() {
    jq -r --arg p "$1" '.points[] | select(.id == $p) | .state' <<<"$output"
}

# expect_states "P1=ok P2=failed ...": the last run's states.
expect_states() {
    local pair
    for pair in $1; do
        [ "$(state_of "${pair%%=*}")" = "${pair#*=}" ] ||
            fail "point ${pair%%=*}: $(state_of "${pair%%=*}"), expected" \
                 "${pair#*=}: $output $stderr"
    done
}

# flip_data FILE: flip one byte inside the first data cluster the file
# itself holds (qemu-img map: depth 0, data); prints its guest offset.
flip_data() {
    local map off start
    map=$(qemu-img map --output=json -f qcow2 "$1")
    off=$(jq -e 'map(select(.depth == 0 and .data == true))[0].offset' \
          <<<"$map") || fail "no data cluster in $1: $map"
    start=$(jq -e 'map(select(.depth == 0 and .data == true))[0].start' \
            <<<"$map")
    python3 - "$1" "$((off + 100))" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0x01]))
EOF
    printf '%#x\n' "$start"
}

@test "verify: an untouched repository exits 0, every file read once, data checked" {
    three_points
    for f in repo/disks/*/*.qcow2; do
        check_clean "$f"
    done
    verify_json repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=ok $P3=ok"
    [ "$(jq -r .status <<<"$output")" = ok ]
    # 5 files (vda: 3, vdb: 2), each once although chains share them.
    [ "$(jq -r .files <<<"$output")" -eq 5 ] || fail "$output"
    jq -e '[.points[].disks[] | .data == "checked" and (.errors | length) == 0]
           | all' <<<"$output" >/dev/null || fail "$output"
    [[ $stderr != *mismatch* ]]
    # Quiet for cron.
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ -z "$output" ] && [ -z "$stderr" ] || fail "$output $stderr"
}

@test "verify: one flipped byte in a data cluster fails its point and the later ones, naming the offset" {
    three_points
    local where
    where=$(flip_data "repo/disks/vda/$P2.qcow2")
    # QEMU sees nothing wrong: the damage is in the data.
    check_clean "repo/disks/vda/$P2.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=failed $P3=failed"
    [ "$(jq -r .status <<<"$output")" = mismatch ]
    # The finding names point, disk, file and guest offset.
    [[ $stderr == *"point $P2, disk vda, disks/vda/$P2.qcow2 at offset $where:"* ]] ||
        fail "stderr: $stderr"
    jq -e --arg f "disks/vda/$P2.qcow2" --argjson o "$((where))" \
        '.points[] | select(.state == "failed") | .disks[] |
         select(.name == "vda") | .errors[0] | .file == $f and .offset == $o' \
        <<<"$output" >/dev/null || fail "$output"
    # vdb is fine at every point.
    jq -e '[.points[].disks[] | select(.name == "vdb") | .state == "ok"] | all' \
        <<<"$output" >/dev/null || fail "$output"
}

@test "verify: clusters of 512 bytes and of 2 MiB, a byte flipped past the first read request" {
    # Data is read in requests of 256 KiB (512 clusters of 512 bytes),
    # and a cluster larger than that one per request: the damage must be
    # found and named at its own cluster either way.
    local cs guest host
    for cs in 512 2097152; do
        rm -rf repo d.qcow2
        qemu-img create -q -f qcow2 -o cluster_size=$cs d.qcow2 16M
        qemu-io -c 'write -P 0x5a 0 5M' d.qcow2 >/dev/null
        backup d.qcow2 repo
        run --separate-stderr qbak verify repo
        [ "$status" -eq 0 ] || fail "cluster size $cs: exit $status: $stderr"
        guest=$((3 * 1048576 + 4097))
        host=$(qemu-img map --output=json -f qcow2 repo/disks/d/*.qcow2 |
               jq -e --argjson g $guest 'map(select(.data and .start <= $g and
                      $g < .start + .length))[0] | .offset + $g - .start') ||
            fail "cluster size $cs: no data at $guest"
        printf '\xa5' | dd of="$(echo repo/disks/d/*.qcow2)" bs=1 seek="$host" \
            conv=notrunc status=none
        run --separate-stderr qbak verify repo
        [ "$status" -eq 5 ] || fail "cluster size $cs: exit $status: $stderr"
        [[ $stderr == *"at offset $(printf '%#x' $((guest / cs * cs))):"* ]] ||
            fail "cluster size $cs: $stderr"
    done
}

@test "verify: a truncated full fails every point of its disk" {
    three_points
    truncate -s 200K "repo/disks/vda/$P1.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=failed $P2=failed $P3=failed"
    [[ $stderr == *"disks/vda/$P1.qcow2"* ]] || fail "$stderr"
    jq -e '[.points[].disks[] | select(.name == "vdb") | .state == "ok"] | all' \
        <<<"$output" >/dev/null || fail "$output"
    # Truncated in its data only (the metadata is all there): the read
    # past the end is found too.
    rm -rf repo vda.qcow2 vdb.qcow2
    three_points
    local size
    size=$(stat -c %s "repo/disks/vdb/$P3.qcow2")
    truncate -s $((size - 65536)) "repo/disks/vdb/$P3.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=ok $P3=failed"
}

@test "verify: a file swapped for another point's file, and a missing file" {
    three_points
    cp -a repo saved
    cp "repo/disks/vda/$P3.qcow2" "repo/disks/vda/$P2.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=failed $P3=failed"
    [[ $stderr == *"disks/vda/$P2.qcow2"* ]] || fail "$stderr"
    # Two fulls of the same size swapped: only the data tells.
    rm -rf repo && cp -a saved repo
    qemu-img create -q -f qcow2 other.qcow2 64M
    qemu-io -c 'write -P 0x77 0 3M' other.qcow2 >/dev/null
    backup other.qcow2=vda repo2
    cp "repo2/disks/vda/$(points repo2).qcow2" "repo/disks/vda/$P1.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=failed $P2=failed $P3=failed"
    # A missing file.
    rm -rf repo && cp -a saved repo
    rm "repo/disks/vdb/$P2.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=failed $P3=failed"
    [[ $stderr == *"point $P2, disk vdb, disks/vdb/$P2.qcow2: missing"* ]] ||
        fail "$stderr"
}

@test "verify: a backing name rewritten in place (same length) fails that point only" {
    three_points
    local f=repo/disks/vda/$P3.qcow2 off len name
    off=$(od -An -t u8 --endian=big -j 8 -N 8 "$f" | tr -d ' ')
    len=$(od -An -t u4 --endian=big -j 16 -N 4 "$f" | tr -d ' ')
    name=$(dd if="$f" bs=1 skip="$off" count="$len" status=none)
    [ "$name" = "$P2.qcow2" ] || fail "backing name '$name'"
    # Point at the full instead: same length, another existing file.
    printf '%s' "$P1.qcow2" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
    [ "$(qemu-img info --output=json "$f" | jq -r '."backing-filename"')" = "$P1.qcow2" ]
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=ok $P3=failed"
    [[ $stderr == *"backing file '$P1.qcow2'"* ]] || fail "$stderr"
}

@test "verify: a leaked cluster, a damaged or missing manifest, and files without manifests" {
    three_points
    cp -a repo saved
    # A cluster appended to the file with a refcount and nothing that
    # references it: qemu-img check calls it a leak, and so does verify.
    local f=repo/disks/vda/$P2.qcow2
    python3 - "$f" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(104)
    cbits = struct.unpack(">I", h[20:24])[0]
    rt = struct.unpack(">Q", h[48:56])[0]
    order = struct.unpack(">I", h[96:100])[0]
    assert order == 4
    f.seek(0, 2)
    end = f.tell()
    assert end % (1 << cbits) == 0
    f.write(bytes(1 << cbits))
    k = end >> cbits
    f.seek(rt)
    rb = struct.unpack(">Q", f.read(8))[0]
    f.seek(rb + 2 * k)
    f.write(struct.pack(">H", 1))
EOF
    run qemu-img check "$f"
    [ "$status" -eq 3 ] || fail "qemu-img check: $status $output"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=failed $P3=failed"
    [[ $stderr == *"1 cluster leaked"* ]] || fail "$stderr"

    # A manifest with one byte changed: its digest is not the record's.
    rm -rf repo && cp -a saved repo
    printf 'X' | dd of="repo/disks/vdb/$P3.manifest" bs=1 seek=100 \
        conv=notrunc status=none
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=ok $P3=failed"
    [[ $stderr == *"disks/vdb/$P3.qcow2: its manifest"*digest* ]] ||
        fail "$stderr"
    # A missing manifest.
    rm -rf repo && cp -a saved repo
    rm "repo/disks/vda/$P1.manifest"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=failed $P2=failed $P3=failed"
    [[ $stderr == *"manifest disks/vda/$P1.manifest is missing"* ]] ||
        fail "$stderr"

    # Records of an older qbak name no manifest: structure and chain are
    # still checked, and the data is said not to be.
    rm -rf repo && cp -a saved repo
    local r
    for r in repo/points/*.json; do
        jq '.disks[] |= (.manifest = null | ."manifest-digest" = null)' \
            "$r" > r.json && mv r.json "$r"
    done
    rm repo/disks/*/*.manifest
    verify_json repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    jq -e '[.points[].disks[] | .state == "ok" and .data == "not-checked"]
           | all' <<<"$output" >/dev/null || fail "$output"
    cp "repo/disks/vda/$P3.qcow2" "repo/disks/vda/$P2.qcow2"
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=ok $P2=failed $P3=failed"
}

@test "verify: states are kept; list shows them; a partial pass never clears a failure" {
    three_points
    run --separate-stderr qbak list --json repo
    jq -e '[.points[].verify == null] | all' <<<"$output" >/dev/null ||
        fail "$output"
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak list --json repo
    jq -e '[.points[].verify | .state == "ok" and (."unix-time" > 0)
            and (.time | test("Z$"))] | all' <<<"$output" >/dev/null ||
        fail "$output"
    run --separate-stderr qbak list repo
    [[ $output == *VERIFIED* && $output == *"ok 20"* ]] || fail "$output"
    jq -e '.verify.state == "ok" and .verify.errors == []' \
        "repo/state/$P2.json" >/dev/null || fail "$(cat "repo/state/$P2.json")"

    # Damage, found: failed, with the errors kept.
    cp "repo/disks/vda/$P2.qcow2" saved.qcow2
    flip_data "repo/disks/vda/$P2.qcow2" >/dev/null
    run --separate-stderr qbak verify repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    jq -e --arg f "disks/vda/$P2.qcow2" \
        '.verify.state == "failed" and .verify.errors[0].file == $f' \
        "repo/state/$P3.json" >/dev/null || fail "$(cat "repo/state/$P3.json")"
    run --separate-stderr qbak list repo
    [[ $output == *"failed 20"* ]] || fail "$output"

    # Put back: a sampled pass or one of vdb alone finds nothing, but the
    # points stay failed; a complete pass makes them good again.
    cp saved.qcow2 "repo/disks/vda/$P2.qcow2"
    run --separate-stderr qbak verify --sample 50 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak verify --disk vdb repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak list --json repo
    jq -e --arg p "$P2" '.points[] | select(.id == $p) | .verify.state == "failed"' \
        <<<"$output" >/dev/null || fail "$output"
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak list --json repo
    jq -e '[.points[].verify.state == "ok"] | all' <<<"$output" >/dev/null ||
        fail "$output"
    # A sampled pass on a good point says so.
    run --separate-stderr qbak verify --sample 10 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    jq -e '.verify.state == "ok" and .verify.sampled == 10' \
        "repo/state/$P1.json" >/dev/null || fail "$(cat "repo/state/$P1.json")"
}

@test "verify: an interrupted run exits 130 and clears no failure, even of points it finished" {
    three_points
    # How many reads a whole pass makes.
    QBAK_FAILPOINT_COUNT=$T/count qbak verify repo
    local reads pid state
    reads=$(awk '$1 == "read" { print $2 }' "$T/count")
    [ "$reads" -gt 4 ] || fail "reads: $reads"
    cp "repo/disks/vda/$P1.qcow2" saved.qcow2
    flip_data "repo/disks/vda/$P1.qcow2" >/dev/null
    run --separate-stderr qbak verify repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    cp saved.qcow2 "repo/disks/vda/$P1.qcow2"
    # Stop it halfway through its reads (a fail point), then interrupt.
    # The binary itself, so that $! is its pid.
    QBAK_FAILPOINT=read:$((reads / 2)):stop "$QBAK" verify repo \
        2>stderr.txt &
    pid=$!
    for _ in $(seq 200); do
        state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
        [ "$state" = T ] && break
        sleep 0.05
    done
    kill -INT "$pid"
    kill -CONT "$pid"
    local rc=0
    wait "$pid" || rc=$?
    [ "$state" = T ] || fail "not stopped: $state"
    [ "$rc" -eq 130 ] || fail "exit $rc: $(cat stderr.txt)"
    run --separate-stderr qbak list --json repo
    jq -e '[.points[].verify.state == "failed"] | all' <<<"$output" \
        >/dev/null || fail "$output"
    # A whole pass that ends clears them.
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak list --json repo
    jq -e '[.points[].verify.state == "ok"] | all' <<<"$output" \
        >/dev/null || fail "$output"
}

@test "verify: --sample reads a share of the data; --at and --disk pick" {
    qemu-img create -q -f qcow2 vda.qcow2 256M
    qemu-io -c 'write -P 0x11 0 200M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    verify_json --sample 5 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    # Every cluster of 200 MiB is one bit flip away from a failure: flip
    # one in each MiB; a 5% sample finds some, and only ever exit 5.
    local f=repo/disks/vda/$(points repo).qcow2
    python3 - "$f" <<'EOF'
import json, subprocess, sys
m = json.loads(subprocess.check_output(
    ["qemu-img", "map", "--output=json", "-f", "qcow2", sys.argv[1]]))
with open(sys.argv[1], "r+b") as f:
    for e in m:
        if not e["data"]:
            continue
        for o in range(e["offset"], e["offset"] + e["length"], 1 << 20):
            f.seek(o + 7)
            b = f.read(1)
            f.seek(o + 7)
            f.write(bytes([b[0] ^ 0x80]))
EOF
    verify_json --sample 5 repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    [ "$(grep -c 'at offset' <<<"$stderr")" -le 10 ] || fail "$stderr"
    # A whole pass: at most 10 offsets per file, then a count.
    verify_json repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    [ "$(grep -c 'at offset' <<<"$stderr")" -eq 10 ] || fail "$stderr"
    [[ $stderr == *"and 190 more clusters differ"* ]] || fail "$stderr"
    # Told in guest order, the first ten (requests are hashed on another
    # thread while the next is read): the flipped clusters are the first
    # of each MiB.
    local told want
    told=$(grep -o 'at offset [0-9a-fx]*' <<<"$stderr" | awk '{print $3}' |
           while read -r o; do echo $((o)); done | tr '\n' ' ')
    want=$(for i in $(seq 0 9); do echo $((i << 20)); done | tr '\n' ' ')
    [ "$told" = "$want" ] || fail "told: $told, expected: $want"

    rm -rf repo vda.qcow2
    three_points
    verify_json --at "$P2" repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq -r '.points | length' <<<"$output")" -eq 1 ]
    expect_states "$P2=ok"
    [ "$(jq -r .files <<<"$output")" -eq 3 ] || fail "$output"
    verify_json --disk vdb repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq -r .files <<<"$output")" -eq 2 ] || fail "$output"
    [ "$(jq -r '.points | length' <<<"$output")" -eq 2 ]
    run --separate-stderr qbak verify --disk nope repo
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak verify --at 20000101T000000Z repo
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak verify --sample 0 repo
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
}

@test "verify: --outdated-after skips points verified recently, never a dependent of a bad file" {
    three_points
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    verify_json --outdated-after 1 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    expect_states "$P1=skipped $P2=skipped $P3=skipped"
    [ "$(jq -r .files <<<"$output")" -eq 0 ] || fail "$output"
    # A new point is verified (with the files its chain needs).
    qemu-io -c 'write -P 0x66 9M 1M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    local p4
    p4=$(points repo | tail -1)
    verify_json --outdated-after 1 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    expect_states "$P1=skipped $P2=skipped $P3=skipped $p4=ok"
    [ "$(jq -r .files <<<"$output")" -eq 4 ] || fail "$output"
    # A bad file the new point needs fails the skipped points that hold
    # it too.
    flip_data "repo/disks/vda/$P2.qcow2" >/dev/null
    qemu-io -c 'write -P 0x67 9M 1M' vda.qcow2 >/dev/null
    backup vda.qcow2 repo
    verify_json --outdated-after 1 repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    expect_states "$P1=skipped $P2=failed $P3=failed $p4=failed"
    # 0 days: everything again.
    verify_json --outdated-after 0 repo
    [ "$status" -eq 5 ]
    expect_states "$P1=ok $P2=failed"
}

@test "verify: after a prune merged files, their points are verified again; a removed point's state goes" {
    three_points
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak prune --keep-last 2 repo
    [ "$status" -eq 0 ] || fail "prune: exit $status: $stderr"
    [ ! -e "repo/points/$P1.json" ]
    # P2's file took P1's data in: what was verified of it no longer
    # stands, nor for P3, whose chain holds it.
    verify_json --outdated-after 1 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    expect_states "$P2=ok $P3=ok"
    [ ! -e "repo/state/$P1.json" ] || fail "state of $P1 left"
    verify_json --outdated-after 1 repo
    expect_states "$P2=skipped $P3=skipped"
}

@test "verify: --source against the latest point, with the bitmap telling changes from damage" {
    three_points
    run --separate-stderr qbak verify --json --source vda.qcow2 \
        --source vdb.qcow2 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    jq -e '(.sources | length) == 2 and
           ([.sources[] | .bitmap and .mismatch == 0 and .changed == 0] | all)' \
        <<<"$output" >/dev/null ||
        fail "$output"
    # The same with both disks after one --source.
    run --separate-stderr qbak verify --json --source vda.qcow2 vdb.qcow2 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq -r '[.sources[].disk] | join(" ")' <<<"$output")" = "vda vdb" ] ||
        fail "$output"
    run --separate-stderr qbak verify vda.qcow2 repo
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    # Written since (QEMU records it in the bitmap): a change, exit 0.
    qemu-io -c 'write -P 0x99 20M 1M' vda.qcow2 >/dev/null
    run --separate-stderr qbak verify --json --source vda.qcow2 repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    jq -e '.sources[0] | .changed > 0 and .mismatch == 0' <<<"$output" \
        >/dev/null || fail "$output"
    # Changed behind the bitmap's back (a byte of the disk file written
    # directly): a mismatch, exit 5, at that guest offset.
    local map off start
    map=$(qemu-img map --output=json -f qcow2 vdb.qcow2)
    off=$(jq -e 'map(select(.data == true))[0].offset' <<<"$map")
    start=$(jq -e 'map(select(.data == true))[0].start' <<<"$map")
    printf 'X' | dd of=vdb.qcow2 bs=1 seek=$((off + 10)) conv=notrunc status=none
    run --separate-stderr qbak verify --json --source vdb.qcow2 repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    jq -e '.sources[0] | .mismatch == 1' <<<"$output" >/dev/null ||
        fail "$output"
    [[ $stderr == *"vdb.qcow2 at offset $(printf '%#x' "$start")"* ]] ||
        fail "$stderr"
    # The points themselves are good, and stay so.
    expect_states "$P1=ok $P2=ok $P3=ok"
}

@test "verify: --source of a raw disk: any difference is a mismatch" {
    truncate -s 16M disk.raw
    qemu-io -f raw -c 'write -P 0x21 0 2M' disk.raw >/dev/null
    backup -f raw disk.raw repo
    run --separate-stderr qbak verify --json --source disk.raw repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    jq -e '.sources[0] | (.bitmap | not) and .mismatch == 0' <<<"$output" \
        >/dev/null || fail "$output"
    qemu-io -f raw -c 'write -P 0x22 4M 64k' disk.raw >/dev/null
    run --separate-stderr qbak verify --json --source disk.raw=disk repo
    [ "$status" -eq 5 ] || fail "exit $status: $stderr"
    [[ $stderr == *"no bitmap tells"* ]] || fail "$stderr"
    run --separate-stderr qbak verify --source nosuch.raw repo
    [ "$status" -ne 0 ] && [ "$status" -ne 5 ] || fail "exit $status"
}

@test "verify: usage, a busy repository, help" {
    run --separate-stderr qbak verify
    [ "$status" -eq 2 ]
    run --separate-stderr qbak verify --help
    [ "$status" -eq 0 ]
    [[ $output == *--outdated-after* && $output == *"raw disk"* ]]
    run --separate-stderr qbak verify --json nowhere
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    jq -e '.status == "failed" and ."exit-code" == 2' <<<"$output" \
        >/dev/null || fail "$output"
    # State is written under the repository's lock: a holder makes it
    # exit 4 naming it (a POSIX lock conflicts with qbak's OFD lock).
    qemu-img create -q -f qcow2 vda.qcow2 8M
    backup vda.qcow2 repo
    printf 'host h, pid other\n' > repo/lock
    python3 -c '
import fcntl, sys, time
f = open("repo/lock", "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
open("locked", "w").close()
time.sleep(30)' &
    local holder=$!
    for _ in $(seq 100); do [ -e locked ] && break; sleep 0.1; done
    run --separate-stderr qbak verify repo
    kill "$holder"
    wait "$holder" || true
    [ "$status" -eq 4 ] || fail "exit $status: $stderr"
    [[ $stderr == *"pid other"* ]] || fail "$stderr"
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
}
