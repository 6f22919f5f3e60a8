#!/usr/bin/env bats
# What the other hardening tests (copy-hardening, untrusted, lock-race)
# left open:
#  - a crash or an I/O error anywhere in the failure path of an
#    interrupted bitmap-mode always job (finishing TARGET.part, writing
#    the companion bitmap) never lets a later job into another target copy
#    less than everything: every call after the first failure is made to
#    crash (abort) and, separately, to fail (EIO);
#  - special files (FIFO, socket, character device, directory) named by
#    an image, on the command line, or planted where qbak creates a file,
#    as root and as an unprivileged user: refused at once, and no regular
#    file outside qbak's outputs changes (checksums of every file).
# QEMU's tools are the oracles (qemu-img compare/check, qemu-nbd +
# nbdinfo for the bitmaps).

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_bitmap_oracles
    require_oracle setpriv util-linux
    require_oracle timeout coreutils
    require_qbak
}

setup() {
    setup_tmpdir
    NOBODY_DIR=
}

teardown() {
    kill_daemons
    if [ -n "$NOBODY_DIR" ]; then rm -rf "$NOBODY_DIR"; fi
}

# ---------------------------------------------------------------------
# The failure path of an interrupted always job, crashed or failed at
# every call

# always_source: src0.qcow2 (16 MiB) whose bitmap b0 was cleared by a full
# backup full.qcow2, then dirtied at three 1 MiB runs (0, 8 MiB, 14 MiB),
# so that a job failing at its third write has copied one run.
always_source() {
    qemu-img create -q -f qcow2 src0.qcow2 16M
    qemu-img bitmap --add src0.qcow2 b0
    qemu_io_fmt qcow2 src0.qcow2 'write -P 0x11 0 2M'
    qbak copy src0.qcow2 full.qcow2 --sync full --bitmap b0 --bitmap-mode on-success
    qemu_io_fmt qcow2 src0.qcow2 'write -P 0x21 0 1M' 'write -P 0x22 8M 1M' \
        'write -P 0x23 14M 1M'
    [ "$(dirty_ranges src0.qcow2 b0)" = "[[0,1048576],[8388608,1048576],[14680064,1048576]]" ]
}

# failure_path_at EFFECT: for every call N of the job that fails at its
# third write (write:3:eio), the same job with any:N:EFFECT as well; for
# each N reached after that first failure, a job with b0 into another
# target must give a chain equal to the source and drop the companion, and
# the source must check clean (leaks allowed after a crash).  Prints how
# many N were checked.
failure_path_at() {
    local eff=$1 total n rc checked=0
    cp src0.qcow2 src.qcow2
    rc=0
    QBAK_FAILPOINT=write:3:eio QBAK_FAILPOINT_COUNT=$PWD/count \
        qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 --bitmap-mode always \
        --backing full.qcow2 2>err || rc=$?
    [ "$rc" -eq 1 ] || fail "the interrupted job: exit $rc: $(cat err)"
    [ -e inc.qcow2.part ] || fail "the interrupted job left no inc.qcow2.part"
    total=$(awk '$1 == "any" { print $2 }' count)
    [ "$total" -gt 10 ] || fail "only $total calls counted"
    for n in $(seq 1 "$total"); do
        rm -f inc.qcow2 inc.qcow2.part other.qcow2 fp.log
        cp src0.qcow2 src.qcow2
        rc=0
        QBAK_FAILPOINT=write:3:eio,any:$n:$eff QBAK_FAILPOINT_LOG=$PWD/fp.log \
            "$QBAK" copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
            --bitmap-mode always --backing full.qcow2 >/dev/null 2>err || rc=$?
        # only the calls after the first failure: the failure path
        grep -q '^write:3 ' fp.log 2>/dev/null || continue
        grep -q "^any:$n " fp.log || continue
        case $eff in
        abort) [ "$rc" -eq 134 ] || fail "N=$n: exit $rc, expected 134: $(cat err)" ;;
        *) [ "$rc" -eq 1 ] || fail "N=$n: exit $rc, expected 1: $(cat err)" ;;
        esac
        check_clean --leaks-ok src.qcow2 || fail "N=$n: the source does not check clean"
        rc=0
        qbak copy src.qcow2 other.qcow2 --sync incremental --bitmap b0 \
            --backing full.qcow2 2>err || rc=$?
        [ "$rc" -eq 0 ] || fail "N=$n: the job into another target: exit $rc: $(cat err)"
        qemu-img compare -q other.qcow2 src.qcow2 ||
            fail "N=$n: full.qcow2 + other.qcow2 differ from the source: data was lost"
        [ "$(qemu_bitmap_names src.qcow2)" = b0 ] ||
            fail "N=$n: bitmaps left: $(qemu_bitmap_names src.qcow2 | tr '\n' ' ')"
        checked=$((checked + 1))
    done
    [ "$checked" -gt 5 ] || fail "only $checked calls after the first failure"
    echo "# $eff: $checked calls of $total after the first failure" >&3
}

@test "gaps: a crash anywhere in an interrupted always job's failure path loses nothing for another target" {
    always_source
    failure_path_at abort
}

@test "gaps: an I/O error anywhere in an interrupted always job's failure path loses nothing for another target" {
    always_source
    failure_path_at eio
}

# ---------------------------------------------------------------------
# The partial file: never the source, never reached through a link

@test "gaps: the source (or a file of its chain) as TARGET.part is refused as such, with --resume too" {
    qemu-img create -q -f qcow2 disk.part 16M
    qemu-img bitmap --add disk.part b0
    qemu_io_fmt qcow2 disk.part 'write -P 0x41 0 1M'
    qemu-img create -q -f qcow2 -b disk.part -F qcow2 top.qcow2
    qemu-img bitmap --add top.qcow2 b0
    local sum args
    sum=$(sha256sum <disk.part)
    for args in "disk.part disk --sync full" \
                "disk.part disk --sync bitmap --bitmap b0 --bitmap-mode always --no-backing --resume" \
                "top.qcow2 disk --sync full" \
                "top.qcow2 disk --sync bitmap --bitmap b0 --bitmap-mode always --no-backing --resume"; do
        # shellcheck disable=SC2086
        run --separate-stderr qbak copy $args
        [ "$status" -eq 2 ] || fail "copy $args: exit $status, expected 2: $stderr"
        # the advice for a stale partial ("remove it") would remove the source
        [[ ${stderr_lines[0]} == "qbak: disk: "*"disk.part is the source"* &&
           $stderr != *remove* ]] || fail "copy $args: message: $stderr"
        [ "$(sha256sum <disk.part)" = "$sum" ] || fail "copy $args: the source changed"
        [ ! -e disk ] || fail "copy $args: a target was made"
    done
}

@test "gaps: --resume refuses a TARGET.part that links to this job's own partial elsewhere" {
    always_source
    cp src0.qcow2 src.qcow2
    run --separate-stderr env QBAK_FAILPOINT=write:3:eio "$QBAK" copy src.qcow2 inc.qcow2 \
        --sync bitmap --bitmap b0 --bitmap-mode always --backing full.qcow2
    [ "$status" -eq 1 ] || fail "the interrupted job: exit $status: $stderr"
    mkdir elsewhere
    mv inc.qcow2.part elsewhere/
    ln -s elsewhere/inc.qcow2.part inc.qcow2.part
    local sum
    sum=$(sha256sum <elsewhere/inc.qcow2.part)
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 3 ] || fail "--resume through a link: exit $status, expected 3: $stderr"
    check_error_line
    [ "$(sha256sum <elsewhere/inc.qcow2.part)" = "$sum" ] || fail "the linked partial changed"
    [ -L inc.qcow2.part ] && [ ! -e inc.qcow2 ] || fail "the link was replaced or a target made"
    # the file itself is this job's partial: in its place, it resumes
    rm inc.qcow2.part
    mv elsewhere/inc.qcow2.part .
    run --separate-stderr qbak copy src.qcow2 inc.qcow2 --sync bitmap --bitmap b0 \
        --bitmap-mode always --backing full.qcow2 --resume
    [ "$status" -eq 0 ] || fail "--resume in place: exit $status: $stderr"
    qemu-img compare -q inc.qcow2 src.qcow2 || fail "the resumed chain differs from the source"
}

# ---------------------------------------------------------------------
# Special files, as root and as an unprivileged user, with checksums of
# every file outside qbak's outputs

# sums: checksums of every regular file under the working directory but
# out/ (qbak's outputs), symlinks not followed.
sums() {
    find . -path ./out -prune -o -type f -print0 | sort -z | xargs -0r sha256sum
}

# q RUN... -- ARGS...: qbak ARGS behind RUN (empty or setpriv ...), 20 s at
# most: a command that blocks on a FIFO fails instead of hanging.
q() {
    local -a pre=()
    while [ "$1" != -- ]; do pre+=("$1"); shift; done
    shift
    timeout 20 "${pre[@]}" ./qbak "$@"
}

# refused EXIT PATTERN RUN... -- ARGS...: qbak ARGS (behind RUN) exits
# EXIT at once with one line matching the glob PATTERN.
refused() {
    local want=$1 pat=$2
    shift 2
    run --separate-stderr q "$@"
    [ "$status" -eq "$want" ] || fail "qbak $*: exit $status, expected $want: $stderr"
    check_error_line
    [[ $stderr == $pat ]] || fail "qbak $*: message '$stderr' does not match '$pat'"
}

# special_cases RUN...: with RUN (empty, or setpriv to the unprivileged
# user) in front of qbak, in the working directory (qbak copied into it),
# images naming special files, special files on the command line and at
# names qbak creates; every command is refused with the right code, and
# afterwards no regular file but qbak's outputs in out/ has changed.
special_cases() {
    local -a r=("$@")
    mkdir out
    mkfifo fifo out/pt.qcow2.part out/ft.qcow2
    python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("sock")'
    mkdir dir
    ln -s fifo fifo-link
    qemu-img create -q -f qcow2 img.qcow2 1M
    qemu-img bitmap --add img.qcow2 b
    qemu_io_fmt qcow2 img.qcow2 'write -P 1 0 64k'
    # images naming special files (a FIFO directly and behind a link, a
    # socket, devices, a directory) as backing file
    local name i=0
    for name in fifo fifo-link sock /dev/zero /dev/null dir; do
        i=$((i + 1))
        qemu-img create -q -f qcow2 -u -b "$name" -F raw "top$i.qcow2" 1M
    done
    # and a FIFO as external data file
    qemu-img create -q -f qcow2 -o data_file=data.raw dimg.qcow2 1M
    qemu-img bitmap --add dimg.qcow2 b
    rm data.raw
    mkfifo data.raw
    chown -R 65534:65534 .
    local sum
    sum=$(sums)

    for i in 1 2 3 4 5 6; do
        refused 3 "qbak: top$i.qcow2: backing file *" "${r[@]}" -- info "top$i.qcow2"
        refused 3 "qbak: top$i.qcow2: backing file *" "${r[@]}" -- map "top$i.qcow2"
        refused 3 "qbak: top$i.qcow2: backing file *" "${r[@]}" -- \
            copy "top$i.qcow2" "out/t$i.qcow2" --sync full
    done
    refused 3 "qbak: dimg.qcow2: external data file 'data.raw': *FIFO*" "${r[@]}" -- \
        copy dimg.qcow2 out/d.qcow2 --sync incremental --bitmap b --no-backing
    refused 3 "qbak: dimg.qcow2: external data file 'data.raw': *FIFO*" "${r[@]}" -- \
        info dimg.qcow2
    # on the command line: a FIFO, a socket, a device, a directory
    refused 3 "qbak: fifo: is a FIFO*" "${r[@]}" -- copy fifo out/s.qcow2 --sync full
    refused 3 "qbak: fifo-link: is a FIFO*" "${r[@]}" -- bitmap add fifo-link x
    refused 3 "qbak: sock: *" "${r[@]}" -- info sock
    refused 3 "qbak: /dev/zero: is a character device*" "${r[@]}" -- \
        copy -f raw /dev/zero out/z.qcow2 --sync full
    refused 3 "qbak: dir: is a directory*" "${r[@]}" -- bitmap list dir
    # at the names qbak creates: a FIFO as target, as its partial, a
    # target folder that is a FIFO
    refused 2 "qbak: *" "${r[@]}" -- copy img.qcow2 out/ft.qcow2 --sync full
    refused 2 "qbak: *out/pt.qcow2.part*" "${r[@]}" -- copy img.qcow2 out/pt.qcow2 --sync full
    refused 2 "qbak: *" "${r[@]}" -- copy img.qcow2 fifo/t.qcow2 --sync full
    [ -p out/ft.qcow2 ] && [ -p out/pt.qcow2.part ] && [ -p fifo ] ||
        fail "a planted FIFO was replaced"
    [ "$(sums)" = "$sum" ] || fail "a file changed: $(diff <(echo "$sum") <(sums))"

    # what may change: the image a bitmap command writes (its metadata
    # only: the FIFO data file is never opened), and out/
    run --separate-stderr q "${r[@]}" -- bitmap add dimg.qcow2 c
    [ "$status" -eq 0 ] || fail "bitmap add dimg.qcow2: exit $status: $stderr"
    [ "$(qemu_bitmap_names dimg.qcow2 | sort | tr '\n' ' ')" = "b c " ]
    run --separate-stderr q "${r[@]}" -- copy img.qcow2 out/ok.qcow2 --sync incremental \
        --bitmap b --no-backing
    [ "$status" -eq 0 ] || fail "a backup beside the special files: exit $status: $stderr"
    qemu-img compare -q img.qcow2 out/ok.qcow2
    [ "$(sums | grep -v ' \./\(dimg\|img\)\.qcow2$')" = \
      "$(grep -v ' \./\(dimg\|img\)\.qcow2$' <<<"$sum")" ] ||
        fail "a file outside qbak's outputs changed"
    qemu-img check -q img.qcow2
    # qemu-img check would wait on the FIFO: give it a data file
    rm data.raw
    truncate -s 1M data.raw
    qemu-img check -q dimg.qcow2
    [ -z "$(find out -type f ! -name ok.qcow2)" ] ||
        fail "qbak left files: $(find out -type f ! -name ok.qcow2)"
}

@test "gaps: special files named by images, on the command line and at qbak's names change nothing (root)" {
    NOBODY_DIR=$(mktemp -d /tmp/qbak-gaps.XXXXXX)
    copy_qbak "$NOBODY_DIR"
    cd "$NOBODY_DIR"
    special_cases
}

@test "gaps: special files named by images, on the command line and at qbak's names change nothing (unprivileged)" {
    NOBODY_DIR=$(mktemp -d /tmp/qbak-gaps.XXXXXX)
    chmod 755 "$NOBODY_DIR"
    copy_qbak "$NOBODY_DIR"
    cd "$NOBODY_DIR"
    # as_nobody's command, spelled out: timeout runs programs, not functions
    special_cases setpriv --reuid=65534 --regid=65534 --clear-groups
}
