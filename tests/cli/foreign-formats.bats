#!/usr/bin/env bats
# Image formats qbak does not read are refused when the top image is
# probed (no -f): exit 3, one line saying to convert with qemu-img or to
# pass -f raw, nothing written.  Read as raw, such a file would be backed
# up as its container, not as the disk it holds.  With -f raw the file's
# bytes are what qbak reads, as qemu-img -f raw does.
#
# Every format qemu-img can create here is made by qemu-img itself (and
# qemu-img info confirms the format); bochs, cloop and dmg are crafted:
# qemu-img opens the bochs and cloop files with -f (QEMU's dmg probe goes
# by file name only, and its driver needs a full resource map, so the dmg
# file is just the koly trailer QEMU's driver reads first).

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_qbak
}

setup() {
    setup_tmpdir
}

# refused_foreign FILE: info, map and copy of FILE (probed) exit 3 with one line
# naming FILE and qemu-img convert; FILE is unchanged, no target is made.
refused_foreign() {
    local f=$1 sum cmd
    sum=$(sha256sum <"$f")
    for cmd in info map; do
        run --separate-stderr qbak "$cmd" "$f"
        [ "$status" -eq 3 ] || fail "qbak $cmd $f: exit $status, expected 3: $stderr"
        check_error_line
        [[ $stderr == "qbak: $f: "*"qemu-img convert"*"-f raw"* ]] ||
            fail "qbak $cmd $f: unclear message: $stderr"
    done
    run --separate-stderr qbak copy "$f" t.qcow2 --sync full
    [ "$status" -eq 3 ] || fail "qbak copy $f: exit $status, expected 3: $stderr"
    check_error_line
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ]
    [ "$(sha256sum <"$f")" = "$sum" ] || fail "$f changed"
}

# as_raw FILE: with -f raw, info and map read FILE's bytes as qemu-img -f
# raw does.
as_raw() {
    local f=$1
    run --separate-stderr qbak info -f raw --json "$f"
    [ "$status" -eq 0 ] || fail "qbak info -f raw $f: exit $status: $stderr"
    [ "$(jq -r .format <<<"$output")" = raw ]
    [ "$(jq -r '.["virtual-size"]' <<<"$output")" = \
      "$(qemu-img info -f raw --output=json "$f" | jq -r '.["virtual-size"]')" ]
    qemu-img map -f raw --output=json "$f" >"$f.qemu-map.json"
    run --separate-stderr qbak map -f raw --json "$f"
    [ "$status" -eq 0 ] || fail "qbak map -f raw $f: exit $status: $stderr"
    printf '%s\n' "$output" >"$f.qbak-map.json"
    python3 "$COMPARE_MAP" "$f.qbak-map.json" "$f.qemu-map.json"
}

# made FMT FILE [create options...]: FILE made by qemu-img create -f FMT,
# which qemu-img info must probe as FMT.
made() {
    local fmt=$1 f=$2
    shift 2
    qemu-img create -q -f "$fmt" "$@" "$f" 1M
    [ "$(qemu-img info --output=json "$f" | jq -r .format)" = "$fmt" ] ||
        fail "qemu-img does not see $f as $fmt"
}

@test "foreign: vmdk (sparse, KDMV) is refused; -f raw reads its bytes" {
    made vmdk x.vmdk
    refused_foreign x.vmdk
    as_raw x.vmdk
}

@test "foreign: vmdk descriptor (monolithicFlat) is refused" {
    made vmdk flat.vmdk -o subformat=monolithicFlat
    refused_foreign flat.vmdk
}

@test "foreign: vmdk streamOptimized is refused" {
    made vmdk s.vmdk -o subformat=streamOptimized
    refused_foreign s.vmdk
}

@test "foreign: vdi is refused; -f raw reads its bytes" {
    made vdi x.vdi
    refused_foreign x.vdi
    as_raw x.vdi
}

@test "foreign: vhdx is refused" {
    made vhdx x.vhdx
    refused_foreign x.vhdx
}

@test "foreign: qed is refused" {
    made qed x.qed
    refused_foreign x.qed
}

@test "foreign: vpc dynamic (conectix header) is refused" {
    made vpc x.vpc
    refused_foreign x.vpc
}

@test "foreign: vpc fixed (conectix footer only) is refused; -f raw reads its bytes" {
    qemu-img create -q -f vpc -o subformat=fixed fixed.vpc 1M
    [ "$(qemu-img info -f vpc --output=json fixed.vpc | jq -r .format)" = vpc ]
    refused_foreign fixed.vpc
    as_raw fixed.vpc
}

@test "foreign: parallels is refused" {
    made parallels x.hdd
    refused_foreign x.hdd
}

@test "foreign: luks is refused" {
    qemu_img_create_luks -f luks --object secret,id=s0,data=pw \
        -o key-secret=s0,iter-time=10 x.luks 1M
    [ "$(qemu-img info --output=json x.luks | jq -r .format)" = luks ]
    refused_foreign x.luks
}

@test "foreign: bochs (crafted) is refused" {
    python3 - <<'EOF'
import struct
h = bytearray(512)
h[0:32] = b'Bochs Virtual HD Image'.ljust(32, b'\0')
h[32:48] = b'Redolog'.ljust(16, b'\0')
h[48:64] = b'Growing'.ljust(16, b'\0')
# version, header size, catalog entries, bitmap size, extent size,
# reserved, disk size
struct.pack_into('<IIIIIIQ', h, 64, 0x00020000, 512, 2, 1, 4096, 0, 8192)
open('x.bochs', 'wb').write(bytes(h) + b'\xff' * 8)
EOF
    [ "$(qemu-img info --output=json x.bochs | jq -r .format)" = bochs ]
    refused_foreign x.bochs
}

@test "foreign: cloop (crafted) is refused" {
    python3 - <<'EOF'
import struct, zlib
pre = (b'#!/bin/sh\n#V2.0 Format\n'
       b'modprobe cloop file=$IMAGE && mount -r -t iso9660 /dev/cloop $1\n')
blk = zlib.compress(b'\0' * 512)
first = 128 + 8 + 16
offsets = struct.pack('>QQ', first, first + len(blk))
open('x.cloop', 'wb').write(pre.ljust(128, b'\0') + struct.pack('>II', 512, 1)
                            + offsets + blk)
EOF
    [ "$(qemu-img info -f cloop --output=json x.cloop | jq -r .format)" = cloop ]
    refused_foreign x.cloop
}

@test "foreign: dmg (koly trailer, crafted) is refused" {
    python3 - <<'EOF'
import struct
k = bytearray(512)
k[0:4] = b'koly'
struct.pack_into('>II', k, 4, 4, 512)      # version, header size
open('x.img', 'wb').write(b'\0' * 4096 + bytes(k))
EOF
    refused_foreign x.img
}

@test "foreign: a raw disk is still read as raw, and the formats qbak reads still probe" {
    head -c 1048576 /dev/zero >disk.raw
    printf 'not an image' | dd of=disk.raw conv=notrunc status=none
    run --separate-stderr qbak info --json disk.raw
    [ "$status" -eq 0 ]
    [ "$(jq -r .format <<<"$output")" = raw ]
    qemu-img create -q -f qcow2 q.qcow2 1M
    qemu-img create -q -f qcow v1.qcow 1M
    [ "$(qbak info --json q.qcow2 | jq -r .format)" = qcow2 ]
    [ "$(qbak info --json v1.qcow | jq -r .format)" = qcow ]
}
