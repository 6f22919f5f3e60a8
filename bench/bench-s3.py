#!/usr/bin/env python3
"""bench-s3.py: the anchors qbak's S3 repositories will be measured against,
on the test gateway (tests/s3/rgw.sh: one Ceph RADOS Gateway with a memstore
OSD on 127.0.0.1, so the network and the disks are out of the picture and
what is left is the gateway's and the clients' cost).

  s3cmd-put-2G    `s3cmd put` of a 2 GiB file of incompressible data
                  (multipart, 15 MiB parts, s3cmd's default)
  s3cmd-get-2G    `s3cmd get` of it back
  curl-put-2G     one signed `curl --aws-sigv4` PUT of the file (unsigned
  curl-get-2G     payload), and one GET: what a libcurl client costs
                  without s3cmd's Python and checksums
  restic-backup   `restic -r s3:... backup` of an 8 GiB sparse disk image
                  whose 2 GiB of data are the random file above (qcow2 by
                  default, or raw: nothing for restic to deduplicate), into
                  a new restic repository in a new bucket each round
  qbak-backup     `qbak backup` of the same disk into a new repository at
                  s3://BUCKET/qbak (a full: 2 GiB of data uploaded, the
                  manifest, the record), in the same bucket as the round's
                  other uploads; the repository's bitmap it adds to the
                  disk is removed again after each round (untimed)
  qbak-restore    `qbak restore --disk vda` of that point (made once before
                  the rounds, in the bucket the GETs read) into a new
                  qcow2 file, durable when qbak exits: 2 GiB of data read

Every round starts from an empty bucket (made and removed untimed), runs
each tool once in rotating order and calls sync(2) before each run; what a
tool uploaded is deleted right after it (untimed), so that the memstore
OSD holds at most one run's objects besides the seed.  Throughputs are the
2 GiB of data over the median wall time; the ratios compare medians of
the same round set (qbak backup against s3cmd put and restic backup,
qbak restore against s3cmd get).  The
files read are read once beforehand (warm cache).  Medians, minimums and
peak RSS of the client (GNU time) are printed, and the gateway's and the
OSD's peak RSS (VmHWM) at the end.  Needs s3cmd, restic, qemu-img, qemu-io
and the Ceph packages rgw.sh needs.

  bench/bench-s3.py [--runs N] [--workdir DIR] [--format raw|qcow2]
                    [--rgw-dir DIR] [--qbak PATH] [--quick] [--only NAME,...]
                    [--stop]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RGW_SH = os.path.join(REPO, 'tests', 's3', 'rgw.sh')
GiB, MiB = 1 << 30, 1 << 20


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, env=None, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode and check:
        sys.exit(f'bench-s3: {" ".join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-600:]}')
    return r.stdout


def timed(cmd, env=None):
    """(wall seconds, peak RSS KiB) of CMD, whole process, GNU time."""
    with tempfile.NamedTemporaryFile('r', suffix='.time') as tf:
        os.sync()
        full = ['/usr/bin/time', '-f', '%M', '-o', tf.name] + cmd
        t0 = time.monotonic()
        r = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wall = time.monotonic() - t0
        if r.returncode:
            sys.exit(f'bench-s3: {" ".join(cmd)} failed: {r.stderr.strip()[-600:]}')
        rss = open(tf.name).read().split()
    return wall, int(rss[-1]) if rss and rss[-1].isdigit() else None


def warm(path):
    subprocess.run(['cat', path], stdout=subprocess.DEVNULL, check=True)


def daemon_peak_rss(rgw_dir):
    """Peak RSS in MiB of each daemon of the gateway, from /proc."""
    out = {}
    for name in ('client.rgw.qbak', 'osd.0', 'mon.a'):
        try:
            pid = open(os.path.join(rgw_dir, 'run', f'{name}.pid')).read().strip()
            for line in open(f'/proc/{pid}/status'):
                if line.startswith('VmHWM:'):
                    out[name] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


def load_env(rgw_dir):
    """The gateway's endpoint and keys, from the env file rgw.sh wrote."""
    env = dict(os.environ)
    line = open(os.path.join(rgw_dir, 'env')).read().split()
    for word in line:
        if '=' in word:
            k, v = word.split('=', 1)
            env[k] = v
    return env


def rounds(tools, runs, before=None, after=None):
    res = {n: dict(secs=[], rss=[]) for n, _ in tools}
    for r in range(runs):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        if before:
            before(r)
        for name, fn in order:
            got = fn()
            if got is None:
                continue
            s, rss = got
            res[name]['secs'].append(s)
            if rss:
                res[name]['rss'].append(rss)
        if after:
            after(r)
        log(f'  round {r + 1}/{runs}: ' + ', '.join(
            f'{n} {res[n]["secs"][-1]:.2f}s' for n, _ in tools if res[n]['secs']))
    return res


def copy_qbak(qbak, wd):
    """A copy of the qbak binary and the libqbak it loads, in WD, so that a
    rebuild during the run cannot change what is timed."""
    d = os.path.join(wd, 'qbak-bin')
    os.makedirs(d, exist_ok=True)
    src = os.path.dirname(os.path.abspath(qbak))
    shutil.copy2(qbak, os.path.join(d, 'qbak'))
    for n in os.listdir(src):
        if n.startswith('libqbak.so'):
            p = os.path.join(src, n)
            if os.path.islink(p):
                t = os.path.join(d, n)
                if os.path.lexists(t):
                    os.unlink(t)
                os.symlink(os.readlink(p), t)
            else:
                shutil.copy2(p, os.path.join(d, n))
    return os.path.join(d, 'qbak')


def drop_repo_bitmaps(disk):
    """Remove the bitmaps (qbak-*) a repository's backup added to DISK, so
    every round backs up the same image."""
    info = subprocess.run(['qemu-img', 'info', '-U', '--output=json', disk],
                          stdout=subprocess.PIPE, text=True, check=True).stdout
    bitmaps = json.loads(info).get('format-specific', {}).get('data', {}).get('bitmaps', [])
    for b in bitmaps:
        if b['name'].startswith('qbak-'):
            run(['qemu-img', 'bitmap', '--remove', disk, b['name']])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--workdir', help='default: a new directory in /var/tmp, removed at the end')
    ap.add_argument('--rgw-dir', default='/var/tmp/qbak-bench-s3-rgw',
                    help='the gateway (started there unless one from it answers)')
    ap.add_argument('--format', choices=('qcow2', 'raw'), default='qcow2')
    ap.add_argument('--qbak', default=os.path.join(REPO, 'build', 'qbak'))
    ap.add_argument('--quick', action='store_true', help='1 GiB disk with 256 MiB of data, 256 MiB file')
    ap.add_argument('--only', help='comma-separated: put,get,curl,restic,qbak')
    ap.add_argument('--stop', action='store_true', help='stop the gateway at the end')
    a = ap.parse_args()
    only = set(a.only.split(',')) if a.only else {'put', 'get', 'curl', 'restic', 'qbak'}
    size, fill = (GiB, 256 * MiB) if a.quick else (8 * GiB, 2 * GiB)
    fsize = fill

    # The OSD keeps every object in memory: room for the file, a restic
    # repository and what the gateway's garbage collector has not freed.
    genv = dict(os.environ)
    genv.setdefault('RGW_MEMSTORE_MIB', str(max(4096, 8 * fill // MiB)))
    subprocess.run([RGW_SH, 'start', a.rgw_dir], env=genv, check=True, stdout=sys.stderr)
    env = load_env(a.rgw_dir)
    env.setdefault('RESTIC_PASSWORD', 'bench')
    endpoint = env['AWS_ENDPOINT_URL']
    s3cfg = os.path.join(a.rgw_dir, 's3cfg')
    s3cmd = ['s3cmd', '-c', s3cfg, '--no-progress']

    keep = a.workdir is not None
    wd = a.workdir or tempfile.mkdtemp(prefix='qbak-bench-s3-', dir='/var/tmp')
    os.makedirs(wd, exist_ok=True)
    big = os.path.join(wd, f'file-{fsize >> 20}M')
    if not os.path.exists(big):
        log(f'making a {fsize >> 20} MiB file of random data ...')
        with open(big + '.tmp', 'wb') as f:
            for _ in range(fsize // MiB):
                f.write(os.urandom(MiB))
        os.rename(big + '.tmp', big)
    disk = os.path.join(wd, f'disk-{size >> 30}G-{fill >> 20}M-unique.{a.format}')
    if not os.path.exists(disk):
        # The data is the random file itself, so every tool moves the same
        # bytes and none of them finds anything to deduplicate (a disk
        # written from a repeated pattern, as tests/tools/mkimage makes,
        # would let restic upload one copy of the pattern).
        log(f'making a {size >> 30} GiB {a.format} disk with {fill >> 20} MiB of data ...')
        raw = os.path.join(wd, 'mk.raw')
        run(['cp', '--sparse=always', big, raw])
        os.truncate(raw, size)
        if a.format == 'raw':
            os.rename(raw, disk)
        else:
            q = os.path.join(wd, 'mk.qcow2')
            run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, q])
            run(['qemu-img', 'bitmap', '--add', q, 'b0'])
            os.unlink(raw)
            os.rename(q, disk)
    back = os.path.join(wd, 'back')
    restored = os.path.join(wd, 'restored.qcow2')
    qbak = copy_qbak(a.qbak, wd) if 'qbak' in only else None
    bucket = f'qbak-bench-{os.getpid()}'

    def new_bucket(r):
        run(s3cmd + ['mb', f's3://{bucket}-{r}'], env=env)

    def drop_bucket(r):
        run(s3cmd + ['rb', '--recursive', '--force', f's3://{bucket}-{r}'], env=env, check=False)
        if os.path.exists(back):
            os.unlink(back)

    cur = {'r': 0}

    def before(r):
        cur['r'] = r
        new_bucket(r)

    def delete(url):
        run(s3cmd + ['del', '--recursive', '--force', url], env=env, check=False)

    def t_put():
        url = f's3://{bucket}-{cur["r"]}/put'
        got = timed(s3cmd + ['put', big, url], env=env)
        delete(url)
        return got

    def t_get():
        if os.path.exists(back):
            os.unlink(back)
        return timed(s3cmd + ['get', '--force', f's3://{bucket}-seed/seed', back], env=env)

    def curl(*args):
        return ['curl', '-sS', '-f', '--aws-sigv4', f'aws:amz:{env["AWS_REGION"]}:s3',
                '-u', f'{env["AWS_ACCESS_KEY_ID"]}:{env["AWS_SECRET_ACCESS_KEY"]}',
                '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD'] + list(args)

    def t_curl_put():
        got = timed(curl('-T', big, f'{endpoint}/{bucket}-{cur["r"]}/curl-put'), env=env)
        delete(f's3://{bucket}-{cur["r"]}/curl-put')
        return got

    def t_curl_get():
        if os.path.exists(back):
            os.unlink(back)
        return timed(curl('-o', back, f'{endpoint}/{bucket}-seed/seed'), env=env)

    def t_restic():
        repo = f's3:{endpoint}/{bucket}-{cur["r"]}/restic'
        run(['restic', '-q', '-r', repo, 'init'], env=env)
        got = timed(['restic', '-q', '-r', repo, 'backup', disk], env=env)
        delete(f's3://{bucket}-{cur["r"]}/restic')
        return got

    def t_qbak_backup():
        url = f's3://{bucket}-{cur["r"]}/qbak'
        got = timed([qbak, 'backup', f'{disk}=vda', url], env=env)
        delete(url)
        drop_repo_bitmaps(disk)
        return got

    def t_qbak_restore():
        if os.path.exists(restored):
            os.unlink(restored)
        got = timed([qbak, 'restore', '--disk', 'vda', f's3://{bucket}-seed/qbak',
                     restored], env=env)
        os.unlink(restored)
        return got

    tools = []
    if 'put' in only:
        tools.append((f's3cmd put {fsize >> 20} MiB', t_put))
    if 'get' in only:
        tools.append((f's3cmd get {fsize >> 20} MiB', t_get))
    if 'curl' in only:
        tools += [(f'curl PUT {fsize >> 20} MiB', t_curl_put),
                  (f'curl GET {fsize >> 20} MiB', t_curl_get)]
    if 'restic' in only:
        tools.append((f'restic backup {size >> 30} GiB {a.format} ({fill >> 20} MiB data)', t_restic))
    if 'qbak' in only:
        tools += [(f'qbak backup {size >> 30} GiB {a.format} ({fill >> 20} MiB data)', t_qbak_backup),
                  (f'qbak restore {fill >> 20} MiB data', t_qbak_restore)]
    warm(big)
    warm(disk)
    try:
        if only & {'get', 'curl', 'qbak'}:
            run(s3cmd + ['mb', f's3://{bucket}-seed'], env=env)
        if only & {'get', 'curl'}:   # the object every GET reads, put once
            run(s3cmd + ['put', big, f's3://{bucket}-seed/seed'], env=env)
        if 'qbak' in only:           # the point every restore reads
            run([qbak, 'backup', f'{disk}=vda', f's3://{bucket}-seed/qbak'], env=env)
            drop_repo_bitmaps(disk)
        res = rounds(tools, a.runs, before=before, after=drop_bucket)
    finally:
        for r in range(a.runs):
            drop_bucket(r)
        drop_bucket('seed')
    print(f'\nS3 anchors on {endpoint} ({a.runs} rounds)')
    print('| tool | median s | min s | MB/s (median) | client peak RSS MiB |')
    print('|---|---|---|---|---|')
    for name, v in res.items():
        if not v['secs']:
            print(f'| {name} | not yet | | | |')
            continue
        med = statistics.median(v['secs'])
        nbytes = fill if ('restic' in name or 'qbak' in name) else fsize
        rss = max(v['rss']) / 1024 if v['rss'] else float('nan')
        print(f'| {name} | {med:.2f} | {min(v["secs"]):.2f} | {nbytes / med / 1e6:.0f} | {rss:.0f} |')
    med = {n: statistics.median(v['secs']) for n, v in res.items() if v['secs']}

    def ratio(label, fast, slow, goal):
        # throughput(FAST) / throughput(SLOW), same bytes: slow time / fast time
        f = next((n for n in med if n.startswith(fast)), None)
        s_ = next((n for n in med if n.startswith(slow)), None)
        if f and s_:
            print(f'| {label} | {med[s_] / med[f]:.2f} | {goal} |')
    if any(n.startswith('qbak') for n in med):
        print('\n| ratio of throughputs (medians) | value | goal |')
        print('|---|---|---|')
        ratio('qbak backup / s3cmd put', 'qbak backup', 's3cmd put', '>= 0.9')
        ratio('qbak backup / restic backup', 'qbak backup', 'restic backup', '> 1')
        ratio('qbak restore / s3cmd get', 'qbak restore', 's3cmd get', '>= 0.9')
        ratio('qbak backup / curl PUT', 'qbak backup', 'curl PUT', '-')
        ratio('qbak restore / curl GET', 'qbak restore', 'curl GET', '-')
        peak = max((max(v['rss']) for n, v in res.items() if n.startswith('qbak') and v['rss']),
                   default=None)
        if peak:
            print(f'qbak peak RSS: {peak / 1024:.0f} MiB (goal < 128 MiB)')
    peaks = daemon_peak_rss(a.rgw_dir)
    print('gateway peak RSS MiB: ' + ', '.join(f'{k} {v:.0f}' for k, v in peaks.items()))
    if a.stop:
        subprocess.run([RGW_SH, 'stop', a.rgw_dir], check=False, stdout=sys.stderr)
    if not keep:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == '__main__':
    main()
