#!/usr/bin/env bats
# The lock of a repository on S3 is an object that its holder rewrites
# every tenth of the stale time: a live holder keeps others out (exit 4,
# naming it), a holder that died on this host or went quiet for longer
# than the stale time is taken over, and a run that lost its lock while
# it stalled writes no record.  The stale time is 600 s; test builds
# shorten it with QBAK_S3_LOCK_STALE_S.

load s3-helpers
load ../cli/helpers

setup_file() {
    s3_start_gateway
    BUCKET=$(s3_new_bucket lock)
    export BUCKET
}

teardown_file() {
    s3_remove_bucket "$BUCKET"
}

setup() {
    # shellcheck disable=SC1091
    . "$QBAK_RGW_DIR/env"
    export S3CFG=$QBAK_RGW_DIR/s3cfg
    cd "$BATS_TEST_TMPDIR"
    REPO=s3://$BUCKET/$BATS_TEST_NUMBER
    qemu-img create -q -f qcow2 disk.qcow2 256M
    qemu-io -c "write -P 1 0 64M" disk.qcow2 >/dev/null
}

# points REPO: the ids of REPO's points, one a line.
points() {
    "$QBAK" list --json "$1" |
        python3 -c 'import json,sys; [print(p["id"]) for p in json.load(sys.stdin)["points"]]'
}

# put_lock TEXT: plant a lock object with TEXT, as another holder's
# (curl, not s3cmd: the test makes many requests, and s3cmd starts slowly).
put_lock() {
    printf '%b' "$1" >lockobj
    [ "$(s3curl_code -X PUT --data-binary @lockobj "/$BUCKET/$BATS_TEST_NUMBER/lock")" = 200 ]
}

# keys PREFIX: the keys of objects under this test's PREFIX, one a line.
keys() {
    s3curl "/$BUCKET?list-type=2&prefix=$BATS_TEST_NUMBER%2F${1//\//%2F}" |
        grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'
}

# uploads: the keys of this test's unfinished multipart uploads.
uploads() {
    s3curl "/$BUCKET?prefix=$BATS_TEST_NUMBER%2F&uploads=" |
        grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'
}

@test "a live holder on another host keeps a backup out: exit 4, naming it, nothing written" {
    "$QBAK" backup disk.qcow2 "$REPO"
    put_lock 'host far, pid 4242, since now\nhost=far-away-host\npid=4242\nstart=1\n'
    qemu-io -c "write -P 2 0 1M" disk.qcow2 >/dev/null
    run "$QBAK" backup disk.qcow2 "$REPO"
    [ "$status" -eq 4 ] || fail "exit $status: $output"
    [[ $output == *"$REPO: in use by another qbak (host far, pid 4242"* ]] ||
        fail "$output"
    [ "$(points "$REPO" | wc -l)" -eq 1 ] || fail "a point was added"
    keys disks/ >objs
    [ "$(wc -l <objs)" -eq 2 ] || fail "$(cat objs)"
}

@test "a lock left by a process of this host that is gone is taken over at once" {
    "$QBAK" backup disk.qcow2 "$REPO"
    sleep 0 & dead=$!
    wait "$dead"
    put_lock "host $(hostname), pid $dead\nhost=$(hostname)\npid=$dead\nstart=1\n"
    qemu-io -c "write -P 2 0 1M" disk.qcow2 >/dev/null
    run "$QBAK" backup disk.qcow2 "$REPO"
    [ "$status" -eq 0 ] || fail "exit $status: $output"
    [ "$(points "$REPO" | wc -l)" -eq 2 ] || fail "no new point"
    [ -z "$(keys lock)" ] || fail "the lock was left"
}

@test "another host's lock is taken over only once it is older than the stale time" {
    "$QBAK" backup disk.qcow2 "$REPO"
    put_lock 'host far, pid 7\nhost=far-away-host\npid=7\nstart=1\n'
    qemu-io -c "write -P 2 0 1M" disk.qcow2 >/dev/null
    run env QBAK_S3_LOCK_STALE_S=30 "$QBAK" backup disk.qcow2 "$REPO"
    [ "$status" -eq 4 ] || fail "a fresh lock was taken: exit $status: $output"
    sleep 3
    run env QBAK_S3_LOCK_STALE_S=2 "$QBAK" backup disk.qcow2 "$REPO"
    [ "$status" -eq 0 ] || fail "a stale lock was not taken: exit $status: $output"
    [ "$(points "$REPO" | wc -l)" -eq 2 ] || fail "no new point"
}

@test "a run whose lock was taken over while it copied writes no record: exit 4; the next run completes" {
    "$QBAK" backup disk.qcow2 "$REPO"
    qemu-io -c "write -P 4 0 128M" disk.qcow2 >/dev/null
    fault_proxy_start
    # Slow uploads keep the run busy while its lock changes hands.
    fault_proxy_rules '{"rules": [{"fault": "delay", "seconds": 1, "match": "partNumber="}]}'
    AWS_ENDPOINT_URL=$FAULT_PROXY_URL "$QBAK" backup disk.qcow2 "$REPO" \
        >run.out 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        [ -n "$(keys lock)" ] && break
        sleep 0.1
    done
    put_lock 'host thief, pid 9\nhost=thief-host\npid=9\nstart=1\n'
    wait "$pid" && status=0 || status=$?
    fault_proxy_stop
    [ "$status" -eq 4 ] || fail "exit $status: $(cat run.out)"
    grep -q "lost the repository's lock while it stalled (now held by host thief" run.out ||
        fail "$(cat run.out)"
    [ "$(points "$REPO" | wc -l)" -eq 1 ] || fail "a record was written"
    # The thief is gone for good: its lock is stale, and the next run
    # takes it, removes the lost run's objects and takes the point.
    sleep 2
    cp disk.qcow2 night2.qcow2
    run env QBAK_S3_LOCK_STALE_S=1 "$QBAK" backup disk.qcow2 "$REPO"
    [ "$status" -eq 0 ] || fail "exit $status: $output"
    [ "$(points "$REPO" | wc -l)" -eq 2 ] || fail "no new point"
    "$QBAK" restore --disk disk "$REPO" back.qcow2
    qemu-img compare -q night2.qcow2 back.qcow2
    [ -z "$(uploads)" ] || fail "uploads left: $(uploads)"
    # Two points, a file and a manifest each: the lost run's are gone.
    [ "$(keys disks/ | wc -l)" -eq 4 ] || fail "objects left: $(keys disks/)"
}
