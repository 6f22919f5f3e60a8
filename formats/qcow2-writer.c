/* Streaming qcow2 v3 writer for backup targets: see qcow2-writer.h.
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
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"
#include "formats/writer-request.h"

#define HEADER_LENGTH 112
#define REFCOUNT_ORDER 4                 /* 16-bit refcounts */
#define REFCOUNT_ENTRY_BYTES 2
/* Host offsets must fit the L2 entry's offset field (bits 9-55). */
#define MAX_HOST_OFFSET (1ULL << 56)
/* QEMU refuses backing format names of 16 bytes or more. */
#define MAX_BACKING_FORMAT 15
/* Refcount table and blocks go out in requests of this size. */
#define REFCOUNT_CHUNK (1u << 20)
/* l2_index when no L2 table is in memory. */
#define NO_TABLE UINT64_MAX

#define SPARSE_PAGE 4096
#define PAGE_ENTRIES (SPARSE_PAGE / 8)
#define MAX_TABLE_PAGES ((1u << QCOW2_MAX_CLUSTER_BITS) / SPARSE_PAGE)

/* An L2 table in memory (CPU order), and which of its 4 KiB pages may hold
 * an entry: a page whose bit is clear is all zeroes.  Clearing, copying
 * and writing a table then cost the pages it uses, not its cluster size
 * (a scattered incremental over a huge disk touches one entry in each of
 * hundreds of tables). */
struct table {
  uint64_t *e;
  uint64_t used[MAX_TABLE_PAGES / 64];
};

struct qcow2_writer {
  struct qbak_file *file;
  char *backing_name;           /* NULL if none */
  char *backing_format;         /* NULL if none */
  bool has_partial_id;          /* cluster 0 carries the partial marker */
  uint8_t partial_id[QCOW2_PARTIAL_ID_BYTES];
  uint64_t size;
  uint32_t cluster_size;
  uint32_t cluster_bits;
  uint32_t l2_entries;          /* per L2 table */
  uint32_t l1_size;             /* entries in use */
  uint64_t l1_alloc;            /* entries in memory and on disk (whole
                                   clusters) */
  uint64_t *l1;                 /* CPU order, always */
  struct table l2;              /* the current L2 table */
  struct table l2_next;         /* the table a request moves to, loaded
                                   before anything is written */
  struct table spare;           /* a completed table on its way to disk */
  uint64_t *scratch;            /* a table converted for the disk, or read
                                   back from it */
  struct table *pending;        /* completed tables not yet written */
  uint64_t *table_area;         /* the entries of all the tables above */
  size_t table_area_bytes;
  uint64_t *pending_index;      /* the L1 index of each pending table */
  size_t npending;
  size_t pending_cap;
  uint64_t l2_index;            /* L1 index of l2, or NO_TABLE */
  bool l2_dirty;                /* l2 differs from its copy on disk */
  uint64_t next_host;           /* logical end: the next append goes here
                                   (cluster aligned; the file may be longer
                                   after a failed append) */
  uint64_t next_guest;          /* end of the previous request */
  uint64_t hwm;                 /* high-water mark: nothing was ever
                                   written at or past it (holes read 0) */
  uint64_t wb_start;            /* write-back not yet started from here */
  bool reopened;                /* an earlier pass left clusters that may
                                   no longer be referenced */
  bool finishing;               /* finish was called: no more requests */
  bool flush_failed;            /* a flush failed: nothing written since
                                   the last good one is known to be on
                                   disk, and a new flush would not say so */
  bool finished;
};

static uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

/* Reserve BYTES (rounded up to clusters) at *END, advancing it.  Only a
 * local copy of the logical end moves: the caller commits it on success. */
static int
reserve (const struct qcow2_writer *w, uint64_t *end, uint64_t bytes)
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
static int
check_l2_entry (const struct qcow2_writer *w, uint64_t e, uint64_t limit,
                uint64_t index, uint64_t i)
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
    if (check_l2_entry (w, t->e[i], w->next_host, index, i) < 0)
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
static int
write_l2 (struct qcow2_writer *w, const struct table *t, uint64_t off)
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
static int
check_flushable (struct qcow2_writer *w, const char *op)
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
  if (check_flushable (w, op) < 0)
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
static int
write_pending (struct qcow2_writer *w, uint64_t off)
{
  for (size_t k = 0; k < w->npending; k++, off += w->cluster_size)
    if (write_l2 (w, &w->pending[k], off) < 0)
      return -1;
  return 0;
}

/* Commit the held-back tables written at OFF onwards: returns the offset
 * past them. */
static uint64_t
commit_pending (struct qcow2_writer *w, uint64_t off)
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
  if (buf && reserve (w, &end, len) < 0)
    return -1;
  off = end;
  if (reserve (w, &end, tables * cs) < 0)
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
    if (write_pending (w, off) < 0)
      return -1;
    off += w->npending * cs;
    if (flush_cur) {
      if (write_l2 (w, &w->l2, off) < 0)
        return -1;
      off += cs;
    }
    for (uint64_t t = ft; t < lt; t++, off += cs)
      if (complete_table (w, &w->spare, t, first, last, data_host) < 0 ||
          write_l2 (w, &w->spare, off) < 0)
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
    off = commit_pending (w, end - tables * cs);
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
static struct qcow2_writer *
writer_new (uint64_t size, uint32_t cs)
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
  if (o->backing_format && (fmt_len == 0 || fmt_len > MAX_BACKING_FORMAT)) {
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
  cluster0 = HEADER_LENGTH + (o->backing_format ? 8 + ((fmt_len + 7) & ~7u)
                              : 0) + 8 + QCOW2_PARTIAL_ID_BYTES + 8 +
             name_len;
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
  w = writer_new (o->size, cs);
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

/* Copy LEN bytes at P as a C string into *OUT; refuses embedded NULs. */
static int
dup_string (const char *fn, const char *what, const uint8_t *p, size_t len,
            char **out)
{
  if (memchr (p, '\0', len)) {
    set_invalid ("%s: %s contains a NUL byte", fn, what);
    return -1;
  }
  *out = malloc (len + 1);
  if (!*out) {
    set_nomem ();
    return -1;
  }
  memcpy (*out, p, len);
  (*out)[len] = '\0';
  return 0;
}

/* Parse cluster 0 (H, one cluster) of an image to reopen: header fields
 * already checked by the caller; here the extensions and the backing file
 * name (extensions start after the header, each padded to 8 bytes, and
 * end with type 0).  Only what create writes is accepted. */
static int
parse_cluster0 (struct qcow2_writer *w, const uint8_t *h)
{
  const char *fn = w->file->path;
  uint64_t cs = w->cluster_size;
  uint64_t bf_off = be64_at (h + 8);
  uint32_t bf_len = be32_at (h + 16);
  uint64_t limit = bf_off ? bf_off : cs;
  uint64_t pos = HEADER_LENGTH;

  if (bf_off > cs || bf_off % 8 || (bf_off && bf_off < HEADER_LENGTH + 8)) {
    set_invalid ("%s: backing file name offset %" PRIu64 " is not in the "
                 "first cluster after the header", fn, bf_off);
    return -1;
  }
  for (;;) {
    uint32_t type, len;
    if (limit - pos < 8) {
      set_invalid ("%s: header extensions run past their area", fn);
      return -1;
    }
    type = be32_at (h + pos);
    len = be32_at (h + pos + 4);
    pos += 8;
    if (type == QCOW2_EXT_END) {
      if (len != 0) {
        set_invalid ("%s: end of header extensions with length %" PRIu32,
                     fn, len);
        return -1;
      }
      break;
    }
    if (type == QCOW2_EXT_QBAK_PARTIAL) {
      if (w->has_partial_id || len != QCOW2_PARTIAL_ID_BYTES ||
          len > limit - pos) {
        set_invalid ("%s: invalid partial-target marker", fn);
        return -1;
      }
      memcpy (w->partial_id, h + pos, len);
      w->has_partial_id = true;
      pos += len;
      continue;
    }
    if (type != QCOW2_EXT_BACKING_FMT) {
      set_invalid ("%s: header extension 0x%08" PRIx32 ": qbak resumes "
                   "only images it wrote", fn, type);
      return -1;
    }
    if (w->backing_format || len == 0 || len > MAX_BACKING_FORMAT ||
        ((len + 7) & ~7u) > limit - pos) {
      set_invalid ("%s: invalid backing format extension", fn);
      return -1;
    }
    if (dup_string (fn, "backing format", h + pos, len,
                    &w->backing_format) < 0)
      return -1;
    pos += (len + 7) & ~7u;
  }
  if (bf_off) {
    if (bf_len == 0 || bf_len > QCOW2_MAX_BACKING_NAME ||
        bf_len > cs - bf_off || bf_off < pos) {
      set_invalid ("%s: invalid backing file name (offset %" PRIu64
                   ", length %" PRIu32 ")", fn, bf_off, bf_len);
      return -1;
    }
    if (dup_string (fn, "backing file name", h + bf_off, bf_len,
                    &w->backing_name) < 0)
      return -1;
  }
  else if (w->backing_format) {
    set_invalid ("%s: a backing format without a backing file", fn);
    return -1;
  }
  return 0;
}

/* Check the header fields of H (HEADER_LENGTH bytes) against what create
 * writes; sets *SIZE and *CLUSTER_BITS. */
static int
check_header (const char *fn, const uint8_t *h, uint64_t file_size,
              uint64_t *size, uint32_t *cluster_bits)
{
  uint32_t version = be32_at (h + 4), cb = be32_at (h + 20);
  uint64_t incompat = be64_at (h + 72);
  uint64_t cs, l1_off, rt_off, rt_clusters;
  uint32_t l1_size;

  if (be32_at (h) != QCOW2_MAGIC) {
    set_invalid ("%s: not a qcow2 image (an unfinished target?)", fn);
    return -1;
  }
  if (version != 3) {
    set_invalid ("%s: qcow2 version %" PRIu32 ": only version 3 images "
                 "written by qbak can be resumed", fn, version);
    return -1;
  }
  if (be32_at (h + 100) != HEADER_LENGTH) {
    set_invalid ("%s: header length %" PRIu32 ", qbak writes %d", fn,
                 be32_at (h + 100), HEADER_LENGTH);
    return -1;
  }
  if (incompat & QCOW2_INCOMPAT_COMPRESSION || h[104] != 0) {
    set_invalid ("%s: the image has a compression type: qbak resumes only "
                 "images it wrote", fn);
    return -1;
  }
  if (incompat & QCOW2_INCOMPAT_DATA_FILE) {
    set_invalid ("%s: the image has an external data file: qbak resumes "
                 "only images it wrote", fn);
    return -1;
  }
  if (incompat & QCOW2_INCOMPAT_EXTL2) {
    set_invalid ("%s: the image has extended L2 entries: qbak resumes "
                 "only images it wrote", fn);
    return -1;
  }
  if (incompat || be64_at (h + 80) || be64_at (h + 88)) {
    set_invalid ("%s: feature bits set (incompatible 0x%" PRIx64
                 ", compatible 0x%" PRIx64 ", autoclear 0x%" PRIx64 "): "
                 "qbak resumes only images it wrote", fn, incompat,
                 be64_at (h + 80), be64_at (h + 88));
    return -1;
  }
  if (be32_at (h + 60) || be64_at (h + 64)) {
    set_invalid ("%s: the image has snapshots", fn);
    return -1;
  }
  if (be32_at (h + 32)) {
    set_invalid ("%s: the image is encrypted", fn);
    return -1;
  }
  if (be32_at (h + 96) != REFCOUNT_ORDER) {
    set_invalid ("%s: refcount order %" PRIu32 ", qbak writes %d", fn,
                 be32_at (h + 96), REFCOUNT_ORDER);
    return -1;
  }
  for (int i = 105; i < HEADER_LENGTH; i++)
    if (h[i]) {
      set_invalid ("%s: header padding is not zero", fn);
      return -1;
    }
  if (cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS) {
    set_invalid ("%s: cluster bits %" PRIu32 " out of range", fn, cb);
    return -1;
  }
  cs = 1ULL << cb;
  *size = be64_at (h + 24);
  if (*size % 512 || *size > INT64_MAX) {
    set_invalid ("%s: invalid virtual size %" PRIu64, fn, *size);
    return -1;
  }
  l1_size = be32_at (h + 36);
  l1_off = be64_at (h + 40);
  if (l1_size != div_round_up (*size, cs * (cs / 8)) ||
      (uint64_t) l1_size * 8 > QCOW2_MAX_L1_BYTES ||
      (l1_size && (l1_off < cs || l1_off % cs || l1_off > file_size ||
                   (uint64_t) l1_size * 8 > file_size - l1_off))) {
    set_invalid ("%s: invalid L1 table (%" PRIu32 " entries at %" PRIu64
                 ")", fn, l1_size, l1_off);
    return -1;
  }
  rt_off = be64_at (h + 48);
  rt_clusters = be32_at (h + 56);
  if (rt_clusters == 0 || rt_clusters * cs > QCOW2_MAX_REFTABLE_BYTES ||
      rt_off < cs || rt_off % cs || rt_off > file_size ||
      rt_clusters * cs > file_size - rt_off) {
    set_invalid ("%s: invalid refcount table (%" PRIu64 " clusters at %"
                 PRIu64 ")", fn, rt_clusters, rt_off);
    return -1;
  }
  *cluster_bits = cb;
  return 0;
}

struct qcow2_writer *
qcow2_writer_reopen (const char *path)
{
  struct qcow2_writer *w = NULL;
  struct qbak_file *f;
  uint8_t h[HEADER_LENGTH], *c0 = NULL;
  uint64_t size, l1_off;
  uint32_t cb;
  int64_t file_size;

  f = qbak_file_open_own (path);
  if (!f)
    return NULL;
  file_size = qbak_file_size (f);
  if (file_size < 0)
    goto err;
  if (qbak_file_pread (f, h, sizeof h, 0) < 0 ||
      check_header (path, h, (uint64_t) file_size, &size, &cb) < 0)
    goto err;
  w = writer_new (size, 1u << cb);
  if (!w)
    goto err;
  w->file = f;
  f = NULL;
  if (!(c0 = malloc (w->cluster_size))) {
    set_nomem ();
    goto err;
  }
  if (qbak_file_pread (w->file, c0, w->cluster_size, 0) < 0 ||
      parse_cluster0 (w, c0) < 0)
    goto err;

  /* New clusters go past everything in the file: past what the header
   * references, and past any garbage of an earlier interrupted pass. */
  w->reopened = true;
  w->next_host = div_round_up ((uint64_t) file_size, w->cluster_size)
                 << w->cluster_bits;
  if (w->next_host < w->cluster_size)
    w->next_host = w->cluster_size;
  w->hwm = (uint64_t) file_size > w->next_host ? (uint64_t) file_size
                                                : w->next_host;
  w->wb_start = w->next_host;
  l1_off = be64_at (h + 40);
  if (w->l1_size &&
      qbak_file_pread (w->file, w->l1, (size_t) w->l1_size * 8, l1_off) < 0)
    goto err;
  for (uint32_t i = 0; i < w->l1_size; i++) {
    uint64_t e = be64_at ((const uint8_t *) &w->l1[i]);
    uint64_t off = e & L1E_OFFSET_MASK;
    w->l1[i] = e;
    if (e && ((e & L1E_RESERVED_MASK) || !(e & QCOW_OFLAG_COPIED) ||
              off < w->cluster_size || off % w->cluster_size ||
              off >= (uint64_t) file_size)) {
      set_invalid ("%s: L1 entry %" PRIu32 ": 0x%016" PRIx64 " is not an "
                   "entry qbak writes", path, i, e);
      goto err;
    }
  }
  free (c0);
  return w;

 err:
  free (c0);
  qbak_file_close (f);
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

/* ---- finish ------------------------------------------------------------ */

/* The clusters the new image references: one bit per host cluster below
 * the end of its refcount area. */
struct refs {
  uint8_t *bits;
  uint64_t clusters;
};

/* Mark COUNT clusters from host offset OFF as referenced; a cluster
 * referenced twice or past the end means the metadata is corrupt. */
static int
mark (const struct qcow2_writer *w, struct refs *r, uint64_t off,
      uint64_t count, const char *what)
{
  uint64_t k0 = off >> w->cluster_bits;

  for (uint64_t k = k0; k < k0 + count; k++) {
    if (k >= r->clusters || (r->bits[k / 8] & (1u << (k % 8)))) {
      set_invalid ("%s: %s at host offset %" PRIu64 ": cluster %s",
                   w->file->path, what, k << w->cluster_bits,
                   k >= r->clusters ? "past the end of the image"
                                    : "referenced twice");
      return -1;
    }
    r->bits[k / 8] |= (uint8_t) (1u << (k % 8));
  }
  return 0;
}

/* Mark every L2 table of the L1 and every data cluster they reference,
 * reading the tables back (all of them lie below DATA_END). */
static int
collect_tables (struct qcow2_writer *w, struct refs *r, uint64_t data_end)
{
  for (uint64_t i = 0; i < w->l1_size; i++) {
    uint64_t off = w->l1[i] & L1E_OFFSET_MASK;
    const uint64_t *t = w->scratch;

    if (off == 0)
      continue;
    if (off >= data_end) {
      set_invalid ("%s: L1 entry %" PRIu64 ": L2 table past the data",
                   w->file->path, i);
      return -1;
    }
    if (mark (w, r, off, 1, "L2 table") < 0)
      return -1;
    /* The current table, once flushed, equals its copy on disk. */
    if (i == w->l2_index && !w->l2_dirty)
      t = w->l2.e;
    else {
      if (qbak_file_pread (w->file, w->scratch, w->cluster_size, off) < 0)
        return -1;
      for (uint32_t j = 0; j < w->l2_entries; j++)
        w->scratch[j] = be64_at ((const uint8_t *) &w->scratch[j]);
    }
    for (uint32_t j = 0; j < w->l2_entries; j++) {
      uint64_t e = t[j];
      if (check_l2_entry (w, e, data_end, i, j) < 0)
        return -1;
      if ((e & L2E_OFFSET_MASK) &&
          mark (w, r, e & L2E_OFFSET_MASK, 1, "data cluster") < 0)
        return -1;
    }
  }
  return 0;
}

/* Fill one cluster of the refcount area: cluster K of the T refcount-table
 * clusters, followed by the B refcount blocks at RB that give the
 * referenced clusters of R refcount 1 (a refcount table entry is a
 * block's 64-bit offset; a block holds one 16-bit refcount per cluster). */
static void
fill_refcount_cluster (const struct qcow2_writer *w, uint8_t *p, uint64_t k,
                       uint64_t t, uint64_t rb, uint64_t b,
                       const struct refs *r)
{
  uint64_t per_table = w->cluster_size / 8;
  uint64_t per_block = w->cluster_size / REFCOUNT_ENTRY_BYTES;

  memset (p, 0, w->cluster_size);
  if (k < t) {
    for (uint64_t j = 0; j < per_table; j++) {
      uint64_t e = k * per_table + j;
      if (e >= b)
        break;
      put_be64 (p + j * 8, rb + (e << w->cluster_bits));
    }
  }
  else {
    for (uint64_t j = 0; j < per_block; j++) {
      uint64_t c = (k - t) * per_block + j;
      if (c >= r->clusters)
        break;
      if (r->bits[c / 8] & (1u << (c % 8)))
        put_be16 (p + j * REFCOUNT_ENTRY_BYTES, 1);
    }
  }
}

/* Lay out the refcount area at END (after the L1 table): T table clusters
 * and B blocks that must cover every cluster up to its own end.  Sets *T,
 * *B and the number of clusters *C. */
static int
refcount_layout (const struct qcow2_writer *w, uint64_t end, uint64_t *t,
                 uint64_t *b, uint64_t *c)
{
  uint64_t cs = w->cluster_size;
  uint64_t per_block = cs / REFCOUNT_ENTRY_BYTES;
  uint64_t n = end >> w->cluster_bits;

  /* The fixpoint: B blocks and T table clusters must cover N + B + T
   * clusters.  Both only grow, and by far less than they cover, so this
   * ends after a few rounds. */
  *b = *t = 0;
  for (;;) {
    uint64_t nb, nt;
    *c = n + *b + *t;
    nb = div_round_up (*c, per_block);
    nt = div_round_up (nb * 8, cs);
    if (nt == 0)
      nt = 1;
    if (nb == *b && nt == *t)
      break;
    *b = nb;
    *t = nt;
  }
  if (*t * cs > QCOW2_MAX_REFTABLE_BYTES) {
    set_invalid ("%s: the refcount table would exceed %u MiB: the image is "
                 "too large for cluster size %" PRIu64, w->file->path,
                 QCOW2_MAX_REFTABLE_BYTES >> 20, cs);
    return -1;
  }
  return 0;
}

/* Write the refcount area (T table clusters, then B blocks) at RT. */
static int
write_refcounts (struct qcow2_writer *w, uint64_t rt, uint64_t t,
                 uint64_t b, const struct refs *r)
{
  uint64_t cs = w->cluster_size;
  uint64_t area = (t + b) * cs;
  uint64_t chunk = cs > REFCOUNT_CHUNK ? cs : REFCOUNT_CHUNK;
  uint8_t *buf;
  int ret = 0;

  if (chunk > area)
    chunk = area;
  buf = malloc (chunk);
  if (!buf) {
    set_nomem ();
    return -1;
  }
  for (uint64_t done = 0; done < area; done += chunk) {
    uint64_t len = area - done < chunk ? area - done : chunk;
    for (uint64_t o = 0; o < len; o += cs)
      fill_refcount_cluster (w, buf + o, (done + o) >> w->cluster_bits, t,
                             rt + t * cs, b, r);
    if (qbak_file_pwrite (w->file, buf, len, rt + done) < 0) {
      ret = -1;
      break;
    }
  }
  free (buf);
  return ret;
}

/* Build cluster 0 as qemu-img create lays it out:
 * header, backing format extension, end marker, backing file name. */
static void
build_header (const struct qcow2_writer *w, uint8_t *p, uint64_t l1_offset,
              uint64_t rt_offset, uint32_t rt_clusters)
{
  size_t pos = HEADER_LENGTH;

  memset (p, 0, w->cluster_size);
  put_be32 (p + 0, QCOW2_MAGIC);
  put_be32 (p + 4, 3);
  put_be32 (p + 20, w->cluster_bits);
  put_be64 (p + 24, w->size);
  put_be32 (p + 32, 0);                  /* crypt_method */
  put_be32 (p + 36, w->l1_size);
  put_be64 (p + 40, l1_offset);
  put_be64 (p + 48, rt_offset);
  put_be32 (p + 56, rt_clusters);
  put_be32 (p + 60, 0);                  /* nb_snapshots */
  put_be64 (p + 64, 0);                  /* snapshots_offset */
  put_be64 (p + 72, 0);                  /* incompatible_features */
  put_be64 (p + 80, 0);                  /* compatible_features */
  put_be64 (p + 88, 0);                  /* autoclear_features */
  put_be32 (p + 96, REFCOUNT_ORDER);
  put_be32 (p + 100, HEADER_LENGTH);
  p[104] = 0;                            /* compression_type: deflate */

  if (w->backing_format) {
    size_t len = strlen (w->backing_format);
    put_be32 (p + pos, QCOW2_EXT_BACKING_FMT);
    put_be32 (p + pos + 4, (uint32_t) len);
    memcpy (p + pos + 8, w->backing_format, len);
    pos += 8 + ((len + 7) & ~(size_t) 7);
  }
  if (w->has_partial_id) {
    put_be32 (p + pos, QCOW2_EXT_QBAK_PARTIAL);
    put_be32 (p + pos + 4, QCOW2_PARTIAL_ID_BYTES);
    memcpy (p + pos + 8, w->partial_id, QCOW2_PARTIAL_ID_BYTES);
    pos += 8 + QCOW2_PARTIAL_ID_BYTES;
  }
  put_be32 (p + pos, QCOW2_EXT_END);
  put_be32 (p + pos + 4, 0);
  pos += 8;

  if (w->backing_name) {
    size_t len = strlen (w->backing_name);
    put_be64 (p + 8, pos);
    put_be32 (p + 16, (uint32_t) len);
    memcpy (p + pos, w->backing_name, len);
  }
}

/* Everything past the flush of the last L2 table is recomputed and
 * rewritten at the same offsets by each attempt, so a failed finish can be
 * retried; until the header write nothing the old header references (of a
 * reopened image) was touched. */
int
qcow2_writer_finish (struct qcow2_writer *w)
{
  uint64_t cs = w->cluster_size;
  uint64_t end, data_end, l1_offset = 0, rt, t, b;
  struct refs r = { NULL, 0 };
  uint8_t *buf = NULL;
  int64_t file_size;
  int ret = -1;

  if (check_flushable (w, "finish") < 0)
    return -1;
  if (w->finished) {
    set_usage_error ("%s: finish after the image was finished",
                     w->file->path);
    return -1;
  }
  w->finishing = true;

  /* The held-back tables and the last L2 table go out and are committed
   * at once: a retry finds them on disk. */
  if (w->npending || w->l2_dirty) {
    uint64_t off = w->next_host;
    end = off;
    if (reserve (w, &end, (w->npending + (w->l2_dirty ? 1 : 0)) * cs) < 0 ||
        write_pending (w, off) < 0 ||
        (w->l2_dirty &&
         write_l2 (w, &w->l2, off + w->npending * cs) < 0))
      return -1;
    off = commit_pending (w, off);
    if (w->l2_dirty)
      w->l1[w->l2_index] = off | QCOW_OFLAG_COPIED;
    w->next_host = end;
    w->l2_dirty = false;
  }

  data_end = end = w->next_host;
  if (w->l1_size > 0) {
    l1_offset = end;
    if (reserve (w, &end, w->l1_alloc * 8) < 0)
      return -1;
  }
  if (refcount_layout (w, end, &t, &b, &r.clusters) < 0)
    return -1;
  rt = end;
  if (reserve (w, &end, (t + b) * cs) < 0)
    return -1;

  /* Refcounts from the actual references: whatever an earlier pass left
   * behind (old L1 and refcount structures, replaced L2 tables and data
   * clusters) and garbage of failed appends get refcount 0. */
  r.bits = calloc (div_round_up (r.clusters, 8), 1);
  buf = malloc (w->l1_alloc * 8 > cs ? w->l1_alloc * 8 : cs);
  if (!r.bits || !buf) {
    set_nomem ();
    goto out;
  }
  /* A first pass appended every cluster below DATA_END exactly once, each
   * referenced (failed appends were overwritten): no need to read the L2
   * tables back.  A reopened image has garbage from the earlier pass. */
  if ((w->reopened
       ? mark (w, &r, 0, 1, "header") < 0 ||
         collect_tables (w, &r, data_end) < 0
       : mark (w, &r, 0, data_end >> w->cluster_bits, "data") < 0) ||
      (l1_offset && mark (w, &r, l1_offset,
                          div_round_up (w->l1_alloc * 8, cs), "L1 table")
       < 0) ||
      mark (w, &r, rt, t + b, "refcount structures") < 0)
    goto out;

  if (w->l1_size > 0) {
    for (uint64_t i = 0; i < w->l1_alloc; i++)
      put_be64 (buf + i * 8, w->l1[i]);
    if (qbak_file_pwrite (w->file, buf, w->l1_alloc * 8, l1_offset) < 0)
      goto out;
  }
  if (write_refcounts (w, rt, t, b, &r) < 0)
    goto out;
  /* Drop the garbage failed appends left past the end. */
  file_size = qbak_file_size (w->file);
  if (file_size < 0)
    goto out;
  if ((uint64_t) file_size > end && qbak_file_truncate (w->file, end) < 0)
    goto out;

  /* Everything the header points to is durable before the header is
   * written: the header is the commit point, so a crash leaves the old
   * or the new image. */
  if (qbak_file_flush (w->file) < 0) {
    w->flush_failed = true;
    goto out;
  }
  build_header (w, buf, l1_offset, rt, (uint32_t) t);
  if (qbak_file_pwrite (w->file, buf, cs, 0) < 0)
    goto out;
  if (qbak_file_flush (w->file) < 0) {
    w->flush_failed = true;
    goto out;
  }
  w->finished = true;
  ret = 0;

 out:
  free (r.bits);
  free (buf);
  return ret;
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
