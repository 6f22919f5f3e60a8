#!/usr/bin/env bats
# qbak prune on an s3:// repository, against the test gateway: a removed
# incremental in the middle of a chain and the oldest full are merged
# into their kept children as new versions of the children's objects
# (lib/layer-merge-object.c).  Every kept point then restores identical
# (qemu-img compare) to a copy of the disk saved when it was taken, its
# files are clean (qemu-img check), qbak verify passes, and no temporary
# object or unfinished upload is left.  A prune killed in an upload, one
# whose uploads never complete, and prunes cut off after any number of writes are
# finished by the next backup or prune with the same result.

bats_require_minimum_version 1.5.0
load s3-helpers

setup_file() {
    s3_start_gateway
    command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
        { echo "qemu-img and qemu-io (qemu-utils) are the oracle" >&2; return 1; }
    command -v jq >/dev/null || { echo "jq is needed" >&2; return 1; }
    fault_proxy_start
}

teardown_file() {
    fault_proxy_stop
}

setup() {
    QBAK=${QBAK:-$QBAK_SRCDIR/build/qbak}
    BUCKET=$(s3_new_bucket prune)
    REPO=s3://$BUCKET/repo
    # Short retry backoffs: the fault case fails requests on purpose.
    export QBAK_S3_BACKOFF_MS=10
    cd "$BATS_TEST_TMPDIR" || return 1
}

teardown() {
    s3_remove_bucket "$BUCKET"
}

fail() {
    echo "$*" >&2
    return 1
}

points() {
    "$QBAK" list --json "$REPO" | jq -r '.points[].id'
}

# Five points: P0 a full (day 0), P1 and P2 on day 1, P3 (day 2), P4
# (day 3), each incremental over the one before.  --keep-daily 3 keeps
# P2, P3 and P4 (the newest of each of the last three days) and removes
# P1 (an incremental between P0 and P2) and P0 (the full below them).
make_points() {
    local i t
    local times=(1764583200 1764669600 1764676800 1764756000 1764842400)
    qemu-img create -q -f qcow2 vda.qcow2 24M
    qemu-io -c 'write -P 1 0 10M' -c 'write -P 2 20M 2M' vda.qcow2 >/dev/null
    for i in 0 1 2 3 4; do
        if [ "$i" -gt 0 ]; then
            # Over P(i-1)'s data, past it, zeroes over data, a discard.
            qemu-io -c "write -P $((i + 16)) $((i * 1536))k 512k" \
                -c "write -P $((i + 32)) $((12 + i))M 256k" \
                -c "write -z $((i * 2))M 64k" \
                -c "discard $((20 + i % 2))M 128k" vda.qcow2 >/dev/null
        fi
        t=${times[$i]}
        # The repository's zone is fixed when it is made.
        run --separate-stderr env QBAK_TEST_NOW="$t" "$QBAK" backup \
            $([ "$i" -eq 0 ] && echo --tz UTC) vda.qcow2 "$REPO"
        [ "$status" -eq 0 ] || fail "backup $i: exit $status: $stderr"
        p=$(points | tail -1)
        cp vda.qcow2 "copy-$p.qcow2"
    done
    [ "$(points | wc -l)" -eq 5 ] || fail "points: $(points)"
}

# Every point in KEEP restores identical to its copy, and its file,
# downloaded with the files it reads through, is clean and reads the
# same; verify passes; no temporary object, no upload.
check_kept() {
    local keep=$1 p
    [ "$(points)" = "$keep" ] || fail "kept $(points) instead of $keep"
    for p in $keep; do
        rm -f out.raw
        run --separate-stderr "$QBAK" restore --at "$p" --disk vda -O raw \
            "$REPO" out.raw
        [ "$status" -eq 0 ] || fail "restore $p: exit $status: $stderr"
        run qemu-img compare -f raw -F qcow2 out.raw "copy-$p.qcow2"
        [ "$status" -eq 0 ] || fail "point $p: $output"
    done
    # The files themselves, downloaded with their names (backing names
    # are relative): clean, and each chain reads as its copy.
    rm -rf files && mkdir files
    for p in $keep; do
        s3cmd -c "$S3CFG" -q get "$REPO/disks/vda/$p.qcow2" "files/$p.qcow2"
    done
    for p in $keep; do
        run qemu-img check -q "files/$p.qcow2"
        [ "$status" -eq 0 ] || fail "point $p's file: $output"
        run qemu-img compare -f qcow2 -F qcow2 "files/$p.qcow2" "copy-$p.qcow2"
        [ "$status" -eq 0 ] || fail "point $p's chain: $output"
    done
    run --separate-stderr "$QBAK" verify "$REPO"
    [ "$status" -eq 0 ] || fail "verify: exit $status: $stderr"
    run s3cmd -c "$S3CFG" ls --recursive "s3://$BUCKET/"
    [ "$status" -eq 0 ] || fail "$output"
    ! grep -E -e '-new$|prune/intent' <<<"$output" ||
        fail "temporary objects left: $output"
    for p in $(cat gone); do
        ! grep -q "$p" <<<"$output" || fail "$p is still there: $output"
    done
    run s3cmd -c "$S3CFG" multipart "s3://$BUCKET"
    [ "$status" -eq 0 ] || fail "$output"
    ! grep -qE "s3://$BUCKET/[^[:space:]]" <<<"$output" ||
        fail "uploads left: $output"
}

plan() {
    run --separate-stderr "$QBAK" prune --dry-run --json --keep-daily 3 "$REPO"
    [ "$status" -eq 0 ] || fail "dry run: $stderr"
    jq -r '.points[] | select(.action == "keep") | .id' <<<"$output" >keep
    jq -r '.points[] | select(.action == "remove") | .id' <<<"$output" >gone
    all=$(points)
    # The oldest full and the incremental above it go, the rest stays.
    [ "$(cat gone)" = "$(head -2 <<<"$all")" ] || fail "removes $(cat gone)"
    [ "$(cat keep)" = "$(tail -3 <<<"$all")" ] || fail "keeps $(cat keep)"
}

@test "prune s3: a middle incremental and the oldest full go, kept points restore the same" {
    make_points
    plan
    run --separate-stderr "$QBAK" prune --keep-daily 3 "$REPO"
    [ "$status" -eq 0 ] || fail "prune: exit $status: $stderr"
    check_kept "$(cat keep)"
    # The oldest kept point is a full now; the next backup chains on.
    qemu-io -c 'write -P 99 1M 64k' vda.qcow2 >/dev/null
    run --separate-stderr "$QBAK" backup vda.qcow2 "$REPO"
    [ "$status" -eq 0 ] || fail "backup after prune: $stderr"
    p=$(points | tail -1)
    cp vda.qcow2 "copy-$p.qcow2"
    check_kept "$(cat keep; echo "$p")"
}

@test "prune s3: a prune killed in an upload, then one whose uploads never complete, are finished by the next backup" {
    make_points
    plan
    # A prune killed (kill -9) while it uploads a merged object: the
    # upload is left unfinished, as after a network cut.
    fault_proxy_rules '{"rules": [{"fault": "hang", "seconds": 30, "match": "^PUT .*/disks/vda/[^ ?]*\\.qcow2\\?partNumber="}]}'
    AWS_ENDPOINT_URL="$FAULT_PROXY_URL" "$QBAK" prune --keep-daily 3 \
        "$REPO" >/dev/null 2>&1 3>&- &
    pid=$!
    for _ in $(seq 600); do
        fault_proxy_log | grep -q 'fault hang' && break
        sleep 0.1
    done
    fault_proxy_log | grep -q 'fault hang' || { kill -9 "$pid"; fail "no upload hung"; }
    kill -9 "$pid"
    wait "$pid" || true
    fault_proxy_rules '{"rules": []}'
    run s3cmd -c "$S3CFG" multipart "s3://$BUCKET"
    grep -qE "s3://$BUCKET/[^[:space:]]*/disks/vda/[^[:space:]]*\.qcow2" <<<"$output" ||
        fail "no unfinished upload after the kill: $output"
    # Every completion of an upload of a disk file fails: the merged
    # version never replaces the file it merges into, the intent stays.
    fault_proxy_rules '{"seed": 1, "rules": [{"fault": "500", "match": "^POST /[^ ?]*/disks/vda/[^ ?]*\\.qcow2\\?uploadId="}]}'
    run --separate-stderr env AWS_ENDPOINT_URL="$FAULT_PROXY_URL" \
        "$QBAK" prune --keep-daily 3 "$REPO"
    [ "$status" -ne 0 ] || fail "the prune did not fail"
    fault_proxy_log | grep -q 'fault 500' || fail "no request failed"
    fault_proxy_rules '{"rules": []}'
    run s3cmd -c "$S3CFG" ls --recursive "s3://$BUCKET/"
    grep -q 'prune/intent.json' <<<"$output" || fail "no intent: $output"
    ! grep -q -e '-new$' <<<"$output" || fail "temporary objects: $output"
    # The points the prune does not remove still restore as they were.
    for p in $(cat keep); do
        rm -f out.raw
        run --separate-stderr "$QBAK" restore --at "$p" --disk vda -O raw \
            "$REPO" out.raw
        [ "$status" -eq 0 ] || fail "restore $p mid-prune: $stderr"
        run qemu-img compare -f raw -F qcow2 out.raw "copy-$p.qcow2"
        [ "$status" -eq 0 ] || fail "point $p mid-prune: $output"
    done
    # The next backup finishes the prune before it backs up.
    qemu-io -c 'write -P 77 3M 64k' vda.qcow2 >/dev/null
    run --separate-stderr "$QBAK" backup vda.qcow2 "$REPO"
    [ "$status" -eq 0 ] || fail "backup after the prunes: exit $status: $stderr"
    p=$(points | tail -1)
    cp vda.qcow2 "copy-$p.qcow2"
    check_kept "$(cat keep; echo "$p")"
}

@test "prune s3: prunes cut off after any number of writes, each finished by the next, end as one prune" {
    make_points
    plan
    newest=$(tail -1 keep)
    # Run K fails every write (PUT, POST, DELETE) after its first K: with
    # a 500 (never applied) or a lost answer (applied, the client never
    # learns it), retries included, as a network cut would.  The next
    # run finishes what the last left, and so on until one succeeds.
    local k=0 done=0 fault
    while [ "$k" -le 80 ]; do
        fault=500
        [ $((k % 4)) -eq 2 ] && fault=drop-response
        fault_proxy_rules "{\"rules\": [{\"fault\": \"$fault\", \"after\": $k, \"match\": \"^(PUT|POST|DELETE) \"}]}"
        run --separate-stderr env AWS_ENDPOINT_URL="$FAULT_PROXY_URL" \
            "$QBAK" prune --keep-daily 3 "$REPO"
        if [ "$status" -eq 0 ]; then
            done=1
            break
        fi
        # The newest point reads through every file a merge rewrites.
        rm -f out.raw
        run --separate-stderr "$QBAK" restore --at "$newest" --disk vda \
            -O raw "$REPO" out.raw
        [ "$status" -eq 0 ] || fail "restore after a prune cut at $k: $stderr"
        run qemu-img compare -f raw -F qcow2 out.raw "copy-$newest.qcow2"
        [ "$status" -eq 0 ] || fail "after a prune cut at $k: $output"
        k=$((k + 3))
    done
    [ "$done" -eq 1 ] || fail "no prune succeeded"
    [ "$k" -gt 0 ] || fail "the first prune was not cut"
    fault_proxy_rules '{"rules": []}'
    check_kept "$(cat keep)"
}
