#!/usr/bin/env bats
# qbak copy never loses what an interrupted job copied, never touches a
# file it does not own, and never chains a backup wrongly:
#  - a TARGET.part that is there before a job is refused, never deleted;
#  - after an interrupted bitmap-mode always job, a job into any other
#    target copies everything the interrupted one had to copy (kept in the
#    source as a disabled companion bitmap) plus what changed since;
#  - --resume continues only the partial qbak made for this bitmap;
#  - the source (or a file of its chain) is never the target, its partial
#    file, or its backing file; a backing file's format is never guessed;
#  - symlinks planted at any name qbak creates are never followed.
# QEMU's tools are the oracles (qemu-img compare/check/info, qemu-nbd +
# nbdinfo for bitmap contents).

bats_require_minimum_version 1.5.0
load helpers

CHECK=$QBAK_CLI_TESTDIR/copy-faults-check.py
M=$((1 << 20))

setup() {
    require_common_oracles
    require_bitmap_oracles
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
    [ -z "${LOOPDEV:-}" ] || losetup -d "$LOOPDEV" 2>/dev/null || true
    [ -z "${NOBODY_DIR:-}" ] || rm -rf "$NOBODY_DIR"
}

# make_backup_chain: src.qcow2 (64 MiB) with bitmap b0, a full backup full.qcow2
# that cleared b0, then guest writes at 0 and 32 MiB (4 MiB each) that b0
# records; before.json is b0 as QEMU sees it.
make_backup_chain() {
    qemu-img create -q -f qcow2 src.qcow2 64M
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x11 0 8M' 'w -P 0x12 40M 2M'
    qemu-img bitmap --add src.qcow2 b0
    qbak copy src.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x21 0 4M' 'w -P 0x22 32M 4M'
    qemu_bitmap_map src.qcow2 b0 >before.json
}

# interrupt_always TARGET [SRC]: a bitmap-mode always job from SRC
# (src.qcow2) into TARGET that fails at its third write (the first sizes
# the file, the second is the first 4 MiB run): TARGET.part holds one run.
interrupt_always() {
    run --separate-stderr env QBAK_FAILPOINT=write:3:eio "$QBAK" copy "${2:-src.qcow2}" "$1" \
        --sync bitmap --bitmap b0 --bitmap-mode always --backing full.qcow2 --json
    [ "$status" -eq 1 ] || fail "interrupted job: exit $status: $stderr"
    [ "$(jq -r '.["clusters-left"]' <<<"$output")" -eq 64 ] ||
        fail "the interrupted job did not copy one 4 MiB run: $output"
    [ -e "$1.part" ] || fail "no $1.part after the interrupted always job"
    qemu-img check -q "$1.part" || fail "qemu-img check $1.part"
}

@test "hardening: an existing TARGET.part is refused (exit 2) and left as it was; --resume finishes it" {
    make_backup_chain
    interrupt_always inc.qcow2
    qemu_bitmap_map src.qcow2 b0 >mid.json
    local sum
    sum=$(sha256sum <inc.qcow2.part)
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    check_error_line
    [[ $stderr == *inc.qcow2.part* && $stderr == *--resume* && $stderr == *remove* ]] ||
        fail "the message does not say how to resume or discard: $stderr"
    [ "$(sha256sum <inc.qcow2.part)" = "$sum" ] || fail "inc.qcow2.part changed"
    [ ! -e inc.qcow2 ] || fail "inc.qcow2 was made"
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" same mid.json after.json
    # the on-success form is refused the same way
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync incremental --bitmap b0 \
        --backing full.qcow2
    [ "$status" -eq 2 ] || fail "on-success: exit $status, expected 2: $stderr"
    [ "$(sha256sum <inc.qcow2.part)" = "$sum" ] || fail "inc.qcow2.part changed"
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 0 ] || fail "--resume: exit $status: $stderr"
    [ ! -e inc.qcow2.part ] || fail "inc.qcow2.part left after --resume"
    qemu-img compare -q inc.qcow2 src.qcow2 || fail "the resumed chain differs from the source"
    qemu-img check -q inc.qcow2 || fail "qemu-img check inc.qcow2"
    qemu_bitmap_map src.qcow2 b0 >done.json
    python3 "$CHECK" cleared done.json
    [ "$(qemu_bitmap_names src.qcow2)" = b0 ] ||
        fail "bitmaps left after the resume: $(qemu_bitmap_names src.qcow2 | tr '\n' ' ')"
}

@test "hardening: the source keeps a disabled companion bitmap holding everything the interrupted job had to copy" {
    make_backup_chain
    interrupt_always inc.qcow2
    local comp
    comp=$(qemu_bitmap_names src.qcow2 | grep -v '^b0$')
    [ "$(wc -l <<<"$comp")" -eq 1 ] && [[ $comp == qbak-partial-* ]] ||
        fail "expected one qbak-partial-* bitmap beside b0, got: $comp"
    qemu_info src.qcow2 | jq -e --arg n "$comp" \
        '.["format-specific"].data.bitmaps[] | select(.name == $n) | .flags | index("auto") | not' \
        >/dev/null || fail "the companion bitmap records guest writes (auto flag)"
    qemu_bitmap_map src.qcow2 "$comp" >comp.json
    python3 "$CHECK" same before.json comp.json
    # b0 holds only what the partial lacks
    qemu-img map --output=json inc.qcow2.part >part.map.json
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" missing before.json after.json part.map.json --cluster 65536 \
        --granularity "$(qemu_granularity src.qcow2 b0)"
    qemu-img check -q src.qcow2 || fail "qemu-img check src.qcow2"
}

@test "hardening: after an interrupted always job, a job into another target copies all it had to copy plus new writes" {
    make_backup_chain
    interrupt_always inc.qcow2
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x31 48M 1M'
    run --separate-stderr qbak copy src.qcow2 other.qcow2 --sync incremental --bitmap b0 \
        --backing full.qcow2 --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(jq -r '.["bytes-copied"]' <<<"$output")" -eq $((9 * M)) ] ||
        fail "copied $(jq -r '.["bytes-copied"]' <<<"$output") bytes, expected 9 MiB: $output"
    qemu-img compare -q other.qcow2 src.qcow2 || fail "full.qcow2 + other.qcow2 differ from the source"
    qemu-img check -q other.qcow2 || fail "qemu-img check other.qcow2"
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" cleared after.json
    [ "$(qemu_bitmap_names src.qcow2)" = b0 ] || fail "the companion bitmap was not dropped"
    # the old partial is stale now: resuming it is refused, and it is kept
    local sum
    sum=$(sha256sum <inc.qcow2.part)
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 3 ] || fail "--resume of a stale partial: exit $status: $stderr"
    check_error_line
    [ "$(sha256sum <inc.qcow2.part)" = "$sum" ] || fail "inc.qcow2.part changed"
}

@test "hardening: after an interrupted always job and a failed on-success job, the bitmap still covers everything" {
    make_backup_chain
    interrupt_always inc.qcow2
    rm inc.qcow2.part
    run --separate-stderr env QBAK_FAILPOINT=write:1:eio "$QBAK" copy src.qcow2 inc.qcow2 \
        --sync incremental --bitmap b0 --backing full.qcow2
    [ "$status" -eq 1 ] || fail "exit $status: $stderr"
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync incremental --bitmap b0 \
        --backing full.qcow2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    qemu-img compare -q inc.qcow2 src.qcow2 || fail "the chain differs from the source"
}

@test "hardening: --resume refuses a symlink and a qcow2 that is not this bitmap's partial" {
    make_backup_chain
    local sum
    sum=$(sha256sum <full.qcow2)
    ln -s full.qcow2 inc.qcow2.part
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 3 ] || fail "symlink: exit $status: $stderr"
    check_error_line
    rm inc.qcow2.part
    cp full.qcow2 inc.qcow2.part
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 3 ] || fail "foreign qcow2: exit $status: $stderr"
    check_error_line
    cmp -s full.qcow2 inc.qcow2.part || fail "the foreign partial changed"
    [ "$(sha256sum <full.qcow2)" = "$sum" ] || fail "full.qcow2 changed"
    # another image's partial is not this one's either
    rm inc.qcow2.part
    cp src.qcow2 other.qcow2
    interrupt_always inc.qcow2 other.qcow2
    sum=$(sha256sum <inc.qcow2.part)
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 3 ] || fail "another image's partial: exit $status: $stderr"
    [ "$(sha256sum <inc.qcow2.part)" = "$sum" ] || fail "the other image's partial changed"
}

@test "hardening: the source is never the target's partial file: 'copy disk.part disk' keeps its source" {
    qemu-img create -q -f qcow2 disk.part 16M
    qemu_io_fmt qcow2 disk.part 'w -P 0x41 0 1M'
    local sum
    sum=$(sha256sum <disk.part)
    run --separate-stderr qbak copy disk.part disk --sync full
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    check_error_line
    [ "$(sha256sum <disk.part)" = "$sum" ] || fail "the source changed"
    [ ! -e disk ] || fail "a target was made"
    # the same through another name of the same file
    ln disk.part alias.part
    run --separate-stderr qbak copy disk.part alias --sync full
    [ "$status" -eq 2 ] || fail "hard link: exit $status: $stderr"
    [ "$(sha256sum <disk.part)" = "$sum" ] || fail "the source changed"
}

@test "hardening: --backing that is the source or a file of its chain is refused" {
    qemu-img create -q -f qcow2 base.qcow2 16M
    qemu_io_fmt qcow2 base.qcow2 'w -P 0x51 0 1M'
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 src.qcow2
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x52 1M 1M'
    mkdir sub
    ln -s ../src.qcow2 sub/link.qcow2
    ln base.qcow2 hard.qcow2
    local b
    for b in src.qcow2 ./src.qcow2 "$PWD/src.qcow2" sub/link.qcow2 base.qcow2 hard.qcow2; do
        run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync top --backing "$b"
        [ "$status" -eq 2 ] || fail "--backing $b: exit $status, expected 2: $stderr"
        [[ $stderr == *source* ]] || fail "--backing $b: message does not say why: $stderr"
        [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "--backing $b: left a target"
    done
    qemu-img compare -q src.qcow2 base.qcow2 >/dev/null 2>&1 && fail "test images are wrong"
    qemu-img check -q src.qcow2
}

@test "hardening: a raw backing file needs -F raw; the recorded format is the one given, never probed" {
    # a raw disk whose guest wrote a qcow2 header naming a host file
    echo secret >victim
    qemu-img create -q -f qcow2 -b "$PWD/victim" -F raw hdr.qcow2 16M
    qemu-img create -q -f raw disk.raw 16M
    dd if=hdr.qcow2 of=disk.raw conv=notrunc status=none
    qemu_io_fmt raw disk.raw 'w -P 0x61 1M 1M'
    qbak copy -f raw disk.raw full.raw -O raw --sync full
    cmp -s full.raw disk.raw || fail "the raw full backup differs"
    run --separate-stderr qbak copy -f raw disk.raw inc.qcow2 --sync full --backing full.raw \
        -F raw
    [ "$status" -eq 0 ] || fail "-F raw: exit $status: $stderr"
    [ "$(qemu_info inc.qcow2 | jq -r '.["backing-filename-format"]')" = raw ] ||
        fail "recorded backing format: $(qemu_info inc.qcow2 | jq -c .)"
    qemu-img info --backing-chain --output=json inc.qcow2 | grep -q victim &&
        fail "the chain resolves through the guest's header"
    qemu-img compare -q -f qcow2 -F raw inc.qcow2 disk.raw || fail "inc.qcow2 differs from the disk"
    # a plain raw backing without -F is refused with the hint
    qemu-img create -q -f raw plain.raw 16M
    run --separate-stderr qbak copy -f raw disk.raw inc2.qcow2 --sync full --backing plain.raw
    [ "$status" -eq 3 ] || fail "no -F: exit $status, expected 3: $stderr"
    check_error_line
    [[ $stderr == *"-F raw"* ]] || fail "the message does not name -F raw: $stderr"
    [ ! -e inc2.qcow2 ] || fail "a target was made"
    # a qcow2 backing is recorded as qcow2
    run --separate-stderr qbak copy -f raw disk.raw inc3.qcow2 --sync full --backing inc.qcow2
    [ "$status" -eq 0 ] || fail "qcow2 backing: exit $status: $stderr"
    [ "$(qemu_info inc3.qcow2 | jq -r '.["backing-filename-format"]')" = qcow2 ] ||
        fail "recorded backing format: $(qemu_info inc3.qcow2 | jq -c .)"
    [ "$(cat victim)" = secret ] || fail "victim changed"
}

@test "hardening: an incremental into qcow2 without --backing is refused unless --no-backing" {
    make_backup_chain
    local sync
    for sync in "--sync incremental" "--sync bitmap --bitmap-mode always" \
                "--sync bitmap --bitmap-mode on-success" "--sync bitmap --bitmap-mode never"; do
        # shellcheck disable=SC2086
        run --separate-stderr qbak copy src.qcow2 t.qcow2 $sync --bitmap b0
        [ "$status" -eq 2 ] || fail "$sync: exit $status, expected 2: $stderr"
        [[ $stderr == *--no-backing* ]] || fail "$sync: message: $stderr"
        [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "$sync: left a target"
    done
    qemu_bitmap_map src.qcow2 b0 >after.json
    python3 "$CHECK" same before.json after.json
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync incremental --bitmap b0 --no-backing
    [ "$status" -eq 0 ] || fail "--no-backing: exit $status: $stderr"
    [ "$(qemu_info t.qcow2 | jq -r '.["backing-filename"] // "none"')" = none ] ||
        fail "t.qcow2 has a backing file"
    run --separate-stderr qbak copy src.qcow2 t2.qcow2 --sync full --backing full.qcow2 --no-backing
    [ "$status" -eq 2 ] || fail "--backing with --no-backing: exit $status"
}

# planted_links DIR QBAK...: in DIR, plant symlinks at t.qcow2.part.spare
# and at u.qcow2, u.qcow2.part to victim files, run two full backups into
# t.qcow2 and u.qcow2 (the second must be refused), and check no file but
# t.qcow2 changed (checksums of every file before and after).
planted_links() {
    local d=$1 v
    shift
    for v in v1 v2 v3; do
        head -c 100000 /dev/urandom >"$d/$v"
    done
    # every regular file but qbak's output (the victims, the source, qbak)
    (cd "$d" && find . -type f ! -name t.qcow2 ! -name sums ! -name err -print0 |
        sort -z | xargs -0 sha256sum >sums)
    grep -q ' \./src\.qcow2$' "$d/sums" && grep -q ' \./v1$' "$d/sums" ||
        fail "the checksum list misses files: $(cat "$d/sums")"
    ln -s v1 "$d/t.qcow2.part.spare"
    ln -s v2 "$d/u.qcow2"
    ln -s v3 "$d/w.qcow2.part"
    ln -s /nonexistent "$d/x.qcow2"
    "$@" copy "$d/src.qcow2" "$d/t.qcow2" --sync full ||
        fail "the backup beside a planted spare link failed"
    qemu-img compare -q "$d/t.qcow2" "$d/src.qcow2" || fail "t.qcow2 differs"
    local t rc
    for t in u w x; do
        rc=0
        "$@" copy "$d/src.qcow2" "$d/$t.qcow2" --sync full 2>"$d/err" || rc=$?
        [ "$rc" -eq 2 ] || fail "a symlink at $t.qcow2 or its .part: exit $rc: $(cat "$d/err")"
    done
    (cd "$d" && sha256sum -c --quiet sums) || fail "a victim file changed"
    [ "$(readlink "$d/t.qcow2.part.spare")" = v1 ] && [ "$(readlink "$d/w.qcow2.part")" = v3 ] ||
        fail "a planted link was replaced"
}

@test "hardening: symlinks planted at the target, its partial or its spare are never followed (root)" {
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x71 0 2M'
    planted_links "$PWD" "$QBAK"
}

@test "hardening: symlinks planted at the target, its partial or its spare are never followed (unprivileged)" {
    require_oracle setpriv util-linux
    NOBODY_DIR=$(mktemp -d /tmp/qbak-nobody.XXXXXX)
    chmod 755 "$NOBODY_DIR"
    qemu-img create -q -f qcow2 "$NOBODY_DIR/src.qcow2" 16M
    qemu_io_fmt qcow2 "$NOBODY_DIR/src.qcow2" 'w -P 0x72 0 2M'
    # a copy of the binary: the build folder may sit where others cannot go
    copy_qbak "$NOBODY_DIR"
    chown -R 65534:65534 "$NOBODY_DIR"
    planted_links "$NOBODY_DIR" as_nobody "$NOBODY_DIR/qbak"
}

@test "hardening: a target that cannot be created is exit 2, naming the folder (root and unprivileged)" {
    qemu-img create -q -f qcow2 src.qcow2 16M
    run --separate-stderr qbak copy src.qcow2 nodir/t.qcow2 --sync full
    [ "$status" -eq 2 ] || fail "missing folder: exit $status, expected 2: $stderr"
    check_error_line
    [[ $stderr == *"'nodir'"* && $stderr != *.part* ]] || fail "message: $stderr"
    require_oracle setpriv util-linux
    NOBODY_DIR=$(mktemp -d /tmp/qbak-nobody.XXXXXX)
    chmod 755 "$NOBODY_DIR"
    cp src.qcow2 "$NOBODY_DIR/"
    chmod 644 "$NOBODY_DIR/src.qcow2"
    mkdir "$NOBODY_DIR/ro"
    copy_qbak "$NOBODY_DIR"
    run --separate-stderr as_nobody "$NOBODY_DIR/qbak" copy "$NOBODY_DIR/src.qcow2" \
        "$NOBODY_DIR/ro/t.qcow2" --sync full
    [ "$status" -eq 2 ] || fail "unwritable folder: exit $status, expected 2: $stderr"
    check_error_line
    [[ $stderr == *"$NOBODY_DIR/ro"* && $stderr != *.part* ]] || fail "message: $stderr"
}

@test "hardening: the in_use message gives a sequence that works" {
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu-img bitmap --add src.qcow2 b0
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x73 0 1M'
    leave_bitmaps_in_use src.qcow2
    run --separate-stderr qbak copy src.qcow2 t.qcow2 --sync incremental --bitmap b0 \
        --backing full.qcow2
    [ "$status" -eq 3 ] || fail "exit $status, expected 3: $stderr"
    check_error_line
    [[ $stderr == *"qbak bitmap remove src.qcow2 b0"* && $stderr == *"qbak bitmap add src.qcow2 b0"* ]] ||
        fail "the message does not give the sequence: $stderr"
    qbak bitmap remove src.qcow2 b0
    qbak bitmap add src.qcow2 b0
    qbak copy src.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    qemu-img compare -q full.qcow2 src.qcow2 || fail "the full backup differs"
    qemu_io_fmt qcow2 src.qcow2 'w -P 0x74 2M 1M'
    qbak copy src.qcow2 inc.qcow2 --sync incremental --bitmap b0 --backing full.qcow2
    qemu-img compare -q inc.qcow2 src.qcow2 || fail "the incremental differs"
}

@test "hardening: two jobs of one group writing one target are refused before anything is written" {
    qemu-img create -q -f qcow2 a.qcow2 16M
    qemu-img create -q -f qcow2 b.qcow2 16M
    mkdir d
    run --separate-stderr qbak copy --job src=a.qcow2,target=d/t.qcow2 \
        --job src=b.qcow2,target=./d/../d/t.qcow2 --sync full
    [ "$status" -eq 2 ] || fail "exit $status, expected 2: $stderr"
    [[ $stderr == *"two jobs"* ]] || fail "message: $stderr"
    [ -z "$(ls -A d)" ] || fail "files were made: $(ls -A d)"
}

@test "hardening: a block device source is backed up whole (its size is not st_size)" {
    require_oracle losetup mount
    truncate -s 16M disk.img
    local dev
    dev=$(losetup -f --show disk.img) || fail "losetup: cannot attach a loop device (needs root)"
    LOOPDEV=$dev
    qemu_io_fmt raw "$dev" 'w -P 0x55 1M 1M' 'w -P 0x56 15M 1M'
    run --separate-stderr qbak copy -f raw "$dev" t.qcow2 --sync full
    losetup -d "$dev"; LOOPDEV=
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(qemu_size t.qcow2)" -eq $((16 * M)) ] || fail "virtual size $(qemu_size t.qcow2)"
    qemu-img compare -q -f raw -F qcow2 disk.img t.qcow2 || fail "the backup differs from the device"
}
