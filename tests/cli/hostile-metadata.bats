#!/usr/bin/env bats
# Hostile qcow2 metadata: clusters used twice, bitmaps pointing into the
# image's own tables or guest data, refcounts lower than the references,
# and files with more refcount blocks than qbak caches.  Each bad image is
# refused with exit 3 and one line naming the offset and both owners,
# before anything is written (the file stays byte-identical).  QEMU's
# tools are the oracles: qemu-img check/compare/map and qemu-nbd+nbdinfo.

bats_require_minimum_version 1.5.0

load helpers

setup() {
    require_common_oracles
    require_bitmap_oracles
    require_oracle cmp diffutils
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# craft IMG ACTION [ARGS...]: change IMG's metadata in place (python).
#   table-entry BITMAP K l2|data|l1       entry K of BITMAP's table points
#                                          at the first L2 table, at the
#                                          data cluster of guest offset 0,
#                                          or at the L1 table
#   table-at BITMAP l1|dir|BITMAP2        BITMAP's table moves to the L1
#                                          table, the directory, or BITMAP2's
#                                          table
#   share-data BITMAP BITMAP2             entry 0 of BITMAP points at the
#                                          data cluster of BITMAP2's entry 0
#   dup-l2-entry                          guest cluster 1 maps to the host
#                                          cluster of guest cluster 0
#   all-ones BITMAP                       every entry of BITMAP: all ones
craft() {
    python3 - "$@" <<'EOF'
import struct, sys
img, action, args = sys.argv[1], sys.argv[2], sys.argv[3:]
f = open(img, 'r+b')
def rd(off, n): f.seek(off); return f.read(n)
def u64(off): return struct.unpack('>Q', rd(off, 8))[0]
def u32(off): return struct.unpack('>I', rd(off, 4))[0]
def u16(off): return struct.unpack('>H', rd(off, 2))[0]
def w64(off, v): f.seek(off); f.write(struct.pack('>Q', v))
cbits = u32(20); cs = 1 << cbits
l1_off = u64(40)
hlen = u32(100)
pos, dir_off, nb = hlen, None, 0
while pos < cs:
    t, n = u32(pos), u32(pos + 4)
    if t == 0: break
    if t == 0x23852875: nb, dir_off = u32(pos + 8), u64(pos + 8 + 16)
    pos += 8 + ((n + 7) & ~7)
bitmaps, p = {}, dir_off
for _ in range(nb):
    toff, tsize = u64(p), u32(p + 8)
    nlen, extra = u16(p + 18), u32(p + 20)
    name = rd(p + 24 + extra, nlen).decode()
    bitmaps[name] = (p, toff, tsize)
    p += (24 + extra + nlen + 7) & ~7
first_l2 = u64(l1_off) & 0x00fffffffffffe00
data0 = u64(first_l2) & 0x00fffffffffffe00
if action == 'table-entry':
    ent, k, what = bitmaps[args[0]], int(args[1]), args[2]
    target = {'l2': first_l2, 'data': data0, 'l1': l1_off}[what]
    w64(ent[1] + 8 * k, target)
elif action == 'table-at':
    ent, what = bitmaps[args[0]], args[1]
    target = {'l1': l1_off, 'dir': dir_off}.get(what)
    if target is None: target = bitmaps[what][1]
    w64(ent[0], target)
elif action == 'share-data':
    a, b = bitmaps[args[0]], bitmaps[args[1]]
    w64(a[1], u64(b[1]))
elif action == 'dup-l2-entry':
    w64(first_l2 + 8, u64(first_l2))
elif action == 'all-ones':
    ent = bitmaps[args[0]]
    for k in range(ent[2]): w64(ent[1] + 8 * k, 1)
else:
    sys.exit('unknown action ' + action)
EOF
}

# base IMG: 64 MiB, 64 KiB clusters, guest data at 0 and 8 MiB (an L2
# table and data clusters), bitmaps b0 and b1 dirtied by QEMU itself.
base() {
    qemu-img create -q -f qcow2 "$1" 64M
    qemu-img bitmap --add "$1" b0
    qemu-img bitmap --add "$1" b1
    qemu_io_fmt qcow2 "$1" "write -P 0x5a 0 256k" "write -P 0xa5 8M 128k"
}

@test "bitmap table entry at an L2 table: clear refused, offset and owners named, nothing written" {
    base img.qcow2
    craft img.qcow2 table-entry b0 0 l2
    cp img.qcow2 ref.qcow2
    refused_unchanged 3 img.qcow2 bitmap clear img.qcow2 b0
    [[ $stderr == *"L2 table"* && $stderr == *"bitmap 'b0'"* ]] ||
        fail "message does not name both owners: $stderr"
    [[ $stderr == *"offset 0x"* ]] || fail "message names no offset: $stderr"
    # and what QEMU reads is what it read before
    qemu-img compare -q -U ref.qcow2 img.qcow2
}

@test "bitmap table entry at guest data: every bitmap change refused, guest data intact" {
    base img.qcow2
    craft img.qcow2 table-entry b0 0 data
    cp img.qcow2 ref.qcow2
    for op in "clear img.qcow2 b0" "clear img.qcow2 b1" "remove img.qcow2 b0" \
              "add img.qcow2 b2" "merge img.qcow2 b1 b0" "disable img.qcow2 b1"; do
        # shellcheck disable=SC2086
        refused_unchanged 3 img.qcow2 bitmap $op
        [[ $stderr == *"guest data cluster"* ]] ||
            fail "bitmap $op: message does not name the guest data: $stderr"
    done
    qemu-img compare -q -U ref.qcow2 img.qcow2
}

@test "bitmap table at the L1 table: refused by info and by writes" {
    base img.qcow2
    craft img.qcow2 table-at b1 l1
    refused_unchanged 3 img.qcow2 info img.qcow2
    [[ $stderr == *"L1 table"* && $stderr == *"bitmap 'b1'"* ]] ||
        fail "message does not name both owners: $stderr"
    refused_unchanged 3 img.qcow2 bitmap remove img.qcow2 b1
}

@test "two bitmaps share one table: info refused naming both, in bounded memory" {
    # 2 TiB at granularity 512: each bitmap would take 512 MiB in memory
    qemu-img create -q -f qcow2 img.qcow2 2T
    qemu-img bitmap --add -g 512 img.qcow2 b0
    qemu-img bitmap --add -g 512 img.qcow2 b1
    craft img.qcow2 table-at b1 b0
    # 256 MiB of address space is far less than one bitmap
    run --separate-stderr bash -c 'ulimit -v 262144; exec "$QBAK" info img.qcow2'
    [ "$status" -eq 3 ] || fail "qbak info: exit $status, expected 3: $stderr"
    check_error_line
    [[ $stderr == *"'b0'"* && $stderr == *"'b1'"* ]] ||
        fail "message does not name both bitmaps: $stderr"
}

@test "bitmap data cluster shared with another bitmap, or a table in the directory: refused" {
    base img.qcow2
    cp img.qcow2 dir.qcow2
    craft img.qcow2 share-data b0 b1
    refused_unchanged 3 img.qcow2 bitmap list img.qcow2
    [[ $stderr == *"bitmap 'b0'"* && $stderr == *"bitmap 'b1'"* ]] ||
        fail "message does not name both bitmaps: $stderr"
    craft dir.qcow2 table-at b0 dir
    refused_unchanged 3 dir.qcow2 info dir.qcow2
    [[ $stderr == *"bitmap directory"* ]] || fail "no directory named: $stderr"
}

@test "a data cluster referenced twice with refcount 1: refused before any write" {
    base img.qcow2
    craft img.qcow2 dup-l2-entry
    refused_unchanged 3 img.qcow2 bitmap clear img.qcow2 b0
    [[ $stderr == *"refcount is 1"* && $stderr == *"guest offset 0x10000"* ]] ||
        fail "message does not say the refcount and the owners: $stderr"
}

@test "large bitmaps are counted without loading them: list equals QEMU's counts" {
    # 2 TiB at granularity 512 (512 MiB of bitmap each), a few dirty
    # granules; 384 MiB of address space cannot hold one bitmap
    qemu-img create -q -f qcow2 img.qcow2 2T
    qemu-img bitmap --add -g 512 img.qcow2 b0
    qemu-img bitmap --add -g 512 img.qcow2 b1
    qemu_io_fmt qcow2 img.qcow2 "write 0 4k" "write 1T 1M"
    qemu_bitmap_counts img.qcow2 >qemu.json
    run --separate-stderr bash -c 'ulimit -v 393216; exec "$QBAK" bitmap list img.qcow2 --json'
    [ "$status" -eq 0 ] || fail "qbak bitmap list: exit $status: $stderr"
    printf '%s\n' "$output" |
        jq -S '[.[] | {(.name): .["dirty-bytes"]}] | add' >qbak.json
    jq -S . qemu.json >qemu-sorted.json
    diff qbak.json qemu-sorted.json
}

@test "snapshots, compressed clusters and zero clusters are not mistaken for conflicts" {
    qemu-img create -q -f qcow2 img.qcow2 64M
    qemu-img bitmap --add img.qcow2 b0
    qemu_io_fmt qcow2 img.qcow2 "write -P 1 0 1M" "write -c -P 2 4M 256k" \
        "write -z 8M 64k"
    qemu-img snapshot -c s1 img.qcow2
    qemu_io_fmt qcow2 img.qcow2 "write -P 3 0 64k" "write -c -P 4 16M 128k"
    qemu-img snapshot -c s2 img.qcow2
    qbak bitmap clear img.qcow2 b0
    qbak bitmap add img.qcow2 b1
    qemu-img check -q img.qcow2
    qemu_io_fmt qcow2 img.qcow2 "read -P 3 0 64k" "read -P 2 4M 256k"
    [ "$(qemu_bitmap_names img.qcow2 | sort | tr '\n' ' ')" = "b0 b1 " ]
}

@test "512-byte clusters, more refcount blocks than qbak caches: map equals QEMU's, a merge checks clean" {
    # 64-bit refcounts: one 512-byte block covers 64 clusters, so 12 MiB
    # of data needs ~400 blocks, more than the cache holds (256), and the
    # scans of map and of the commit's reference map evict blocks.
    qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 img.qcow2 4G
    qemu-img bitmap --add -g 512 img.qcow2 full
    qemu_io_fmt qcow2 img.qcow2 "write -P 7 0 8M" "write -P 8 3G 4M"
    craft img.qcow2 all-ones full
    # the data clusters QEMU wrote for 'full' are leaked now: reclaim them
    qemu-img check -q -r leaks img.qcow2
    check_map img.qcow2
    qbak bitmap add -g 512 img.qcow2 copy
    qbak bitmap merge img.qcow2 copy full
    qemu-img check -q img.qcow2
    qemu_bitmap_map img.qcow2 copy >map.json
    jq -e --argjson size "$(qemu_size img.qcow2)" \
        'length == 1 and .[0].type == 1 and .[0].length == $size' map.json ||
        fail "bitmap 'copy' is not all dirty: $(cat map.json)"
}
