/* Streaming qcow2 v3 writer for backup targets: see qcow2-writer.h.
 * This file: creating a target, and the streaming store of data and
 * L2 tables (the held-back batch of completed tables).
 *
 * Byte layouts are QEMU's qcow2 v3 format (big-endian): the header, its
 * extensions (8-byte aligned, ended by type 0), 64-bit L1 and L2 entries,
 * a refcount table of block offsets and 16-bit refcounts.  Every host
 * cluster is allocated by appending at the writer's logical end
 * (next_host), never rewritten in place, and referenced at most once:
 * every refcount is 0 or 1.  So the refcount structures need not be
 * maintained while copying; finish computes them once from the
 * references (one bit per cluster).
 *
 * Retryable failures: a request first reads what it needs, then writes its
 * data and the L2 tables it completes past the logical end, and changes
 * the in-memory state (next_host, the L1, the current L2 table) only after
 * the last write succeeded.  Garbage a failed request left past the
 * logical end is overwritten by the next append, or truncated by finish.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/bigalloc.h"
#include "common/error.h"
#include "common/fileio.h"
#include "common/iszero.h"
#include "formats/qcow2-writer-internal.h"
#include "formats/writer-request.h"


/* Reserve BYTES (rounded up to clusters) at *END, advancing it.  Only a
 * local copy of the logical end moves: the caller commits it on success. */
int
qcow2_writer_reserve (const struct qcow2_writer *w, uint64_t *end,
                      uint64_t bytes)
{
  uint64_t n = div_round_up (bytes, w->cluster_size) << w->cluster_bits;
  uint64_t e;

  if (n < bytes || __builtin_add_overflow (*end, n, &e) ||
      e > MAX_HOST_OFFSET) {
    set_invalid ("%s: image file would grow past the largest qcow2 host "
                 "offset", w->file->path);
    return -1;
  }
  *end = e;
  return 0;
}

/* An L2 entry this writer can have written: unallocated, a zero cluster
 * without host cluster, or a data cluster with refcount 1 (COPIED) below
 * LIMIT, aligned to a cluster, with the reserved bits and the compressed
 * and zero flags clear.  Anything else is refused: reopen takes only
 * images this writer made. */
int
qcow2_writer_check_l2_entry (const struct qcow2_writer *w, uint64_t e,
                             uint64_t limit, uint64_t index, uint64_t i)
{
  uint64_t off = e & L2E_OFFSET_MASK;

  if (e == 0 || e == QCOW_OFLAG_ZERO)
    return 0;
  if ((e & (L2E_STD_RESERVED_MASK | QCOW_OFLAG_COMPRESSED |
            QCOW_OFLAG_ZERO)) || !(e & QCOW_OFLAG_COPIED) ||
      off < w->cluster_size || off >= limit ||
      (off & (w->cluster_size - 1))) {
    set_invalid ("%s: L2 table %" PRIu64 " entry %" PRIu64 ": 0x%016"
                 PRIx64 " is not an entry qbak writes", w->file->path,
                 index, i, e);
    return -1;
  }
  return 0;
}

/* Pages of a table: a table smaller than a page is one page. */
static size_t
table_pages (const struct qcow2_writer *w)
{
  return w->cluster_size > SPARSE_PAGE ? w->cluster_size / SPARSE_PAGE : 1;
}

static size_t
page_bytes (const struct qcow2_writer *w)
{
  return w->cluster_size > SPARSE_PAGE ? SPARSE_PAGE : w->cluster_size;
}

static bool
page_used (const struct table *t, size_t i)
{
  return t->used[i / 64] & (1ULL << (i % 64));
}

/* Mark the pages holding entries [LO, HI] as used. */
static void
table_mark (struct table *t, uint64_t lo, uint64_t hi)
{
  for (uint64_t i = lo / PAGE_ENTRIES; i <= hi / PAGE_ENTRIES; i++)
    t->used[i / 64] |= 1ULL << (i % 64);
}

/* Zero T: only its used pages. */
static void
table_clear (const struct qcow2_writer *w, struct table *t)
{
  for (size_t i = 0; i < table_pages (w); i++)
    if (page_used (t, i))
      memset (t->e + i * PAGE_ENTRIES, 0, page_bytes (w));
  memset (t->used, 0, sizeof t->used);
}

/* Make DST a copy of SRC. */
static void
table_copy (const struct qcow2_writer *w, struct table *dst,
            const struct table *src)
{
  table_clear (w, dst);
  for (size_t i = 0; i < table_pages (w); i++)
    if (page_used (src, i))
      memcpy (dst->e + i * PAGE_ENTRIES, src->e + i * PAGE_ENTRIES,
              page_bytes (w));
  memcpy (dst->used, src->used, sizeof dst->used);
}

static void
table_swap (struct table *a, struct table *b)
{
  struct table tmp = *a;
  *a = *b;
  *b = tmp;
}

/* Read the L2 table of L1 index INDEX into T: its current copy on disk,
 * or zeroes if it has none or if the request about to be applied replaces
 * all its entries (COVERED). */
static int
load_l2 (struct qcow2_writer *w, uint64_t index, struct table *t,
         bool covered)
{
  uint64_t off = w->l1[index] & L1E_OFFSET_MASK;

  table_clear (w, t);
  if (off == 0 || covered)
    return 0;
  /* Every page may hold an entry, or garbage if the read fails. */
  table_mark (t, 0, w->l2_entries - 1);
  if (qbak_file_pread (w->file, t->e, w->cluster_size, off) < 0)
    return -1;
  for (uint32_t i = 0; i < w->l2_entries; i++) {
    t->e[i] = be64_at ((const uint8_t *) &t->e[i]);
    if (qcow2_writer_check_l2_entry (w, t->e[i], w->next_host, index, i) < 0)
      return -1;
  }
  return 0;
}

/* Every pwrite of the writer: keeps the high-water mark. */
static int
put (struct qcow2_writer *w, const void *buf, size_t len, uint64_t off)
{
  /* Even a failed write may have written part of BUF: raise the mark
   * first, so no later sparse write trusts those bytes to be zero. */
  if (off + len > w->hwm)
    w->hwm = off + len;
  return qbak_file_pwrite (w->file, buf, len, off);
}

/* Write-back is started (on a background thread) every this many bytes:
 * small enough that the disk starts early in a small incremental, and the
 * flush at the end waits for little. */
#define WRITEBACK_WINDOW (2u << 20)
/* Completed L2 tables are held back until this many bytes of them are
 * pending, then go out together: the data between two batches stays one
 * contiguous run on disk instead of being cut by a table after every
 * scattered cluster (half the disk requests of a scattered incremental
 * over a huge disk). */
#define PENDING_TABLE_BYTES (4u << 20)

/* Write table T (left unchanged) at host offset OFF through the scratch
 * buffer.  Past the high-water mark the file reads as zeroes, so unused
 * and all-zero 4 KiB pages are left as holes: a scattered incremental over
 * a huge disk writes 4 KiB per L2 table, not a whole cluster.  Below it,
 * the whole table goes out. */
int
qcow2_writer_write_l2 (struct qcow2_writer *w, const struct table *t,
                       uint64_t off)
{
  uint8_t *p = (uint8_t *) w->scratch;
  size_t pb = page_bytes (w), n = table_pages (w);
  bool sparse = off >= w->hwm && n > 1;
  size_t run = 0;
  bool in_run = false;

  /* Page by page: convert each page that has an entry, and write each run
   * of such pages at once. */
  for (size_t i = 0; i <= n; i++) {
    const uint64_t *src = t->e + i * PAGE_ENTRIES;
    uint8_t *dst = p + i * pb;
    bool has = i < n && page_used (t, i) && !(sparse && is_zero (src, pb));
    if (has)
      for (size_t k = 0; k < pb / 8; k++) {
        uint64_t v = src[k];
        put_be64 (dst + k * 8, v);
      }
    else if (i < n && !sparse)
      memset (dst, 0, pb);
    if (has || (i < n && !sparse)) {
      if (!in_run) {
        run = i;
        in_run = true;
      }
      continue;
    }
    if (in_run && put (w, p + run * pb, (i - run) * pb, off + run * pb) < 0)
      return -1;
    in_run = false;
  }
  return 0;
}

/* Set the entries of guest clusters [FIRST, LAST] that fall in table T of
 * L1 index INDEX: data at HOST onwards (contiguous), or zero clusters if
 * HOST is 0. */
static void
apply (const struct qcow2_writer *w, struct table *t, uint64_t index,
       uint64_t first, uint64_t last, uint64_t host)
{
  uint64_t base = index * w->l2_entries;
  uint64_t lo = first > base ? first : base;
  uint64_t hi = last < base + w->l2_entries - 1 ? last
                : base + w->l2_entries - 1;

  for (uint64_t c = lo; c <= hi; c++)
    t->e[c - base] = host ? (host + ((c - first) << w->cluster_bits))
                            | QCOW_OFLAG_COPIED
                          : QCOW_OFLAG_ZERO;
  table_mark (t, lo - base, hi - base);
}

/* After a failed fsync Linux marks the failed pages clean and reports the
 * error once: a second fsync succeeds although the data never reached the
 * disk.  So a failed flush is final for the writer, never retried. */
int
qcow2_writer_check_flushable (struct qcow2_writer *w, const char *op)
{
  if (w->flush_failed) {
    qbak_internal_error (STATUS_IO, 0, "%s: %s after a failed flush: "
                         "what was written may not be on disk; start the "
                         "backup again", w->file->path, op);
    return -1;
  }
  return 0;
}

static int
check_usable (struct qcow2_writer *w, const char *op)
{
  if (qcow2_writer_check_flushable (w, op) < 0)
    return -1;
  if (w->finished) {
    set_usage_error ("%s: %s after the image was finished", w->file->path,
                     op);
    return -1;
  }
  if (w->finishing) {
    set_usage_error ("%s: %s after finishing the image was begun",
                     w->file->path, op);
    return -1;
  }
  return 0;
}

/* The rules shared by write and zero (see qcow2-writer.h). */
static int
check_request (struct qcow2_writer *w, const char *op, uint64_t offset,
               uint64_t len)
{
  const char *fn = w->file->path;
  uint64_t end;

  if (check_usable (w, op) < 0)
    return -1;
  if (offset & (w->cluster_size - 1)) {
    set_usage_error ("%s: %s at offset %" PRIu64 ": not aligned to the "
                     "cluster size %" PRIu32, fn, op, offset,
                     w->cluster_size);
    return -1;
  }
  if (writer_check_range (fn, op, offset, len, w->size, w->next_guest,
                          &end) < 0)
    return -1;
  if ((len & (w->cluster_size - 1)) && end != w->size) {
    set_usage_error ("%s: %s at offset %" PRIu64 " length %" PRIu64
                     ": length not a multiple of the cluster size %" PRIu32
                     " and not ending at the end of the disk", fn, op,
                     offset, len, w->cluster_size);
    return -1;
  }
  return 0;
}

/* Write the NPENDING held-back tables at host offset OFF onwards, in
 * order (nothing is committed). */
int
qcow2_writer_write_pending (struct qcow2_writer *w, uint64_t off)
{
  for (size_t k = 0; k < w->npending; k++, off += w->cluster_size)
    if (qcow2_writer_write_l2 (w, &w->pending[k], off) < 0)
      return -1;
  return 0;
}

/* Commit the held-back tables written at OFF onwards: returns the offset
 * past them. */
uint64_t
qcow2_writer_commit_pending (struct qcow2_writer *w, uint64_t off)
{
  for (size_t k = 0; k < w->npending; k++, off += w->cluster_size)
    w->l1[w->pending_index[k]] = off | QCOW_OFLAG_COPIED;
  w->npending = 0;
  return off;
}

/* Table T of a request covering guest clusters [FIRST, LAST], completed:
 * load it into DST (or copy the current table) and apply the request. */
static int
complete_table (struct qcow2_writer *w, struct table *dst, uint64_t t,
                uint64_t first, uint64_t last, uint64_t host)
{
  uint64_t l2e = w->l2_entries;

  if (t == w->l2_index)
    table_copy (w, dst, &w->l2);
  else if (load_l2 (w, t, dst,
                    first <= t * l2e && last >= t * l2e + l2e - 1) < 0)
    return -1;
  apply (w, dst, t, first, last, host);
  return 0;
}

/* Store data BUF (or zero clusters if BUF is NULL) for [OFFSET, +LEN).
 *
 * The request covers guest clusters [FIRST, LAST] in tables FT..LT.  The
 * tables it leaves behind are complete: the current table if the request
 * starts in a later one (and it changed), and FT..LT-1.  Table LT stays in
 * memory.  Completed tables join the held-back ones while they fit;
 * otherwise all of them go to disk after the data.  Order: load LT, write
 * the data, write the tables after it, then commit.  Any failure returns
 * before the commit, so the writer is unchanged (a table filled into a
 * free pending slot is not pending until the commit). */
static int
store (struct qcow2_writer *w, const char *op, uint64_t offset,
       const void *buf, uint64_t len)
{
  uint64_t cs = w->cluster_size, l2e = w->l2_entries;
  uint64_t first, last, ft, lt, host, end, completed, tables, off;
  uint64_t data_host;
  bool flush_cur, hold;

  if (check_request (w, op, offset, len) < 0)
    return -1;
  if (len == 0)
    return 0;
  first = offset >> w->cluster_bits;
  last = first + div_round_up (len, cs) - 1;
  ft = first / l2e;
  lt = last / l2e;
  flush_cur = w->l2_index != NO_TABLE && w->l2_index < ft && w->l2_dirty;
  completed = (flush_cur ? 1 : 0) + (lt - ft);
  hold = w->npending + completed <= w->pending_cap;
  tables = hold ? 0 : w->npending + completed;

  end = w->next_host;
  host = end;
  if (buf && qcow2_writer_reserve (w, &end, len) < 0)
    return -1;
  off = end;
  if (qcow2_writer_reserve (w, &end, tables * cs) < 0)
    return -1;
  data_host = buf ? host : 0;

  if (lt != w->l2_index &&
      load_l2 (w, lt, &w->l2_next,
               first <= lt * l2e && last >= lt * l2e + l2e - 1) < 0)
    return -1;
  /* One sequential write for the whole run; a partial last cluster's tail
   * is never written, and lies past the virtual size. */
  if (buf && put (w, buf, len, host) < 0)
    return -1;
  if (hold) {
    /* The current table joins at the commit (by a swap, not a copy). */
    size_t k = w->npending + (flush_cur ? 1 : 0);
    for (uint64_t t = ft; t < lt; t++, k++) {
      if (complete_table (w, &w->pending[k], t, first, last, data_host) < 0)
        return -1;
      w->pending_index[k] = t;
    }
  }
  else {
    if (qcow2_writer_write_pending (w, off) < 0)
      return -1;
    off += w->npending * cs;
    if (flush_cur) {
      if (qcow2_writer_write_l2 (w, &w->l2, off) < 0)
        return -1;
      off += cs;
    }
    for (uint64_t t = ft; t < lt; t++, off += cs)
      if (complete_table (w, &w->spare, t, first, last, data_host) < 0 ||
          qcow2_writer_write_l2 (w, &w->spare, off) < 0)
        return -1;
  }

  /* Commit. */
  if (hold) {
    if (flush_cur) {
      /* The current table's buffer becomes pending; the buffer it gets
       * back is replaced by the next table just below. */
      table_swap (&w->pending[w->npending], &w->l2);
      w->pending_index[w->npending] = w->l2_index;
    }
    w->npending += completed;
  }
  else {
    off = qcow2_writer_commit_pending (w, end - tables * cs);
    if (flush_cur) {
      w->l1[w->l2_index] = off | QCOW_OFLAG_COPIED;
      off += cs;
    }
    for (uint64_t t = ft; t < lt; t++, off += cs)
      w->l1[t] = off | QCOW_OFLAG_COPIED;
  }
  if (lt != w->l2_index) {
    table_swap (&w->l2, &w->l2_next);
    w->l2_index = lt;
  }
  apply (w, &w->l2, lt, first, last, data_host);
  w->l2_dirty = true;
  w->next_host = end;
  w->next_guest = offset + len;
  /* Let the disk work while we copy: the flush at the end then waits for
   * little. */
  if (w->next_host - w->wb_start >= WRITEBACK_WINDOW) {
    qbak_file_writeback (w->file, w->wb_start, w->next_host - w->wb_start);
    w->wb_start = w->next_host;
  }
  return 0;
}

/* Allocate the writer and its tables for GEOMETRY (size and cluster size
 * already checked).  Returns NULL with the error set. */
struct qcow2_writer *
qcow2_writer_new (uint64_t size, uint32_t cs)
{
  struct qcow2_writer *w = calloc (1, sizeof *w);
  uint64_t l1_size = div_round_up (size, (uint64_t) cs * (cs / 8));

  if (!w)
    goto nomem;
  w->size = size;
  w->cluster_size = cs;
  w->cluster_bits = (uint32_t) __builtin_ctz (cs);
  w->l2_entries = cs / 8;
  w->l1_size = (uint32_t) l1_size;
  w->l1_alloc = div_round_up (l1_size * 8, cs) * (cs / 8);
  w->l1 = calloc (w->l1_alloc ? w->l1_alloc : 1, sizeof *w->l1);
  w->scratch = calloc (w->l2_entries, sizeof *w->scratch);
  /* Untouched pages of the tables cost no memory: a job that completes
   * few tables never pays for the whole batch.  Buffers move between the
   * tables (swaps), so they all live in one area. */
  w->pending_cap = PENDING_TABLE_BYTES / cs;
  if (w->pending_cap == 0)
    w->pending_cap = 1;
  /* The current, next and spare tables and the batch. */
  w->table_area_bytes = (w->pending_cap + 3) * (size_t) cs;
  w->table_area = big_zalloc (w->table_area_bytes);
  w->pending = calloc (w->pending_cap, sizeof *w->pending);
  w->pending_index = calloc (w->pending_cap, sizeof *w->pending_index);
  if (!w->l1 || !w->scratch || !w->table_area || !w->pending ||
      !w->pending_index)
    goto nomem;
  w->l2.e = w->table_area;
  w->l2_next.e = w->table_area + w->l2_entries;
  w->spare.e = w->table_area + 2 * w->l2_entries;
  for (size_t k = 0; k < w->pending_cap; k++)
    w->pending[k].e = w->table_area + (k + 3) * w->l2_entries;
  w->l2_index = NO_TABLE;
  return w;

 nomem:
  set_nomem ();
  qcow2_writer_free (w);
  return NULL;
}

/* The options a new target is refused for, before any file exists. */
static int
check_create_opts (const char *path, const struct qcow2_writer_opts *o)
{
  uint32_t cs = o->cluster_size;
  size_t fmt_len = o->backing_format ? strlen (o->backing_format) : 0;
  size_t name_len = o->backing_name ? strlen (o->backing_name) : 0;
  uint64_t l1_bytes, cluster0;

  if (cs < (1u << QCOW2_MIN_CLUSTER_BITS) ||
      cs > (1u << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
    set_usage_error ("%s: invalid cluster size %" PRIu32 ": must be a power "
                     "of two from 512 to 2 MiB", path, cs);
    return -1;
  }
  if (o->size % 512 || o->size > INT64_MAX) {
    set_usage_error ("%s: invalid virtual size %" PRIu64 ": must be a "
                     "multiple of 512", path, o->size);
    return -1;
  }
  /* One L2 table maps cs/8 clusters of cs bytes: at most 2^39 bytes. */
  l1_bytes = div_round_up (o->size, (uint64_t) cs * (cs / 8)) * 8;
  if (l1_bytes > QCOW2_MAX_L1_BYTES) {
    set_usage_error ("%s: virtual size %" PRIu64 " is too large for "
                     "cluster size %" PRIu32 " (L1 table over %u MiB)",
                     path, o->size, cs, QCOW2_MAX_L1_BYTES >> 20);
    return -1;
  }
  if (o->backing_format && !o->backing_name) {
    set_usage_error ("%s: a backing format without a backing file", path);
    return -1;
  }
  if (o->backing_format &&
      (fmt_len == 0 || fmt_len > QCOW2_MAX_BACKING_FORMAT)) {
    set_usage_error ("%s: invalid backing format name '%s'", path,
                     o->backing_format);
    return -1;
  }
  if (o->backing_name && (name_len == 0 ||
                          name_len > QCOW2_MAX_BACKING_NAME)) {
    set_usage_error ("%s: backing file name must be 1 to %d bytes long",
                     path, QCOW2_MAX_BACKING_NAME);
    return -1;
  }
  /* Header, backing format extension, the partial marker (room is kept
   * for it, so marking a partial later always fits), end marker, name:
   * all in cluster 0. */
  cluster0 = QCOW2_V3_HEADER_LENGTH +
             (o->backing_format ? 8 + ((fmt_len + 7) & ~7u) : 0) +
             8 + QCOW2_PARTIAL_ID_BYTES + 8 + name_len;
  if (cluster0 > cs) {
    set_usage_error ("%s: backing file name '%s' does not fit in the "
                     "first cluster (%" PRIu32 " bytes)", path,
                     o->backing_name, cs);
    return -1;
  }
  return 0;
}

struct qcow2_writer *
qcow2_writer_create (const char *path, const struct qcow2_writer_opts *o)
{
  if (check_create_opts (path, o) < 0)
    return NULL;
  struct qbak_file *f = qbak_file_create (path);
  if (!f)
    return NULL;
  return qcow2_writer_create_file (f, o);
}

struct qcow2_writer *
qcow2_writer_create_file (struct qbak_file *file,
                          const struct qcow2_writer_opts *o)
{
  struct qcow2_writer *w = NULL;
  uint32_t cs = o->cluster_size;

  if (check_create_opts (file->path, o) < 0) {
    qbak_file_close (file);
    return NULL;
  }
  w = qcow2_writer_new (o->size, cs);
  if (!w) {
    qbak_file_close (file);
    return NULL;
  }
  w->file = file;
  if ((o->backing_name && !(w->backing_name = strdup (o->backing_name))) ||
      (o->backing_format &&
       !(w->backing_format = strdup (o->backing_format)))) {
    set_nomem ();
    goto err;
  }
  /* Cluster 0 is reserved for the header and stays a hole until finish. */
  if (qbak_file_truncate (w->file, cs) < 0)
    goto err;
  w->next_host = cs;
  w->hwm = cs;
  w->wb_start = cs;
  return w;

 err:
  qcow2_writer_free (w);
  return NULL;
}

void
qcow2_writer_set_partial_id (struct qcow2_writer *w, const uint8_t *id)
{
  w->has_partial_id = id != NULL;
  if (id)
    memcpy (w->partial_id, id, QCOW2_PARTIAL_ID_BYTES);
}

bool
qcow2_writer_get_partial_id (const struct qcow2_writer *w, uint8_t *id)
{
  if (w->has_partial_id)
    memcpy (id, w->partial_id, QCOW2_PARTIAL_ID_BYTES);
  return w->has_partial_id;
}

int
qcow2_writer_fd (const struct qcow2_writer *w)
{
  return w->file->fd;
}

struct qbak_file *
qcow2_writer_file (const struct qcow2_writer *w)
{
  return w->file;
}

void
qcow2_writer_set_table_batch (struct qcow2_writer *w, size_t n)
{
  size_t max = PENDING_TABLE_BYTES / w->cluster_size;

  if (max == 0)
    max = 1;
  if (n == 0)
    n = 1;
  /* Only before the first table was held back: a smaller batch must not
   * strand tables already pending. */
  if (w->npending == 0)
    w->pending_cap = n < max ? n : max;
}

int
qcow2_writer_set_backing (struct qcow2_writer *w, const char *name,
                          const char *format)
{
  struct qcow2_writer_opts o = {
    .size = w->size, .cluster_size = w->cluster_size,
    .backing_name = name, .backing_format = format,
  };
  char *n = NULL, *f = NULL;
  if (check_create_opts (w->file->path, &o) < 0)
    return -1;
  if ((name && !(n = strdup (name))) || (format && !(f = strdup (format)))) {
    free (n);
    set_nomem ();
    return -1;
  }
  free (w->backing_name);
  free (w->backing_format);
  w->backing_name = n;
  w->backing_format = f;
  return 0;
}

int
qcow2_writer_grow (struct qcow2_writer *w, uint64_t size)
{
  struct qcow2_writer_opts o = {
    .size = size, .cluster_size = w->cluster_size,
    .backing_name = w->backing_name, .backing_format = w->backing_format,
  };
  if (size < w->size) {
    set_usage_error ("%s: a backup image never shrinks (%" PRIu64 " to %"
                     PRIu64 " bytes)", w->file->path, w->size, size);
    return -1;
  }
  if (check_create_opts (w->file->path, &o) < 0)
    return -1;
  uint64_t l1_size = div_round_up (size, (uint64_t) w->cluster_size
                                         * w->l2_entries);
  uint64_t alloc = div_round_up (l1_size * 8, w->cluster_size) * w->l2_entries;
  if (alloc > w->l1_alloc) {
    uint64_t *l1 = realloc (w->l1, alloc * sizeof *l1);
    if (!l1) {
      set_nomem ();
      return -1;
    }
    memset (l1 + w->l1_alloc, 0, (alloc - w->l1_alloc) * sizeof *l1);
    w->l1 = l1;
    w->l1_alloc = alloc;
  }
  w->l1_size = (uint32_t) l1_size;
  w->size = size;
  return 0;
}

void
qcow2_writer_get_opts (const struct qcow2_writer *w,
                       struct qcow2_writer_opts *o)
{
  o->size = w->size;
  o->cluster_size = w->cluster_size;
  o->backing_name = w->backing_name;
  o->backing_format = w->backing_format;
}

int
qcow2_writer_write (struct qcow2_writer *w, uint64_t offset,
                    const void *buf, size_t len)
{
  if (!buf && len) {
    set_usage_error ("%s: write without a buffer", w->file->path);
    return -1;
  }
  return store (w, "write", offset, len ? buf : NULL, len);
}

int
qcow2_writer_zero (struct qcow2_writer *w, uint64_t offset, uint64_t len)
{
  return store (w, "zero", offset, NULL, len);
}

void
qcow2_writer_free (struct qcow2_writer *w)
{
  if (!w)
    return;
  qbak_file_close (w->file);
  free (w->backing_name);
  free (w->backing_format);
  free (w->l1);
  free (w->scratch);
  big_free (w->table_area, w->table_area_bytes);
  free (w->pending);
  free (w->pending_index);
  free (w);
}

