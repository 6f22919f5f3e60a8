#!/usr/bin/env python3
"""Build qbak's corrupted-image corpus.

  make-corrupt-corpus.py OUTDIR [--check-qemu] [--list]

Each case starts from a valid image that QEMU's own tools make (qemu-img
create, qemu-img bitmap --add, qemu-io write), then patches a few bytes at
offsets found by parsing that image: header fields, the header extensions
(walked from header_length), the bitmap directory (from the bitmaps extension),
bitmap tables, L1 and L2 tables.  No offset depends on QEMU's allocation
layout.  Each case breaks one rule QEMU checks when it opens an image
(qcow2_do_open, qcow2_read_extensions, check_dir_entry, load_bitmap_data).

OUTDIR gets one image per case and cases.tsv, one row per case, tab-separated:

  case  image  command  regex  qemu

  command  the qbak command that must refuse the image with exit code 3:
           info, map, bitmap-list, bitmap-dump:NAME; "none" for a case that
           is not an error for qbak's read-only commands (the corrupt bit:
           `qbak info --json` must show it).
  regex    extended regex, case-insensitive, that qbak's one-line message
           must match (loose: it names the problem, not the wording).
  qemu     what QEMU 7.2 (Debian 12) makes of the image, the oracle:
             info   `qemu-img info -f qcow2 --backing-chain` fails
             map    `qemu-img map -f qcow2` fails (info succeeds)
             check  only `qemu-img check -f qcow2` finds it (exit 2)
             none   QEMU tolerates it (see the case's comment)

--check-qemu runs those QEMU oracles on the freshly made corpus and fails if
QEMU disagrees with the qemu column, printing QEMU's message for every case.
--list prints the case names and exits.  Needs qemu-img and qemu-io (Debian
package qemu-utils); python3 standard library only.
"""
import os
import shutil
import struct
import subprocess
import sys

MIB = 1 << 20
BITMAPS_EXT = 0x23852875
FEATURE_TABLE_EXT = 0x6803f857
OFFSET_MASK = 0x00fffffffffffe00
COPIED = 1 << 63
COMPRESSED = 1 << 62


# ---- running QEMU's tools ------------------------------------------------

def run(*cmd):
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode:
        sys.exit(f'make-corrupt-corpus: {" ".join(cmd)} failed: '
                 f'{r.stderr.strip()[:500]}')


def run_luks_create(*cmd):
    """qemu-img create of a LUKS image, retried: QEMU times a short PBKDF2
    run to choose its iteration count and gives up with "Unable to get
    accurate CPU usage" when the scheduler has not yet accounted any CPU
    time to that run. That is a property of the moment, not of the image,
    so a few more attempts make the template reliable."""
    for attempt in range(10):
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode == 0:
            return
        if 'accurate CPU usage' not in r.stderr:
            break
    sys.exit(f'make-corrupt-corpus: {" ".join(cmd)} failed: '
             f'{r.stderr.strip()[:500]}')


def rm_f(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def need_tools():
    for tool in ('qemu-img', 'qemu-io'):
        if shutil.which(tool) is None:
            sys.exit(f'make-corrupt-corpus: {tool} not found: install the '
                     f'Debian package qemu-utils (QEMU\'s tools are the oracle '
                     f'and build the base images)')


# ---- parsing and patching ------------------------------------------------

def rd(path, off, fmt):
    with open(path, 'rb') as f:
        f.seek(off)
        data = f.read(struct.calcsize(fmt))
    if len(data) != struct.calcsize(fmt):
        sys.exit(f'make-corrupt-corpus: {path}: short read at {off:#x}')
    v = struct.unpack(fmt, data)
    return v[0] if len(v) == 1 else v


def wr(path, off, fmt, *vals):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, *vals))


def file_size(path):
    return os.path.getsize(path)


class Header:
    """The qcow2 header fields, with the offset of each (qcow2-bitmaps.md 1.1)."""
    FIELDS = [  # name, offset, format
        ('magic', 0, '>I'), ('version', 4, '>I'),
        ('backing_file_offset', 8, '>Q'), ('backing_file_size', 16, '>I'),
        ('cluster_bits', 20, '>I'), ('size', 24, '>Q'),
        ('crypt_method', 32, '>I'), ('l1_size', 36, '>I'),
        ('l1_table_offset', 40, '>Q'), ('refcount_table_offset', 48, '>Q'),
        ('refcount_table_clusters', 56, '>I'), ('nb_snapshots', 60, '>I'),
        ('snapshots_offset', 64, '>Q'),
        ('incompatible_features', 72, '>Q'), ('compatible_features', 80, '>Q'),
        ('autoclear_features', 88, '>Q'), ('refcount_order', 96, '>I'),
        ('header_length', 100, '>I'), ('compression_type', 104, '>B'),
    ]

    def __init__(self, path):
        self.path = path
        for name, off, fmt in self.FIELDS:
            setattr(self, name, rd(path, off, fmt))
        assert self.magic == 0x514649fb and self.version == 3, path
        self.cluster_size = 1 << self.cluster_bits

    def set(self, name, value):
        for n, off, fmt in self.FIELDS:
            if n == name:
                wr(self.path, off, fmt, value)
                setattr(self, name, value)
                return
        raise KeyError(name)

    def extensions(self):
        """[(type, offset of the 8-byte ext header, data length)], as QEMU walks
        them: from header_length to backing_file_offset or the cluster end."""
        off = self.header_length
        end = self.backing_file_offset or self.cluster_size
        exts = []
        while off + 8 <= end:
            typ, length = rd(self.path, off, '>II')
            if typ == 0:
                break
            exts.append((typ, off, length))
            off += 8 + ((length + 7) & ~7)
        return exts

    def extension(self, typ):
        for t, off, length in self.extensions():
            if t == typ:
                return off, length
        sys.exit(f'make-corrupt-corpus: {self.path}: no extension {typ:#x}')

    def beyond_eof(self, clusters=16):
        """A cluster-aligned offset well past the end of the file."""
        cs = self.cluster_size
        return (file_size(self.path) + cs - 1) // cs * cs + clusters * cs


class BitmapExt:
    """The bitmaps extension (1.4) and its directory entries (1.5)."""

    def __init__(self, hdr):
        self.hdr = hdr
        path = hdr.path
        ext_off, ext_len = hdr.extension(BITMAPS_EXT)
        assert ext_len == 24
        self.ext_off = ext_off          # of the 8-byte extension header
        self.data = ext_off + 8         # of nb_bitmaps
        (self.nb_bitmaps, self.reserved32, self.dir_size,
         self.dir_offset) = rd(path, self.data, '>IIQQ')
        self.entries = []
        off, end = self.dir_offset, self.dir_offset + self.dir_size
        while off < end:
            (tab_off, tab_size, flags, typ, gran, name_size,
             extra) = rd(path, off, '>QIIBBHI')
            with open(path, 'rb') as f:
                f.seek(off + 24 + extra)
                name = f.read(name_size).decode()
            self.entries.append(dict(
                off=off, table_offset=tab_off, table_size=tab_size,
                flags=flags, type=typ, granularity_bits=gran,
                name_size=name_size, extra_data_size=extra, name=name))
            off += (24 + extra + name_size + 7) & ~7
        assert off == end and len(self.entries) == self.nb_bitmaps

    def set_ext(self, field, value):
        off, fmt = {'nb_bitmaps': (0, '>I'), 'reserved32': (4, '>I'),
                    'dir_size': (8, '>Q'), 'dir_offset': (16, '>Q')}[field]
        wr(self.hdr.path, self.data + off, fmt, value)

    def entry(self, name):
        for e in self.entries:
            if e['name'] == name:
                return e
        raise KeyError(name)

    def set_entry(self, name, field, value):
        off, fmt = {'table_offset': (0, '>Q'), 'table_size': (8, '>I'),
                    'flags': (12, '>I'), 'type': (16, '>B'),
                    'granularity_bits': (17, '>B'), 'name_size': (18, '>H'),
                    'extra_data_size': (20, '>I')}[field]
        wr(self.hdr.path, self.entry(name)['off'] + off, fmt, value)

    def table_entry_offset(self, name, want_allocated):
        """File offset of the first bitmap table entry of NAME that is (or is
        not) allocated."""
        e = self.entry(name)
        for i in range(e['table_size']):
            off = e['table_offset'] + 8 * i
            if bool(rd(self.hdr.path, off, '>Q') & OFFSET_MASK) == want_allocated:
                return off
        sys.exit(f'make-corrupt-corpus: {self.hdr.path}: bitmap {name} has no '
                 f'{"allocated" if want_allocated else "unallocated"} table entry')


def l1_entry_offset(hdr, index=0):
    return hdr.l1_table_offset + 8 * index


def l2_entry_offset(hdr, guest_offset, want=None):
    """File offset of the L2 entry for GUEST_OFFSET (standard 64-bit L2)."""
    cs = hdr.cluster_size
    l2_entries = cs // 8
    cl = guest_offset // cs
    l1e = rd(hdr.path, l1_entry_offset(hdr, cl // l2_entries), '>Q')
    l2 = l1e & OFFSET_MASK
    assert l2, f'{hdr.path}: no L2 table for {guest_offset:#x}'
    off = l2 + 8 * (cl % l2_entries)
    e = rd(hdr.path, off, '>Q')
    if want == 'normal':
        assert not e & COMPRESSED and e & OFFSET_MASK, f'{hdr.path}: {e:#x}'
    if want == 'compressed':
        assert e & COMPRESSED, f'{hdr.path}: {e:#x}'
    return off


# ---- base images -----------------------------------------------------------

def make_templates(tdir):
    """Valid images made by QEMU's tools.  Every case copies one of these."""
    os.makedirs(tdir, exist_ok=True)
    t = {}

    def create(name, size='4M', opts='cluster_size=65536', extra=()):
        p = os.path.join(tdir, name)
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', opts, *extra, p, size)
        t[name[:-6]] = p
        return p

    def write(p, *cmds):
        args = []
        for c in cmds:
            args += ['-c', c]
        run('qemu-io', '-f', 'qcow2', *args, p)

    # plain: data in cluster 0, no bitmaps.
    p = create('plain.qcow2')
    write(p, 'write -P 0x11 0 64k')
    # bm1: bitmap b0, then a guest write (qemu-io dirties enabled persistent
    # bitmaps as a guest would), so b0's table has one allocated data cluster.
    p = create('bm1.qcow2')
    run('qemu-img', 'bitmap', '--add', p, 'b0')
    write(p, 'write -P 0x11 0 64k')
    # bm2: bitmaps b0 and b1.
    p = create('bm2.qcow2')
    run('qemu-img', 'bitmap', '--add', p, 'b0')
    run('qemu-img', 'bitmap', '--add', p, 'b1')
    write(p, 'write -P 0x11 0 64k')
    # small: 512-byte clusters, granularity 512: 4 MiB needs 1 KiB of bitmap,
    # so b0's table has exactly 2 entries.
    p = create('small.qcow2', opts='cluster_size=512')
    run('qemu-img', 'bitmap', '--add', '-g', '512', p, 'b0')
    write(p, 'write -P 0x11 0 64k')
    # longname: one bitmap with a 1023-byte name (QEMU's maximum).
    p = create('longname.qcow2')
    run('qemu-img', 'bitmap', '--add', p, 'n' * 1023)
    # compressed: a compressed cluster at 128k besides a normal one at 0.
    p = create('compressed.qcow2')
    write(p, 'write -P 0x11 0 64k', 'write -c -P 0x22 128k 64k')
    # base + overlay (backing file name relative, with backing format ext).
    create('base.qcow2')
    p = os.path.join(tdir, 'overlay.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2',
        '-F', 'qcow2', p)
    t['overlay'] = p
    # luks: a real LUKS-encrypted qcow2.
    p = os.path.join(tdir, 'luks.qcow2')
    run_luks_create('qemu-img', 'create', '-q', '-f', 'qcow2',
        '--object', 'secret,id=sec0,data=corpus-secret',
        '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10',
        p, '4M')
    t['luks'] = p
    return t


# ---- the cases ---------------------------------------------------------------
#
# Each case: (name, template, command, regex, qemu, mutate).  mutate(path)
# patches the copied image (or builds it).  The comment above each case quotes
# QEMU 7.2's message (from --check-qemu) or says why QEMU tolerates it.

CASES = []


def case(name, template, command, regex, qemu):
    def deco(fn):
        CASES.append(dict(name=name, template=template, command=command,
                          regex=regex, qemu=qemu, mutate=fn))
        return fn
    return deco


# --- header ---

# qemu-img -f qcow2: "qcow2 header too short".  NOTE: without -f, QEMU
# probes a file shorter than the header as raw, magic or not.
@case('truncated-header', 'plain', 'info', 'truncat|short|header|end of file', 'info')
def _(p):
    os.truncate(p, 64)


# "Image is not in qcow2 format".  NOTE: without -f, QEMU probes a file with
# a wrong magic as a raw image; so does qbak: the case names the format.
@case('bad-magic', 'plain', 'info-qcow2', 'magic|qcow2|format', 'info')
def _(p):
    wr(p, 0, '>4s', b'QFI\xfa')


# "Unsupported qcow2 version 4"
@case('version-4', 'plain', 'info', 'version', 'info')
def _(p):
    Header(p).set('version', 4)


# "Unsupported cluster size: 2^8"
@case('cluster-bits-8', 'plain', 'info', 'cluster', 'info')
def _(p):
    Header(p).set('cluster_bits', 8)


# "Unsupported cluster size: 2^22"
@case('cluster-bits-22', 'plain', 'info', 'cluster', 'info')
def _(p):
    Header(p).set('cluster_bits', 22)


# "qcow2 header too short"
@case('header-length-96', 'plain', 'info', 'header', 'info')
def _(p):
    Header(p).set('header_length', 96)


# "qcow2 header exceeds cluster size"
@case('header-length-past-cluster', 'plain', 'info', 'header', 'info')
def _(p):
    h = Header(p)
    h.set('header_length', h.cluster_size + 8)


# "Reference count entry width too large; may not exceed 64 bits"
@case('refcount-order-7', 'plain', 'info', 'refcount', 'info')
def _(p):
    Header(p).set('refcount_order', 7)


# "Image does not contain a reference count table"
@case('refcount-table-clusters-0', 'plain', 'info', 'refcount', 'info')
def _(p):
    Header(p).set('refcount_table_clusters', 0)


# "Reference count table offset invalid"
@case('refcount-table-unaligned', 'plain', 'info', 'refcount', 'info')
def _(p):
    h = Header(p)
    h.set('refcount_table_offset', h.refcount_table_offset + 512)


# QEMU reads the refcount table past EOF as zeroes and opens the image;
# `qemu-img check`: "ERROR: counting reference for region exceeding the end
# of the file by one cluster or more", "ERROR cluster 0 refcount=0 reference=1"
@case('refcount-table-past-eof', 'plain', 'info',
      'refcount|past|beyond|end of file', 'check')
def _(p):
    h = Header(p)
    h.set('refcount_table_offset', h.beyond_eof())


# "Active L1 table too large"
@case('l1-size-huge', 'plain', 'info', 'l1', 'info')
def _(p):
    Header(p).set('l1_size', 0x02000000)


# "L1 table is too small"
@case('l1-size-too-small', 'plain', 'info', 'l1', 'info')
def _(p):
    Header(p).set('l1_size', 0)


# "Active L1 table offset invalid"
@case('l1-offset-unaligned', 'plain', 'info', 'l1|align', 'info')
def _(p):
    h = Header(p)
    h.set('l1_table_offset', h.l1_table_offset + 512)


# QEMU reads the L1 table past EOF as zeroes (an empty disk); `qemu-img
# check`: "ERROR: counting reference for region exceeding the end of the
# file by one cluster or more" (plus the leaked L2 table and data cluster).
@case('l1-offset-past-eof', 'plain', 'map', 'l1|past|beyond|end of file', 'check')
def _(p):
    h = Header(p)
    h.set('l1_table_offset', h.beyond_eof())


# "Unsupported qcow2 feature(s): Unknown incompatible feature: 20"
@case('incompatible-bit-5', 'plain', 'info', 'incompatible|unsupported|feature', 'info')
def _(p):
    h = Header(p)
    h.set('incompatible_features', h.incompatible_features | 1 << 5)


# "Unsupported qcow2 feature(s): Unknown incompatible feature: 100000"
@case('incompatible-bit-20', 'plain', 'info', 'incompatible|unsupported|feature', 'info')
def _(p):
    h = Header(p)
    h.set('incompatible_features', h.incompatible_features | 1 << 20)


# The corrupt bit: qemu-img info shows "corrupt: true" and succeeds; so must
# qbak info (the refusal belongs to qbak's writing commands).
@case('corrupt-bit', 'plain', 'none', 'corrupt', 'none')
def _(p):
    h = Header(p)
    h.set('incompatible_features', h.incompatible_features | 1 << 1)


# "qcow2: Compression type incompatible feature bit must be set"
@case('compression-type-1-no-bit', 'plain', 'info', 'compression', 'info')
def _(p):
    Header(p).set('compression_type', 1)


# "qcow2: unknown compression type: 2"
@case('compression-type-2', 'plain', 'info', 'compression', 'info')
def _(p):
    h = Header(p)
    h.set('compression_type', 2)
    h.set('incompatible_features', h.incompatible_features | 1 << 3)


# qemu-img info opens AES images for metadata without a key; reading needs
# one: qemu-img map: "Parameter 'encrypt.key-secret' is required for cipher"
@case('encryption-aes', 'plain', 'info', 'encrypt', 'map')
def _(p):
    Header(p).set('crypt_method', 1)


# A real LUKS image (qemu-img create -o encrypt.format=luks); qemu-img info
# shows "encrypted: yes" without the key; qemu-img map: "Parameter
# 'encrypt.key-secret' is required for cipher"
@case('encryption-luks', 'luks', 'info', 'encrypt|luks', 'map')
def _(p):
    assert Header(p).crypt_method == 2


# "Unsupported subcluster size: 16" (512-byte clusters / 32 subclusters)
@case('extended-l2-small-clusters', 'small', 'info', 'extended|subcluster|cluster', 'info')
def _(p):
    h = Header(p)
    h.set('incompatible_features', h.incompatible_features | 1 << 4)


# The external data file bit without the data file name extension.  qemu-img
# info opens it (no I/O); qemu-img map: "'data-file' is required for this
# image"
@case('data-file-bit-without-name', 'plain', 'info', 'data.file|external', 'map')
def _(p):
    h = Header(p)
    h.set('incompatible_features', h.incompatible_features | 1 << 2)


# "Header extension too large"
@case('extension-past-cluster-end', 'plain', 'info', 'extension', 'info')
def _(p):
    h = Header(p)
    off, _length = h.extension(FEATURE_TABLE_EXT)
    wr(p, off + 4, '>I', h.cluster_size)


# --- backing chain ---

# "Invalid backing file offset"
@case('backing-offset-past-cluster', 'overlay', 'info', 'backing', 'info')
def _(p):
    h = Header(p)
    h.set('backing_file_offset', h.cluster_size + 512)


# "Backing file name too long"
@case('backing-name-size-1024', 'overlay', 'info', 'backing', 'info')
def _(p):
    Header(p).set('backing_file_size', 1024)


# "Could not open '.../missing-base.qcow2': No such file or directory"
@case('backing-missing', None, 'info', 'backing|no such file|not found|missing', 'info')
def _(p):
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-u',
        '-b', 'missing-base.qcow2', '-F', 'qcow2', p, '4M')


# qemu-img info --backing-chain: "Backing file '.../backing-loop.qcow2'
# creates an infinite loop." (qemu-img map never returns: hence the oracle's
# timeout.)  a -> b -> a, made with `qemu-img rebase -u`.
@case('backing-loop', None, 'info', 'loop|cycle|circular|chain', 'info')
def _(p):
    d, a = os.path.split(p)
    b = os.path.join(d, 'backing-loop-b.qcow2')
    rm_f(b)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', b, '4M')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b',
        'backing-loop-b.qcow2', '-F', 'qcow2', p)
    run('qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', a, '-F', 'qcow2', b)


# "Backing file '.../backing-self-loop.qcow2' creates an infinite loop."
@case('backing-self-loop', None, 'info', 'loop|cycle|circular|chain', 'info')
def _(p):
    a = os.path.basename(p)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p, '4M')
    run('qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', a, '-F', 'qcow2', p)


# --- bitmaps extension ---

# "bitmaps_ext: Invalid extension length"
@case('bitmap-ext-length-25', 'bm1', 'info', 'extension|bitmap|length', 'info')
def _(p):
    off, _ = Header(p).extension(BITMAPS_EXT)
    wr(p, off + 4, '>I', 25)


# "bitmaps_ext: Invalid extension length"
@case('bitmap-ext-length-23', 'bm1', 'info', 'extension|bitmap|length', 'info')
def _(p):
    off, _ = Header(p).extension(BITMAPS_EXT)
    wr(p, off + 4, '>I', 23)


# "found bitmaps extension with zero bitmaps"
@case('bitmap-nb-bitmaps-0', 'bm1', 'info', 'bitmap', 'info')
def _(p):
    BitmapExt(Header(p)).set_ext('nb_bitmaps', 0)


# "Less bitmaps found than specified in header extension"
@case('bitmap-nb-bitmaps-too-many', 'bm1', 'info', 'bitmap|directory', 'info')
def _(p):
    BitmapExt(Header(p)).set_ext('nb_bitmaps', 2)


# "bitmaps_ext: Reserved field is not zero"
@case('bitmap-ext-reserved32', 'bm1', 'info', 'reserved', 'info')
def _(p):
    BitmapExt(Header(p)).set_ext('reserved32', 1)


# "Broken bitmap directory".  QEMU writes the directory last, so the file
# ends with it: one zero cluster is appended so that the directory still lies
# inside the file and only its size is wrong.
@case('bitmap-dir-size-plus-8', 'bm1', 'info', 'directory', 'info')
def _(p):
    h = Header(p)
    bx = BitmapExt(h)
    bx.set_ext('dir_size', bx.dir_size + 8)
    os.truncate(p, file_size(p) + h.cluster_size)


# "Broken bitmap directory"
@case('bitmap-dir-size-minus-8', 'bm1', 'info', 'directory', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    bx.set_ext('dir_size', bx.dir_size - 8)


# "bitmaps_ext: invalid bitmap directory offset"
@case('bitmap-dir-offset-unaligned', 'bm1', 'info', 'directory|align', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    bx.set_ext('dir_offset', bx.dir_offset + 512)


# QEMU reads the directory past EOF as zeroes, then: "Bitmap '' doesn't
# satisfy the constraints"
@case('bitmap-dir-offset-past-eof', 'bm1', 'info',
      'directory|past|beyond|end of file', 'info')
def _(p):
    h = Header(p)
    BitmapExt(h).set_ext('dir_offset', h.beyond_eof())


# --- bitmap directory entries ---

# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-granularity-8', 'bm1', 'info', 'granularity', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('b0', 'granularity_bits', 8)


# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-granularity-32', 'bm1', 'info', 'granularity', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('b0', 'granularity_bits', 32)


# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-reserved-flag-bit-3', 'bm1', 'info', 'flag|reserved', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    bx.set_entry('b0', 'flags', bx.entry('b0')['flags'] | 1 << 3)


# extra_data_compatible: the spec allows it, QEMU treats it as reserved:
# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-flag-extra-data-compatible', 'bm1', 'info',
      'flag|extra.data|compatible|reserved', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    bx.set_entry('b0', 'flags', bx.entry('b0')['flags'] | 1 << 2)


# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-type-2', 'bm1', 'info', 'type', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('b0', 'type', 2)


# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-type-0', 'bm1', 'info', 'type', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('b0', 'type', 0)


# A well-formed entry with 8 bytes of extra data before the name (directory
# size adjusted): "Bitmap extra data is not supported"
@case('bitmap-extra-data', 'bm1', 'info', 'extra.data', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    e = bx.entry('b0')
    assert bx.nb_bitmaps == 1
    name = e['name'].encode()
    entry = struct.pack('>QIIBBHI', e['table_offset'], e['table_size'],
                        e['flags'], e['type'], e['granularity_bits'],
                        len(name), 8) + bytes(8) + name
    entry += bytes(-len(entry) % 8)
    wr(p, e['off'], f'>{len(entry)}s', entry)
    bx.set_ext('dir_size', len(entry))


# name_size 0 with the directory size adjusted, so only the name is wrong.
# QEMU does not check it: it loads a bitmap named "" (qemu-img info shows
# "name: " and succeeds).
@case('bitmap-name-size-0', 'bm1', 'info', 'name', 'none')
def _(p):
    bx = BitmapExt(Header(p))
    e = bx.entry('b0')
    assert bx.nb_bitmaps == 1
    bx.set_entry('b0', 'name_size', 0)
    wr(p, e['off'] + 24, '>8s', bytes(8))
    bx.set_ext('dir_size', 24)


# 1023 -> 1024 bytes keeps the padded entry size (1048), so only the name
# size is wrong: "Bitmap 'nnn...' doesn't satisfy the constraints"
@case('bitmap-name-size-1024', 'longname', 'info', 'name', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('n' * 1023, 'name_size', 1024)


# "Bitmap already exists: b0"  (Through bitmap list.)
@case('bitmap-duplicate-name', 'bm2', 'bitmap-list', 'duplicate|already|twice|same name', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    e = bx.entry('b1')
    wr(p, e['off'] + 24 + e['extra_data_size'], '>2s', b'b0')


# --- bitmap tables ---

# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-table-size-0', 'bm1', 'info', 'table', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('b0', 'table_size', 0)


# One entry more than the 1 that 4 MiB at 64 KiB granularity needs:
# "Could not read bitmap 'b0' from image: Invalid argument" (the size check of
# load_bitmap_data)
@case('bitmap-table-size-mismatch', 'bm1', 'info', 'table|size', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    assert bx.entry('b0')['table_size'] == 1
    bx.set_entry('b0', 'table_size', 2)


# 512-byte clusters, granularity 512: 4 MiB needs 2 table entries; 1 covers
# only 2 MiB.  "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-table-too-small', 'small', 'info', 'table|size|small', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    assert bx.entry('b0')['table_size'] == 2
    bx.set_entry('b0', 'table_size', 1)


# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-table-offset-0', 'bm1', 'info', 'table', 'info')
def _(p):
    BitmapExt(Header(p)).set_entry('b0', 'table_offset', 0)


# "Bitmap 'b0' doesn't satisfy the constraints"
@case('bitmap-table-offset-unaligned', 'bm1', 'info', 'table|align', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    bx.set_entry('b0', 'table_offset', bx.entry('b0')['table_offset'] + 512)


# QEMU reads the table past EOF as zeroes (an empty bitmap) and opens the
# image; `qemu-img check`: "ERROR: counting reference for region exceeding
# the end of the file by one cluster or more".
@case('bitmap-table-offset-past-eof', 'bm1', 'info',
      'table|past|beyond|end of file', 'check')
def _(p):
    h = Header(p)
    BitmapExt(h).set_entry('b0', 'table_offset', h.beyond_eof())


# Reserved bit 1 of the allocated entry: "Could not read bitmap_table table
# from image for bitmap 'b0': Invalid argument" (check_table_entry)
@case('bitmap-table-entry-reserved', 'bm1', 'info', 'reserved|table|entry', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    off = bx.table_entry_offset('b0', want_allocated=True)
    wr(p, off, '>Q', rd(p, off, '>Q') | 1 << 1)


# Reserved bit 56 of the allocated entry: as above.  (Through bitmap dump.)
@case('bitmap-table-entry-reserved-high', 'bm1', 'bitmap-dump:b0', 'reserved|table|entry', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    off = bx.table_entry_offset('b0', want_allocated=True)
    wr(p, off, '>Q', rd(p, off, '>Q') | 1 << 56)


# The allocated entry moved by 512 bytes: "Could not read bitmap_table table
# from image for bitmap 'b0': Invalid argument" (check_table_entry)
@case('bitmap-table-entry-unaligned', 'bm1', 'info', 'align|table|entry', 'info')
def _(p):
    bx = BitmapExt(Header(p))
    off = bx.table_entry_offset('b0', want_allocated=True)
    wr(p, off, '>Q', rd(p, off, '>Q') + 512)


# QEMU reads the data cluster past EOF as zeroes (a clean bitmap) and opens
# the image; `qemu-img check`: "ERROR: counting reference for region
# exceeding the end of the file by one cluster or more".
@case('bitmap-table-entry-past-eof', 'bm1', 'info',
      'past|beyond|end of file|outside|table', 'check')
def _(p):
    h = Header(p)
    off = BitmapExt(h).table_entry_offset('b0', want_allocated=True)
    wr(p, off, '>Q', h.beyond_eof())


# --- L1/L2 tables and data clusters (found when mapping) ---

# "qcow2: Image is corrupt: L2 table offset 0x40200 unaligned (L1 index: 0)"
# (read-only, so QEMU does not set the corrupt bit)
@case('l2-offset-unaligned', 'plain', 'map', 'l2|align', 'map')
def _(p):
    h = Header(p)
    off = l1_entry_offset(h)
    wr(p, off, '>Q', rd(p, off, '>Q') + 512)


# qemu-img map reads the L2 table past EOF as zeroes (unallocated);
# `qemu-img check` reports the dangling L2 table.
@case('l2-offset-past-eof', 'plain', 'map', 'l2|past|beyond|end of file', 'check')
def _(p):
    h = Header(p)
    wr(p, l1_entry_offset(h), '>Q', COPIED | h.beyond_eof())


# L1 entry reserved bit 56.  qemu-img check: "ERROR: L1 entry with reserved
# bits set"; qemu-img map ignores it.
@case('l1-entry-reserved', 'plain', 'map', 'reserved|l1', 'check')
def _(p):
    h = Header(p)
    off = l1_entry_offset(h)
    wr(p, off, '>Q', rd(p, off, '>Q') | 1 << 56)


# "qcow2: Image is corrupt: Cluster allocation offset 0x50200 unaligned (L2
# offset: 0x40000, L2 index: 0)"
@case('data-offset-unaligned', 'plain', 'map', 'align|cluster', 'map')
def _(p):
    h = Header(p)
    off = l2_entry_offset(h, 0, want='normal')
    wr(p, off, '>Q', rd(p, off, '>Q') + 512)


# qemu-img map reports the offset without reading it; `qemu-img check`:
# "ERROR: counting reference for region exceeding the end of the file ...".
@case('data-offset-past-eof', 'plain', 'map', 'past|beyond|end of file|outside', 'check')
def _(p):
    h = Header(p)
    wr(p, l2_entry_offset(h, 0, want='normal'), '>Q', COPIED | h.beyond_eof())


# The compressed descriptor of the cluster at 128k: keep the sector count,
# move the byte offset past EOF.  qemu-img map does not read compressed
# data; `qemu-img check`: "ERROR: counting reference for region exceeding
# the end of the file ...".
@case('compressed-offset-past-eof', 'compressed', 'map',
      'compress|past|beyond|end of file|outside', 'check')
def _(p):
    h = Header(p)
    off = l2_entry_offset(h, 128 * 1024, want='compressed')
    e = rd(p, off, '>Q')
    x = 62 - (h.cluster_bits - 8)
    coffset = h.beyond_eof() + 1234
    wr(p, off, '>Q', (e & ~((1 << x) - 1)) | coffset)


# ---- main ---------------------------------------------------------------

QEMU_ORACLE = {
    'info': lambda p: ['qemu-img', 'info', '-f', 'qcow2', '--backing-chain', p],
    'map': lambda p: ['qemu-img', 'map', '-f', 'qcow2', '--output=json', p],
    'check': lambda p: ['qemu-img', 'check', '-f', 'qcow2', p],
}


def check_qemu(outdir):
    """Run each case's QEMU oracles in order (info, map, check), stopping at
    the first that fails; return the number of cases where QEMU disagrees."""
    bad = 0
    for c in CASES:
        img = os.path.join(outdir, c['name'] + '.qcow2')
        seen, msg = 'none', ''
        for kind, cmd in QEMU_ORACLE.items():
            try:
                r = subprocess.run(cmd(img), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, timeout=60)
                out = r.stderr.strip() or r.stdout.strip()
                failed = r.returncode == 2 if kind == 'check' else r.returncode != 0
            except subprocess.TimeoutExpired:
                out, failed = 'timed out', True
            msg = out.replace('\n', ' | ')[:300]
            if failed:
                seen = kind
                break
        ok = seen == c['qemu']
        bad += not ok
        print(f'{"ok  " if ok else "FAIL"} {c["name"]:38} expect={c["qemu"]:5} '
              f'qemu={seen:5} {msg}')
    return bad


def main(argv):
    args = [a for a in argv if not a.startswith('--')]
    opts = [a for a in argv if a.startswith('--')]
    if '--list' in opts:
        for c in CASES:
            print(c['name'])
        return 0
    if len(args) != 1 or set(opts) - {'--check-qemu'}:
        sys.exit('usage: make-corrupt-corpus.py OUTDIR [--check-qemu] [--list]')
    need_tools()
    outdir = args[0]
    os.makedirs(outdir, exist_ok=True)
    tdir = os.path.join(outdir, 'templates')
    shutil.rmtree(tdir, ignore_errors=True)
    templates = make_templates(tdir)
    rows = ['# case\timage\tcommand\tregex\tqemu']
    names = set()
    for c in CASES:
        assert c['name'] not in names, c['name']
        names.add(c['name'])
        img = os.path.join(outdir, c['name'] + '.qcow2')
        rm_f(img)   # a rerun into the same directory starts afresh
        if c['template']:
            shutil.copyfile(templates[c['template']], img)
        c['mutate'](img)
        rows.append('\t'.join((c['name'], os.path.basename(img), c['command'],
                               c['regex'], c['qemu'])))
    # The overlay cases keep their backing file, so the only fault in them is
    # the one the case makes.
    shutil.copyfile(templates['base'], os.path.join(outdir, 'base.qcow2'))
    shutil.rmtree(tdir)
    with open(os.path.join(outdir, 'cases.tsv'), 'w') as f:
        f.write('\n'.join(rows) + '\n')
    if '--check-qemu' in opts and check_qemu(outdir):
        sys.exit('make-corrupt-corpus: QEMU disagrees with the corpus (see FAIL lines)')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
