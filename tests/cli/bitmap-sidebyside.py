#!/usr/bin/env python3
"""Random side-by-side test of qbak's bitmap writes against `qemu-img bitmap`.

  bitmap-sidebyside.py --seed S --steps N [--cluster-size BYTES]
                       [--size BYTES] [--max-bitmaps N] [--full-every N]
                       [--workdir DIR] [--qbak PATH] [--keep]

Two copies of one empty qcow2 image, A and B, get the same random sequence
of bitmap operations: qbak applies each one to A, `qemu-img bitmap` (the
oracle) to B.  Between operations, random guest writes (`qemu-io -c 'write
-P N'`, `write -z`, `discard`) go to both copies, which dirties the enabled
bitmaps exactly as a running guest would, so QEMU also reads, updates and
re-stores what qbak wrote.

The operations: add (random granularity 512 B..2 MiB or the default, enabled
or --disabled, odd and long names sometimes), remove, clear, enable, disable,
merge of 1..3 sources (a source may repeat or be the destination, as QEMU
allows).  The sequence only holds operations QEMU accepts, plus a few
deliberately invalid ones (add of an existing name, remove/clear/merge of a
missing one) that both tools must refuse (qbak with exit 2 or 3, qemu-img
with 1) without changing anything.

After every step:
  * format-specific.data.bitmaps of `qemu-img info --output=json -U` is
    identical for A and B (names, order, granularity, flags), and equal to
    the driver's own model (a mismatch there is a driver bug, reported as
    such);
  * the nbdinfo dump (`qemu-nbd -r --bitmap NAME`, `nbdinfo --json
    --map=qemu:dirty-bitmap:NAME`) of every bitmap the step touched (all of
    them after guest writes) is identical for A and B.
Every --full-every steps and at the end: every bitmap's dump, and `qemu-img
check --output=json` of both copies without corruptions or leaks.

Exit 0 when everything agreed; 1 with the first difference, the step, the
exact commands, and the steps so far (WORKDIR/steps.log), so the failure can
be replayed by hand.  --ignore-order is a diagnostic aid only.  qbak runs
behind $VG when set (e.g. "valgrind -q --error-exitcode=99").  Python 3
standard library only; needs qemu-img, qemu-io, qemu-nbd (qemu-utils) and
nbdinfo (libnbd-bin).
"""
import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
ORACLES = (('qemu-img', 'qemu-utils'), ('qemu-io', 'qemu-utils'),
           ('qemu-nbd', 'qemu-utils'), ('nbdinfo', 'libnbd-bin'))


class Mismatch(Exception):
    pass


def size_arg(s):
    s = s.strip().lower()
    mul = 1
    for suf, m in (('k', 1 << 10), ('m', 1 << 20), ('g', 1 << 30)):
        if s.endswith(suf):
            s, mul = s[:-1], m
            break
    return int(s) * mul


class Driver:
    def __init__(self, a):
        self.a = a
        self.rnd = random.Random(a.seed)
        self.dir = a.workdir
        self.A = os.path.join(self.dir, 'A.qcow2')
        self.B = os.path.join(self.dir, 'B.qcow2')
        self.model = []          # [[name, granularity, enabled]] in directory order
        self.removed = []        # names once used, now free again
        self.counter = 0
        self.nbd = 0              # qemu-nbd runs, for unique socket names
        self.step = 0
        self.log = open(os.path.join(self.dir, 'steps.log'), 'w')
        self.sockdir = tempfile.mkdtemp(prefix='qbak-sbs.', dir='/tmp')
        self.default_gran = min(max(a.cluster_size, 4096), 65536)

    # ---- running tools -------------------------------------------------

    def run(self, cmd, check=True):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise Mismatch(f'{show(cmd)}: exit {r.returncode}: '
                           f'{r.stderr.decode(errors="replace").strip()}')
        return r

    def qbak(self, *args):
        # $VG: an optional exec prefix for qbak (valgrind, ...)
        return [*shlex.split(os.environ.get('VG', '')), self.a.qbak, *args]

    def info_bitmaps(self, img):
        r = self.run(['qemu-img', 'info', '-U', '--output=json', img])
        info = json.loads(r.stdout)
        return info.get('format-specific', {}).get('data', {}).get('bitmaps')

    def dumps(self, img, names):
        """{name: nbdinfo --json --map of the bitmap} for names of img."""
        if not names:
            return {}
        self.nbd += 1
        sock = os.path.join(self.sockdir, f's{self.nbd}')
        pidf = os.path.join(self.sockdir, f'pid{self.nbd}')
        cmd = ['qemu-nbd', '-r', '-t', '-f', 'qcow2', '-k', sock,
               '--pid-file', pidf, '--fork']
        for n in names:
            cmd += ['-B', n]
        self.run(cmd + [img])
        pid = int(open(pidf).read())
        try:
            out = {}
            for n in names:
                r = self.run(['nbdinfo', '--json', f'--map=qemu:dirty-bitmap:{n}',
                              f'nbd+unix:///?socket={sock}'])
                out[n] = [(e['offset'], e['length'], e['type'])
                          for e in json.loads(r.stdout)]
            return out
        finally:
            stop(pid)

    def check_image(self, img, who):
        r = self.run(['qemu-img', 'check', '--output=json', img], check=False)
        try:
            c = json.loads(r.stdout)
        except ValueError:
            raise Mismatch(f'qemu-img check {who}: exit {r.returncode}: '
                           f'{r.stderr.decode(errors="replace").strip()}')
        if c.get('corruptions', 0) or c.get('leaks', 0) or r.returncode:
            raise Mismatch(f'qemu-img check {who} ({img}): exit {r.returncode}, '
                           f'corruptions {c.get("corruptions", 0)}, leaks '
                           f'{c.get("leaks", 0)}: {json.dumps(c)}')

    # ---- random choices ------------------------------------------------

    def names(self):
        return [b[0] for b in self.model]

    def new_name(self):
        free = [n for n in self.removed if n not in self.names()]
        x = self.rnd.random()
        if x < 0.1 and free:
            return self.rnd.choice(free)
        self.counter += 1
        k = self.counter
        if x < 0.2:
            return self.rnd.choice([f'with space {k}', f'\u00fcn\u00efc\u00f8de-{k}',
                                    f'dots.and_under={k}', f'{k}'])
        if x < 0.27:
            n = f'long{k}-'
            return n + 'x' * (self.rnd.randint(100, 1023) - len(n))
        return f'bm{k}'

    def granularity(self):
        if self.rnd.random() < 0.25:
            return None
        return 1 << self.rnd.randint(9, 21)

    def pick_op(self):
        n = len(self.model)
        if n == 0:
            return 'add'
        if self.rnd.random() < 0.04:
            return 'invalid'
        ops = ['add', 'remove', 'clear', 'enable', 'disable', 'merge']
        w = [25 if n < 3 else 12, 6 if n > 1 else 1, 12, 9, 9, 24]
        if n >= self.a.max_bitmaps:
            w[0] = 0
        return self.rnd.choices(ops, w)[0]

    def guest_cmds(self):
        size = self.a.size
        cmds = []
        for _ in range(self.rnd.randint(1, 4)):
            ln = self.rnd.choice([512, 4096, 65536, 3 * 65536 + 512,
                                  self.rnd.randint(1, 4096) * 512])
            ln = min(ln, size)
            off = self.rnd.randrange(0, (size - ln) // 512 + 1) * 512
            kind = self.rnd.choices(['w', 'z', 'd'], [6, 2, 2])[0]
            if kind == 'w':
                cmds.append(f'write -q -P {self.rnd.randint(1, 255)} {off} {ln}')
            elif kind == 'z':
                cmds.append(f'write -q -z {off} {ln}')
            else:
                cmds.append(f'discard -q {off} {ln}')
        return cmds

    # ---- one step ------------------------------------------------------

    def note(self, what):
        print(f'step {self.step}: {what}', file=self.log, flush=True)

    def both(self, qbak_cmd, qemu_cmd, expect_ok):
        """Run qbak on A and qemu-img on B; check the exit codes."""
        self.note(f'  qbak: {show(qbak_cmd)}\n  qemu: {show(qemu_cmd)}')
        ra = self.run(qbak_cmd, check=False)
        rb = self.run(qemu_cmd, check=False)
        ea = ra.stderr.decode(errors='replace').strip()
        eb = rb.stderr.decode(errors='replace').strip()
        if expect_ok:
            if rb.returncode != 0:
                raise Mismatch(f'driver bug: QEMU refused a valid operation: '
                               f'{show(qemu_cmd)}: exit {rb.returncode}: {eb}')
            if ra.returncode != 0:
                raise Mismatch(f'qbak failed where qemu-img succeeded: '
                               f'{show(qbak_cmd)}: exit {ra.returncode}: {ea}')
        else:
            if rb.returncode == 0:
                raise Mismatch(f'driver bug: QEMU accepted an invalid operation: '
                               f'{show(qemu_cmd)}')
            if ra.returncode not in (2, 3):
                raise Mismatch(f'qbak must refuse with exit 2 or 3 where qemu-img '
                               f'fails ({eb}): {show(qbak_cmd)}: exit '
                               f'{ra.returncode}: {ea}')
            lines = ea.splitlines()
            # exit 2 may add the usage text after the message (usage.bats)
            if ra.returncode == 2 and len(lines) > 1 and lines[1].startswith('Usage:'):
                lines = lines[:1]
            if len(lines) != 1 or not ea.startswith('qbak: '):
                raise Mismatch(f'qbak refusal is not one "qbak: " line: '
                               f'{show(qbak_cmd)}: {ea!r}')

    def do_step(self):
        """Apply one random operation; return the names to dump afterwards."""
        touched = set()
        if self.rnd.random() < 0.3 and self.model:
            cmds = self.guest_cmds()
            self.note(f'guest writes {cmds}')
            for img in (self.A, self.B):
                args = ['qemu-io', '-f', 'qcow2']
                for c in cmds:
                    args += ['-c', c]
                self.run(args + [img])
            touched.update(self.names())
        op = self.pick_op()
        A, B = self.A, self.B
        if op == 'add':
            name, g = self.new_name(), self.granularity()
            disabled = self.rnd.random() < 0.25
            self.note(f'add {name!r} granularity={g} disabled={disabled}')
            qa = ['bitmap', 'add']
            qb = ['qemu-img', 'bitmap', '--add']
            if g is not None:
                qa += ['--granularity', str(g)]
                qb += ['-g', str(g)]
            if disabled:
                qa += ['--disabled']
                qb += ['--disable']
            self.both(self.qbak(*qa, A, name), qb + [B, name], True)
            self.model.append([name, g or self.default_gran, not disabled])
            touched.add(name)
        elif op == 'remove':
            name = self.rnd.choice(self.names())
            self.note(f'remove {name!r}')
            self.both(self.qbak('bitmap', 'remove', A, name),
                      ['qemu-img', 'bitmap', '--remove', B, name], True)
            self.model = [b for b in self.model if b[0] != name]
            self.removed.append(name)
        elif op in ('clear', 'enable', 'disable'):
            name = self.rnd.choice(self.names())
            self.note(f'{op} {name!r}')
            self.both(self.qbak('bitmap', op, A, name),
                      ['qemu-img', 'bitmap', f'--{op}', B, name], True)
            for b in self.model:
                if b[0] == name and op != 'clear':
                    b[2] = op == 'enable'
            touched.add(name)
        elif op == 'merge':
            names = self.names()
            dest = self.rnd.choice(names)
            others = [n for n in names if n != dest] or [dest]
            srcs = []
            for _ in range(self.rnd.randint(1, 3)):
                # mostly distinct other bitmaps; sometimes a repeat or dest itself
                x = self.rnd.random()
                if x < 0.05:
                    srcs.append(dest)
                elif x < 0.1 and srcs:
                    srcs.append(srcs[0])
                else:
                    srcs.append(self.rnd.choice(others))
            self.note(f'merge {srcs!r} into {dest!r}')
            qb = ['qemu-img', 'bitmap']
            for s in srcs:
                qb += ['--merge', s]
            self.both(self.qbak('bitmap', 'merge', A, dest, *srcs), qb + [B, dest], True)
            touched.add(dest)
            touched.update(srcs)
        else:
            names = self.names()
            missing = 'missing-' + str(self.rnd.randint(0, 999))
            kind = self.rnd.choice(['dup-add', 'remove', 'clear', 'merge-src', 'merge-dest'])
            self.note(f'invalid: {kind}')
            if kind == 'dup-add':
                name = self.rnd.choice(names)
                self.both(self.qbak('bitmap', 'add', A, name),
                          ['qemu-img', 'bitmap', '--add', B, name], False)
            elif kind in ('remove', 'clear'):
                self.both(self.qbak('bitmap', kind, A, missing),
                          ['qemu-img', 'bitmap', f'--{kind}', B, missing], False)
            elif kind == 'merge-src':
                dest = self.rnd.choice(names)
                self.both(self.qbak('bitmap', 'merge', A, dest, missing),
                          ['qemu-img', 'bitmap', '--merge', missing, B, dest], False)
                touched.add(dest)
            else:
                src = self.rnd.choice(names)
                self.both(self.qbak('bitmap', 'merge', A, missing, src),
                          ['qemu-img', 'bitmap', '--merge', src, B, missing], False)
        return touched

    def compare(self, names, full):
        ia, ib = self.info_bitmaps(self.A), self.info_bitmaps(self.B)
        qemu_b = ib
        if self.a.ignore_order and ia and ib:
            ia, ib = sorted(ia, key=lambda b: b['name']), sorted(ib, key=lambda b: b['name'])
        if ia != ib:
            raise Mismatch('qemu-img info bitmaps differ:\n'
                           f'  A (qbak):     {json.dumps(ia)}\n'
                           f'  B (qemu-img): {json.dumps(ib)}')
        want = [{'flags': ['auto'] if en else [], 'name': n, 'granularity': g}
                for n, g, en in self.model]
        if (qemu_b or []) != want:
            raise Mismatch('driver bug: the model differs from QEMU\'s image B:\n'
                           f'  model: {json.dumps(want)}\n  B:     {json.dumps(qemu_b)}')
        if full:
            names = self.names()
        names = [n for n in self.names() if n in names]
        da, db = self.dumps(self.A, names), self.dumps(self.B, names)
        for n in names:
            if da[n] != db[n]:
                raise Mismatch(f'bitmap {n!r}: nbdinfo dumps differ\n'
                               f'  A (qbak):     {da[n][:20]}\n'
                               f'  B (qemu-img): {db[n][:20]}')
        if full:
            self.check_image(self.A, 'A (qbak)')
            self.check_image(self.B, 'B (qemu-img)')
        return len(names)

    def main(self):
        a = self.a
        self.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
                  f'cluster_size={a.cluster_size}', self.A, str(a.size)])
        shutil.copyfile(self.A, self.B)
        t0 = time.time()
        ndumps = 0
        for self.step in range(1, a.steps + 1):
            touched = self.do_step()
            full = self.step % a.full_every == 0 or self.step == a.steps
            ndumps += self.compare(touched, full)
        print(f'bitmap-sidebyside: seed {a.seed}, {a.steps} steps, cluster size '
              f'{a.cluster_size}: A (qbak) and B (qemu-img) agree; {len(self.model)} '
              f'bitmaps at the end, {ndumps} dump comparisons, '
              f'{time.time() - t0:.1f} s')


def show(cmd):
    def q(s):
        s = str(s)
        if len(s) > 60:
            s = s[:40] + f'...({len(s)} bytes)'
        return s if s and all(c.isalnum() or c in '-_./=:' for c in s) else repr(s)
    return ' '.join(q(c) for c in cmd)


def stop(pid):
    """Kill a forked qemu-nbd and wait until it is gone (and its lock with it)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(400):
        try:
            with open(f'/proc/{pid}/stat') as f:
                # a zombie (reparented to a pid 1 that does not reap) is gone
                # as far as locks go
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    return
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--steps', type=int, default=200)
    ap.add_argument('--cluster-size', type=size_arg, default=65536)
    ap.add_argument('--size', type=size_arg, default=32 * MIB)
    ap.add_argument('--max-bitmaps', type=int, default=20)
    ap.add_argument('--full-every', type=int, default=20)
    ap.add_argument('--workdir')
    ap.add_argument('--ignore-order', action='store_true',
                    help='diagnostic aid: compare the bitmap lists of A and B '
                    'sorted by name, to look past a directory order difference')
    ap.add_argument('--keep', action='store_true', help='keep WORKDIR (default if given)')
    ap.add_argument('--qbak', default=os.environ.get('QBAK', 'qbak'))
    a = ap.parse_args()
    for tool, pkg in ORACLES:
        if shutil.which(tool) is None:
            sys.exit(f'bitmap-sidebyside: missing test oracle {tool!r}: install '
                     f'the Debian package {pkg!r}')
    made = a.workdir is None
    if made:
        a.workdir = tempfile.mkdtemp(prefix='qbak-sbs-work.')
    os.makedirs(a.workdir, exist_ok=True)
    d = Driver(a)
    try:
        d.main()
    except Mismatch as e:
        d.log.flush()
        print(f'bitmap-sidebyside: seed {a.seed}, cluster size {a.cluster_size}, '
              f'step {d.step}: {e}\n  steps so far: {d.log.name}\n  images: '
              f'{d.A} {d.B}', file=sys.stderr)
        try:
            with open(d.log.name) as f:
                tail = f.read().splitlines()[-12:]
            print('  last steps:\n    ' + '\n    '.join(tail), file=sys.stderr)
        except OSError:
            pass
        made = False          # keep the evidence
        sys.exit(1)
    finally:
        shutil.rmtree(d.sockdir, ignore_errors=True)
        if made and not a.keep:
            shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
