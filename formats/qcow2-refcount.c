/* qcow2 refcounts and the cluster allocator.  The refcount table holds
 * the offsets of refcount blocks; each block holds one refcount of
 * refcount_bits bits per host cluster, big-endian.
 *
 * Order is what makes it crash safe (a crash leaves leaks at worst, never
 * a live cluster with refcount 0): a cluster's refcount is
 * raised and made durable (qcow2_refcount_flush) before anything points
 * to it, and lowered only after the commit that stopped pointing to it.
 * New refcount blocks are written before the table entry that references
 * them; a larger refcount table is written in full before the header
 * switches to it.  A crash at any instant therefore leaves at worst
 * clusters with a refcount that nothing references: leaks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/qcow2.h"
#include "formats/qcow2-refmap.h"

static unsigned
refcount_bits (struct qcow2 *s)
{
  return 1u << s->refcount_order;
}

static uint64_t
max_refcount (struct qcow2 *s)
{
  unsigned b = refcount_bits (s);
  return b == 64 ? UINT64_MAX : (1ULL << b) - 1;
}

static uint64_t
rb_get (struct qcow2 *s, const uint8_t *blk, uint64_t i)
{
  unsigned bits = refcount_bits (s);
  if (bits >= 8) {
    const uint8_t *p = blk + i * (bits / 8);
    uint64_t v = 0;
    for (unsigned k = 0; k < bits / 8; k++)
      v = (v << 8) | p[k];
    return v;
  }
  uint64_t bit = i * bits;
  return (blk[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

static void
rb_set (struct qcow2 *s, uint8_t *blk, uint64_t i, uint64_t v)
{
  unsigned bits = refcount_bits (s);
  if (bits >= 8) {
    uint8_t *p = blk + i * (bits / 8);
    for (int k = (int) (bits / 8) - 1; k >= 0; k--) {
      p[k] = (uint8_t) v;
      v >>= 8;
    }
    return;
  }
  uint64_t bit = i * bits;
  uint8_t mask = (uint8_t) (((1u << bits) - 1) << (bit % 8));
  blk[bit / 8] = (uint8_t) ((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
}

int
qcow2_refcount_init (struct qcow2 *s)
{
  const char *fn = s->base.filename;
  uint64_t bytes = (uint64_t) s->refcount_table_clusters * s->cluster_size;
  uint8_t *raw = malloc (bytes);
  s->refblock_entries = (uint32_t) ((uint64_t) s->cluster_size * 8 /
                                    refcount_bits (s));
  s->reftable_entries = bytes / 8;
  s->reftable = malloc (bytes);
  if (!raw || !s->reftable) {
    free (raw);
    set_nomem ();
    return -1;
  }
  if (qbak_file_pread (s->base.file, raw, bytes,
                       s->refcount_table_offset) < 0) {
    free (raw);
    return -1;
  }
  for (uint64_t i = 0; i < s->reftable_entries; i++) {
    uint64_t e = be64_at (raw + i * 8);
    if (e & REFT_RESERVED_MASK) {
      free (raw);
      set_invalid ("%s: refcount table entry %" PRIu64 " has reserved bits "
                   "set; run 'qemu-img check -r all'", fn, i);
      return -1;
    }
    if (e && qcow2_check_metadata_range (s, e, s->cluster_size,
                                         "refcount block") < 0) {
      free (raw);
      return -1;
    }
    s->reftable[i] = e;
  }
  free (raw);
  s->free_hint = 1;
  return 0;
}

int
qcow2_detect_metadata_prealloc (struct qcow2 *s, bool *out)
{
  *out = false;
  if (!s->reftable && qcow2_refcount_init (s) < 0)
    return -1;
  int64_t len = qbak_file_size (s->base.file);
  int64_t real = qbak_file_allocated (s->base.file);
  if (len < 0 || real < 0)
    return -1;
  uint64_t real_clusters = (uint64_t) real / s->cluster_size;
  uint64_t threshold = real_clusters * 10 / 9;
  if (threshold < real_clusters + 2)
    threshold = real_clusters + 2;
  uint64_t end = ((uint64_t) len + s->cluster_size - 1) >> s->cluster_bits;
  uint64_t count = 0;
  for (uint64_t i = 0; i < end && count < threshold; i++) {
    uint64_t rc;
    if (qcow2_get_refcount (s, i, &rc) < 0)
      return -1;
    count += rc != 0;
  }
  *out = count >= threshold;
  return 0;
}

void
qcow2_refcount_cleanup (struct qcow2 *s)
{
  for (size_t i = 0; i < s->n_refblock_slots; i++)
    free (s->refblocks[i].data);
  free (s->refblocks);
  free (s->reftable);
  free (s->alloc_log);
  qcow2_refmap_free (s->refmap);
  s->refmap = NULL;
  s->refblocks = NULL;
  s->n_refblock_slots = 0;
  s->reftable = NULL;
  s->alloc_log = NULL;
}

/* Write a cached block (durable at the next flush). */
static int
write_block (struct qcow2 *s, struct qcow2_refblock *b)
{
  if (qbak_file_pwrite (s->base.file, b->data, s->cluster_size,
                        b->offset) < 0)
    return -1;
  b->dirty = false;
  return 0;
}

static int
init_cache (struct qcow2 *s)
{
  size_t n = QCOW2_REFBLOCK_CACHE_BYTES / s->cluster_size;
  if (n < 4)
    n = 4;
  if (n > QCOW2_REFBLOCK_CACHE_MAX_SLOTS)
    n = QCOW2_REFBLOCK_CACHE_MAX_SLOTS;
  s->refblocks = calloc (n, sizeof *s->refblocks);
  if (!s->refblocks) {
    set_nomem ();
    return -1;
  }
  s->n_refblock_slots = n;
  return 0;
}

/* The refcount block for refcount table index R, at host OFFSET, through
 * a cache direct-mapped by R: consecutive ranges of clusters use
 * different slots, so a scan of the file never evicts what it still
 * needs, and a lookup is O(1).  FRESH makes a zeroed block without
 * reading (a block being created); it is dirty from the start so that an
 * eviction writes it instead of reading garbage back.  Evicting a dirty
 * block writes it early: callers raise a refcount before anything points
 * to the cluster and lower it only after nothing does, so an early write
 * is as safe as a later one.  The pointer is valid until the next call. */
static struct qcow2_refblock *
get_block (struct qcow2 *s, uint64_t r, uint64_t offset, bool fresh)
{
  if (!s->refblocks && init_cache (s) < 0)
    return NULL;
  struct qcow2_refblock *b = &s->refblocks[r % s->n_refblock_slots];
  if (b->data && b->offset == offset) {
    if (fresh) {
      memset (b->data, 0, s->cluster_size);
      b->dirty = true;
    }
    return b;
  }
  if (b->data && b->dirty && write_block (s, b) < 0)
    return NULL;
  if (!b->data && !(b->data = malloc (s->cluster_size))) {
    set_nomem ();
    return NULL;
  }
  b->offset = 0;
  b->dirty = false;
  if (fresh)
    memset (b->data, 0, s->cluster_size);
  else if (qbak_file_pread_zerofill (s->base.file, b->data, s->cluster_size,
                                     offset) < 0)
    return NULL;
  b->offset = offset;
  b->dirty = fresh;
  return b;
}

int
qcow2_get_refcount (struct qcow2 *s, uint64_t index, uint64_t *out)
{
  uint64_t r = index / s->refblock_entries;
  *out = 0;
  if (r >= s->reftable_entries || !s->reftable[r])
    return 0;
  struct qcow2_refblock *b = get_block (s, r, s->reftable[r] & REFT_OFFSET_MASK,
                                        false);
  if (!b)
    return -1;
  *out = rb_get (s, b->data, index % s->refblock_entries);
  return 0;
}

/* Clusters that metadata occupies must never look free: a zero refcount
 * on them means the refcounts are broken.  The reference map knows every
 * structure; the header's own ranges are checked too, in O(1). */
static bool
is_known_metadata (struct qcow2 *s, uint64_t index)
{
  uint64_t off = index << s->cluster_bits, cs = s->cluster_size;
  if (index == 0)
    return true;
  if (s->refmap && qcow2_refmap_referenced (s->refmap, index))
    return true;
  if (off >= s->l1_table_offset &&
      off < s->l1_table_offset + (((uint64_t) s->l1_size * 8 + cs - 1) & ~(cs - 1)))
    return true;
  if (off >= s->refcount_table_offset &&
      off < s->refcount_table_offset + (uint64_t) s->refcount_table_clusters * cs)
    return true;
  if (s->bitmap_directory_offset && off >= s->bitmap_directory_offset &&
      off < s->bitmap_directory_offset + s->bitmap_directory_size)
    return true;
  return false;
}

static int
log_alloc (struct qcow2 *s, uint64_t index)
{
  if (s->n_alloc_log == s->cap_alloc_log) {
    size_t cap = s->cap_alloc_log ? s->cap_alloc_log * 2 : 64;
    uint64_t *n = realloc (s->alloc_log, cap * sizeof *n);
    if (!n) {
      set_nomem ();
      return -1;
    }
    s->alloc_log = n;
    s->cap_alloc_log = cap;
  }
  s->alloc_log[s->n_alloc_log++] = index;
  return 0;
}

static int
update_refcount (struct qcow2 *s, uint64_t index, int64_t delta)
{
  uint64_t r = index / s->refblock_entries;
  if (r >= s->reftable_entries || !s->reftable[r]) {
    set_invalid ("%s: cluster %" PRIu64 " has no refcount block",
                 s->base.filename, index);
    return -1;
  }
  struct qcow2_refblock *b = get_block (s, r, s->reftable[r] & REFT_OFFSET_MASK,
                                        false);
  if (!b)
    return -1;
  uint64_t i = index % s->refblock_entries, v = rb_get (s, b->data, i);
  if ((delta < 0 && v == 0) || (delta > 0 && v == max_refcount (s))) {
    set_invalid ("%s: refcount of cluster %" PRIu64 " would %s; run "
                 "'qemu-img check -r all'", s->base.filename, index,
                 delta < 0 ? "drop below zero" : "overflow");
    return -1;
  }
  rb_set (s, b->data, i, (uint64_t) ((int64_t) v + delta));
  b->dirty = true;
  if (delta < 0 && v == 1 && index < s->free_hint)
    s->free_hint = index;
  return 0;
}

static uint64_t
file_end_cluster (struct qcow2 *s)
{
  int64_t size = qbak_file_size (s->base.file);
  uint64_t end = size < 0 ? 0 : (uint64_t) size;
  return (end + s->cluster_size - 1) >> s->cluster_bits;
}

static int
write_dirty_blocks (struct qcow2 *s)
{
  for (size_t i = 0; i < s->n_refblock_slots; i++)
    if (s->refblocks[i].dirty && write_block (s, &s->refblocks[i]) < 0)
      return -1;
  return 0;
}

static int
write_reftable (struct qcow2 *s, uint64_t offset, uint64_t entries,
                uint64_t clusters)
{
  uint64_t bytes = clusters * s->cluster_size;
  uint8_t *raw = calloc (1, bytes);
  if (!raw) {
    set_nomem ();
    return -1;
  }
  for (uint64_t i = 0; i < entries; i++)
    put_be64 (raw + i * 8, s->reftable[i]);
  int r = qbak_file_pwrite (s->base.file, raw, bytes, offset);
  free (raw);
  return r;
}

void
qcow2_refcount_area (uint32_t cluster_bits, uint32_t refcount_order,
                     uint64_t first, uint64_t start, uint64_t min_entries,
                     bool headroom,
                     bool (*has_block) (const void *opaque, uint64_t r),
                     const void *opaque, struct qcow2_refcount_area *out)
{
  uint64_t cs = 1ULL << cluster_bits;
  uint64_t rbe = cs * 8 >> refcount_order;     /* refcounts per block */
  uint64_t t = 0, b = 0;

  for (;;) {
    uint64_t end = start + t + b;
    uint64_t ranges = end / rbe + (end % rbe != 0);
    uint64_t need = ranges > min_entries ? ranges : min_entries;
    uint64_t nt, nb = 0;

    if (headroom)
      need += need / 4 + 1;          /* QEMU grows the table by 1.5x */
    nt = need * 8 / cs + (need * 8 % cs != 0);
    if (nt == 0)
      nt = 1;
    if (!has_block)
      nb = ranges > first / rbe ? ranges - first / rbe : 0;
    else
      for (uint64_t r = first / rbe; r < ranges; r++)
        nb += !has_block (opaque, r);
    if (nt == t && nb == b)
      break;
    t = nt;
    b = nb;
  }
  out->table_clusters = t;
  out->blocks = b;
  out->entries = t * cs / 8;
}

static bool
has_block (const void *opaque, uint64_t r)
{
  const struct qcow2 *s = opaque;
  return r < s->reftable_entries && s->reftable[r];
}

/* Make the refcount table at least MIN_ENTRIES long: a new, larger table
 * with the refcount blocks that describe it, at the end of the file,
 * switched to by one header write (QEMU's qcow2_refcount_area). */
static int
grow_reftable (struct qcow2 *s, uint64_t min_entries)
{
  uint64_t cs = s->cluster_size, rbe = s->refblock_entries;
  uint64_t start = file_end_cluster (s);
  for (size_t i = 0; i < s->n_alloc_log; i++)
    if (s->alloc_log[i] + 1 > start)
      start = s->alloc_log[i] + 1;

  /* The new table (T clusters) and the new blocks (K) must be covered by
   * the table's own entries. */
  struct qcow2_refcount_area area;
  qcow2_refcount_area (s->cluster_bits, s->refcount_order, start, start,
                       min_entries, true, has_block, s, &area);
  uint64_t entries = area.entries, t = area.table_clusters, k = area.blocks;
  if (t * cs > QCOW2_MAX_REFTABLE_BYTES) {
    set_invalid ("%s: refcount table would exceed %u MiB", s->base.filename,
                 QCOW2_MAX_REFTABLE_BYTES >> 20);
    return -1;
  }

  uint64_t *nt = calloc (entries, sizeof *nt);
  if (!nt) {
    set_nomem ();
    return -1;
  }
  memcpy (nt, s->reftable, s->reftable_entries * 8);
  uint64_t *old = s->reftable;
  uint64_t old_entries = s->reftable_entries;
  uint64_t old_offset = s->refcount_table_offset;
  uint32_t old_clusters = s->refcount_table_clusters;
  s->reftable = nt;
  s->reftable_entries = entries;

  /* New blocks at [start + t, +k), each for a range without one. */
  uint64_t next_block = start + t;
  for (uint64_t r = start / rbe; r <= (start + t + k - 1) / rbe; r++) {
    if (s->reftable[r])
      continue;
    struct qcow2_refblock *b = get_block (s, r, next_block << s->cluster_bits,
                                          true);
    if (!b)
      goto fail;
    s->reftable[r] = next_block << s->cluster_bits;
    next_block++;
  }
  /* Everything we placed has refcount 1.  Not logged for rollback: once
   * the header points to the new table these clusters are live, and
   * before that nothing in the old table describes them. */
  for (uint64_t c = start; c < start + t + k; c++)
    if (update_refcount (s, c, +1) < 0)
      goto fail;
  if (write_dirty_blocks (s) < 0)
    goto fail;
  if (write_reftable (s, start << s->cluster_bits, entries, t) < 0 ||
      qbak_file_flush (s->base.file) < 0)
    goto fail;

  s->refcount_table_offset = start << s->cluster_bits;
  s->refcount_table_clusters = (uint32_t) t;
  if (qcow2_update_header (s) < 0) {
    s->refcount_table_offset = old_offset;
    s->refcount_table_clusters = old_clusters;
    goto fail;
  }
  free (old);
  /* The old table is garbage now, free for the allocator. */
  if (s->refmap)
    qcow2_refmap_forget (s->refmap, old_offset, (uint64_t) old_clusters * cs);
  return qcow2_free_clusters (s, old_offset, (uint64_t) old_clusters * cs);

fail:
  free (s->reftable);
  s->reftable = old;
  s->reftable_entries = old_entries;
  return -1;
}

/* Make sure cluster INDEX has a refcount block. */
static int
ensure_block (struct qcow2 *s, uint64_t index)
{
  uint64_t r = index / s->refblock_entries;
  if (r >= s->reftable_entries && grow_reftable (s, r + 1) < 0)
    return -1;
  if (s->reftable[r])
    return 0;
  /* A range without a block has no used cluster: the block describes
   * itself from the first cluster of its range. */
  uint64_t self = r * s->refblock_entries;
  struct qcow2_refblock *b = get_block (s, r, self << s->cluster_bits, true);
  if (!b)
    return -1;
  rb_set (s, b->data, 0, 1);
  if (write_block (s, b) < 0 || qbak_file_flush (s->base.file) < 0)
    return -1;
  uint8_t e[8];
  put_be64 (e, self << s->cluster_bits);
  if (qbak_file_pwrite (s->base.file, e, 8,
                        s->refcount_table_offset + r * 8) < 0 ||
      qbak_file_flush (s->base.file) < 0)
    return -1;
  s->reftable[r] = self << s->cluster_bits;
  if (self < s->free_hint || self == s->free_hint)
    s->free_hint = self + 1;
  return 0;
}

int64_t
qcow2_alloc_clusters (struct qcow2 *s, uint64_t bytes)
{
  uint64_t n = (bytes + s->cluster_size - 1) >> s->cluster_bits;
  if (n == 0)
    n = 1;

restart:;
  uint64_t start = s->free_hint ? s->free_hint : 1, run = 0;
  /* The first free cluster the scan meets: where the next scan starts.
   * Without it every allocation would rescan all used clusters. */
  uint64_t first_free = UINT64_MAX;
  for (uint64_t idx = start; run < n; idx++) {
    if (idx > (UINT64_C(1) << (56 - s->cluster_bits))) {
      set_invalid ("%s: no free cluster below 2^56", s->base.filename);
      return -1;
    }
    uint64_t rc;
    if (qcow2_get_refcount (s, idx, &rc) < 0)
      return -1;
    if (rc != 0) {
      run = 0;
      start = idx + 1;
      continue;
    }
    if (is_known_metadata (s, idx)) {
      set_invalid ("%s: host cluster at offset %#" PRIx64 " is in use but "
                   "its refcount is 0: the refcounts are broken; run "
                   "'qemu-img check -r all'", s->base.filename,
                   idx << s->cluster_bits);
      return -1;
    }
    uint64_t r = idx / s->refblock_entries;
    if (r >= s->reftable_entries || !s->reftable[r]) {
      if (ensure_block (s, idx) < 0)
        return -1;
      goto restart;        /* the new block may sit in our run */
    }
    if (first_free == UINT64_MAX)
      first_free = idx;
    run++;
  }
  for (uint64_t i = start; i < start + n; i++)
    if (update_refcount (s, i, +1) < 0 || log_alloc (s, i) < 0)
      return -1;
  s->free_hint = first_free == start ? start + n : first_free;
  return (int64_t) (start << s->cluster_bits);
}

int
qcow2_free_clusters (struct qcow2 *s, uint64_t offset, uint64_t bytes)
{
  uint64_t first = offset >> s->cluster_bits;
  uint64_t end = (offset + bytes + s->cluster_size - 1) >> s->cluster_bits;
  for (uint64_t i = first; i < end; i++)
    if (update_refcount (s, i, -1) < 0)
      return -1;
  return 0;
}

int
qcow2_refcount_flush (struct qcow2 *s)
{
  if (write_dirty_blocks (s) < 0)
    return -1;
  if (qbak_file_flush (s->base.file) < 0)
    return -1;
  /* Metadata range checks compare with the file size: keep it current. */
  int64_t size = qbak_file_size (s->base.file);
  if (size > 0)
    s->file_size = (uint64_t) size;
  return 0;
}

void
qcow2_refcount_forget (struct qcow2 *s)
{
  s->n_alloc_log = 0;
}

void
qcow2_refcount_rollback (struct qcow2 *s)
{
  /* Lower what we raised; if that fails the clusters stay leaked, which
   * is safe. */
  for (size_t i = 0; i < s->n_alloc_log; i++)
    update_refcount (s, s->alloc_log[i], -1);
  s->n_alloc_log = 0;
  if (qcow2_refcount_flush (s) < 0)
    qcow2_refcount_flush (s);        /* once more for a transient error */
}
