#!/usr/bin/env bats
# qbak prune: chain-aware removal, checked with QEMU's tools (qemu-img
# compare through the repository's own chains, qemu-img check), against
# copies of the disks kept at each point.

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
}

points() {
    local f
    for f in "$1"/points/*.json; do
        [ -e "$f" ] || continue
        basename "$f" .json
    done | sort -t- -k1,1 -k2,2n
}

# A point's file of DISK reads as the copy kept at backup time.
reads_as_copy() {
    run qemu-img compare -f qcow2 -F qcow2 "$1/disks/$3/$2.qcow2" "copy-$2-$3.qcow2"
    [ "$status" -eq 0 ] || fail "point $2 disk $3: $output"
}

# 14 points over 2 disks, a day apart (QBAK_TEST_NOW), vdb added at the
# 4th; writes, zero writes and discards between.
make_points() {
    local i t
    qemu-img create -q -f qcow2 vda.qcow2 16M
    qemu-img create -q -f qcow2 vdb.qcow2 16M
    qemu-io -c 'write -P 1 0 6M' vda.qcow2 >/dev/null
    qemu-io -c 'write -P 2 0 4M' vdb.qcow2 >/dev/null
    for i in $(seq 0 13); do
        if [ "$i" -gt 0 ]; then
            qemu-io -c "write -P $((i + 16)) $((i * 512))k 256k" \
                -c "write -z $(( (i * 768 + 64) % 15000 ))k 64k" \
                -c "discard $(( (i * 1024 + 2048) % 15000 ))k 64k" vda.qcow2 >/dev/null
            qemu-io -c "write -P $((i + 48)) $((i * 320))k 128k" vdb.qcow2 >/dev/null
        fi
        t=$((1764547200 + i * 86400))     # 2025-12-01, one day apart
        if [ "$i" -lt 3 ]; then
            QBAK_TEST_NOW=$t "$QBAK" backup --tz UTC vda.qcow2 repo 2>/dev/null
        else
            QBAK_TEST_NOW=$t "$QBAK" backup vda.qcow2 vdb.qcow2 repo
        fi
        p=$(points repo | tail -1)
        cp vda.qcow2 "copy-$p-vda.qcow2"
        cp vdb.qcow2 "copy-$p-vdb.qcow2"
    done
}

@test "prune: 14 points over 2 disks, keep-last 3 and keep-weekly 2: kept points read the same, files clean, space drops" {
    make_points
    [ "$(points repo | wc -l)" -eq 14 ]
    before=$(du -sk repo | cut -f1)
    run --separate-stderr qbak prune --dry-run --json --keep-last 3 --keep-weekly 2 repo
    [ "$status" -eq 0 ] || fail "dry run: $stderr"
    keep=$(jq -r '.points[] | select(.action == "keep") | .id' <<<"$output")
    gone=$(jq -r '.points[] | select(.action == "remove") | .id' <<<"$output")
    [ -n "$gone" ] || fail "the policy removes nothing: $output"
    [ "$(points repo | wc -l)" -eq 14 ]        # a dry run changes nothing
    # list with the same policy shows the same decisions.
    run --separate-stderr qbak list --json --keep-last 3 --keep-weekly 2 repo
    [ "$status" -eq 0 ] || fail "list: $stderr"
    [ "$(jq -r '.points[] | select(.prune == "keep") | .id' <<<"$output")" = "$keep" ]
    [ "$(jq -r '.points[] | select(.prune == "remove") | .id' <<<"$output")" = "$gone" ]
    run --separate-stderr qbak prune --keep-last 3 --keep-weekly 2 repo
    [ "$status" -eq 0 ] || fail "prune: exit $status: $stderr"
    [ "$(points repo)" = "$keep" ] || fail "kept $(points repo) instead of $keep"
    for p in $keep; do
        for d in vda vdb; do
            [ -e "repo/disks/$d/$p.qcow2" ] || continue
            reads_as_copy repo "$p" "$d"
            check_clean "repo/disks/$d/$p.qcow2"
        done
    done
    for p in $gone; do
        [ ! -e "repo/disks/vda/$p.qcow2" ] && [ ! -e "repo/points/$p.json" ] ||
            fail "$p is still there"
    done
    run --separate-stderr qbak verify repo
    [ "$status" -eq 0 ] || fail "verify after prune: $stderr"
    after=$(du -sk repo | cut -f1)
    [ "$after" -lt "$before" ] || fail "space $before KiB -> $after KiB"
    # The newest point restores to raw through the CLI too.
    p=$(points repo | tail -1)
    run --separate-stderr qbak restore --at "$p" --disk vda -O raw repo out.raw
    [ "$status" -eq 0 ] || fail "$stderr"
    run qemu-img compare -f raw -F qcow2 out.raw "copy-$p-vda.qcow2"
    [ "$status" -eq 0 ] || fail "$output"
    # The next backup chains onto what is left.
    qemu-io -c 'write -P 99 1M 64k' vda.qcow2 >/dev/null
    run --separate-stderr qbak backup vda.qcow2 vdb.qcow2 repo
    [ "$status" -eq 0 ] || fail "$stderr"
    p=$(points repo | tail -1)
    run qemu-img compare -f qcow2 -F qcow2 "repo/disks/vda/$p.qcow2" vda.qcow2
    [ "$status" -eq 0 ] || fail "$output"
}

@test "prune: an empty policy is refused and nothing changes" {
    qemu-img create -q -f qcow2 vda.qcow2 1M
    qbak backup vda.qcow2 repo
    run --separate-stderr qbak prune repo
    [ "$status" -eq 2 ] || fail "exit $status"
    [ "$(points repo | wc -l)" -eq 1 ]
}

@test "prune: a verification that passed for files a merge replaced is not listed as the point's" {
    qemu-img create -q -f qcow2 vda.qcow2 4M
    local i
    for i in 1 2 3 4; do
        qemu-io -c "write -P $i $((i * 256))k 64k" vda.qcow2 >/dev/null
        QBAK_TEST_NOW=$((1764547200 + i * 86400)) qbak backup --tz UTC vda.qcow2 repo 2>/dev/null
    done
    qbak verify repo
    verified() {
        qbak list --json repo | jq -r '.points[] | "\(.id) \(.verify.state // "none")"'
    }
    [ "$(verified | awk '{print $2}' | sort | uniq -c | awk '{print $1 $2}')" = "4ok" ] ||
        fail "before: $(verified)"
    # Keeping the newest 2 drops the 2nd point (its clusters merge into the
    # 3rd point's file) and the full (merged with the 3rd too): the 3rd
    # reads other files now, the 4th reads the 3rd's, so neither was
    # verified as it stands.
    qbak prune --keep-last 2 repo
    run verified
    [ "${#lines[@]}" -eq 2 ] || fail "$output"
    [[ ${lines[0]} == *" none" && ${lines[1]} == *" none" ]] || fail "after: $output"
    qbak list repo | awk '/^20/ {print $7}' | grep -qv '^-$' &&
        fail "the table shows a verification: $(qbak list repo)"
    qbak verify repo
    run verified
    [[ ${lines[0]} == *" ok" && ${lines[1]} == *" ok" ]] || fail "again: $output"
}
