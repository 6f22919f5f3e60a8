#!/usr/bin/env bats
# qbak prune's retention policy against restic's `forget`, point by point
# (tests/cli/prune-policy.py), in two zones with daylight saving, and the
# command line of prune, protect and backup --tz.
#
# Needs a test build (QBAK_FAILPOINTS): QBAK_TEST_NOW sets the time of
# each point, so points span years in seconds.

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_common_oracles
    require_oracle restic restic
    require_qbak
    setup_tmpdir
}

# backup_at REPO SECONDS [ARGS...]: a point of disk.qcow2 at that time.
backup_at() {
    local repo=$1 t=$2
    shift 2
    QBAK_TEST_NOW=$t "$QBAK" backup "$@" disk.qcow2 "$repo" >/dev/null 2>&1 ||
        fail "backup at $t failed"
}

@test "prune: restic's decisions in Europe/Berlin (two years, ISO weeks, DST)" {
    run python3 "$QBAK_SRCDIR/tests/cli/prune-policy.py" Europe/Berlin full \
        "$T"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *", 0 differences"* ]]
}

@test "prune: restic's decisions in America/New_York (DST, keep-within on a 30th)" {
    run python3 "$QBAK_SRCDIR/tests/cli/prune-policy.py" America/New_York \
        short "$T"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *", 0 differences"* ]]
}

@test "prune: an empty policy, a bad count or duration: usage, nothing removed" {
    qemu-img create -q -f qcow2 disk.qcow2 1M
    backup_at repo 1700000000 --tz UTC
    run -2 qbak prune --dry-run repo
    [[ "$output" == *"no rule"* ]]
    run -2 qbak prune --keep-daily x --dry-run repo
    [[ "$output" == *"invalid --keep-daily 'x'"* ]]
    run -2 qbak prune --keep-within 2w --dry-run repo
    [[ "$output" == *"'2w' is not a duration"* ]]
    run -2 qbak prune --keep-within 1d1y --dry-run repo
    run -2 qbak prune --keep-within 1d1y repo
    run -2 qbak prune --keep-last 3 --dry-run nothing-here
    # Nothing changed.
    [ "$(ls repo/points | wc -l)" -eq 1 ]
}

@test "prune: --dry-run lists every point with its action and reasons" {
    qemu-img create -q -f qcow2 disk.qcow2 1M
    # Three points on one Berlin day (Sunday 2026-03-29, the spring
    # change), one on the next.
    for t in 1774733400 1774740600 1774751400 1774822800; do
        backup_at repo "$t" --tz Europe/Berlin
    done
    run -0 qbak prune --keep-daily 2 --dry-run repo
    echo "$output"
    [[ "${lines[0]}" == "POINT"*"LOCAL TIME"*"ACTION"*"REASONS" ]]
    [[ "${lines[1]}" == "20260328T213000Z "*"2026-03-28 22:30:00 +01:00 remove"* ]]
    [[ "${lines[3]}" == "20260329T023000Z "*"2026-03-29 04:30:00 +02:00 keep "*"daily" ]]
    [[ "${lines[4]}" == *" keep "*"daily" ]]
    [[ "${lines[5]}" == "4 points: 2 kept, 2 to remove (dry run; time zone Europe/Berlin)" ]]
    run -0 qbak prune --keep-daily 2 --keep-within 1d --dry-run --json repo
    [ "$(jq -r '.timezone' <<<"$output")" = Europe/Berlin ]
    [ "$(jq -c '.policy' <<<"$output")" = '{"keep-daily":2,"keep-within":"1d"}' ]
    # One day back from Monday 00:20 is Sunday 00:20, before the change:
    # 23 hours, so Sunday 00:30 is within.
    [ "$(jq -r '[.points[].action] | join(",")' <<<"$output")" = \
      remove,keep,keep,keep ]
    [ "$(jq -c '.points[1].reasons' <<<"$output")" = '["within 1d"]' ]
    [ "$(jq -c '.points[3].reasons' <<<"$output")" = '["daily","within 1d"]' ]
}

@test "protect: a pinned point is kept as protected until unprotected" {
    qemu-img create -q -f qcow2 disk.qcow2 1M
    for t in 1700000000 1700100000 1700200000; do
        backup_at repo "$t"
    done
    first=$(ls repo/points | head -1)
    first=${first%.json}
    run -0 qbak protect repo "$first"
    run -0 qbak protect repo "$first"
    run -0 qbak prune --keep-last 1 --dry-run --json repo
    [ "$(jq -c '[.points[] | [.action, .reasons]]' <<<"$output")" = \
      '[["keep",["protected"]],["remove",[]],["keep",["last"]]]' ]
    run -0 qbak unprotect repo "$first"
    run -0 qbak unprotect repo "$first"
    run -0 qbak prune --keep-last 1 --dry-run --json repo
    [ "$(jq -r '.points[0].action' <<<"$output")" = remove ]
    run -2 qbak protect repo 20990101T000000Z
    [[ "$output" == *"no point 20990101T000000Z"* ]]
    run -2 qbak protect repo ../config
}

@test "backup --tz: fixed when the repository is made; the local zone by default" {
    qemu-img create -q -f qcow2 disk.qcow2 1M
    backup_at repo 1700000000 --tz America/New_York
    [ "$(jq -r .timezone repo/config)" = America/New_York ]
    backup_at repo 1700100000 --tz America/New_York
    backup_at repo 1700200000
    run -2 env QBAK_TEST_NOW=1700300000 "$QBAK" backup --tz UTC disk.qcow2 repo
    [[ "$output" == *"time zone is America/New_York, not UTC"* ]]
    [ "$(ls repo/points | wc -l)" -eq 3 ]
    run -2 qbak backup --tz Mars/Olympus disk.qcow2 repo2
    [[ "$output" == *"'Mars/Olympus' is not a time zone"* ]]
    [ ! -e repo2/config ]
    TZ=Asia/Tokyo backup_at repo3 1700000000
    [ "$(jq -r .timezone repo3/config)" = Asia/Tokyo ]
    # A repository made before the zone was kept reads as UTC.
    jq 'del(.timezone)' repo3/config >config.old
    cp config.old repo3/config
    run -0 qbak prune --keep-last 1 --dry-run --json repo3
    [ "$(jq -r .timezone <<<"$output")" = UTC ]
}
