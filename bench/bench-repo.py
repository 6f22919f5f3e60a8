#!/usr/bin/env python3
"""bench-repo.py: repository mode against its anchors, in one sitting.

  backup-incr-1T   `qbak backup` of 1000 scattered dirty clusters on a 1 TiB
                   disk whose full is in the repository, against `qbak copy`
                   of the same clusters (sync bitmap, bitmap never, backing
                   the full): the bookkeeping a repository adds.
  restore-8G       restore of the point at the end of a full (8 GiB disk,
                   2 GiB data) plus 10 incrementals of 1% each, to raw and to
                   qcow2, against `qemu-img convert` of the same point, the
                   same convert followed by an fsync of its output (convert
                   itself never waits for the disk; a restore must), and
                   the durable copy of the bytes the restore wrote
                   (bench/durable-copy of the qcow2 output; for raw,
                   bench/durable-copy-sparse, its data segments only).

--before PATH times the restore of another build in the same rounds (before
and after numbers that share the machine's state); --reuse keeps the restore
fixture already in --workdir; --only runs one workload.

Every round restores the same starting state (untimed), runs each tool
once in rotating order, and calls sync(2) before each run.  Medians, mins
and peak RSS (GNU time) are printed.  Needs qemu-img, qemu-io.

  bench/bench-repo.py [--runs N] [--workdir DIR] [--qbak PATH] [--quick]
                      [--only backup|restore] [--reuse] [--before PATH]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKIMAGE = os.path.join(REPO, 'tests', 'tools', 'mkimage')
DURABLE = os.path.join(HERE, 'durable-copy')
DURABLE_SPARSE = os.path.join(HERE, 'durable-copy-sparse')
GiB, MiB, CLUSTER = 1 << 30, 1 << 20, 65536


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode:
        sys.exit(f'bench-repo: {" ".join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-600:]}')
    return r.stdout


def timed(cmd):
    """(wall seconds, peak RSS KiB) of CMD."""
    with tempfile.NamedTemporaryFile('r', suffix='.time') as tf:
        os.sync()
        t0 = time.monotonic()
        r = subprocess.run(['/usr/bin/time', '-f', '%M', '-o', tf.name] + cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
        if r.returncode:
            sys.exit(f'bench-repo: {" ".join(cmd)} failed: {r.stderr.strip()[-600:]}')
        rss = open(tf.name).read().split()
    return wall, int(rss[-1]) if rss and rss[-1].isdigit() else None


def reset(src_dir, dst_dir):
    shutil.rmtree(dst_dir, ignore_errors=True)
    shutil.copytree(src_dir, dst_dir, symlinks=True)


def dirty(img, size, frac, seed):
    run([sys.executable, MKIMAGE, img, '--no-create', '--size', str(size),
         '--dirty', repr(frac), '--seed', str(seed)])


def newest_file(repo, disk):
    files = sorted(os.listdir(os.path.join(repo, 'disks', disk)))
    return os.path.join(repo, 'disks', disk, files[-1])


def med(v):
    return statistics.median(v) if v else None


def rounds(tools, runs, before=None):
    res = {n: dict(secs=[], rss=[]) for n, _ in tools}
    for r in range(runs):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for name, fn in order:
            if before:
                before()
            s, rss = fn()
            res[name]['secs'].append(s)
            if rss:
                res[name]['rss'].append(rss)
        log(f'  round {r + 1}/{runs}: ' + ', '.join(f'{n} {res[n]["secs"][-1]:.3f}s' for n, _ in tools))
    return res


def bench_backup(wd, qbak, runs, size):
    base = os.path.join(wd, 'b-base')
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    disk = os.path.join(base, 'disk.qcow2')
    log(f'backup: making a {size >> 30} GiB sparse disk and its full ...')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', disk, str(size)])
    run([qbak, 'backup', disk, os.path.join(base, 'repo')])
    dirty(disk, size, (1000 + 0.5) / (size // CLUSTER), 7)
    full = newest_file(os.path.join(base, 'repo'), 'disk')
    repo_id = open(os.path.join(base, 'repo', 'config')).read().split('"id": "')[1][:32]
    point = os.path.basename(full)[:-len('.qcow2')]
    bitmap = f'qbak-{repo_id}-{point}'
    work = os.path.join(wd, 'b-work')
    wdisk, wrepo = os.path.join(work, 'disk.qcow2'), os.path.join(work, 'repo')
    target = os.path.join(work, 't.qcow2')

    def t_backup():
        return timed([qbak, 'backup', wdisk, wrepo])

    def t_copy():
        return timed([qbak, 'copy', wdisk, target, '--sync', 'bitmap', '--bitmap', bitmap,
                      '--bitmap-mode', 'never', '--backing',
                      os.path.join(wrepo, 'disks', 'disk', os.path.basename(full)), '-F', 'qcow2'])

    time.sleep(1)                # the new point gets its own second
    return rounds([('qbak backup', t_backup), ('qbak copy', t_copy)], runs,
                  before=lambda: (reset(base, work), time.sleep(1)))


def bench_restore(wd, qbak, runs, size, fill, reuse=False, before=None):
    base = os.path.join(wd, 'r-base')
    repo = os.path.join(base, 'repo')
    done = os.path.join(base, 'done')
    if not (reuse and os.path.exists(done)):
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        disk = os.path.join(base, 'disk.qcow2')
        log(f'restore: making a {size >> 30} GiB disk with {fill >> 30} GiB of data, a full and 10 incrementals ...')
        run([sys.executable, MKIMAGE, disk, '--size', str(size), '--fill', str(fill), '--seed', '3'])
        run([qbak, 'backup', disk, repo])
        for k in range(10):
            dirty(disk, size, 0.01, 100 + k)
            time.sleep(1)
            run([qbak, 'backup', disk, repo])
        open(done, 'w').close()
    point_file = newest_file(repo, 'disk')
    out = os.path.join(wd, 'r-out')
    tools = []
    for fmt in ('raw', 'qcow2'):
        o = os.path.join(out, 'restored.' + fmt)

        def t_restore(fmt=fmt, o=o):
            return timed([qbak, 'restore', '--disk', 'disk', '-O', fmt, repo, o])

        def t_convert(fmt=fmt, o=o):
            return timed(['qemu-img', 'convert', '-U', '-O', fmt, point_file, o])

        def t_convert_sync(fmt=fmt, o=o):
            # coreutils sync with a file argument: fsync of that file
            return timed(['sh', '-c', 'qemu-img convert -U -O "$1" "$2" "$3" && sync "$3"',
                          'sh', fmt, point_file, o])

        def t_durable(fmt=fmt, o=o):
            # the durable copy of the bytes a restore wrote: made untimed
            # by a restore first, then copied (a raw output's holes are
            # not bytes it wrote)
            timed([qbak, 'restore', '--disk', 'disk', '-O', fmt, repo, o])
            s = timed([sys.executable, DURABLE_SPARSE if fmt == 'raw' else DURABLE, o, o + '.copy'])
            os.unlink(o + '.copy')
            return s

        def t_before(fmt=fmt, o=o):
            return timed([before, 'restore', '--disk', 'disk', '-O', fmt, repo, o])

        if before:
            tools.append((f'restore -O {fmt} (--before)', t_before))
        tools += [(f'restore -O {fmt}', t_restore), (f'qemu-img convert -O {fmt}', t_convert),
                  (f'qemu-img convert -O {fmt} + sync', t_convert_sync),
                  (f'durable copy ({fmt})', t_durable)]

    def clean():
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
    return rounds(tools, runs, before=clean)


def snapshot(prog, binw):
    """A copy of PROG with the library beside it, in BINW: a rebuild during
    the run changes nothing."""
    shutil.rmtree(binw, ignore_errors=True)
    os.makedirs(binw)
    bdir = os.path.dirname(os.path.abspath(prog))
    for name in os.listdir(bdir):
        if name.startswith('libqbak.so'):
            src = os.path.join(bdir, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), os.path.join(binw, name))
            else:
                shutil.copy2(src, binw)
    shutil.copy2(prog, os.path.join(binw, 'qbak'))
    return os.path.join(binw, 'qbak')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--workdir')
    ap.add_argument('--qbak', default=os.path.join(REPO, 'build', 'qbak'))
    ap.add_argument('--quick', action='store_true', help='64 GiB and 1 GiB (256 MiB data) disks')
    ap.add_argument('--reuse', action='store_true',
                    help='keep the restore fixture of an earlier run in --workdir')
    ap.add_argument('--before', metavar='PATH',
                    help='another qbak build (its libqbak beside it) whose restore is timed in the same rounds')
    ap.add_argument('--only', choices=('backup', 'restore'), help='run one workload')
    a = ap.parse_args()
    wd = a.workdir or tempfile.mkdtemp(prefix='qbak-bench-repo-', dir='/var/tmp')
    os.makedirs(wd, exist_ok=True)
    qbak = snapshot(a.qbak, os.path.join(wd, 'bin'))
    before = snapshot(a.before, os.path.join(wd, 'bin-before')) if a.before else None
    big, size8, fill = (64 * GiB, GiB, 256 * MiB) if a.quick else (1 << 40, 8 * GiB, 2 * GiB)
    b = r = None
    try:
        if a.only != 'restore':
            b = bench_backup(wd, qbak, a.runs, big)
        if a.only != 'backup':
            r = bench_restore(wd, qbak, a.runs, size8, fill, a.reuse, before)
    finally:
        if not a.workdir:
            shutil.rmtree(wd, ignore_errors=True)
    print(f'# qbak bench-repo {time.strftime("%Y-%m-%d %H:%M %Z")}{" (--quick)" if a.quick else ""}, '
          f'{a.runs} rounds, {os.cpu_count()} CPUs')
    print('| workload | tool | median s | min s | peak RSS MiB |')
    print('|---|---|---|---|---|')
    for wname, res in ((f'backup-incr-{big >> 30}G', b), (f'restore-{size8 >> 30}G', r)):
        for tool, d in (res or {}).items():
            print(f'| {wname} | {tool} | {med(d["secs"]):.3f} | {min(d["secs"]):.3f} | '
                  f'{max(d["rss"]) / 1024 if d["rss"] else 0:.1f} |')
    print()
    if b:
        bb, bc = med(b['qbak backup']['secs']), med(b['qbak copy']['secs'])
        print(f'backup incremental: {bb:.3f} s (target < 0.15 s), {bb / bc:.2f} x qbak copy (target <= 1.3)')
    for fmt in ('raw', 'qcow2') if r else ():
        rs = med(r[f'restore -O {fmt}']['secs'])
        cv = med(r[f'qemu-img convert -O {fmt}']['secs'])
        cs = med(r[f'qemu-img convert -O {fmt} + sync']['secs'])
        du = med(r[f'durable copy ({fmt})']['secs'])
        if before:
            rb = med(r[f'restore -O {fmt} (--before)']['secs'])
            print(f'restore -O {fmt} (--before): {rb:.3f} s = {rb / du:.2f} x durable copy, '
                  f'{rb / cv:.2f} x qemu-img convert, {rb / cs:.2f} x qemu-img convert + sync')
        print(f'restore -O {fmt}: {rs:.3f} s = {rs / du:.2f} x durable copy (target <= 1.1), '
              f'{rs / cv:.2f} x qemu-img convert (target <= 0.6), '
              f'{rs / cs:.2f} x qemu-img convert + sync')


if __name__ == '__main__':
    main()
