#!/usr/bin/env python3
"""Compare `qbak map --json` with `qemu-img map --output=json`.

  compare-map.py QBAK.json QEMU.json [--fields present,zero,data,depth]

Both are JSON arrays of {"start", "length", "depth", "present", "zero",
"data", "offset"?} extents.  Each must cover [0, size) contiguously; the
two may split that range differently (qemu-img merges more or less than
qbak), so they are compared on the intersection of their extents: every
byte must have the same value of each compared field.  `offset` is not
compared (QEMU reports it for some zero clusters and not for others).

Prints the first difference and exits 1 on any mismatch or malformed
input; prints a one-line summary and exits 0 when the maps agree.
Python 3 standard library only."""
import argparse
import json
import sys
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from clitest import die, is_int, load  # noqa: E402


def check_extents(ext, who, fields):
    """Check that ext covers [0, end) contiguously; return end."""
    pos = 0
    for i, e in enumerate(ext):
        if not isinstance(e, dict):
            die(f'{who}: extent {i} is not an object: {e!r}')
        for k in ('start', 'length'):
            if not is_int(e.get(k)):
                die(f'{who}: extent {i} has no integer "{k}": {json.dumps(e)}')
        if e['start'] != pos:
            die(f'{who}: extent {i} starts at {e["start"]}, expected {pos} '
                f'(extents must be contiguous from 0): {json.dumps(e)}')
        if e['length'] <= 0:
            die(f'{who}: extent {i} has length {e["length"]}: {json.dumps(e)}')
        for k in fields:
            if k not in e:
                die(f'{who}: extent {i} has no "{k}": {json.dumps(e)}')
            want = int if k == 'depth' else bool
            ok = is_int(e[k]) if want is int else isinstance(e[k], bool)
            if not ok:
                die(f'{who}: extent {i} field "{k}" is not a {want.__name__}: {json.dumps(e)}')
        pos += e['length']
    return pos


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('qbak')
    ap.add_argument('qemu')
    ap.add_argument('--fields', default='present,zero,data,depth')
    a = ap.parse_args()
    fields = [f for f in a.fields.split(',') if f]

    qb = load(a.qbak, 'qbak', array=True)
    qe = load(a.qemu, 'qemu-img', array=True)
    qb_end = check_extents(qb, 'qbak', fields)
    qe_end = check_extents(qe, 'qemu-img', fields)
    if qb_end != qe_end:
        die(f'size differs: qbak covers [0, {qb_end}), qemu-img covers [0, {qe_end})')

    i = j = 0
    pos = 0
    while pos < qb_end:
        x, y = qb[i], qe[j]
        stop = min(x['start'] + x['length'], y['start'] + y['length'])
        diff = [f for f in fields if x[f] != y[f]]
        if diff:
            what = ', '.join(f'{f}: qbak={json.dumps(x[f])} qemu-img={json.dumps(y[f])}'
                             for f in diff)
            print(f'compare-map: first difference at offset {pos} (0x{pos:x}), '
                  f'{stop - pos} bytes: {what}\n'
                  f'  qbak extent {i}:     {json.dumps(x)}\n'
                  f'  qemu-img extent {j}: {json.dumps(y)}', file=sys.stderr)
            sys.exit(1)
        pos = stop
        if pos == x['start'] + x['length']:
            i += 1
        if pos == y['start'] + y['length']:
            j += 1
    print(f'compare-map: agree on {",".join(fields)} over {qb_end} bytes '
          f'({len(qb)} qbak extents, {len(qe)} qemu-img extents)')


if __name__ == '__main__':
    main()
