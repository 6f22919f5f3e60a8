#!/usr/bin/env bats
# Files named by image headers, which a guest or an attacker may control.
#   - Only regular files and block devices are opened: a FIFO, socket,
#     character device or directory named as backing or data file is
#     refused at once (exit 3), never waited on with the locks held.
#   - A backing file is opened only in its recorded format, never probed.
#   - Names resolve as qemu-img resolves them (qemu-img info is the oracle)
#     and info shows each name as stored and as resolved.
#   - The external data file is only ever read; --no-backing-chain opens
#     no file the image names.
#   - Any file that cannot be opened is exit 3 naming it, as root and as
#     an unprivileged user; symlinks and special files change nothing
#     outside qbak's outputs.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_oracle setpriv util-linux
    require_oracle timeout coreutils
    require_qbak
}

setup() {
    setup_tmpdir
    QBAK_PID=
    NOBODY_DIR=
}

teardown() {
    if [ -n "$QBAK_PID" ]; then
        kill -CONT "$QBAK_PID" 2>/dev/null || true
        kill "$QBAK_PID" 2>/dev/null || true
        wait "$QBAK_PID" 2>/dev/null || true
    fi
    if [ -n "$NOBODY_DIR" ]; then rm -rf "$NOBODY_DIR"; fi
    kill_daemons
}

# q ARGS...: qbak, given 20 s at most: a command that blocks on a file
# fails instead of hanging the suite.
q() {
    timeout 20 ${VG:-} "$QBAK" "$@"
}

# refused3 PATTERN ARGS...: qbak ARGS exits 3 at once with one line that
# matches the glob PATTERN.
refused3() {
    local pat=$1
    shift
    run --separate-stderr q "$@"
    [ "$status" -eq 3 ] || fail "qbak $*: exit $status, expected 3: $stderr"
    check_error_line
    [[ $stderr == $pat ]] || fail "qbak $*: message '$stderr' does not match '$pat'"
}

# sums: checksums of every regular file under the working directory but
# out/ (qbak's outputs go there; symlinks are not followed: what they point
# to is a file here).
sums() {
    find . -path ./out -prune -o -type f -print0 | sort -z | xargs -0r sha256sum
}

# overlay NAME BACKING FMT: a qcow2 overlay naming BACKING (not checked)
# with recorded format FMT ("" for none, written by hand since qemu-img
# insists on one).
overlay() {
    if [ -n "$3" ]; then
        qemu-img create -q -f qcow2 -u -b "$2" -F "$3" "$1" 1M
    else
        qemu-img create -q -f qcow2 -u -b "$2" -F raw "$1" 1M
        drop_backing_format "$1"
    fi
}

# drop_backing_format IMG: remove the backing format extension (type
# 0xe2792aca) from IMG's header, as images from old tools lack it.
drop_backing_format() {
    python3 - "$1" <<'EOF'
import struct, sys
p = sys.argv[1]
with open(p, 'r+b') as f:
    h = bytearray(f.read(65536))
    hl = struct.unpack_from('>I', h, 100)[0]
    off = hl
    while True:
        t, n = struct.unpack_from('>II', h, off)
        if t == 0:
            break
        if t == 0xe2792aca:
            # close the gap; the backing name after the extensions moves too
            step = 8 + ((n + 7) & ~7)
            h[off:] = h[off + step:] + bytes(step)
            bo = struct.unpack_from('>Q', h, 8)[0]
            if bo > off:
                struct.pack_into('>Q', h, 8, bo - step)
            continue
        off += 8 + ((n + 7) & ~7)
    f.seek(0)
    f.write(h)
EOF
    ! qemu-img info --output=json "$1" | jq -e '.["backing-filename-format"]' >/dev/null
}

# ---------------------------------------------------------------------
# Special files

@test "untrusted: a FIFO as backing file is refused at once (exit 3), not read" {
    mkfifo base.raw
    overlay top.qcow2 base.raw raw
    for cmd in "info top.qcow2" "map top.qcow2" "copy top.qcow2 t.qcow2 --sync full"; do
        # shellcheck disable=SC2086
        refused3 "qbak: top.qcow2: backing file 'base.raw': *FIFO*" $cmd
    done
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ]
}

@test "untrusted: a FIFO as external data file is refused at once (exit 3)" {
    qemu-img create -q -f qcow2 -o data_file=data.raw img.qcow2 1M
    qemu-img bitmap --add img.qcow2 b
    rm data.raw
    mkfifo data.raw
    for cmd in "info img.qcow2" "map img.qcow2" "copy img.qcow2 t.qcow2 --sync full" \
               "copy img.qcow2 t.qcow2 --sync incremental --bitmap b"; do
        # shellcheck disable=SC2086
        refused3 "qbak: img.qcow2: external data file 'data.raw': *FIFO*" $cmd
    done
    # a bitmap command needs only the image's metadata: the data file is
    # not opened at all
    run --separate-stderr q bitmap add img.qcow2 c
    [ "$status" -eq 0 ] || fail "bitmap add: exit $status: $stderr"
    [ "$(qemu_bitmap_names img.qcow2 | sort | tr '\n' ' ')" = "b c " ]
}

@test "untrusted: a socket, a character device, a directory as backing file: exit 3" {
    python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("sock")'
    mkdir dir
    local name
    for name in sock /dev/zero /dev/null dir; do
        overlay "top.qcow2" "$name" raw
        refused3 "qbak: top.qcow2: backing file '$name': *, not an image*" info top.qcow2
        refused3 "qbak: top.qcow2: backing file '$name': *, not an image*" \
            copy top.qcow2 t.qcow2 --sync full
        [ ! -e t.qcow2 ]
        rm top.qcow2
    done
}

@test "untrusted: special files named on the command line: exit 3" {
    mkfifo fifo
    mkdir dir
    refused3 "qbak: fifo: is a FIFO*" info fifo
    refused3 "qbak: fifo: is a FIFO*" bitmap add fifo b
    refused3 "qbak: /dev/zero: is a character device*" copy /dev/zero t.qcow2 --sync full
    refused3 "qbak: dir: is a directory*" map dir
    [ ! -e t.qcow2 ]
}

@test "untrusted: the external data file is opened read-only by a writing command" {
    qemu-img create -q -f qcow2 -o data_file=data.raw img.qcow2 1M
    qemu-img bitmap --add img.qcow2 b
    qemu_io_fmt qcow2 img.qcow2 'write -P 7 0 64k'
    # stop qbak at its first write (the target's) with every file open,
    # and look at how it opened the data file
    (export QBAK_FAILPOINT=write:1:stop; exec "$QBAK" copy img.qcow2 t.qcow2 \
        --sync incremental --bitmap b --no-backing) 3>&- &
    QBAK_PID=$!
    for _ in $(seq 400); do
        [[ $(ps -o stat= -p "$QBAK_PID") == T* ]] && break
        sleep 0.05
    done
    [[ $(ps -o stat= -p "$QBAK_PID") == T* ]] || fail "qbak did not stop"
    local fd found=
    for fd in /proc/"$QBAK_PID"/fd/*; do
        [ "$(readlink "$fd")" = "$T/data.raw" ] || continue
        found=1
        # O_ACCMODE of the flags (octal): 0 is O_RDONLY
        local flags
        flags=$(awk '/^flags:/ { print $2 }' "/proc/$QBAK_PID/fdinfo/${fd##*/}")
        [ $((8#$flags & 3)) -eq 0 ] || fail "data file opened with flags $flags"
    done
    [ -n "$found" ] || fail "qbak does not have data.raw open"
    kill -CONT "$QBAK_PID"
    wait "$QBAK_PID"
    QBAK_PID=
    qemu-img compare -f qcow2 -F qcow2 img.qcow2 t.qcow2
}

@test "untrusted: a writing bitmap command works with a read-only data file (unprivileged)" {
    NOBODY_DIR=$(mktemp -d /tmp/qbak-untrusted.XXXXXX)
    chmod 755 "$NOBODY_DIR"
    copy_qbak "$NOBODY_DIR"
    cd "$NOBODY_DIR"
    qemu-img create -q -f qcow2 -o data_file=data.raw img.qcow2 1M
    qemu-img bitmap --add img.qcow2 b
    chown 65534:65534 img.qcow2 data.raw
    chmod 444 data.raw
    run --separate-stderr setpriv --reuid=65534 --regid=65534 --clear-groups \
        ./qbak bitmap add img.qcow2 c
    [ "$status" -eq 0 ] || fail "bitmap add as nobody: exit $status: $stderr"
    run --separate-stderr setpriv --reuid=65534 --regid=65534 --clear-groups \
        ./qbak bitmap clear img.qcow2 b
    [ "$status" -eq 0 ] || fail "bitmap clear as nobody: exit $status: $stderr"
    [ "$(qemu_bitmap_names img.qcow2 | sort | tr '\n' ' ')" = "b c " ]
    qemu-img check -q img.qcow2
}

# ---------------------------------------------------------------------
# Backing formats are recorded, never probed

@test "untrusted: a backing file without a recorded format is refused with the rebase command" {
    qemu-img create -q -f raw base.raw 1M
    overlay top.qcow2 base.raw ""
    refused3 "qbak: top.qcow2: backing file 'base.raw' has no recorded format*qemu-img rebase -u -b base.raw -F FMT top.qcow2*" \
        info top.qcow2
    refused3 "qbak: top.qcow2: backing file 'base.raw'*" map top.qcow2
    refused3 "qbak: top.qcow2: backing file 'base.raw'*" copy top.qcow2 t.qcow2 --sync full
    [ ! -e t.qcow2 ]
    # the advice works
    qemu-img rebase -u -b base.raw -F raw top.qcow2
    run --separate-stderr q info --json top.qcow2
    [ "$status" -eq 0 ] || fail "after rebase: exit $status: $stderr"
}

@test "untrusted: a guest's qcow2 header in a raw backing file is not followed" {
    # the guest disk (raw) holds a qcow2 header naming a host file
    echo "host secret" >secret
    qemu-img create -q -f qcow2 -u -b "$T/secret" -F raw guest-wrote.qcow2 1M
    head -c 1048576 /dev/zero >base.raw
    dd if=guest-wrote.qcow2 of=base.raw conv=notrunc status=none
    overlay top.qcow2 base.raw raw
    qemu_io_fmt qcow2 top.qcow2 'write -P 9 512k 64k'
    run --separate-stderr q copy top.qcow2 t.qcow2 --sync full
    [ "$status" -eq 0 ] || fail "copy: exit $status: $stderr"
    # what QEMU reads (the raw bytes, header included), not the secret
    qemu-img compare -f qcow2 -F qcow2 top.qcow2 t.qcow2
    run --separate-stderr q info --json top.qcow2
    [ "$(jq -r '.["backing-chain"][0].format' <<<"$output")" = raw ]
    # without a recorded format the same chain is refused, not probed
    drop_backing_format top.qcow2
    refused3 "qbak: top.qcow2: backing file 'base.raw' has no recorded format*" \
        copy top.qcow2 t2.qcow2 --sync full
}

# ---------------------------------------------------------------------
# Names resolve as qemu-img resolves them

# same_names IMG: for every layer, qbak info --json's backing-filename and
# full-backing-filename equal qemu-img info's, run from the same folder.
same_names() {
    local img=$1
    qemu-img info --backing-chain --output=json "$img" |
        jq -c '[.[] | [.["backing-filename"], .["full-backing-filename"]]]' >qemu.names
    run --separate-stderr q info --json "$img"
    [ "$status" -eq 0 ] || fail "qbak info $img: exit $status: $stderr"
    jq -c '[., .["backing-chain"][] | [.["backing-filename"], .["full-backing-filename"]]]' \
        <<<"$output" >qbak.names
    diff qemu.names qbak.names
}

@test "untrusted: relative, '..' and absolute backing names resolve as qemu-img's" {
    mkdir -p a/b c
    qemu-img create -q -f qcow2 c/base.qcow2 1M
    qemu-img create -q -f qcow2 -b ../../c/base.qcow2 -F qcow2 a/b/mid.qcow2
    qemu-img create -q -f qcow2 -b b/./mid.qcow2 -F qcow2 a/top.qcow2
    qemu-img create -q -f qcow2 -b "$T/a/top.qcow2" -F qcow2 abs.qcow2
    same_names a/top.qcow2
    same_names abs.qcow2
    (cd a && same_names top.qcow2)
    (cd c && same_names ../abs.qcow2)
    # text: the stored name and, where it differs, the actual path
    run --separate-stderr q info a/top.qcow2
    [[ $output == *"backing file: b/./mid.qcow2 (actual path: a/b/./mid.qcow2)"* ]]
    [[ $output == *"  backing file: ../../c/base.qcow2 (actual path: a/b/./../../c/base.qcow2)"* ]]
}

@test "untrusted: a protocol name (nbd:, json:) as backing or data file is refused; shown as qemu-img shows it" {
    for name in 'nbd:localhost:10809' 'json:{"driver":"file","filename":"/etc/hostname"}' 'file:base.raw'; do
        overlay top.qcow2 "$name" raw
        refused3 "qbak: top.qcow2: backing file '$name' names a '*:' protocol*" info top.qcow2
        run --separate-stderr q info --json --no-backing-chain top.qcow2
        [ "$status" -eq 0 ]
        [ "$(jq -r '.["full-backing-filename"]' <<<"$output")" = \
          "$(qemu-img info --output=json top.qcow2 | jq -r '.["full-backing-filename"]')" ]
        rm top.qcow2
    done
    qemu-img create -q -f qcow2 -o data_file=data.raw img.qcow2 1M
    qemu-img amend -f qcow2 -o data_file=nbd:localhost:10809 img.qcow2
    refused3 "qbak: img.qcow2: external data file 'nbd:localhost:10809' names a 'nbd:' protocol*" \
        info img.qcow2
}

@test "untrusted: the data file resolves against the image's folder; info shows it as stored and resolved" {
    mkdir -p d/sub
    # qemu-img 7.2 opens a relative data file name from its working
    # folder, not the image's; run from the image's folder, both agree
    (cd d && qemu-img create -q -f qcow2 -o data_file=sub/../data.raw img.qcow2 1M &&
        qemu_io_fmt qcow2 img.qcow2 'write -P 6 0 64k')
    # QEMU wrote through d/sub/../data.raw = d/data.raw
    qemu-io -r -f raw -c 'read -P 6 0 64k' d/data.raw >/dev/null
    run --separate-stderr q info --json d/img.qcow2
    [ "$status" -eq 0 ] || fail "info: exit $status: $stderr"
    [ "$(jq -r '.["format-specific"].data["data-file"]' <<<"$output")" = \
      "$(cd d && qemu-img info --output=json img.qcow2 | jq -r '.["format-specific"].data["data-file"]')" ]
    [ "$(jq -r '.["format-specific"].data["full-data-file"]' <<<"$output")" = d/sub/../data.raw ]
    run --separate-stderr q info d/img.qcow2
    [[ $output == *"data file: sub/../data.raw (actual path: d/sub/../data.raw)"* ]]
    (cd d/sub && q copy ../img.qcow2 ../../t.qcow2 --sync full)
    (cd d && qemu-img compare -f qcow2 -F qcow2 img.qcow2 ../t.qcow2)
}

# ---------------------------------------------------------------------
# --no-backing-chain

@test "untrusted: info and map --no-backing-chain open no file the image names" {
    mkfifo data.raw
    # backing missing, data file a FIFO: opening either would fail
    qemu-img create -q -f qcow2 b.qcow2 1M
    qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 top.qcow2
    qemu_io_fmt qcow2 top.qcow2 'write -P 2 128k 64k'
    rm b.qcow2
    qemu-img create -q -f qcow2 -o data_file=dx.raw dimg.qcow2 1M
    rm dx.raw
    mkfifo dx.raw
    run --separate-stderr q info --no-backing-chain --json top.qcow2
    [ "$status" -eq 0 ] || fail "info: exit $status: $stderr"
    [ "$(jq -r '.["backing-filename"]' <<<"$output")" = b.qcow2 ]
    [ "$(jq -r '.["full-backing-filename"]' <<<"$output")" = b.qcow2 ]
    [ "$(jq -r '.["backing-chain"] | length' <<<"$output")" = 0 ]
    run --separate-stderr q info --no-backing-chain top.qcow2
    [ "$status" -eq 0 ]
    [[ $output == *"backing file: b.qcow2"* ]]
    run --separate-stderr q info --no-backing-chain --json dimg.qcow2
    [ "$status" -eq 0 ] || fail "info: exit $status: $stderr"
    [ "$(jq -r '.["format-specific"].data["full-data-file"]' <<<"$output")" = dx.raw ]
    run --separate-stderr q map --no-backing-chain dimg.qcow2
    [ "$status" -eq 0 ] || fail "map: exit $status: $stderr"
    # the map of the top alone is QEMU's with the backing link cut
    qemu-img map --output=json \
        'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"top.qcow2"}}' \
        >top.qemu-map.json
    run --separate-stderr q map --no-backing-chain --json top.qcow2
    [ "$status" -eq 0 ] || fail "map: exit $status: $stderr"
    printf '%s\n' "$output" >top.qbak-map.json
    python3 "$COMPARE_MAP" top.qbak-map.json top.qemu-map.json
    # without the switch both are refused
    refused3 "qbak: top.qcow2: backing file 'b.qcow2': *" info top.qcow2
    refused3 "qbak: dimg.qcow2: external data file 'dx.raw': *FIFO*" map dimg.qcow2
}

# ---------------------------------------------------------------------
# -f on info and map

@test "untrusted: info and map -f raw read a raw disk whose guest wrote a qcow2 header" {
    echo "host secret" >secret
    qemu-img create -q -f qcow2 -u -b "$T/secret" -F raw guest-wrote.qcow2 1M
    head -c 1048576 /dev/zero >disk.raw
    dd if=guest-wrote.qcow2 of=disk.raw conv=notrunc status=none
    run --separate-stderr q info -f raw --json disk.raw
    [ "$status" -eq 0 ] || fail "info -f raw: exit $status: $stderr"
    [ "$(jq -r .format <<<"$output")" = raw ]
    [ "$(jq -r '.["backing-filename"]' <<<"$output")" = null ]
    [ "$(jq -r '.["virtual-size"]' <<<"$output")" = 1048576 ]
    qemu-img map -f raw --output=json disk.raw >disk.qemu-map.json
    run --separate-stderr q map -f raw --json disk.raw
    [ "$status" -eq 0 ] || fail "map -f raw: exit $status: $stderr"
    printf '%s\n' "$output" >disk.qbak-map.json
    python3 "$COMPARE_MAP" disk.qbak-map.json disk.qemu-map.json
    # probed, the same file is a qcow2 image to both
    [ "$(q info --json -U --no-backing-chain disk.raw | jq -r .format)" = qcow2 ]
}

# ---------------------------------------------------------------------
# Files that cannot be opened: exit 3, as root and unprivileged

@test "untrusted: unopenable files are exit 3 naming the file (root)" {
    qemu-img create -q -f qcow2 img.qcow2 1M
    ln -s loop1 loop2
    ln -s loop2 loop1
    echo x >plain
    refused3 "qbak: missing.qcow2: cannot open: No such file or directory" info missing.qcow2
    refused3 "qbak: loop1: cannot open: Too many levels of symbolic links" map loop1
    refused3 "qbak: plain/x.qcow2: cannot open: Not a directory" copy plain/x.qcow2 t.qcow2 --sync full
    overlay top.qcow2 loop1 qcow2
    refused3 "qbak: top.qcow2: backing file 'loop1': loop1: cannot open: Too many levels*" info top.qcow2
    overlay top2.qcow2 plain/x qcow2
    refused3 "qbak: top2.qcow2: backing file 'plain/x': plain/x: cannot open: Not a directory" \
        copy top2.qcow2 t.qcow2 --sync full
    [ ! -e t.qcow2 ]
}

@test "untrusted: unopenable files are exit 3 naming the file (unprivileged)" {
    NOBODY_DIR=$(mktemp -d /tmp/qbak-untrusted.XXXXXX)
    chmod 755 "$NOBODY_DIR"
    copy_qbak "$NOBODY_DIR"
    cd "$NOBODY_DIR"
    mkdir out && chown 65534:65534 out
    qemu-img create -q -f qcow2 secret.qcow2 1M
    chmod 600 secret.qcow2
    qemu-img create -q -f qcow2 base.qcow2 1M
    chmod 600 base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-img create -q -f qcow2 -o data_file=data.raw dimg.qcow2 1M
    chmod 600 data.raw
    chmod 644 top.qcow2 dimg.qcow2
    local sum
    sum=$(sums)
    run --separate-stderr as_nobody ./qbak info secret.qcow2
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    check_error_line
    [ "$stderr" = "qbak: secret.qcow2: cannot open: Permission denied" ]
    run --separate-stderr as_nobody ./qbak copy top.qcow2 out/t.qcow2 --sync full
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [ "$stderr" = "qbak: top.qcow2: backing file 'base.qcow2': base.qcow2: cannot open: Permission denied" ]
    run --separate-stderr as_nobody ./qbak map dimg.qcow2
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [ "$stderr" = "qbak: dimg.qcow2: external data file 'data.raw': data.raw: cannot open: Permission denied" ]
    # writing needs write access to the image: refused the same way
    run --separate-stderr as_nobody ./qbak bitmap add top.qcow2 b
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    [ "$stderr" = "qbak: top.qcow2: cannot open: Permission denied" ]
    [ -z "$(ls out)" ]
    [ "$(sums)" = "$sum" ]
}

# ---------------------------------------------------------------------
# Symlinks and special files change nothing outside qbak's outputs

# symlink_cases RUN...: with RUN (empty or as_nobody) in front of qbak,
# planted symlinks and special files must leave every other file as it was.
symlink_cases() {
    echo "precious" >victim
    qemu-img create -q -f qcow2 img.qcow2 1M
    qemu-img bitmap --add img.qcow2 b
    qemu_io_fmt qcow2 img.qcow2 'write -P 1 0 64k'
    qemu-img create -q -f qcow2 -o data_file=data.raw dimg.qcow2 1M
    qemu-img bitmap --add dimg.qcow2 b
    qemu_io_fmt qcow2 dimg.qcow2 'write -P 2 0 64k'
    ln -s ../victim out/t1.qcow2           # the target is a symlink
    ln -s ../victim out/t2.qcow2.part      # a planted partial target
    ln -s ../nowhere out/t4.qcow2          # a dangling symlink as target
    ln -s /dev/zero zero-link               # a device behind a link
    overlay top.qcow2 zero-link raw
    ln -s img.qcow2 link.qcow2              # a link to a real image
    chown -R 65534:65534 out img.qcow2 dimg.qcow2 data.raw top.qcow2
    chown -h 65534:65534 out/* link.qcow2
    local sum
    sum=$(sums)
    run --separate-stderr "$@" ./qbak copy img.qcow2 out/t1.qcow2 --sync full
    [ "$status" -eq 2 ] || fail "copy onto a symlink: exit $status: $stderr"
    # a stale partial target may be replaced, never written through
    run --separate-stderr "$@" ./qbak copy img.qcow2 out/t2.qcow2 --sync full
    [ "$status" -eq 0 ] || [ "$status" -eq 2 ] ||
        fail "copy past a planted .part symlink: exit $status: $stderr"
    run --separate-stderr "$@" ./qbak copy img.qcow2 out/t4.qcow2 --sync full
    [ "$status" -ne 0 ] || fail "copy onto a dangling symlink succeeded"
    [ ! -e nowhere ] || fail "copy created the dangling symlink's target"
    rm -f out/t4.qcow2.part
    run --separate-stderr "$@" ./qbak info top.qcow2
    [ "$status" -eq 3 ] || fail "backing behind a link to /dev/zero: exit $status: $stderr"
    run --separate-stderr "$@" ./qbak bitmap add dimg.qcow2 c
    [ "$status" -eq 0 ] || fail "bitmap add dimg: exit $status: $stderr"
    [ "$(sums | grep -v ' \./dimg\.qcow2$')" = "$(grep -v ' \./dimg\.qcow2$' <<<"$sum")" ] ||
        fail "a file other than dimg.qcow2 changed"
    # a backup through a symlinked source writes only its own target
    run --separate-stderr "$@" ./qbak copy link.qcow2 out/t3.qcow2 --sync full --bitmap b \
        --bitmap-mode on-success
    [ "$status" -eq 0 ] || fail "copy link.qcow2: exit $status: $stderr"
    qemu-img compare -f qcow2 -F qcow2 img.qcow2 out/t3.qcow2
    [ "$(cat victim)" = precious ]
    [ "$(sums | grep -v ' \./\(dimg\|img\)\.qcow2$')" = \
      "$(grep -v ' \./\(dimg\|img\)\.qcow2$' <<<"$sum")" ] ||
        fail "a file outside qbak's outputs changed"
    qemu-img check -q img.qcow2
    qemu-img check -q dimg.qcow2
}

@test "untrusted: symlinks and special files change nothing else (root)" {
    NOBODY_DIR=$(mktemp -d /tmp/qbak-untrusted.XXXXXX)
    copy_qbak "$NOBODY_DIR"
    cd "$NOBODY_DIR"
    mkdir out
    symlink_cases
}

@test "untrusted: symlinks and special files change nothing else (unprivileged)" {
    NOBODY_DIR=$(mktemp -d /tmp/qbak-untrusted.XXXXXX)
    chmod 755 "$NOBODY_DIR"
    copy_qbak "$NOBODY_DIR"
    cd "$NOBODY_DIR"
    mkdir out
    symlink_cases as_nobody
}
