#!/usr/bin/env python3
"""Oracle checks on dirty bitmaps for qbak's fault, cancel and group tests.

  copy-faults-check.py same BEFORE.json AFTER.json
  copy-faults-check.py cleared AFTER.json
  copy-faults-check.py missing BEFORE.json AFTER.json MAP.json --cluster N
  copy-faults-check.py count AFTER.json

BEFORE.json and AFTER.json are what `nbdinfo --json
--map=qemu:dirty-bitmap:NAME` prints against `qemu-nbd -r --bitmap NAME`
({"offset", "length", "type"}, type bit 0 set = dirty): QEMU's own view of
a bitmap.  MAP.json is `qemu-img map --output=json` of a (partial) target.

  same     AFTER marks exactly the bytes BEFORE marks (the bitmap is
           unchanged).
  cleared  AFTER marks nothing.
  missing  bitmap-mode always after a failure or cancel: AFTER marks
           exactly the clusters that were dirty in BEFORE (the copy set)
           and are not allocated at depth 0 of the target (present: data
           or zero), taken at the target's cluster size N and widened to
           the bitmap's granularity G (--granularity, default N): a
           granule is dirty if any of its uncopied clusters is.
  count    print the number of dirty bytes in AFTER.

Prints the first difference and exits 1 on a mismatch.  Python 3 standard
library only."""
import argparse
import json
import sys
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from clitest import die, load  # noqa: E402


def dirty_runs(path):
    """nbdinfo dirty-bitmap map -> (size, [(start, end)] of dirty bytes)."""
    ext = load(path)
    if not isinstance(ext, list):
        die(f'{path}: expected a JSON array from nbdinfo')
    runs, pos = [], 0
    for i, e in enumerate(ext):
        s, n, t = e.get('offset'), e.get('length'), e.get('type')
        if s != pos or not isinstance(n, int) or not isinstance(t, int):
            die(f'{path}: unexpected extent {i}: {json.dumps(e)}')
        if t & 1:
            if runs and runs[-1][1] == s:
                runs[-1] = (runs[-1][0], s + n)
            else:
                runs.append((s, s + n))
        pos += n
    return pos, runs


def fmt(runs, limit=12):
    out = ', '.join(f'[{s:#x}, {e:#x})' for s, e in runs[:limit])
    if len(runs) > limit:
        out += f', ... ({len(runs)} runs)'
    return out or '(none)'


def first_difference(a, b):
    """First byte offset where two sorted run lists differ, or None."""
    pts = sorted({p for r in a + b for p in r})
    def inside(runs, x):
        return any(s <= x < e for s, e in runs)
    for p in pts:
        if inside(a, p) != inside(b, p):
            return p
    return None


def compare(want, got, what):
    if want == got:
        return
    p = first_difference(want, got)
    die(f'{what}: bitmap differs at offset {p:#x}\n'
        f'  expected dirty: {fmt(want)}\n'
        f'  QEMU says:      {fmt(got)}')


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('op', choices=['same', 'cleared', 'missing', 'count'])
    ap.add_argument('files', nargs='+')
    ap.add_argument('--cluster', type=int, default=65536)
    ap.add_argument('--granularity', type=int)
    a = ap.parse_args()

    if a.op == 'count':
        _, runs = dirty_runs(a.files[0])
        print(sum(e - s for s, e in runs))
        return
    if a.op == 'cleared':
        _, runs = dirty_runs(a.files[0])
        if runs:
            die(f'bitmap is not cleared: dirty {fmt(runs)}')
        return
    if a.op == 'same':
        if len(a.files) != 2:
            die('same: BEFORE.json AFTER.json')
        sb, before = dirty_runs(a.files[0])
        sa, after = dirty_runs(a.files[1])
        if sa != sb:
            die(f'bitmap size changed: {sb} -> {sa}')
        compare(before, after, 'bitmap must be unchanged')
        return

    # missing
    if len(a.files) != 3:
        die('missing: BEFORE.json AFTER.json MAP.json')
    size, before = dirty_runs(a.files[0])
    sa, after = dirty_runs(a.files[1])
    if sa != size:
        die(f'bitmap size changed: {size} -> {sa}')
    gran = a.granularity or a.cluster
    cl = a.cluster
    mp = load(a.files[2])
    top = sorted((e['start'], e['start'] + e['length']) for e in mp
                 if e.get('depth') == 0 and e.get('present'))

    def covered(s, e):
        """[s, e) lies wholly inside depth-0 present extents of the target."""
        pos = s
        for ts, te in top:
            if te <= pos:
                continue
            if ts > pos:
                return False
            pos = te
            if pos >= e:
                return True
        return pos >= e

    granules = set()
    for s, e in before:
        c = s - s % cl
        while c < e:
            ce = min(c + cl, size)
            if not covered(c, ce):
                g = c - c % gran
                while g < ce:
                    granules.add(g)
                    g += gran
            c += cl
    want = []
    for g in sorted(granules):
        ge = min(g + gran, size)
        if want and want[-1][1] == g:
            want[-1] = (want[-1][0], ge)
        else:
            want.append((g, ge))
    compare(want, after, 'always: bitmap must hold exactly the clusters missing from the target')


if __name__ == '__main__':
    main()
