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

Every round restores the starting state (untimed), runs each tool once in
rotating order and calls sync(2) before each run.  Medians, minimums and
peak RSS (GNU time) are printed.  Needs qemu-img and qemu-io.

  bench/bench-prune.py [--runs N] [--workdir DIR] [--qbak PATH]
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


def bench(name, base, qbak, runs, with_commit):
    work = os.path.join(os.path.dirname(base), name + '-work')
    pair = os.path.join(os.path.dirname(base), name + '-pair')

    def reset():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(os.path.join(base, 'repo'), work)
        if with_commit:
            shutil.rmtree(pair, ignore_errors=True)
            os.makedirs(pair)
            for f in files(base):
                shutil.copy(f, pair)

    def t_prune():
        return timed([qbak, 'prune', '--keep-last', '1', work])

    def t_commit():
        top = sorted(f for f in os.listdir(pair) if f.endswith('.qcow2'))[-1]
        return timed(['qemu-img', 'commit', '-q', os.path.join(pair, top)])

    tools = [('qbak prune (remove the full)', t_prune)]
    if with_commit:
        tools.append(('qemu-img commit', t_commit))
    return rounds(tools, runs, reset)


def report(title, res):
    print(f'\n{title}')
    print('| tool | median s | min s | peak RSS MiB |')
    print('|---|---|---|---|')
    for name, v in res.items():
        rss = max(v['rss']) / 1024 if v['rss'] else float('nan')
        print(f'| {name} | {statistics.median(v["secs"]):.3f} | {min(v["secs"]):.3f} | {rss:.1f} |')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--workdir')
    ap.add_argument('--qbak', default=os.path.join(REPO, 'build', 'qbak'))
    a = ap.parse_args()
    wd = a.workdir or tempfile.mkdtemp(prefix='qbak-bench-prune-', dir='/var/tmp')
    os.makedirs(wd, exist_ok=True)
    qbak = os.path.abspath(a.qbak)
    m = os.path.join(wd, 'merge-base')
    log('merge-64M-into-1G: a 1 GiB disk, a full of 512 MiB, an incremental of 64 MiB ...')
    two_points(m, qbak, GiB, 512 * MiB, ['write -P 7 600M 64M'])
    report('merge 64 MiB into the full of a 1 GiB disk', bench('merge', m, qbak, a.runs, True))
    t = os.path.join(wd, 'tera-base')
    log('remove-oldest-1T: a 1 TiB disk, a full of 64 MiB, 1000 scattered clusters ...')
    writes = [f'write -P 5 {(k * 7919 % 16000000) * CLUSTER} 64k' for k in range(1000)]
    two_points(t, qbak, 1 << 40, 64 * MiB, writes)
    report('remove the oldest point of a 1 TiB disk (1000 clusters above it)',
           bench('tera', t, qbak, a.runs, False))


if __name__ == '__main__':
    main()
