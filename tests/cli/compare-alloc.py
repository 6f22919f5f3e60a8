#!/usr/bin/env python3
"""Compare how much data two backup targets allocate themselves.

  compare-alloc.py REF TARGET        exit 1 if TARGET holds more data than REF
  compare-alloc.py --count IMAGE     print IMAGE's data clusters and bytes

A target's own data is what `qemu-img map --output=json` reports with depth 0
and data true: clusters the image holds itself, not its backing file's, and
not zero or unallocated clusters.  Each entry is counted in whole clusters of
the image's cluster size (from `qemu-img info`; 64 KiB for a raw image, or
--cluster-size); a cluster touched by several entries counts once.

REF is typically QEMU's target (tests/tools/qemu-backup-job) and TARGET
qbak's, made from identical sources: qbak must not allocate more than QEMU
does.  The comparison is in bytes (clusters x cluster size), so targets with
different cluster sizes compare fairly.  Prints both counts; on failure, the
first guest offset where TARGET holds data and REF does not.
Needs qemu-img; Python 3 standard library only."""
import argparse
import json
import subprocess
import sys
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
from clitest import die  # noqa: E402


def qemu_img(*args):
    r = subprocess.run(['qemu-img', *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode:
        die(f'qemu-img {" ".join(args)}: {r.stderr.strip()}')
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        die(f'qemu-img {" ".join(args)}: bad JSON: {e}')


def data_clusters(img, default_cs):
    """The set of cluster indexes holding IMG's own data, and the cluster size."""
    info = qemu_img('info', '-U', '--output=json', img)
    cs = info.get('cluster-size') or default_cs
    clusters = set()
    for e in qemu_img('map', '-U', '--output=json', img):
        if e.get('depth') == 0 and e.get('data') is True and e['length'] > 0:
            first, last = e['start'] // cs, (e['start'] + e['length'] - 1) // cs
            clusters.update(range(first, last + 1))
    return clusters, cs


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('images', nargs='+', metavar='IMAGE')
    ap.add_argument('--count', action='store_true',
                    help='print the data clusters and bytes of one IMAGE')
    ap.add_argument('--cluster-size', type=int, default=65536,
                    help='cluster size for images without one (raw)')
    a = ap.parse_args()

    if a.count:
        if len(a.images) != 1:
            die('--count takes one IMAGE')
        c, cs = data_clusters(a.images[0], a.cluster_size)
        print(json.dumps({'image': a.images[0], 'cluster-size': cs,
                          'data-clusters': len(c), 'data-bytes': len(c) * cs}))
        return
    if len(a.images) != 2:
        die('expected REF and TARGET')
    ref, tgt = a.images
    rc, rcs = data_clusters(ref, a.cluster_size)
    tc, tcs = data_clusters(tgt, a.cluster_size)
    rb, tb = len(rc) * rcs, len(tc) * tcs
    print(f'{ref}: {len(rc)} data clusters of {rcs} ({rb} bytes); '
          f'{tgt}: {len(tc)} data clusters of {tcs} ({tb} bytes)')
    if tb > rb:
        extra = sorted(c * tcs for c in tc
                       if not any(o // rcs in rc for o in range(c * tcs, (c + 1) * tcs, min(rcs, tcs))))
        where = f'; first extra data at guest offset {extra[0]}' if extra else ''
        die(f'{tgt} allocates {tb} bytes of data, more than {ref} ({rb}){where}')


if __name__ == '__main__':
    main()
