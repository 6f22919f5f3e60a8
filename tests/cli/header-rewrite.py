#!/usr/bin/env python3
"""Header surgery and inspection for metadata-write.bats.

  header-rewrite.py add-ext IMG TYPE HEXDATA   insert an unknown header
                                               extension before the end marker
  header-rewrite.py exts IMG                   print "TYPE LEN HEX" per
                                               extension (end marker excluded)
  header-rewrite.py set-autoclear IMG BIT      set an autoclear feature bit
  header-rewrite.py autoclear IMG              print the autoclear field
  header-rewrite.py backing IMG                print the stored backing name

Offsets come from parsing the image (qcow2 v3 header, extensions from
header_length to the backing file name or the end of cluster 0)."""
import struct, sys

def load(path):
    with open(path, 'rb') as f:
        h = f.read(1 << 21)
    cluster = 1 << struct.unpack_from('>I', h, 20)[0]
    return bytearray(h[:cluster]), cluster

def walk(h, cluster):
    hlen = struct.unpack_from('>I', h, 100)[0]
    bofs, bsize = struct.unpack_from('>QI', h, 8)
    end = bofs if bofs else cluster
    off, exts = hlen, []
    while off + 8 <= end:
        t, l = struct.unpack_from('>II', h, off)
        if t == 0:
            return exts, off
        exts.append((t, l, bytes(h[off + 8:off + 8 + l]), off))
        off += 8 + ((l + 7) & ~7)
    sys.exit('no end marker')

def main():
    cmd, path = sys.argv[1], sys.argv[2]
    h, cluster = load(path)
    exts, endpos = walk(h, cluster)
    if cmd == 'exts':
        for t, l, d, _ in exts:
            print('%08x %d %s' % (t, l, d.hex()))
    elif cmd == 'add-ext':
        bofs = struct.unpack_from('>Q', h, 8)[0]
        if bofs:
            sys.exit('add-ext: images with a backing file are not supported')
        t, data = int(sys.argv[3], 16), bytes.fromhex(sys.argv[4])
        rec = struct.pack('>II', t, len(data)) + data + b'\0' * ((-len(data)) % 8)
        h[endpos:endpos] = rec
        with open(path, 'r+b') as f:
            f.write(h[:cluster])
    elif cmd == 'set-autoclear':
        v = struct.unpack_from('>Q', h, 88)[0] | (1 << int(sys.argv[3]))
        struct.pack_into('>Q', h, 88, v)
        with open(path, 'r+b') as f:
            f.write(h[:cluster])
    elif cmd == 'autoclear':
        print(struct.unpack_from('>Q', h, 88)[0])
    elif cmd == 'backing':
        bofs, bsize = struct.unpack_from('>QI', h, 8)
        print(h[bofs:bofs + bsize].decode() if bofs else '')
    else:
        sys.exit(__doc__)

main()
