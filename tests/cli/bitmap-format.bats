#!/usr/bin/env bats
# -f FMT on every bitmap command.  A raw disk whose guest wrote a qcow2
# header into its first sectors probes as qcow2; with -f raw, qbak must
# treat it as the raw disk it is and refuse to write bitmap metadata into
# the guest's data (exit 3, file byte-identical), whichever subcommand,
# option order or transaction.  -f qcow2 on a real qcow2 works as before.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    export F=$BATS_FILE_TMPDIR
    cd "$F" || return
    # inner.qcow2: what the guest stored, a small qcow2 with bitmaps b0, b1
    qemu-img create -q -f qcow2 inner.qcow2 1M
    qemu-img bitmap --add inner.qcow2 b0
    qemu-img bitmap --add inner.qcow2 b1
    qemu_io_fmt qcow2 inner.qcow2 "write -P 7 0 64k"
    # disk.img: a raw disk holding inner.qcow2 from sector 0 on
    qemu-img create -q -f raw disk.img 8M
    qemu_io_fmt raw disk.img "write -P 0x5a 4M 1M"
    dd if=inner.qcow2 of=disk.img conv=notrunc status=none
}

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
    cp "$F/disk.img" disk.img
    qemu-img create -q -f qcow2 good.qcow2 8M
    qemu-img bitmap --add good.qcow2 b0
}

# refused_as_raw ARGS...: `qbak ARGS...` exits 3 with one line saying raw
# images hold no bitmaps, and leaves disk.img byte-identical.
refused_as_raw() {
    local before after
    before=$(sha256sum <disk.img)
    run --separate-stderr qbak "$@"
    [ "$status" -eq 3 ] || fail "qbak $*: exit $status, expected 3: $stderr"
    check_error_line
    [[ $stderr == *"raw images cannot hold persistent bitmaps"* ]] ||
        fail "qbak $*: $stderr"
    after=$(sha256sum <disk.img)
    [ "$before" = "$after" ] || fail "qbak $* wrote into the raw disk"
}

@test "bitmap -f: the raw disk really probes as qcow2 with bitmaps (qemu-img)" {
    [ "$(qemu_info disk.img | jq -r .format)" = qcow2 ] || fail "$(qemu_info disk.img)"
    [ "$(qemu_bitmap_names disk.img | tr '\n' ' ')" = "b0 b1 " ] || fail "$(qemu_info disk.img)"
    [ "$(qemu_info disk.img -f raw | jq -r .format)" = raw ] || fail "qemu-img -f raw"
}

@test "bitmap -f raw: every change subcommand refuses with exit 3, disk unchanged" {
    refused_as_raw bitmap add -f raw disk.img new
    refused_as_raw bitmap add --granularity 64k --disabled -f raw disk.img new
    refused_as_raw bitmap remove -f raw disk.img b0
    refused_as_raw bitmap clear -f raw disk.img b0
    refused_as_raw bitmap enable -f raw disk.img b0
    refused_as_raw bitmap disable -f raw disk.img b0
    refused_as_raw bitmap merge -f raw disk.img b0 b1
    refused_as_raw bitmap add --format=raw disk.img new
    refused_as_raw bitmap add --format raw disk.img new
}

@test "bitmap -f raw: wherever -f stands (before the subcommand, after the operands)" {
    refused_as_raw bitmap -f raw add disk.img new
    refused_as_raw bitmap --format raw remove disk.img b0
    refused_as_raw bitmap add disk.img new -f raw
    refused_as_raw bitmap merge disk.img b0 b1 -f raw
}

@test "bitmap -f raw: a transaction with the raw disk changes no image" {
    local good_before
    good_before=$(sha256sum <good.qcow2)
    refused_as_raw bitmap add -f raw --image good.qcow2 --image disk.img new
    refused_as_raw bitmap add -f raw --image disk.img --image good.qcow2 new
    [ "$(sha256sum <good.qcow2)" = "$good_before" ] || fail "good.qcow2 changed"
}

@test "bitmap -f raw: list shows no bitmap, as qemu-img info -f raw; dump finds none" {
    run --separate-stderr qbak bitmap list -f raw disk.img --json
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    local want
    want=$(qemu_info disk.img -f raw | jq -c '[.["format-specific"].data.bitmaps // [] | .[].name]')
    [ "$(jq -c '[.[].name]' <<<"$output")" = "$want" ] || fail "list: $output; qemu-img: $want"
    run --separate-stderr qbak bitmap dump -f raw disk.img b0
    [ "$status" -eq 3 ] || fail "dump: exit $status: $stderr"
    check_error_line
}

@test "bitmap -f qcow2: changes a qcow2 image as without -f" {
    run --separate-stderr qbak bitmap add -f qcow2 good.qcow2 b1
    [ "$status" -eq 0 ] || fail "add: exit $status: $stderr"
    run --separate-stderr qbak bitmap -f qcow2 disable good.qcow2 b1
    [ "$status" -eq 0 ] || fail "disable: exit $status: $stderr"
    run --separate-stderr qbak bitmap merge --format qcow2 good.qcow2 b1 b0
    [ "$status" -eq 0 ] || fail "merge: exit $status: $stderr"
    [ "$(qemu_bitmap_names good.qcow2 | tr '\n' ' ')" = "b0 b1 " ] || fail "$(qemu_info good.qcow2)"
    qemu_info good.qcow2 | jq -e '.["format-specific"].data.bitmaps[] |
        select(.name == "b1") | .flags | index("auto") == null' >/dev/null ||
        fail "b1 still enabled: $(qemu_info good.qcow2)"
    run --separate-stderr qemu-img check good.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img check: $output $stderr"
}

@test "bitmap -f qcow2 on a plain raw file refuses with exit 3, file unchanged" {
    qemu-img create -q -f raw plain.img 4M
    local before
    before=$(sha256sum <plain.img)
    run --separate-stderr qbak bitmap add -f qcow2 plain.img x
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    check_error_line
    [ "$(sha256sum <plain.img)" = "$before" ] || fail "plain.img changed"
}

@test "bitmap merge --from-image: -f applies to the other image too" {
    qemu-img create -q -f raw plain.img 8M
    local before
    before=$(sha256sum <good.qcow2)
    run --separate-stderr qbak bitmap merge -f qcow2 --from-image plain.img good.qcow2 b0 b0
    [ "$status" -eq 3 ] || fail "exit $status: $stderr"
    check_error_line
    [[ $stderr == "qbak: plain.img: not a qcow2 image"* ]] || fail "$stderr"
    [ "$(sha256sum <good.qcow2)" = "$before" ] || fail "good.qcow2 changed"
}
