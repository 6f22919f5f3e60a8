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
# the repository (PREFIX/ cut off), sorted: one signed ListObjectsV2 with
# curl (s3cmd takes a second or more to start on a loaded machine; the
# final checks of no_leftovers use it).
s3_keys() {
    local prefix=${1#"s3://$BUCKET/"}/ body
    body=$(s3curl "/$BUCKET?list-type=2&max-keys=1000&prefix=${prefix//\//%2F}") || return
    [[ $body == *"<IsTruncated>false</IsTruncated>"* ]] ||
        { fail "listing $1: $body"; return; }
    grep -o '<Key>[^<]*</Key>' <<<"$body" |
        sed "s|^<Key>$prefix||; s|</Key>\$||" | sort
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

# uploads URL: the unfinished multipart uploads under URL, one a line
# (s3cmd multipart; a failed listing fails, never reads as none).
uploads() {
    local mp
    mp=$(s3cmd -c "$S3CFG" multipart "s3://$BUCKET") ||
        { fail "s3cmd multipart s3://$BUCKET failed"; return; }
    [[ $mp == *Initiated* ]] || { fail "s3cmd multipart: $mp"; return; }
    awk -v p="$1/" 'index($2, p) == 1 {print $2, $3}' <<<"$mp"
}

# no_leftovers URL: `s3cmd ls` shows under URL only the keys a repository
# keeps (its config, records, verify states, and each disk's files and
# manifests): no lock, no temporary key, no prune intent; and `s3cmd
# multipart` no unfinished upload.
no_leftovers() {
    local ls extra open
    ls=$(s3cmd -c "$S3CFG" ls --recursive "$1/") ||
        { fail "s3cmd ls $1 failed"; return; }
    [[ $ls == *"$1/config"* ]] || { fail "s3cmd ls shows no repository at $1: $ls"; return; }
    extra=$(awk '{print $4}' <<<"$ls" | sed "s|^$1/||" |
            grep -Ev '^(config|points/[0-9TZ-]+\.json|state/[0-9TZ-]+\.json|disks/[A-Za-z0-9._-]+/[0-9TZ-]+\.(qcow2|manifest))$') || true
    [ -z "$extra" ] || { fail "$1 holds keys a repository does not keep: $extra"; return; }
    open=$(uploads "$1") || return
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
            # A compressed write never overwrites: clusters of their own.
            3) qemu-io -c "write -c -P $night $((44 * 1024 + night * 64))k 64k" vda.qcow2 ;;
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
        cp vda.qcow2 "copy-$night-vda.qcow2"
        [ "$night" -ge 8 ] && cp vdb.qcow2 "copy-$night-vdb.qcow2"
    done
    local ids want d
    mapfile -t ids < <(points "$url")
    [ "${#ids[@]}" -eq 30 ] || fail "${#ids[@]} points: ${ids[*]}"
    no_leftovers "$url"

    # Every point restores exactly (every disk of it, in one run), at the
    # level --full-every gives.
    fetch_records "$url"
    for n in $(seq 1 30); do
        p=${ids[n - 1]}
        run --separate-stderr qbak restore --at "$p" "$url" "out-$n"
        [ "$status" -eq 0 ] || fail "restore of night $n ($p): exit $status: $stderr"
        for d in vda vdb; do
            [ -e "copy-$n-$d.qcow2" ] || continue
            run qemu-img compare "out-$n/$d.qcow2" "copy-$n-$d.qcow2"
            [ "$status" -eq 0 ] || fail "night $n ($p) $d: $output"
        done
        rm -rf "out-$n"
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

    # prune: the 20 newest kept; they still restore, and nothing is left.
    run --separate-stderr qbak prune --keep-last 20 "$url"
    [ "$status" -eq 0 ] || fail "prune: exit $status: $stderr"
    [ "$(points "$url")" = "$(printf '%s\n' "${ids[@]:10}")" ] ||
        fail "after prune: $(points "$url" | tr '\n' ' ')"
    for n in 11 20; do
        restores_to "$url" "${ids[n - 1]}" vda "copy-$n-vda.qcow2"
    done
    restores_to "$url" "${ids[10]}" vdb "copy-11-vdb.qcow2"
    # The next night still backs up, on top of what prune kept.
    qemu-io -c 'write -P 0x77 5M 64k' vda.qcow2 >/dev/null
    backup vda.qcow2 vdb.qcow2 "$url"
    p=$(points "$url" | tail -1)
    restores_to "$url" "$p" vda vda.qcow2
    no_leftovers "$url"
    # The prefix copied out of the bucket is a folder repository: QEMU
    # opens its chains, and qbak verifies it.
    mkdir folder
    s3cmd -c "$S3CFG" get --recursive --no-progress "$url/" folder/ >/dev/null
    run qemu-img compare "folder/disks/vda/$p.qcow2" vda.qcow2
    [ "$status" -eq 0 ] || fail "the copied chain of $p: $output"
    run --separate-stderr qbak verify folder
    [ "$status" -eq 0 ] || fail "verify of the copy: exit $status: $stderr"
}

# contenders URL NAME1 NAME2: check the two runs bg_backup started as
# NAME1 and NAME2 (waited for): each exited 0 or 4, at least one 0, and a
# 4 named the repository; the repository holds as many new points as runs
# succeeded (BEFORE points before them).  Sets OKAY.
contenders() {
    local url=$1 before=$2 h
    OKAY=0
    for h in "$3" "$4"; do
        case $(cat "$h.status") in
            0) OKAY=$((OKAY + 1)) ;;
            4) [[ $(cat "$h.err") == *"$url"* ]] ||
                   fail "$h: exit 4 without naming $url: $(cat "$h.err")" ;;
            *) fail "$h: exit $(cat "$h.status"): $(cat "$h.err")" ;;
        esac
    done
    [ "$OKAY" -ge 1 ] || fail "neither run succeeded: $(cat "$3.err" "$4.err")"
    [ "$(points "$url" | wc -l)" -eq $((before + OKAY)) ] ||
        fail "$OKAY runs succeeded, $(( $(points "$url" | wc -l) - before )) new points"
}

# held_upload NAME HOST ARGS...: start qbak backup ARGS (on HOST) through
# the fault proxy, whose first part upload is held for 3 s (then cut, and
# retried); return once it is held: the run holds the repository's lock.
held_upload() {
    local name=$1 host=$2
    shift 2
    fault_proxy_rules '{"rules": [{"fault": "hang", "seconds": 3, "match": "^PUT .*partNumber=", "count": 1}]}'
    AWS_ENDPOINT_URL=$FAULT_PROXY_URL bg_backup "$name" "$host" "$@"
    for _ in $(seq 300); do
        fault_proxy_log | grep -q ' fault hang' && return 0
        sleep 0.05
    done
    fail "$name: no part upload was held: $(fault_proxy_log | tail -3)"
}

@test "s3: two hosts back up different disks into one prefix at once: one waits its turn (exit 4), no point is lost or doubled" {
    local url=s3://$BUCKET/hosts
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-img create -q -f qcow2 b.qcow2 64M
    qemu-io -c 'write -P 10 0 4M' a.qcow2 >/dev/null
    backup a.qcow2 "$url"
    qemu-io -c 'write -P 11 0 12M' a.qcow2 >/dev/null
    qemu-io -c 'write -P 21 8M 12M' b.qcow2 >/dev/null
    # Started together: either order, never both at once.
    bg_backup host-a host-a a.qcow2 "$url"
    bg_backup host-b host-b b.qcow2 "$url"
    bg_wait host-a
    bg_wait host-b
    contenders "$url" 1 host-a host-b
    for h in host-a host-b; do
        [ "$(cat "$h.status")" -eq 4 ] && backup "${h#host-}.qcow2" "$url"
    done
    cp a.qcow2 a-1.qcow2
    # Host a is uploading (its part held): host b's run exits 4 naming
    # the holder, and changes nothing; run again after a, it succeeds.
    qemu-io -c 'write -P 12 24M 12M' a.qcow2 >/dev/null
    qemu-io -c 'write -P 22 40M 12M' b.qcow2 >/dev/null
    held_upload host-a host-a a.qcow2 "$url"
    local keys
    keys=$(s3_keys "$url")
    unshare --uts sh -c 'hostname host-b; exec "$@"' sh "$QBAK" backup b.qcow2 "$url" \
        >host-b.out 2>host-b.err && echo 0 >host-b.status || echo $? >host-b.status
    bg_wait host-a
    [ "$(cat host-b.status)" -eq 4 ] || fail "host b: exit $(cat host-b.status): $(cat host-b.err)"
    [[ $(cat host-b.err) == *host-a* ]] || fail "host b: the holder is not named: $(cat host-b.err)"
    [ "$(cat host-a.status)" -eq 0 ] || fail "host a: exit $(cat host-a.status): $(cat host-a.err)"
    [ "$(s3_keys "$url" | grep -c '^points/')" -eq 4 ]
    backup b.qcow2 "$url"

    # Every point holds one disk; each disk's points restore.
    run --separate-stderr qbak list --json "$url"
    [ "$status" -eq 0 ] || fail "list: $stderr"
    local list=$output pa pb
    [ "$(jq '[.points[].id] | length' <<<"$list")" -eq 5 ]
    [ "$(jq '[.points[].id] | unique | length' <<<"$list")" -eq 5 ]
    [ "$(jq -c '[.points[] | .disks | length] | unique' <<<"$list")" = '[1]' ]
    [ "$(jq '[.points[].disks[] | select(.name == "a")] | length' <<<"$list")" -eq 3 ]
    pa=$(jq -r '[.points[] | select(.disks[0].name == "a")] | .[-1].id' <<<"$list")
    pb=$(jq -r '[.points[] | select(.disks[0].name == "b")] | .[-1].id' <<<"$list")
    restores_to "$url" "$pa" a a.qcow2
    restores_to "$url" "$pb" b b.qcow2
    pa=$(jq -r '[.points[] | select(.disks[0].name == "a")] | .[1].id' <<<"$list")
    restores_to "$url" "$pa" a a-1.qcow2
    no_leftovers "$url"
}

@test "s3: two first runs at once on an empty prefix: one makes the repository, the other uses it or exits 4" {
    local url=s3://$BUCKET/first h
    qemu-img create -q -f qcow2 a.qcow2 16M
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-io -c 'write -P 1 0 2M' a.qcow2 >/dev/null
    qemu-io -c 'write -P 2 0 2M' b.qcow2 >/dev/null
    # Host a found no repository and is about to make one (its config is
    # held by the proxy for 4 s); host b makes it meanwhile.
    fault_proxy_rules "{\"rules\": [{\"fault\": \"delay\", \"seconds\": 4, \"match\": \"^PUT /$BUCKET/first/config\"}]}"
    AWS_ENDPOINT_URL=$FAULT_PROXY_URL bg_backup host-a host-a a.qcow2 "$url"
    for _ in $(seq 300); do
        fault_proxy_log | grep -q "^[0-9]* HEAD /$BUCKET/first/config " && break
        sleep 0.05
    done
    fault_proxy_log | grep -q "HEAD /$BUCKET/first/config" ||
        fail "host a did not look for the config: $(fault_proxy_log)"
    sleep 0.5
    bg_backup host-b host-b b.qcow2 "$url"
    bg_wait host-b
    bg_wait host-a
    fault_proxy_log | grep -q "PUT /$BUCKET/first/config fault delay pass 412" ||
        fail "host a's config was not refused: $(fault_proxy_log | grep config)"
    contenders "$url" 0 host-a host-b
    run --separate-stderr qbak list --json "$url"
    [ "$status" -eq 0 ] || fail "list: $stderr"
    local list=$output
    [ "$(jq '.points | length' <<<"$list")" -eq "$OKAY" ]
    for h in a b; do
        [ "$(cat "host-$h.status")" -eq 0 ] || continue
        restores_to "$url" "$(jq -r --arg d "$h" \
            '.points[] | select(.disks[0].name == $d) | .id' <<<"$list")" "$h" "$h.qcow2"
    done
}

@test "s3: the same disk backed up by two processes at once: one runs, the other exits 4; no point is lost or doubled" {
    local url=s3://$BUCKET/same
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 1 0 12M' vda.qcow2 >/dev/null
    backup vda.qcow2 "$url"
    cp vda.qcow2 copy-0.qcow2
    # One is uploading (its part held): the other exits 4 at once.
    local before
    before=$(points "$url" | wc -l)
    qemu-io -c 'write -P 3 32M 12M' vda.qcow2 >/dev/null
    held_upload one vm-1 vda.qcow2 "$url"
    run --separate-stderr qbak backup vda.qcow2 "$url"
    [ "$status" -eq 4 ] || fail "the second run: exit $status: $stderr"
    bg_wait one
    [ "$(cat one.status)" -eq 0 ] || fail "the first run: exit $(cat one.status): $(cat one.err)"
    [ "$(points "$url" | wc -l)" -eq $((before + 1)) ]
    restores_to "$url" "$(points "$url" | tail -1)" vda vda.qcow2
    restores_to "$url" "$(points "$url" | head -1)" vda copy-0.qcow2
    run --separate-stderr qbak list --json "$url"
    [ "$(jq '[.points[].id] | unique | length' <<<"$output")" -eq "$(points "$url" | wc -l)" ]
    no_leftovers "$url"
}

@test "s3: 10% of requests fail at random during a backup: it succeeds or exits 1; earlier points restore, the next run completes" {
    local url=s3://$BUCKET/faults p
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 1 0 20M' vda.qcow2 >/dev/null
    backup vda.qcow2 "$url"
    p=$(points "$url")
    cp vda.qcow2 "copy-$p.qcow2"
    qemu-io -c 'write -P 2 8M 16M' vda.qcow2 >/dev/null
    # 5% of requests get 503 SlowDown, and 5.3% of the rest 500: 10%.
    fault_proxy_rules '{"seed": 1, "rules": [{"fault": "503", "rate": 0.05}, {"fault": "500", "rate": 0.053}]}'
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
    # The next run, faults gone, completes and cleans up.
    backup vda.qcow2 "$url"
    restores_to "$url" "$(points "$url" | tail -1)" vda vda.qcow2
    no_leftovers "$url"
    run --separate-stderr qbak verify "$url"
    [ "$status" -eq 0 ] || fail "verify: exit $status: $stderr"
}

@test "s3: a network cut mid-upload leaves the repository as kill -9 does; the next run completes and leaves nothing" {
    local url=s3://$BUCKET/cut p keys_before pid
    qemu-img create -q -f qcow2 vda.qcow2 64M
    qemu-io -c 'write -P 1 0 8M' vda.qcow2 >/dev/null
    backup vda.qcow2 "$url"
    p=$(points "$url")
    cp vda.qcow2 "copy-$p.qcow2"
    qemu-io -c 'write -P 2 8M 24M' vda.qcow2 >/dev/null
    keys_before=$(s3_keys "$url")

    # kill -9 while a part is being uploaded (held by the proxy).
    fault_proxy_rules '{"rules": [{"fault": "hang", "match": "^PUT .*partNumber=", "after": 1}]}'
    AWS_ENDPOINT_URL=$FAULT_PROXY_URL "$QBAK" backup vda.qcow2 "$url" \
        >/dev/null 2>"$BATS_TEST_TMPDIR/killed.err" &
    pid=$!
    for _ in $(seq 300); do
        fault_proxy_log | grep -q ' fault hang' && break
        sleep 0.05
    done
    fault_proxy_log | grep -q ' fault hang' || fail "no part was held: $(fault_proxy_log | tail -3)"
    # The secret is not in the process's title.
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$AWS_SECRET_ACCESS_KEY"; then
        fail "the secret key is in the command line of pid $pid"
    fi
    kill -9 "$pid"
    wait "$pid" || true
    fault_proxy_rules '{"rules": []}'
    # What kill -9 leaves: the earlier keys and the dead run's lock, its
    # upload unfinished, no new point.
    [ "$(s3_keys "$url" | grep -vx lock)" = "$keys_before" ] ||
        fail "kill -9 left: $(diff <(echo "$keys_before") <(s3_keys "$url"))"
    [ -n "$(uploads "$url")" ] || fail "kill -9 mid-upload left no upload"
    restores_to "$url" "$p" vda "copy-$p.qcow2"
    # The next run takes the dead run's lock over, drops its upload and
    # completes.
    backup vda.qcow2 "$url"
    p=$(points "$url" | tail -1)
    cp vda.qcow2 "copy-$p.qcow2"
    restores_to "$url" "$p" vda vda.qcow2
    no_leftovers "$url"

    # The network goes while a part is held: every request from then on
    # is cut, the retries give up (their back-off shortened) and the run
    # exits 1, leaving what kill -9 leaves.
    qemu-io -c 'write -P 3 16M 24M' vda.qcow2 >/dev/null
    keys_before=$(s3_keys "$url")
    fault_proxy_rules '{"rules": [{"fault": "hang", "seconds": 2, "match": "^PUT .*partNumber=", "count": 1}]}'
    AWS_ENDPOINT_URL=$FAULT_PROXY_URL QBAK_S3_BACKOFF_MS=5 "$QBAK" backup vda.qcow2 "$url" \
        >/dev/null 2>cut.err &
    pid=$!
    for _ in $(seq 300); do
        fault_proxy_log | grep -q ' fault hang' && break
        sleep 0.05
    done
    fault_proxy_rules '{"rules": [{"fault": "cut"}]}'
    local rc=0
    wait "$pid" || rc=$?
    [ "$rc" -eq 1 ] || fail "a cut network: exit $rc: $(cat cut.err)"
    [[ $(cat cut.err) == "qbak: "*"s3://$BUCKET/"* ]] || fail "stderr: $(cat cut.err)"
    fault_proxy_log | grep -q ' cut' || fail "nothing was cut"
    fault_proxy_rules '{"rules": []}'
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
