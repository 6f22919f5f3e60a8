#!/usr/bin/env python3
"""bench-integrity.py: what manifests and checksum incrementals cost,
against their anchors, side by side in one sitting.

  full-8G-manifest  `qbak backup` full of an 8 GiB qcow2 disk with 2 GiB of
                    data into a new repository (manifest hashed inline,
                    checkpoints, explicit zero clusters) against `qbak copy
                    --sync full` of the same disk (no manifest): the target
                    is at most 1.05x.
  verify-8G         `qbak verify` of the point at the end of a full (8 GiB
                    disk, 2 GiB data) and 10 incrementals of 1% each, all
                    points; anchors: reading the same files (`cat` to
                    /dev/null, warm cache; target <= 1.3x) and `qemu-img
                    compare` of the point against a restored copy (target:
                    faster).  The repository is bench-repo.py's restore
                    fixture (--repo-workdir, made by it if missing).
  checksums-8G-raw  `qbak backup -f raw` of an 8 GiB raw disk with 2 GiB of
                    data and 1% of it changed since the repository's full:
                    an incremental by checksums.  Anchors: one read of the
                    disk (`cat DISK > /dev/null`, warm cache; target <=
                    1.3x), and restic's second `backup` of the same file
                    into a local restic repository (target <= 0.3x).

Every round restores the starting state (untimed), runs each tool once in
rotating order and calls sync(2) before each run.  Medians, minimums, CPU
seconds (user + system) and peak RSS (GNU time) are printed, and for each
workload every tool's median per-round ratio to its anchor, wall and CPU:
on a machine shared with other work the CPU ratio holds when the wall
times swing.  Needs qemu-img, qemu-io, restic.

  bench/bench-integrity.py [--runs N] [--workdir DIR] [--qbak PATH] [--quick]
                           [--only full|checksums|verify] [--before PATH]

--before PATH times another build's verify and full backup in the same
rounds.
"""
import argparse, os, random, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKIMAGE = os.path.join(REPO, 'tests', 'tools', 'mkimage')
GiB, MiB, CLUSTER = 1 << 30, 1 << 20, 65536


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, env=None):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode:
        sys.exit(f'bench-integrity: {" ".join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-600:]}')
    return r.stdout


def timed(cmd, env=None, shell=False):
    """(wall seconds, peak RSS KiB, CPU seconds) of CMD."""
    with tempfile.NamedTemporaryFile('r', suffix='.time') as tf:
        os.sync()
        full = ['/usr/bin/time', '-f', '%M %U %S', '-o', tf.name] + (['sh', '-c', cmd] if shell else cmd)
        t0 = time.monotonic()
        r = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wall = time.monotonic() - t0
        if r.returncode:
            sys.exit(f'bench-integrity: {cmd} failed: {r.stderr.strip()[-600:]}')
        m = open(tf.name).read().split()
    # the last line is ours; lines before it would be the command's status
    rss, user, system = m[-3:] if len(m) >= 3 else (None, '0', '0')
    return wall, int(rss) if rss and rss.isdigit() else None, float(user) + float(system)


def warm(path):
    """Read PATH once, so every tool reads from a warm cache."""
    subprocess.run(f'cat {path} > /dev/null', shell=True, check=True)


def rounds(tools, runs, before=None):
    res = {n: dict(secs=[], rss=[], cpu=[]) for n, _ in tools}
    for r in range(runs):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for name, fn in order:
            if before:
                before()
            s, rss, cpu = fn()
            res[name]['secs'].append(s)
            res[name]['cpu'].append(cpu)
            if rss:
                res[name]['rss'].append(rss)
        log(f'  round {r + 1}/{runs}: ' + ', '.join(f'{n} {res[n]["secs"][-1]:.3f}s' for n, _ in tools))
    return res


def bench_full(wd, qbak, runs, size, fill, before=None):
    disk = os.path.join(wd, 'f-disk.qcow2')
    if not os.path.exists(disk):
        log(f'full: making a {size >> 30} GiB disk with {fill >> 20} MiB of data ...')
        run([sys.executable, MKIMAGE, disk, '--size', str(size), '--fill', str(fill), '--seed', '5'])
    out = os.path.join(wd, 'f-out')

    def clean():
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)

    def t_backup():
        return timed([qbak, 'backup', disk, os.path.join(out, 'repo')])

    def t_copy():
        return timed([qbak, 'copy', disk, os.path.join(out, 't.qcow2'), '--sync', 'full'])

    def t_before():
        return timed([before, 'backup', disk, os.path.join(out, 'repo')])

    warm(disk)
    tools = [('backup full (manifest)', t_backup)]
    if before:
        tools.append(('backup full, --before build', t_before))
    return rounds(tools + [('copy --sync full', t_copy)], runs, before=clean)


def change_raw(path, size, fill, frac, seed):
    """Overwrite FRAC of the data clusters of the raw file PATH in place."""
    rng = random.Random(seed)
    n = int(fill // CLUSTER * frac)
    with open(path, 'r+b') as f:
        for c in rng.sample(range(fill // CLUSTER), n):
            f.seek(c * CLUSTER)
            f.write(os.urandom(CLUSTER))
    return n


def bench_checksums(wd, qbak, runs, size, fill):
    base = os.path.join(wd, 'c-base')
    disk = os.path.join(base, 'disk.img')
    if not os.path.exists(os.path.join(base, 'done')):
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        log(f'checksums: a {size >> 30} GiB raw disk with {fill >> 20} MiB of data, its full and restic\'s first backup ...')
        with open(disk, 'wb') as f:
            for _ in range(fill // (64 * MiB)):
                f.write(os.urandom(64 * MiB))
            f.truncate(size)
        run([qbak, 'backup', '-f', 'raw', disk, os.path.join(base, 'repo')])
        env = dict(os.environ, RESTIC_PASSWORD='bench')
        run(['restic', '-q', '-r', os.path.join(base, 'restic'), 'init'], env=env)
        run(['restic', '-q', '-r', os.path.join(base, 'restic'), 'backup', disk], env=env)
        n = change_raw(disk, size, fill, 0.01, 11)
        log(f'  changed {n} clusters ({n * CLUSTER >> 20} MiB)')
        open(os.path.join(base, 'done'), 'w').close()
    work = os.path.join(wd, 'c-work')
    env = dict(os.environ, RESTIC_PASSWORD='bench')

    def reset():
        for name in ('repo', 'restic'):
            shutil.rmtree(os.path.join(work, name), ignore_errors=True)
            shutil.copytree(os.path.join(base, name), os.path.join(work, name))
        time.sleep(1)           # the new point gets its own second

    def t_backup():
        return timed([qbak, 'backup', '-f', 'raw', disk, os.path.join(work, 'repo')])

    def t_read():
        return timed(f'cat {disk} > /dev/null', shell=True)

    def t_restic():
        return timed(['restic', '-q', '-r', os.path.join(work, 'restic'), 'backup', disk], env=env)

    os.makedirs(work, exist_ok=True)
    warm(disk)
    return rounds([('backup by checksums', t_backup), ('cat (one read)', t_read),
                   ('restic backup (2nd)', t_restic)], runs, before=reset)


def bench_verify(wd, qbak, runs, repo_wd, before=None):
    base = os.path.join(repo_wd, 'r-base')
    repo = os.path.join(base, 'repo')
    if not os.path.exists(os.path.join(repo, 'config')):
        log('verify: making the restore fixture with bench-repo.py ...')
        run([sys.executable, os.path.join(HERE, 'bench-repo.py'), '--only', 'restore',
             '--runs', '1', '--workdir', repo_wd, '--qbak', qbak])
    ddir = os.path.join(repo, 'disks', 'disk')
    files = sorted(os.path.join(ddir, f) for f in os.listdir(ddir))
    top = [f for f in files if f.endswith('.qcow2')][-1]
    restored = os.path.join(wd, 'v-restored.qcow2')
    if not os.path.exists(restored):
        run([qbak, 'restore', '--disk', 'disk', repo, restored])
    for f in files + [restored]:
        warm(f)
    state = os.path.join(repo, 'state')

    def clean():
        shutil.rmtree(state, ignore_errors=True)

    def t_verify():
        return timed([qbak, 'verify', repo])

    def t_before():
        return timed([before, 'verify', repo])

    def t_cat():
        return timed('cat ' + ' '.join(files) + ' > /dev/null', shell=True)

    def t_compare():
        return timed(['qemu-img', 'compare', '-U', top, restored])

    tools = [('qbak verify', t_verify)]
    if before:
        tools.append(('qbak verify, --before build', t_before))
    tools += [('cat (the files)', t_cat), ('qemu-img compare with a restore', t_compare)]
    return rounds(tools, runs, before=clean)


def report(title, res, anchor=None):
    """With ANCHOR, each tool's median of its per-round ratio to it, of
    wall and of CPU seconds: the tools of one round share the machine's
    state."""
    print(f'\n{title}')
    print('| tool | median s | min s | median CPU s | peak RSS MiB |' +
          (' ratio to the anchor (wall) | (CPU) |' if anchor else ''))
    print('|---|---|---|---|---|' + ('---|---|' if anchor else ''))
    for name, v in res.items():
        rss = max(v['rss']) / 1024 if v['rss'] else float('nan')
        line = (f'| {name} | {statistics.median(v["secs"]):.3f} | {min(v["secs"]):.3f} | '
                f'{statistics.median(v["cpu"]):.3f} | {rss:.1f} |')
        if anchor:
            for key in ('secs', 'cpu'):
                pairs = [(a, b) for a, b in zip(v[key], res[anchor][key]) if b > 0]
                line += f' {statistics.median(a / b for a, b in pairs):.2f} |' if pairs else ' - |'
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--workdir')
    ap.add_argument('--qbak', default=os.path.join(REPO, 'build', 'qbak'))
    ap.add_argument('--quick', action='store_true', help='1 GiB disks, 256 MiB of data')
    ap.add_argument('--repo-workdir', default='/var/tmp/rs',
                    help="bench-repo.py's work directory (its restore fixture)")
    ap.add_argument('--only', help='full, checksums or verify')
    ap.add_argument('--before', help="another qbak build (its libqbak beside it) whose verify "
                    "and full backup are timed in the same rounds")
    a = ap.parse_args()
    wd = a.workdir or tempfile.mkdtemp(prefix='qbak-bench-integrity-', dir='/var/tmp')
    os.makedirs(wd, exist_ok=True)
    size, fill = (GiB, 256 * MiB) if a.quick else (8 * GiB, 2 * GiB)
    qbak = os.path.abspath(a.qbak)
    if a.only in (None, 'full'):
        report('full with manifest against copy without',
               bench_full(wd, qbak, a.runs, size, fill, os.path.abspath(a.before) if a.before else None),
               'copy --sync full')
    if a.only in (None, 'checksums'):
        report('incremental by checksums (1% changed)', bench_checksums(wd, qbak, a.runs, size, fill),
               'cat (one read)')
    if a.only in (None, 'verify'):
        report('verify of a full and 10 incrementals',
               bench_verify(wd, qbak, a.runs, a.repo_workdir,
                            os.path.abspath(a.before) if a.before else None), 'cat (the files)')


if __name__ == '__main__':
    main()
