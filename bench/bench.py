#!/usr/bin/env python3
"""Benchmark qbak against QEMU's own backup job and a plain cp (the limit).

  bench/bench.py [--quick] [--runs N] [--workdir DIR] [--keep]
                 [--qbak PATH] [--only NAME,...] [--json FILE]

Builds the workloads once with tests/tools/mkimage into a work directory
(default: a new temporary directory on the same filesystem as /work, removed
at the end unless --keep; a --workdir is reused, images and all, so a second
run skips the slow image build), then, for each workload, runs N rounds
(default 5) that each run every tool once, the order rotating from round to
round:

  QEMU    tests/tools/qemu-backup-job on its own copy of the image; the time
          is the job time QEMU's wrapper reports (target creation, daemon
          start-up and the final flush on close are not counted)
  qbak    `qbak copy ... --json`: wall time of the whole process, measured
          around `/usr/bin/time -f '%e %M'`, which gives its peak RSS
  cp      `cp --reflink=never SRC NEW` of the source image file: the
          page-cache copy limit (cp+fsync: the same followed by fsync of the
          copy, for information only, since qbak makes its target durable)
  durable bench/durable-copy SRC NEW (full backups only, for information):
          copy_file_range with write-back started as it goes, then fsync:
          the plain-copy limit for a tool that must not report success
          before its output is on disk

Every run writes a fresh target, deleted right after.  Before each run the
script calls sync(2) so no run pays for the previous run's write-back; the
page cache is never dropped: all sources are read once beforehand, so every
tool reads from a warm cache.

Incrementals are timed with `--sync bitmap --bitmap-mode never` (both qbak
and QEMU): the same copy work as `--sync incremental` but the bitmap is left
dirty, so every round copies the same clusters.  The target's backing file
is a full backup of the image made once at set-up (qemu-img convert).

Workloads (full mode; --quick in brackets, a smoke run under a minute):
  full-8G     8 GiB image, 2 GiB incompressible data, 1% scattered dirty
              clusters in bitmap b0 [1 GiB, 256 MiB]: --sync full
  incr-8G     the same image: the 1% dirty clusters
  incr-16G    16 GiB sparse image, 1000 scattered dirty clusters [4 GiB]
  incr-1T     1 TiB sparse image, 1000 scattered dirty clusters [64 GiB]
  (cp runs in every workload; qbak/cp is only reported for full backups)

Targets (the project's goals, for the 2-core machine; in --quick they are indicative):
  full-8G:  qbak <= 0.5 x QEMU, qbak <= 1.3 x cp
  incr-8G:  qbak <= 0.5 x QEMU
  incr-1T:  qbak < 0.1 s, qbak(1T) <= 1.5 x qbak(16G)
  all:      qbak peak RSS < 64 MiB
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKIMAGE = os.path.join(REPO, 'tests', 'tools', 'mkimage')
QJOB = os.path.join(REPO, 'tests', 'tools', 'qemu-backup-job')
DURABLE = os.path.join(HERE, 'durable-copy')
GNU_TIME = '/usr/bin/time'
GiB, MiB = 1 << 30, 1 << 20
CLUSTER = 65536


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def die(msg):
    sys.exit(f'bench: {msg}')


def gnu_time_ok():
    if not os.access(GNU_TIME, os.X_OK):
        return False
    r = subprocess.run([GNU_TIME, '-f', '%e %M', 'true'], capture_output=True, text=True)
    return r.returncode == 0 and len(r.stderr.split()) >= 2


USE_GNU_TIME = gnu_time_ok()


def timed(cmd):
    """Run cmd; return (wall seconds, peak RSS KiB, stdout).  Wall is the
    monotonic time around the whole process (including the /usr/bin/time
    wrapper's fork/exec, ~1 ms); RSS is /usr/bin/time's %M, or without GNU
    time the child's ru_maxrss from wait4()."""
    if USE_GNU_TIME:
        with tempfile.NamedTemporaryFile('r', suffix='.time') as tf:
            t0 = time.monotonic()
            r = subprocess.run([GNU_TIME, '-f', '%e %M', '-o', tf.name] + cmd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wall = time.monotonic() - t0
            fields = open(tf.name).read().split()
            rss = int(fields[-1]) if fields and fields[-1].isdigit() else None
    else:
        with tempfile.TemporaryFile('w+') as fo, tempfile.TemporaryFile('w+') as fe:
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=fo, stderr=fe)
            _, status, ru = os.wait4(p.pid, 0)
            wall = time.monotonic() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
            fo.seek(0); fe.seek(0)
            r = subprocess.CompletedProcess(cmd, p.returncode, fo.read(), fe.read())
        rss = ru.ru_maxrss
    if r.returncode != 0:
        die(f'{" ".join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-800:]}')
    return wall, rss, r.stdout


def rm(*paths):
    for p in paths:
        for q in (p, p + '.part'):
            try:
                os.unlink(q)
            except FileNotFoundError:
                pass


def read_through(path):
    with open(path, 'rb') as f:
        while f.read(8 << 20):
            pass


def workloads(quick):
    if quick:
        big, small, bigname, smallname, fill, size8 = 64 * GiB, 4 * GiB, '64G', '4G', 256 * MiB, 1 * GiB
        fullname = '1G'
    else:
        big, small, bigname, smallname, fill, size8 = 1 << 40, 16 * GiB, '1T', '16G', 2 * GiB, 8 * GiB
        fullname = '8G'
    images = {
        # name: (virtual size, fill bytes, mkimage --dirty argument)
        f'data-{fullname}': (size8, fill, '1%'),
        f'sparse-{smallname}': (small, 0, None),
        f'sparse-{bigname}': (big, 0, None),
    }
    wl = [
        dict(name=f'full-{fullname}', image=f'data-{fullname}', sync='full', cp=True),
        dict(name=f'incr-{fullname}', image=f'data-{fullname}', sync='bitmap', cp=True),
        dict(name=f'incr-{smallname}', image=f'sparse-{smallname}', sync='bitmap', cp=True),
        dict(name=f'incr-{bigname}', image=f'sparse-{bigname}', sync='bitmap', cp=True),
    ]
    return images, wl, (fullname, smallname, bigname)


def dirty_arg(size, spec, ndirty=1000):
    if spec:
        return spec
    n = size // CLUSTER
    return repr((ndirty + 0.5) / n)   # mkimage takes int(n * frac) clusters


def build_images(wd, images, need_backing):
    """Make each image (skip if a stamp says it is already there with the
    same spec), QEMU's private copy of it, and a full backup for backing."""
    for name, (size, fill, dspec) in images.items():
        img = os.path.join(wd, name + '.qcow2')
        stamp = os.path.join(wd, name + '.stamp')
        spec = dict(size=size, fill=fill, dirty=dirty_arg(size, dspec), cluster=CLUSTER, seed=1)
        if os.path.exists(stamp) and os.path.exists(img) and json.load(open(stamp)) == spec:
            log(f'reusing {img}')
        else:
            rm(img, stamp)
            log(f'making {img} (size {size}, fill {fill}, dirty {spec["dirty"]}) ...')
            t0 = time.monotonic()
            subprocess.run([sys.executable, MKIMAGE, img, '--size', str(size), '--fill', str(fill),
                            '--bitmap', 'b0', '--dirty', spec['dirty'], '--seed', '1'],
                           check=True, stdout=subprocess.DEVNULL)
            log(f'  done in {time.monotonic() - t0:.1f} s')
            for ext in ('.qemu.qcow2', '.full.qcow2'):
                rm(os.path.join(wd, name + ext))
            json.dump(spec, open(stamp, 'w'))
        qimg = os.path.join(wd, name + '.qemu.qcow2')
        if not os.path.exists(qimg):
            shutil.copyfile(img, qimg + '.tmp')
            os.rename(qimg + '.tmp', qimg)
        full = os.path.join(wd, name + '.full.qcow2')
        if name in need_backing and not os.path.exists(full):
            log(f'making the backing full backup {full} (qemu-img convert) ...')
            subprocess.run(['qemu-img', 'convert', '-U', '-O', 'qcow2', img, full + '.tmp'], check=True)
            os.rename(full + '.tmp', full)


def run_workload(w, wd, qbak, runs, baseline=None):
    img = os.path.join(wd, w['image'] + '.qcow2')
    qimg = os.path.join(wd, w['image'] + '.qemu.qcow2')
    full = os.path.join(wd, w['image'] + '.full.qcow2')
    tgt = os.path.join(wd, 'target.qcow2')
    rm(tgt)
    for p in (img, qimg) + ((full,) if w['sync'] != 'full' else ()):
        read_through(p)

    def t_qemu():
        cmd = [sys.executable, QJOB, qimg, tgt, '--create']
        if w['sync'] == 'full':
            cmd += ['--sync', 'full']
        else:
            cmd += ['--sync', 'bitmap', '--bitmap', 'b0', '--bitmap-mode', 'never', '--backing', full]
        wall, rss, out = timed(cmd)
        j = json.loads(out.strip().splitlines()[-1])
        if j.get('error'):
            die(f'QEMU job failed: {j["error"]}')
        return j['seconds'], rss, dict(wrapper_wall=wall)

    def t_qbak(binary=qbak):
        cmd = [binary, 'copy', img, tgt, '--json']
        if w['sync'] == 'full':
            cmd += ['--sync', 'full']
        else:
            cmd += ['--sync', 'bitmap', '--bitmap', 'b0', '--bitmap-mode', 'never', '--backing', full]
        wall, rss, out = timed(cmd)
        j = json.loads(out)
        if j.get('status') not in (None, 'ok'):
            die(f'qbak status {j.get("status")}')
        return wall, rss, dict(reported=j.get('seconds'), bytes=j.get('bytes-copied'))

    def t_cp():
        wall, rss, _ = timed(['cp', '--reflink=never', img, tgt])
        return wall, rss, {}

    def t_cp_fsync():
        t0 = time.monotonic()
        timed(['cp', '--reflink=never', img, tgt])
        fd = os.open(tgt, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        return time.monotonic() - t0, None, {}

    def t_durable():
        wall, _, _ = timed([sys.executable, DURABLE, img, tgt])
        return wall, None, {}

    tools = [('QEMU', t_qemu), ('qbak', t_qbak)]
    if baseline:
        tools.append(('qbak-base', lambda: t_qbak(baseline)))
    if w['cp']:
        tools.append(('cp', t_cp))
    if w['sync'] == 'full':
        tools.append(('cp+fsync', t_cp_fsync))
        tools.append(('durable', t_durable))
    res = {name: dict(secs=[], rss=[], extra=[]) for name, _ in tools}
    for r in range(runs):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for name, fn in order:
            os.sync()
            s, rss, extra = fn()
            rm(tgt)
            res[name]['secs'].append(s)
            if rss is not None:
                res[name]['rss'].append(rss)
            res[name]['extra'].append(extra)
        log(f'  {w["name"]} round {r + 1}/{runs}: ' +
            ', '.join(f'{n} {res[n]["secs"][-1]:.3f}s' for n, _ in tools))
    os.sync()
    return res


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec='.3f'):
    return '-' if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small images: a smoke run under a minute')
    ap.add_argument('--runs', type=int, default=None, help='rounds per workload (default 5, 3 with --quick)')
    ap.add_argument('--workdir', help='where images and targets go (kept and reused)')
    ap.add_argument('--keep', action='store_true', help='keep the temporary work directory')
    ap.add_argument('--qbak', default=os.path.join(REPO, 'build', 'qbak'))
    ap.add_argument('--only', help='comma-separated workload names to run')
    ap.add_argument('--baseline', help='another qbak build (e.g. before a change) run in the '
                    'same rounds, reported as qbak-base with the ratio qbak/base')
    ap.add_argument('--json', dest='json_out', help='write all measurements here')
    a = ap.parse_args()
    runs = a.runs or (3 if a.quick else 5)

    for t in ('qemu-img', 'qemu-io', 'qemu-storage-daemon', 'cp'):
        if not shutil.which(t):
            die(f'{t} not found')
    if not os.access(a.qbak, os.X_OK):
        die(f'{a.qbak} not built (cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build)')

    if a.workdir:
        wd = os.path.abspath(a.workdir)
        os.makedirs(wd, exist_ok=True)
        own_wd = False
    else:
        base = tempfile.gettempdir()
        if os.path.isdir('/work') and os.stat(base).st_dev != os.stat('/work').st_dev:
            base = '/work'   # keep images on the same filesystem as /work
        wd = tempfile.mkdtemp(prefix='qbak-bench-', dir=base)
        own_wd = not a.keep

    images, wl, (fullname, smallname, bigname) = workloads(a.quick)
    if a.only:
        keep = set(a.only.split(','))
        wl = [w for w in wl if w['name'] in keep]
    need_backing = {w['image'] for w in wl if w['sync'] != 'full'}
    images = {k: v for k, v in images.items() if k in {w['image'] for w in wl}}

    # disk: each data image ~fill on disk, twice (QEMU's copy), plus a full
    # backup for backing, plus one target at a time, plus slack.
    need = sum(3 * fill + 4 * fill // 100 + 64 * MiB for _, fill, _ in images.values()) + 2 * max(
        [f for _, f, _ in images.values()] + [0]) + 512 * MiB
    free = shutil.disk_usage(wd).free
    log(f'work dir {wd}: {free / GiB:.1f} GiB free, need about {need / GiB:.1f} GiB')
    if free < need:
        die('not enough free disk space')

    # snapshot the binary so concurrent rebuilds do not change it mid-run
    # (and the shared libqbak beside it, which the program loads from its
    # own folder)
    def snapshot(binary, folder):
        os.makedirs(folder, exist_ok=True)
        dst_bin = os.path.join(folder, 'qbak.bin')
        shutil.copy2(binary, dst_bin)
        bindir = os.path.dirname(os.path.abspath(binary))
        for name in os.listdir(bindir):
            if name.startswith('libqbak.so'):
                src, dst = os.path.join(bindir, name), os.path.join(folder, name)
                rm(dst)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                else:
                    shutil.copy2(src, dst)
        return dst_bin
    qbak = snapshot(a.qbak, os.path.join(wd, 'bin'))
    baseline = snapshot(a.baseline, os.path.join(wd, 'bin-base')) if a.baseline else None
    git = subprocess.run(['git', '-C', REPO, 'log', '-1', '--format=%h %cI %s'],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', '-C', REPO, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True).stdout.strip()

    all_res = {}
    try:
        build_images(wd, images, need_backing)
        for w in wl:
            log(f'running {w["name"]} ({runs} rounds)')
            all_res[w['name']] = run_workload(w, wd, qbak, runs, baseline)
    finally:
        if own_wd:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            rm(os.path.join(wd, 'target.qcow2'))

    # ---- report
    model = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    print(f'# qbak benchmark {time.strftime("%Y-%m-%d %H:%M %Z")}{"  (--quick)" if a.quick else ""}')
    print(f'# machine: {os.cpu_count()} CPUs, {model}; qbak at {git}'
          f'{" (worktree has uncommitted changes)" if dirty else ""}')
    print(f'# {runs} rounds per workload, tools alternating; page cache warm for every tool, '
          f'sync(2) before each run, nothing dropped')
    print('# incrementals timed as --sync bitmap --bitmap-mode never (same copy work as '
          '--sync incremental, bitmap left dirty) for both qbak and QEMU')
    print('# QEMU = its job seconds; qbak = whole-process wall; cp = whole-process wall; '
          'RSS = peak (QEMU: max of wrapper and qemu-storage-daemon)')
    hdr = ('workload', 'tool', 'median s', 'min s', 'max s', 'qbak/QEMU', 'qbak/cp', 'qbak/base',
           'peak RSS MiB')
    rows = []
    summary = {}
    for w in wl:
        res = all_res[w['name']]
        qb = med(res['qbak']['secs'])
        qe = med(res['QEMU']['secs'])
        cpm = med(res['cp']['secs']) if 'cp' in res else None
        summary[w['name']] = dict(qbak=qb, qemu=qe, cp=cpm,
                                  rss=max(res['qbak']['rss']) / 1024 if res['qbak']['rss'] else None)
        for tool, d in res.items():
            s = d['secs']
            rows.append((w['name'], tool, fmt(med(s)), fmt(min(s)), fmt(max(s)),
                         fmt(qb / qe, '.2f') if tool == 'qbak' and qe else '',
                         fmt(qb / cpm, '.2f') if tool == 'qbak' and cpm and w['sync'] == 'full' else '',
                         fmt(qb / med(res['qbak-base']['secs']), '.2f')
                         if tool == 'qbak' and 'qbak-base' in res else '',
                         fmt(max(d['rss']) / 1024, '.1f') if d['rss'] else '-'))
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: '| ' + ' | '.join(str(c).ljust(widths[i]) for i, c in enumerate(r)) + ' |'
    print(line(hdr))
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print(line(r))

    # qbak's own reported seconds (informational)
    print()
    print('qbak self-reported "seconds" (median): ' + ', '.join(
        f'{n} {fmt(med([e["reported"] for e in all_res[n]["qbak"]["extra"] if e.get("reported") is not None]))}'
        for n in all_res))

    checks = []
    fw, iw, sw, bw = f'full-{fullname}', f'incr-{fullname}', f'incr-{smallname}', f'incr-{bigname}'
    S = summary
    if fw in S:
        checks.append((f'{fw}: qbak <= 0.5 x QEMU', S[fw]['qbak'] / S[fw]['qemu'], 0.5))
        checks.append((f'{fw}: qbak <= 1.3 x cp', S[fw]['qbak'] / S[fw]['cp'], 1.3))
    if iw in S:
        checks.append((f'{iw}: qbak <= 0.5 x QEMU', S[iw]['qbak'] / S[iw]['qemu'], 0.5))
    if bw in S:
        checks.append((f'{bw}: qbak < 0.1 s', S[bw]['qbak'], 0.1))
        if sw in S:
            checks.append((f'{bw}: qbak <= 1.5 x qbak {sw}', S[bw]['qbak'] / S[sw]['qbak'], 1.5))
    info = []
    for n, res in all_res.items():
        if 'cp+fsync' in res:
            cf = med(res['cp+fsync']['secs'])
            info.append(f'{n}: qbak / (cp+fsync) = {S[n]["qbak"] / cf:.2f} (qbak fsyncs its target; cp does not)')
        if 'durable' in res:
            dc = med(res['durable']['secs'])
            info.append(f'{n}: qbak / durable copy = {S[n]["qbak"] / dc:.2f} (copy_file_range + write-back + fsync: '
                        f'the plain-copy limit once the copy must be on disk)')
    rssmax = max((v['rss'] for v in S.values() if v['rss'] is not None), default=None)
    if rssmax is not None:
        checks.append(('all: qbak peak RSS < 64 MiB', rssmax, 64))
    print()
    print('Targets' + (' (indicative only in --quick mode)' if a.quick else '') + ':')
    nfail = 0
    for name, val, lim in checks:
        ok = val < lim if ('<' in name and '<=' not in name) else val <= lim
        nfail += not ok
        print(f'  {"PASS" if ok else "FAIL"}  {name}: {val:.3f} (limit {lim})')

    for i in info:
        print(f'  info  {i}')

    if a.json_out:
        json.dump(dict(date=time.strftime('%Y-%m-%dT%H:%M:%S%z'), quick=a.quick, runs=runs, git=git,
                       uncommitted=bool(dirty), cpus=os.cpu_count(), model=model, results=all_res,
                       summary=summary, checks=[dict(name=n, value=v, limit=l) for n, v, l in checks]),
                  open(a.json_out, 'w'), indent=1)
    if not own_wd and not a.workdir:
        log(f'kept {wd}')
    return 1 if nfail else 0


if __name__ == '__main__':
    sys.exit(main())
