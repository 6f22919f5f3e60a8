#!/usr/bin/env python3
"""bench-prune.py: what removing a point costs, against qemu-img commit.

  merge-64M-into-1G  a repository of a 1 GiB disk: a full with 512 MiB of
                     data and an incremental holding 64 MiB.  `qbak prune
                     --keep-last 1` removes the full: the incremental's
                     clusters go into it and it takes the incremental's
                     place.  Anchor: `qemu-img commit` of the same pair (a
                     copy of the two files); target <= 0.5x.
  remove-oldest-1T   a 1 TiB disk whose full holds 64 MiB and whose next
                     incremental holds 1000 scattered clusters: `qbak prune
                     --keep-last 1`; target < 0.2 s.

Every round restores the starting state (untimed: the repository is
copied with `cp -a`, which keeps the holes qbak's files have, so freeing
a file costs what it costs in a real repository), runs each tool once in
rotating order and calls sync(2) before each run.  Medians, minimums and
peak RSS (GNU time) are printed, and the ratio of each prune to the
anchor in the same rounds.  Needs qemu-img and qemu-io.

The floor of each case is timed in the same rounds: a durable copy
(bench/durable-copy) of the file prune moves (the smaller of the two),
then the unlink of that copy (on a file system mounted with discard,
freeing a file costs a discard per extent).

--before PATH times another build's prune (its libqbak beside it) in the
same rounds: before and after numbers that share the machine's state.

  bench/bench-prune.py [--runs N] [--workdir DIR] [--qbak PATH] [--before PATH]
                       [--only merge|tera]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKIMAGE = os.path.join(REPO, 'tests', 'tools', 'mkimage')
GiB, MiB, CLUSTER = 1 << 30, 1 << 20, 65536


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        sys.exit(f'bench-prune: {" ".join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-600:]}')
    return r.stdout


def timed(cmd):
    with tempfile.NamedTemporaryFile('r', suffix='.time') as tf:
        os.sync()
        t0 = time.monotonic()
        r = subprocess.run(['/usr/bin/time', '-f', '%M', '-o', tf.name] + cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
        if r.returncode:
            sys.exit(f'bench-prune: {" ".join(cmd)} failed: {r.stderr.strip()[-600:]}')
        rss = open(tf.name).read().split()
    return wall, int(rss[-1]) if rss and rss[-1].isdigit() else None


def rounds(tools, runs, before):
    res = {n: dict(secs=[], rss=[]) for n, _ in tools}
    for r in range(runs):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for name, fn in order:
            before()
            s, rss = fn()
            res[name]['secs'].append(s)
            if rss:
                res[name]['rss'].append(rss)
        log(f'  round {r + 1}/{runs}: ' + ', '.join(f'{n} {res[n]["secs"][-1]:.3f}s' for n, _ in tools))
    return res


def two_points(base, qbak, size, fill, second):
    """A repository in BASE/repo of a disk of SIZE with FILL bytes of data,
    a full, then the qemu-io commands SECOND (one qemu-io run) and an
    incremental."""
    disk = os.path.join(base, 'disk.qcow2')
    if os.path.exists(os.path.join(base, 'done')):
        return
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    run([sys.executable, MKIMAGE, disk, '--size', str(size), '--fill', str(fill), '--seed', '9'])
    run([qbak, 'backup', disk, os.path.join(base, 'repo')])
    args = ['qemu-io']
    for c in second:
        args += ['-c', c]
    run(args + [disk])
    time.sleep(1)
    run([qbak, 'backup', disk, os.path.join(base, 'repo')])
    open(os.path.join(base, 'done'), 'w').close()


def files(base):
    d = os.path.join(base, 'repo', 'disks', 'disk')
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith('.qcow2')]


def bench(name, base, qbak, runs, with_commit, before=None):
    work = os.path.join(os.path.dirname(base), name + '-work')
    pair = os.path.join(os.path.dirname(base), name + '-pair')
    floor = os.path.join(os.path.dirname(base), name + '-floor')

    def reset():
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(['cp', '-a', os.path.join(base, 'repo'), work], check=True)
        shutil.rmtree(floor, ignore_errors=True)
        if with_commit:
            shutil.rmtree(pair, ignore_errors=True)
            os.makedirs(pair)
            for f in files(base):
                subprocess.run(['cp', '-a', f, pair], check=True)

    def t_prune():
        return timed([qbak, 'prune', '--keep-last', '1', work])

    def t_before():
        return timed([before, 'prune', '--keep-last', '1', work])

    def t_floor():
        moved = min(files(base), key=os.path.getsize)
        os.makedirs(floor)
        s1, _ = timed([sys.executable, os.path.join(HERE, 'durable-copy'), moved,
                       os.path.join(floor, 'copy')])
        s2, _ = timed(['rm', os.path.join(floor, 'copy')])
        return s1 + s2, None

    def t_commit():
        top = sorted(f for f in os.listdir(pair) if f.endswith('.qcow2'))[-1]
        return timed(['qemu-img', 'commit', '-q', os.path.join(pair, top)])

    tools = [('qbak prune (remove the full)', t_prune)]
    if before:
        tools.append(('qbak prune, --before build', t_before))
    if with_commit:
        tools.append(('qemu-img commit', t_commit))
    tools.append(('floor: durable copy + unlink of the moved file', t_floor))
    return rounds(tools, runs, reset)


def report(title, res, anchor=None):
    print(f'\n{title}')
    print('| tool | median s | min s | peak RSS MiB |' + (' median of per-round ratio to the anchor |' if anchor else ''))
    print('|---|---|---|---|' + ('---|' if anchor else ''))
    for name, v in res.items():
        rss = max(v['rss']) / 1024 if v['rss'] else float('nan')
        line = f'| {name} | {statistics.median(v["secs"]):.3f} | {min(v["secs"]):.3f} | {rss:.1f} |'
        if anchor:
            ratio = statistics.median(a / b for a, b in zip(v['secs'], res[anchor]['secs']))
            line += f' {ratio:.2f} |'
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--workdir')
    ap.add_argument('--qbak', default=os.path.join(REPO, 'build', 'qbak'))
    ap.add_argument('--before', help='another qbak build timed in the same rounds')
    ap.add_argument('--only', choices=('merge', 'tera'))
    a = ap.parse_args()
    before = os.path.abspath(a.before) if a.before else None
    wd = a.workdir or tempfile.mkdtemp(prefix='qbak-bench-prune-', dir='/var/tmp')
    os.makedirs(wd, exist_ok=True)
    qbak = os.path.abspath(a.qbak)
    if a.only in (None, 'merge'):
        m = os.path.join(wd, 'merge-base')
        log('merge-64M-into-1G: a 1 GiB disk, a full of 512 MiB, an incremental of 64 MiB ...')
        two_points(m, qbak, GiB, 512 * MiB, ['write -P 7 600M 64M'])
        report('merge 64 MiB into the full of a 1 GiB disk',
               bench('merge', m, qbak, a.runs, True, before), 'qemu-img commit')
    if a.only in (None, 'tera'):
        t = os.path.join(wd, 'tera-base')
        log('remove-oldest-1T: a 1 TiB disk, a full of 64 MiB, 1000 scattered clusters ...')
        writes = [f'write -P 5 {(k * 7919 % 16000000) * CLUSTER} 64k' for k in range(1000)]
        two_points(t, qbak, 1 << 40, 64 * MiB, writes)
        report('remove the oldest point of a 1 TiB disk (1000 clusters above it)',
               bench('tera', t, qbak, a.runs, False, before))


if __name__ == '__main__':
    main()
