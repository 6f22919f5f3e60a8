#!/usr/bin/env python3
"""Compare `qbak bitmap dump --json` with QEMU's view of the same bitmap.

  compare-dump.py [--name S] [--size N] [--granularity N] QBAK.json NBDINFO.json

QBAK.json is qbak's {"name", "granularity", "virtual-size", "extents": [{"start",
"length", "dirty"}, ...]}; NBDINFO.json is the array printed by
`nbdinfo --json --map=qemu:dirty-bitmap:NAME` against `qemu-nbd -r --bitmap
NAME` ({"offset", "length", "type"}, type bit 0 set = dirty).

qbak's dump must: carry the expected name, granularity and size (from
qemu-img info, when given); cover [0, size) contiguously with non-empty
extents whose boundaries are granule-aligned (except the end, at size);
merge adjacent extents of equal state; and mark exactly the bytes QEMU
marks dirty.  Prints the first difference (offset and granule) and exits 1
on any mismatch; prints a summary and exits 0 otherwise.
Python 3 standard library only."""
import argparse
import json
import sys
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from clitest import die, is_int, load  # noqa: E402


def merge(runs):
    """[(start, length, dirty)] -> same, adjacent equal states merged."""
    out = []
    for s, n, d in runs:
        if out and out[-1][2] == d and out[-1][0] + out[-1][1] == s:
            out[-1] = (out[-1][0], out[-1][1] + n, d)
        else:
            out.append((s, n, d))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('qbak')
    ap.add_argument('nbdinfo')
    ap.add_argument('--name')
    ap.add_argument('--size', type=int)
    ap.add_argument('--granularity', type=int)
    a = ap.parse_args()

    qb = load(a.qbak, 'qbak')
    if not isinstance(qb, dict):
        die(f'qbak: expected a JSON object, got {type(qb).__name__}')
    for k, want in (('name', a.name), ('granularity', a.granularity), ('virtual-size', a.size)):
        if k not in qb:
            die(f'qbak: no "{k}" member')
        if want is not None and qb[k] != want:
            die(f'qbak: "{k}" is {json.dumps(qb[k])}, qemu-img says {json.dumps(want)}')
    gran, size = qb['granularity'], qb['virtual-size']
    if not is_int(gran) or gran <= 0 or not is_int(size) or size < 0:
        die(f'qbak: bad granularity {gran!r} or size {size!r}')
    ext = qb.get('extents')
    if not isinstance(ext, list):
        die('qbak: "extents" is not an array')

    # qbak's extents: well formed, contiguous, aligned, merged
    pos, prev, runs = 0, None, []
    for i, e in enumerate(ext):
        if not isinstance(e, dict) or not is_int(e.get('start')) or \
                not is_int(e.get('length')) or not isinstance(e.get('dirty'), bool):
            die(f'qbak: extent {i} is not {{"start": N, "length": N, "dirty": bool}}: '
                f'{json.dumps(e)}')
        s, n, d = e['start'], e['length'], e['dirty']
        if s != pos:
            die(f'qbak: extent {i} starts at {s}, expected {pos} '
                f'(extents must be contiguous from 0): {json.dumps(e)}')
        if n <= 0:
            die(f'qbak: extent {i} has length {n}: {json.dumps(e)}')
        if s % gran:
            die(f'qbak: extent {i} starts at {s}, not a multiple of granularity {gran}')
        if (s + n) % gran and s + n != size:
            die(f'qbak: extent {i} ends at {s + n}, neither granule-aligned nor the size {size}')
        if prev is not None and prev == d:
            die(f'qbak: extents {i - 1} and {i} are adjacent with the same state '
                f'dirty={json.dumps(d)} (they must be merged)')
        prev = d
        runs.append((s, n, d))
        pos += n
    if pos != size:
        die(f'qbak: extents cover [0, {pos}), expected [0, {size})')

    nb = load(a.nbdinfo, 'nbdinfo')
    if not isinstance(nb, list):
        die('nbdinfo: expected a JSON array')
    qruns, qpos = [], 0
    for i, e in enumerate(nb):
        s, n, t = e.get('offset'), e.get('length'), e.get('type')
        if not (is_int(s) and is_int(n) and is_int(t)) or s != qpos:
            die(f'nbdinfo: unexpected extent {i}: {json.dumps(e)}')
        qruns.append((s, n, bool(t & 1)))
        qpos += n
    if qpos != size:
        die(f'size differs: qbak covers [0, {size}), qemu-nbd exports [0, {qpos})')
    qruns = merge(qruns)

    # Walk the intersection of both extent lists for the first difference.
    i = j = 0
    pos = 0
    while pos < size:
        (xs, xn, xd), (ys, yn, yd) = runs[i], qruns[j]
        stop = min(xs + xn, ys + yn)
        if xd != yd:
            print(f'compare-dump: bitmap {qb["name"]!r}: first difference at offset {pos} '
                  f'(0x{pos:x}, granule {pos // gran} of {-(-size // gran)}, '
                  f'granularity {gran}), {stop - pos} bytes: '
                  f'qbak dirty={json.dumps(xd)}, QEMU dirty={json.dumps(yd)}\n'
                  f'  qbak extent {i}: start={xs} length={xn} dirty={json.dumps(xd)}\n'
                  f'  QEMU run {j}:    start={ys} length={yn} dirty={json.dumps(yd)}',
                  file=sys.stderr)
            sys.exit(1)
        pos = stop
        if pos == xs + xn:
            i += 1
        if pos == ys + yn:
            j += 1
    dirty = sum(n for _, n, d in runs if d)
    print(f'compare-dump: bitmap {qb["name"]!r} agrees: {len(runs)} extents, '
          f'{dirty} dirty bytes of {size}, granularity {gran}')


if __name__ == '__main__':
    main()
