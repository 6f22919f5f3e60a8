#!/usr/bin/env bats
# S3 repositories end to end (qbak backup, list, restore, verify, prune on
# s3://BUCKET/PREFIX), against the test gateway.  QEMU's tools are the
# oracles for the data (every point is restored and compared with the copy
# of the disk saved at its night), and s3cmd for what the bucket holds: the
# point ids are read from the record objects' names, not from qbak, and a
# run must leave no key qbak does not keep and no unfinished multipart
# upload.
#
# The network-cut test shortens the retries' back-off with
# QBAK_S3_BACKOFF_MS, a knob of test builds only: this file needs a build
# with -DQBAK_FAILPOINTS=ON (tests/CMakeLists.txt leaves it out of others).

bats_require_minimum_version 1.5.0
load ../cli/helpers
load s3-helpers

setup_file() {
    s3_start_gateway
    BUCKET=$(s3_new_bucket repo)
    export BUCKET
    fault_proxy_start
}

teardown_file() {
    fault_proxy_stop
    s3_remove_bucket "$BUCKET"
}

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
    fault_proxy_rules '{"rules": []}'
}

teardown() {
    kill_daemons
}

# s3_keys URL: every object under URL (s3://BUCKET/PREFIX), by its key in
# the repository (PREFIX/ cut off), sorted.
s3_keys() {
    s3cmd -c "$S3CFG" ls --recursive "$1/" | awk '{print $4}' |
        sed "s|^$1/||" | sort
}

# points URL: the point ids, oldest first, from the records' object names
# ("...Z", then "...Z-2", "...Z-3" within a second).
points() {
    s3_keys "$1" | sed -n 's|^points/\(.*\)\.json$|\1|p' |
        sort -t- -k1,1 -k2,2n
}

# fetch_records URL: the records the bucket holds, as files in
# $BATS_TEST_TMPDIR/records (one s3cmd run for all of them); level and
# reason read them.
fetch_records() {
    rm -rf "$BATS_TEST_TMPDIR/records"
    mkdir "$BATS_TEST_TMPDIR/records"
    s3cmd -c "$S3CFG" get --recursive --no-progress "$1/points/" \
        "$BATS_TEST_TMPDIR/records/" >/dev/null
}

# level ID DISK, reason ID DISK: from the record fetched last.
level() {
    jq -r --arg d "$2" '.disks[] | select(.name == $d) | .level' \
        "$BATS_TEST_TMPDIR/records/$1.json"
}

reason() {
    jq -r --arg d "$2" '.disks[] | select(.name == $d) | .reason' \
        "$BATS_TEST_TMPDIR/records/$1.json"
}

# uploads URL: the unfinished multipart uploads under URL, one a line.
uploads() {
    s3cmd -c "$S3CFG" multipart "s3://$BUCKET" |
        awk -v p="$1/" 'index($2, p) == 1 {print $2, $3}'
}

# no_leftovers URL: URL holds only the keys a repository keeps (its
# config, records, verify states, and each disk's files and manifests):
# no lock, no temporary key, no prune intent, and no unfinished upload.
no_leftovers() {
    local extra open
    extra=$(s3_keys "$1" | grep -Ev '^(config|points/[0-9TZ-]+\.json|state/[0-9TZ-]+\.json|disks/[A-Za-z0-9._-]+/[0-9TZ-]+\.(qcow2|manifest))$') || true
    [ -z "$extra" ] || fail "$1 holds keys a repository does not keep: $extra"
    open=$(uploads "$1")
    [ -z "$open" ] || fail "$1 has unfinished multipart uploads: $open"
}

# backup ARGS...: qbak backup, which must succeed.
backup() {
    run --separate-stderr qbak backup "$@"
    [ "$status" -eq 0 ] || fail "qbak backup $*: exit $status: $stderr"
}

# restores_to URL POINT DISK COPY: POINT of DISK restores from URL to a
# standalone, clean qcow2 that QEMU reads as COPY.
restores_to() {
    local url=$1 point=$2 disk=$3 copy=$4 out
    out=$BATS_TEST_TMPDIR/restored-$point-$disk.qcow2
    rm -f "$out"
    run --separate-stderr qbak restore --at "$point" --disk "$disk" "$url" "$out"
    [ "$status" -eq 0 ] || fail "restore $point $disk: exit $status: $stderr"
    same_disk "$out" "$copy"
    check_clean "$out"
    [ -z "$(qemu-img info --output=json "$out" | jq -r '."backing-filename" // empty')" ] ||
        fail "restore $point $disk: not standalone"
    rm -f "$out"
}

# bg_backup OUT HOST ARGS...: qbak backup ARGS in the background, as if on
# host HOST (a UTS namespace of its own, so the lock's host name differs),
# its exit status into OUT.status and its stderr into OUT.err.
bg_backup() {
    local out=$1 host=$2
    shift 2
    unshare --uts sh -c 'hostname "$1"; shift; exec "$@"' sh "$host" \
        "$QBAK" backup "$@" >"$out.out" 2>"$out.err" &
    echo $! >"$out.pid"
}

bg_wait() {
    local rc=0
    wait "$(cat "$1.pid")" || rc=$?
    echo "$rc" >"$1.status"
}

@test "s3: a month of nights: a full every 11th, a bitmap removed, a grow, a disk added; every point restores, verify passes, prune works, nothing is left over" {
    local url=s3://$BUCKET/month night disks p n b
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-img create -q -f qcow2 vdb.qcow2 16M
    qemu-io -c 'write -P 0x01 0 6M' -c 'write -c -P 0x03 40M 1M' vda.qcow2 >/dev/null
    qemu-io -c 'write -P 0x02 0 2M' vdb.qcow2 >/dev/null
    for night in $(seq 1 30); do
        case $((night % 4)) in
            0) qemu-io -c "write -P $night $((night % 50))M 512k" vda.qcow2 ;;
            1) qemu-io -c "write -z $((night % 40 + 8))M 1M" vda.qcow2 ;;
            2) qemu-io -c "discard $((night % 30))M 256k" vda.qcow2 ;;
            3) qemu-io -c "write -c -P $night $((night % 20 + 20))M 64k" vda.qcow2 ;;
        esac >/dev/null
        qemu-io -c "write -P $((night + 100)) $((night + 2))M 64k" vda.qcow2 >/dev/null
        if [ "$night" -eq 15 ]; then
            # The repository's bitmap is gone: an incremental by checksums.
            for b in $(qemu_bitmap_names vda.qcow2 | grep '^qbak-'); do
                qemu-img bitmap --remove vda.qcow2 "$b"
            done
        fi
        [ "$night" -eq 20 ] && qemu-img resize -q vda.qcow2 80M
        [ "$night" -ge 20 ] && qemu-io -c "write -P $night 70M 256k" vda.qcow2 >/dev/null
        if [ "$night" -ge 8 ]; then
            qemu-io -c "write -P $night $((night % 14))M 128k" vdb.qcow2 >/dev/null
            disks="vda.qcow2 vdb.qcow2"
        else
            disks=vda.qcow2
        fi
        # shellcheck disable=SC2086
        backup --full-every 10 $disks "$url"
        [ "$night" -gt 1 ] || [[ $stderr == *"created the repository"* ]] ||
            fail "the first run did not say it made $url: $stderr"
        p=$(points "$url" | tail -1)
        cp vda.qcow2 "copy-$p-vda.qcow2"
        [ "$night" -ge 8 ] && cp vdb.qcow2 "copy-$p-vdb.qcow2"
    done
    [ "$(points "$url" | wc -l)" -eq 30 ] || fail "$(points "$url" | wc -l) points"
    no_leftovers "$url"

    # Every point restores exactly, at the level --full-every gives.
    local ids want
    mapfile -t ids < <(points "$url")
    fetch_records "$url"
    for n in $(seq 1 30); do
        p=${ids[n - 1]}
        restores_to "$url" "$p" vda "copy-$p-vda.qcow2"
        [ -e "copy-$p-vdb.qcow2" ] && restores_to "$url" "$p" vdb "copy-$p-vdb.qcow2"
        case $n in 1|12|23) want=full ;; *) want=incremental ;; esac
        [ "$(level "$p" vda)" = "$want" ] ||
            fail "night $n: vda $(level "$p" vda), not $want: $(reason "$p" vda)"
    done
    [[ $(reason "${ids[14]}" vda) == "checksums ("*missing* ]] ||
        fail "night 15: $(reason "${ids[14]}" vda)"
    [[ $(reason "${ids[19]}" vda) == *grew* ]] ||
        fail "night 20: $(reason "${ids[19]}" vda)"
    [ "$(level "${ids[7]}" vdb)" = full ]
    [ "$(level "${ids[8]}" vdb)" = incremental ]
    [ "$(level "${ids[18]}" vdb)" = full ]

    # list shows the points the bucket holds; verify reads them all back.
    run --separate-stderr qbak list --json "$url"
    [ "$status" -eq 0 ] || fail "list: exit $status: $stderr"
    [ "$(jq -r '.points[].id' <<<"$output")" = "$(points "$url")" ]
    run --separate-stderr qbak verify "$url"
    [ "$status" -eq 0 ] || fail "verify: exit $status: $stderr"
    no_leftovers "$url"

    # prune: the 20 newest kept; they still restore, and nothing is left.
    run --separate-stderr qbak prune --keep-last 20 "$url"
    [ "$status" -eq 0 ] || fail "prune: exit $status: $stderr"
    [ "$(points "$url")" = "$(printf '%s\n' "${ids[@]:10}")" ] ||
        fail "after prune: $(points "$url" | tr '\n' ' ')"
    for p in "${ids[10]}" "${ids[11]}" "${ids[19]}" "${ids[29]}"; do
        restores_to "$url" "$p" vda "copy-$p-vda.qcow2"
    done
    restores_to "$url" "${ids[10]}" vdb "copy-${ids[10]}-vdb.qcow2"
    no_leftovers "$url"
    # The next night still backs up, on top of what prune kept.
    qemu-io -c 'write -P 0x77 5M 64k' vda.qcow2 >/dev/null
    backup vda.qcow2 vdb.qcow2 "$url"
    p=$(points "$url" | tail -1)
    restores_to "$url" "$p" vda vda.qcow2
    no_leftovers "$url"
    # The prefix copied out of the bucket is a folder repository: QEMU
    # opens its chains, and qbak verifies it.
    s3cmd -c "$S3CFG" get --recursive --no-progress "$url/" folder/ >/dev/null
    run qemu-img compare "folder/disks/vda/$p.qcow2" vda.qcow2
    [ "$status" -eq 0 ] || fail "the copied chain of $p: $output"
    run --separate-stderr qbak verify folder
    [ "$status" -eq 0 ] || fail "verify of the copy: exit $status: $stderr"
}

@test "s3: two hosts back up different disks into one prefix at once: one may wait its turn (exit 4), no point is lost or doubled" {
    local url=s3://$BUCKET/hosts round okay
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-img create -q -f qcow2 b.qcow2 64M
    for round in 1 2; do
        # 24 MiB of new data each, so that the two runs overlap.
        qemu-io -c "write -P $((round + 10)) $((round * 24))M 24M" a.qcow2 >/dev/null
        qemu-io -c "write -P $((round + 20)) $((round * 16))M 24M" b.qcow2 >/dev/null
        local before
        before=$(points "$url" | wc -l)
        bg_backup host-a host-a a.qcow2 "$url"
        bg_backup host-b host-b b.qcow2 "$url"
        bg_wait host-a
        bg_wait host-b
        okay=0
        for h in host-a host-b; do
            case $(cat "$h.status") in
                0) okay=$((okay + 1)) ;;
                4) [[ $(cat "$h.err") == *"$url"* ]] ||
                       fail "$h: exit 4 without naming $url: $(cat "$h.err")" ;;
                *) fail "$h: exit $(cat "$h.status"): $(cat "$h.err")" ;;
            esac
        done
        [ "$okay" -ge 1 ] || fail "round $round: neither run succeeded"
        [ "$(points "$url" | wc -l)" -eq $((before + okay)) ] ||
            fail "round $round: $okay runs succeeded, $(( $(points "$url" | wc -l) - before )) points"
        # The one that waited runs now.
        for h in host-a host-b; do
            [ "$(cat "$h.status")" -eq 4 ] && backup "${h#host-}.qcow2" "$url"
        done
        cp a.qcow2 "a-$round.qcow2"
        cp b.qcow2 "b-$round.qcow2"
    done
    # Every point holds one disk; each disk's points restore, the newest
    # as the disk is now.
    run --separate-stderr qbak list --json "$url"
    [ "$status" -eq 0 ] || fail "list: $stderr"
    [ "$(jq '[.points[].id] | length' <<<"$output")" -eq 4 ]
    [ "$(jq '[.points[].id] | unique | length' <<<"$output")" -eq 4 ]
    [ "$(jq '[.points[] | .disks | length] | unique' -c <<<"$output")" = '[1]' ]
    [ "$(jq '[.points[].disks[] | select(.name == "a")] | length' <<<"$output")" -eq 2 ]
    local pa pb
    pa=$(jq -r '[.points[] | select(.disks[0].name == "a")] | .[-1].id' <<<"$output")
    pb=$(jq -r '[.points[] | select(.disks[0].name == "b")] | .[-1].id' <<<"$output")
    restores_to "$url" "$pa" a a.qcow2
    restores_to "$url" "$pb" b b.qcow2
    pa=$(jq -r '[.points[] | select(.disks[0].name == "a")] | .[0].id' <<<"$output")
    restores_to "$url" "$pa" a a-1.qcow2
    no_leftovers "$url"
}

@test "s3: the same disk backed up by two processes at once: one runs, the other exits 4; no point is lost or doubled" {
    local url=s3://$BUCKET/same round okay
    qemu-img create -q -f qcow2 vda.qcow2 96M
    qemu-io -c 'write -P 1 0 32M' vda.qcow2 >/dev/null
    backup vda.qcow2 "$url"
    cp vda.qcow2 copy-0.qcow2
    for round in 1 2; do
        qemu-io -c "write -P $((round + 1)) $((round * 32))M 24M" vda.qcow2 >/dev/null
        local before
        before=$(points "$url" | wc -l)
        bg_backup one vm-1 vda.qcow2 "$url"
        bg_backup two vm-1 vda.qcow2 "$url"
        bg_wait one
        bg_wait two
        okay=0
        for h in one two; do
            case $(cat "$h.status") in
                0) okay=$((okay + 1)) ;;
                4) ;;
                *) fail "$h: exit $(cat "$h.status"): $(cat "$h.err")" ;;
            esac
        done
        [ "$okay" -ge 1 ] || fail "round $round: neither run succeeded"
        [ "$(points "$url" | wc -l)" -eq $((before + okay)) ] ||
            fail "round $round: $okay runs succeeded, $(( $(points "$url" | wc -l) - before )) points"
        restores_to "$url" "$(points "$url" | tail -1)" vda vda.qcow2
    done
    restores_to "$url" "$(points "$url" | head -1)" vda copy-0.qcow2
    run --separate-stderr qbak list --json "$url"
    [ "$(jq '[.points[].id] | unique | length' <<<"$output")" -eq "$(points "$url" | wc -l)" ]
    no_leftovers "$url"
}

@test "s3: 10% of requests fail at random during a backup: it succeeds or exits 1; earlier points restore, the next run completes" {
    local url=s3://$BUCKET/faults seed p
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 1 0 20M' vda.qcow2 >/dev/null
    backup vda.qcow2 "$url"
    p=$(points "$url")
    cp vda.qcow2 "copy-$p.qcow2"
    for seed in 1 2; do
        qemu-io -c "write -P $((seed + 1)) $((seed * 8))M 16M" vda.qcow2 >/dev/null
        fault_proxy_rules "{\"seed\": $seed, \"rules\": [
            {\"fault\": \"503\", \"rate\": 0.05}, {\"fault\": \"500\", \"rate\": 0.053}]}"
        run --separate-stderr env AWS_ENDPOINT_URL="$FAULT_PROXY_URL" \
            "$QBAK" backup vda.qcow2 "$url"
        [ "$(fault_proxy_log | grep -c ' fault 50[03]$')" -gt 0 ] ||
            fail "no fault was injected: $(fault_proxy_log | tail -5)"
        case $status in
            0) p=$(points "$url" | tail -1)
               cp vda.qcow2 "copy-$p.qcow2" ;;
            1) [[ $stderr == "qbak: "*"s3://$BUCKET/"* ]] || fail "exit 1: $stderr" ;;
            *) fail "exit $status under 10% faults: $stderr" ;;
        esac
        fault_proxy_rules '{"rules": []}'
        for p in $(points "$url"); do
            restores_to "$url" "$p" vda "copy-$p.qcow2"
        done
    done
    # The next run, faults gone, completes and cleans up.
    backup vda.qcow2 "$url"
    restores_to "$url" "$(points "$url" | tail -1)" vda vda.qcow2
    no_leftovers "$url"
    run --separate-stderr qbak verify "$url"
    [ "$status" -eq 0 ] || fail "verify: exit $status: $stderr"
}

@test "s3: a network cut mid-upload leaves the repository as kill -9 does; the next run completes and leaves nothing" {
    local url=s3://$BUCKET/cut p keys_before pid
    qemu-img create -q -f qcow2 vda.qcow2 128M
    qemu-io -c 'write -P 1 0 8M' vda.qcow2 >/dev/null
    backup vda.qcow2 "$url"
    p=$(points "$url")
    cp vda.qcow2 "copy-$p.qcow2"
    qemu-io -c 'write -P 2 8M 96M' vda.qcow2 >/dev/null
    keys_before=$(s3_keys "$url")

    # kill -9 while parts are being uploaded: a part hangs, the run dies.
    fault_proxy_rules '{"rules": [{"fault": "hang", "match": "^PUT .*partNumber=", "after": 3}]}'
    AWS_ENDPOINT_URL=$FAULT_PROXY_URL "$QBAK" backup vda.qcow2 "$url" \
        >/dev/null 2>"$BATS_TEST_TMPDIR/killed.err" &
    pid=$!
    for _ in $(seq 300); do
        fault_proxy_log | grep -q ' fault hang' && break
        sleep 0.1
    done
    fault_proxy_log | grep -q ' fault hang' || fail "no part was held: $(fault_proxy_log | tail)"
    # No secret in the process's title or its environment seen by ps.
    ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$AWS_SECRET_ACCESS_KEY"
    kill -9 "$pid"
    wait "$pid" || true
    fault_proxy_rules '{"rules": []}'
    # What kill -9 leaves: the earlier keys and the dead run's lock; its
    # uploads unfinished; no new point.
    [ "$(s3_keys "$url" | grep -vx lock)" = "$keys_before" ] ||
        fail "kill -9 left: $(diff <(echo "$keys_before") <(s3_keys "$url"))"
    local killed_uploads
    killed_uploads=$(uploads "$url" | wc -l)
    [ "$killed_uploads" -ge 1 ] || fail "kill -9 mid-upload left no upload to clean"
    restores_to "$url" "$p" vda "copy-$p.qcow2"

    # The next run takes the dead run's lock over and completes.
    backup vda.qcow2 "$url"
    p=$(points "$url" | tail -1)
    cp vda.qcow2 "copy-$p.qcow2"
    restores_to "$url" "$p" vda vda.qcow2
    no_leftovers "$url"

    # A network cut: every request after some parts is cut, the retries
    # give up (the back-off shortened), and the run fails with exit 1.
    qemu-io -c 'write -P 3 16M 96M' vda.qcow2 >/dev/null
    keys_before=$(s3_keys "$url")
    fault_proxy_rules '{"rules": [{"fault": "cut", "match": "^[A-Z]+ ", "after": 12}]}'
    run --separate-stderr env AWS_ENDPOINT_URL="$FAULT_PROXY_URL" QBAK_S3_BACKOFF_MS=5 \
        "$QBAK" backup vda.qcow2 "$url"
    [ "$status" -eq 1 ] || fail "a cut network: exit $status: $stderr"
    [[ $stderr == "qbak: "*"s3://$BUCKET/"* ]] || fail "stderr: $stderr"
    fault_proxy_log | grep -q ' cut' || fail "nothing was cut"
    fault_proxy_rules '{"rules": []}'
    # As kill -9 leaves it: the earlier keys, at most the lock.
    [ "$(s3_keys "$url" | grep -vx lock)" = "$keys_before" ] ||
        fail "the cut left: $(diff <(echo "$keys_before") <(s3_keys "$url"))"
    for p in $(points "$url"); do
        restores_to "$url" "$p" vda "copy-$p.qcow2"
    done
    backup vda.qcow2 "$url"
    restores_to "$url" "$(points "$url" | tail -1)" vda vda.qcow2
    no_leftovers "$url"
}

@test "s3: a wrong key or a missing bucket fails at once (exit 2) naming it; the secret never shows" {
    local url=s3://$BUCKET/errors secret=$AWS_SECRET_ACCESS_KEY all
    qemu-img create -q -f qcow2 vda.qcow2 16M
    qemu-io -c 'write -P 1 0 1M' vda.qcow2 >/dev/null
    run --separate-stderr qbak backup --json vda.qcow2 "$url"
    [ "$status" -eq 0 ] || fail "backup: $stderr"
    all=$output$stderr
    run --separate-stderr qbak list --json "$url"
    all+=$output$stderr

    # A wrong secret: refused at the first request, never retried.
    fault_proxy_rules '{"rules": []}'
    run --separate-stderr env AWS_ENDPOINT_URL="$FAULT_PROXY_URL" \
        AWS_SECRET_ACCESS_KEY=not-the-secret-0123456789 "$QBAK" backup vda.qcow2 "$url"
    [ "$status" -eq 2 ] || fail "wrong secret: exit $status: $stderr"
    check_error_line
    [[ $stderr == *"s3://$BUCKET"* ]] || fail "wrong secret: bucket not named: $stderr"
    [[ $stderr != *not-the-secret* ]] || fail "the wrong secret is shown: $stderr"
    [ "$(fault_proxy_log | wc -l)" -le 2 ] || fail "a 403 was retried: $(fault_proxy_log)"
    run --separate-stderr env AWS_SECRET_ACCESS_KEY=not-the-secret-0123456789 \
        "$QBAK" list --json "$url"
    [ "$status" -eq 2 ] || fail "list, wrong secret: exit $status: $stderr"
    [[ $output$stderr != *not-the-secret* ]] || fail "the wrong secret is shown: $output $stderr"

    # A bucket that does not exist: named, and not created.
    run --separate-stderr qbak backup vda.qcow2 "s3://$BUCKET-none/x"
    [ "$status" -eq 2 ] || fail "missing bucket: exit $status: $stderr"
    check_error_line
    [[ $stderr == *"$BUCKET-none"* ]] || fail "missing bucket not named: $stderr"
    all+=$stderr
    run s3cmd -c "$S3CFG" ls "s3://$BUCKET-none"
    [ "$status" -ne 0 ] || fail "qbak created the bucket $BUCKET-none"
    run --separate-stderr qbak restore "s3://$BUCKET-none/x" out.qcow2
    [ "$status" -eq 2 ] || fail "restore from a missing bucket: exit $status: $stderr"
    all+=$output$stderr

    # No credentials at all.
    run --separate-stderr env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
        HOME="$BATS_TEST_TMPDIR" "$QBAK" list "$url"
    [ "$status" -eq 2 ] || fail "no credentials: exit $status: $stderr"
    [[ $stderr == *credentials* ]] || fail "no credentials: $stderr"

    # The secret is in no message and no JSON of any of these runs.
    run --separate-stderr qbak verify --json "$url"
    all+=$output$stderr
    [[ $all != *"$secret"* ]] || fail "the secret key appears in qbak's output"
}
