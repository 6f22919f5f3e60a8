#!/usr/bin/env python3
"""manifest-check.py MANIFEST QCOW2 [--all]: the manifest lists exactly
what the qcow2 file itself holds (qemu-img map, depth 0), each zero
cluster where QEMU reads zeroes, and data clusters with the XXH3-64 that
xxhsum -H3 gives for the bytes QEMU reads there: 64 of them spread over
the file (the first and the last among them), or every one with --all;
its end checksum is xxhsum -H3 of what precedes it.  The format is read
here independently of qbak."""
import json, os, struct, subprocess, sys, tempfile

man, img = sys.argv[1], sys.argv[2]
every = '--all' in sys.argv[3:]
SAMPLE = 64
data = open(man, 'rb').read()
assert data[:8] == b'QBAKMANI', 'magic'
version, cs, size = struct.unpack_from('<IIQ', data, 8)
assert version == 1 and data[24:64] == bytes(40), 'header'
runs, pos = [], 64
while True:
    first, = struct.unpack_from('<Q', data, pos)
    if first == (1 << 64) - 1:
        n_data, n_zero, csum = struct.unpack_from('<QQQ', data, pos + 8)
        assert pos + 32 == len(data), 'bytes after the end'
        break
    count, kind = struct.unpack_from('<II', data, pos + 8)
    pos += 16
    hashes = []
    if kind == 1:
        hashes = list(struct.unpack_from('<%dQ' % count, data, pos))
        pos += 8 * count
    runs.append((first, count, kind, hashes))


def xxh3(paths):
    out = subprocess.run(['xxhsum', '-H3'] + paths, stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        if line.startswith('XXH3 ('):          # BSD style
            name, h = line[6:].rsplit(') = ', 1)
        else:
            h, name = line.split(None, 1)
        res[name.strip()] = int(h, 16)
    return res


with tempfile.TemporaryDirectory() as td:
    head = os.path.join(td, 'head')
    open(head, 'wb').write(data[:-8])
    assert xxh3([head])[head] == csum, 'end checksum'
    layer = os.path.join(td, 'layer.raw')
    spec = json.dumps({'driver': 'qcow2', 'backing': None,
                       'file': {'driver': 'file', 'filename': os.path.abspath(img)}})
    subprocess.run(['qemu-img', 'convert', '-O', 'raw', 'json:' + spec, layer], check=True)
    raw = open(layer, 'rb').read()
    assert len(raw) == size, 'virtual size'
    m = json.loads(subprocess.run(['qemu-img', 'map', '--output=json', 'json:' + spec],
                                  stdout=subprocess.PIPE, check=True).stdout)
    held = set()
    for e in m:
        if e.get('depth', 0) == 0 and (e['data'] or e['zero']) and e.get('present', True):
            for c in range(e['start'] // cs, (e['start'] + e['length'] + cs - 1) // cs):
                held.add(c)
    listed, data, files, want = set(), [], [], {}
    for first, count, kind, hashes in runs:
        for i in range(count):
            c = first + i
            listed.add(c)
            chunk = raw[c * cs:min((c + 1) * cs, size)]
            if kind == 2:
                assert chunk == bytes(len(chunk)), 'cluster %d listed zero' % c
            else:
                data.append((c, hashes[i]))
    step = 1 if every or len(data) <= SAMPLE else len(data) / (SAMPLE - 1)
    picked = sorted({min(int(k * step), len(data) - 1)
                     for k in range(len(data) if step == 1 else SAMPLE)})
    for k in picked:
        c, h = data[k]
        f = os.path.join(td, 'c%d' % c)
        open(f, 'wb').write(raw[c * cs:min((c + 1) * cs, size)])
        files.append(f)
        want[f] = h
    assert sum(1 for r in runs if r[2] == 1 for _ in range(r[1])) == n_data
    assert listed == held, 'listed %d clusters, the file holds %d' % (len(listed), len(held))
    for k in range(0, len(files), 500):
        got = xxh3(files[k:k + 500])
        for f in files[k:k + 500]:
            assert got[f] == want[f], 'hash of %s' % os.path.basename(f)
print('manifest ok: %d runs, %d data (%d hashed), %d zero clusters'
      % (len(runs), n_data, len(files), n_zero))
