/* Streaming qcow2 v3 writer for backup targets: see qcow2-writer.h.
 *
 * Byte layouts: shared/reference/qcow2-bitmaps.md §1.1 (header), §1.2
 * (extensions), §1.7-1.8 (L1/L2), §1.10 (refcounts).  Every host cluster is
 * allocated exactly once by appending at the end of the file, so the file
 * is dense and every refcount is 1: the refcount structures need not be
 * maintained while copying, only computed once at the end.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fileio.h"
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"

#define HEADER_LENGTH 112
#define REFCOUNT_ORDER 4                 /* 16-bit refcounts */
#define REFCOUNT_ENTRY_BYTES 2
/* Host offsets must fit the L2 entry's offset field (bits 9-55). */
#define MAX_HOST_OFFSET (1ULL << 56)
/* QEMU refuses backing format names of 16 bytes or more. */
#define MAX_BACKING_FORMAT 15
/* Refcount table and blocks go out in requests of this size. */
#define REFCOUNT_CHUNK (1u << 20)

struct qcow2_writer {
  struct qbak_file *file;
  char *backing_name;           /* NULL if none */
  char *backing_format;         /* NULL if none */
  uint64_t size;
  uint32_t cluster_size;
  uint32_t cluster_bits;
  uint32_t l2_entries;          /* per L2 table */
  uint32_t l1_size;             /* entries in use */
  uint64_t l1_alloc;            /* entries in memory and on disk (whole
                                   clusters) */
  uint64_t *l1;                 /* CPU order until finish */
  uint64_t *l2;                 /* the current L2 table, CPU order */
  uint64_t l2_index;            /* L1 index of the current L2 table */
  bool l2_dirty;                /* it has an entry not yet on disk */
  uint64_t next_host;           /* end of allocated clusters (aligned) */
  uint64_t next_guest;          /* end of the previous request */
  bool failed;                  /* an error that changed the state (I/O,
                                   or finish begun): refuse further calls */
  bool finished;
};

static uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

/* Reserve BYTES (rounded up to clusters) at the end of the file. */
static int
alloc_host (struct qcow2_writer *w, uint64_t bytes, uint64_t *offset)
{
  uint64_t n = div_round_up (bytes, w->cluster_size) << w->cluster_bits;
  uint64_t end;

  if (n < bytes || __builtin_add_overflow (w->next_host, n, &end) ||
      end > MAX_HOST_OFFSET) {
    set_invalid ("%s: image file would grow past the largest qcow2 host "
                 "offset", w->file->path);
    return -1;
  }
  *offset = w->next_host;
  w->next_host = end;
  return 0;
}

/* Append the current L2 table if it has entries, and point the L1 at it.
 * Each table is written exactly once: requests never come back. */
static int
flush_l2 (struct qcow2_writer *w)
{
  uint64_t off;

  if (!w->l2_dirty)
    return 0;
  if (alloc_host (w, w->cluster_size, &off) < 0)
    return -1;
  for (uint32_t i = 0; i < w->l2_entries; i++)
    put_be64 ((uint8_t *) &w->l2[i], w->l2[i]);
  if (qbak_file_pwrite (w->file, w->l2, w->cluster_size, off) < 0) {
    w->failed = true;
    return -1;
  }
  w->l1[w->l2_index] = off | QCOW_OFLAG_COPIED;
  memset (w->l2, 0, w->cluster_size);
  w->l2_dirty = false;
  return 0;
}

/* Set the L2 entry of guest cluster CLUSTER, moving to its table first. */
static int
set_l2_entry (struct qcow2_writer *w, uint64_t cluster, uint64_t entry)
{
  uint64_t index = cluster / w->l2_entries;

  if (index != w->l2_index) {
    if (flush_l2 (w) < 0)
      return -1;
    w->l2_index = index;
  }
  w->l2[cluster % w->l2_entries] = entry;
  w->l2_dirty = true;
  return 0;
}

static int
check_usable (struct qcow2_writer *w, const char *op)
{
  if (w->finished) {
    set_usage_error ("%s: %s after the image was finished", w->file->path,
                     op);
    return -1;
  }
  if (w->failed) {
    qbak_internal_error (QBAK_STATUS_IO, 0, "%s: %s after an earlier "
                         "error left the image incomplete", w->file->path,
                         op);
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
  if (__builtin_add_overflow (offset, len, &end) || end > w->size) {
    set_usage_error ("%s: %s at offset %" PRIu64 " length %" PRIu64
                     ": beyond the virtual size %" PRIu64, fn, op, offset,
                     len, w->size);
    return -1;
  }
  if (offset < w->next_guest) {
    set_usage_error ("%s: %s at offset %" PRIu64 ": out of order, the "
                     "previous request ended at %" PRIu64, fn, op, offset,
                     w->next_guest);
    return -1;
  }
  if ((len & (w->cluster_size - 1)) && end != w->size) {
    set_usage_error ("%s: %s at offset %" PRIu64 " length %" PRIu64
                     ": length not a multiple of the cluster size %" PRIu32
                     " and not ending at the end of the disk", fn, op,
                     offset, len, w->cluster_size);
    return -1;
  }
  return 0;
}

struct qcow2_writer *
qcow2_writer_create (const char *path, const struct qcow2_writer_opts *o)
{
  struct qcow2_writer *w = NULL;
  uint32_t cs = o->cluster_size;
  size_t fmt_len = o->backing_format ? strlen (o->backing_format) : 0;
  size_t name_len = o->backing_name ? strlen (o->backing_name) : 0;
  uint64_t l1_size, l1_bytes, cluster0;

  if (cs < (1u << QCOW2_MIN_CLUSTER_BITS) ||
      cs > (1u << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
    set_usage_error ("%s: invalid cluster size %" PRIu32 ": must be a power "
                     "of two from 512 to 2 MiB", path, cs);
    return NULL;
  }
  if (o->size % 512 || o->size > INT64_MAX) {
    set_usage_error ("%s: invalid virtual size %" PRIu64 ": must be a "
                     "multiple of 512", path, o->size);
    return NULL;
  }
  /* One L2 table maps cs/8 clusters of cs bytes: at most 2^39 bytes. */
  l1_size = div_round_up (o->size, (uint64_t) cs * (cs / 8));
  l1_bytes = l1_size * 8;
  if (l1_bytes > QCOW2_MAX_L1_BYTES) {
    set_usage_error ("%s: virtual size %" PRIu64 " is too large for "
                     "cluster size %" PRIu32 " (L1 table over %u MiB)",
                     path, o->size, cs, QCOW2_MAX_L1_BYTES >> 20);
    return NULL;
  }
  if (o->backing_format && !o->backing_name) {
    set_usage_error ("%s: a backing format without a backing file", path);
    return NULL;
  }
  if (o->backing_format && (fmt_len == 0 || fmt_len > MAX_BACKING_FORMAT)) {
    set_usage_error ("%s: invalid backing format name '%s'", path,
                     o->backing_format);
    return NULL;
  }
  if (o->backing_name && (name_len == 0 ||
                          name_len > QCOW2_MAX_BACKING_NAME)) {
    set_usage_error ("%s: backing file name must be 1 to %d bytes long",
                     path, QCOW2_MAX_BACKING_NAME);
    return NULL;
  }
  /* Header, backing format extension, end marker, name: all in cluster 0
   * (reference §1.2). */
  cluster0 = HEADER_LENGTH + (o->backing_format ? 8 + ((fmt_len + 7) & ~7u)
                              : 0) + 8 + name_len;
  if (cluster0 > cs) {
    set_usage_error ("%s: backing file name '%s' does not fit in the "
                     "first cluster (%" PRIu32 " bytes)", path,
                     o->backing_name, cs);
    return NULL;
  }

  w = calloc (1, sizeof *w);
  if (!w)
    goto nomem;
  w->size = o->size;
  w->cluster_size = cs;
  w->cluster_bits = (uint32_t) __builtin_ctz (cs);
  w->l2_entries = cs / 8;
  w->l1_size = (uint32_t) l1_size;
  w->l1_alloc = div_round_up (l1_bytes, cs) * (cs / 8);
  w->l1 = calloc (w->l1_alloc ? w->l1_alloc : 1, sizeof *w->l1);
  w->l2 = calloc (w->l2_entries, sizeof *w->l2);
  if (!w->l1 || !w->l2)
    goto nomem;
  if (o->backing_name && !(w->backing_name = strdup (o->backing_name)))
    goto nomem;
  if (o->backing_format && !(w->backing_format = strdup (o->backing_format)))
    goto nomem;

  w->file = qbak_file_create (path);
  if (!w->file)
    goto err;
  /* Cluster 0 is reserved for the header and stays a hole until finish. */
  if (qbak_file_truncate (w->file, cs) < 0)
    goto err;
  w->next_host = cs;
  return w;

 nomem:
  set_nomem ();
 err:
  qcow2_writer_free (w);
  return NULL;
}

int
qcow2_writer_write (struct qcow2_writer *w, uint64_t offset,
                    const void *buf, size_t len)
{
  uint64_t host, first, n;

  if (check_request (w, "write", offset, len) < 0)
    return -1;
  if (len == 0)
    return 0;
  if (alloc_host (w, len, &host) < 0)
    return -1;
  /* One sequential write for the whole run; a partial last cluster's tail
   * is never written, and reads as zeroes (a hole, or past the end of the
   * data until the next metadata cluster follows it). */
  if (qbak_file_pwrite (w->file, buf, len, host) < 0) {
    w->failed = true;
    return -1;
  }
  first = offset >> w->cluster_bits;
  n = div_round_up (len, w->cluster_size);
  for (uint64_t i = 0; i < n; i++)
    if (set_l2_entry (w, first + i,
                      (host + (i << w->cluster_bits)) | QCOW_OFLAG_COPIED) < 0)
      return -1;
  w->next_guest = offset + len;
  return 0;
}

int
qcow2_writer_zero (struct qcow2_writer *w, uint64_t offset, uint64_t len)
{
  uint64_t first, n;

  if (check_request (w, "zero", offset, len) < 0)
    return -1;
  first = offset >> w->cluster_bits;
  n = div_round_up (len, w->cluster_size);
  for (uint64_t i = 0; i < n; i++)
    if (set_l2_entry (w, first + i, QCOW_OFLAG_ZERO) < 0)
      return -1;
  w->next_guest = offset + len;
  return 0;
}

/* Fill one cluster of the refcount area: cluster K of the T refcount-table
 * clusters at RT, followed by the B refcount blocks at RB that give the
 * first C host clusters refcount 1 (reference §1.10). */
static void
fill_refcount_cluster (const struct qcow2_writer *w, uint8_t *p, uint64_t k,
                       uint64_t t, uint64_t rb, uint64_t b, uint64_t c)
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
      uint64_t r = (k - t) * per_block + j;
      if (r >= c)
        break;
      put_be16 (p + j * REFCOUNT_ENTRY_BYTES, 1);
    }
  }
}

/* Append the refcount table and blocks covering every cluster of the file,
 * themselves included.  Sets *RT_OFFSET and *RT_CLUSTERS. */
static int
write_refcounts (struct qcow2_writer *w, uint64_t *rt_offset,
                 uint32_t *rt_clusters)
{
  const char *fn = w->file->path;
  uint64_t cs = w->cluster_size;
  uint64_t per_block = cs / REFCOUNT_ENTRY_BYTES;
  uint64_t n = w->next_host >> w->cluster_bits;
  uint64_t b = 0, t = 0, c, rt, area, chunk, done;
  uint8_t *buf;

  /* The fixpoint: B blocks and T table clusters must cover N + B + T
   * clusters.  Both only grow, and by far less than they cover, so this
   * ends after a few rounds. */
  for (;;) {
    uint64_t nb, nt;
    c = n + b + t;
    nb = div_round_up (c, per_block);
    nt = div_round_up (nb * 8, cs);
    if (nt == 0)
      nt = 1;
    if (nb == b && nt == t)
      break;
    b = nb;
    t = nt;
  }
  if (t * cs > QCOW2_MAX_REFTABLE_BYTES) {
    set_invalid ("%s: the refcount table would exceed %u MiB: the image is "
                 "too large for cluster size %" PRIu64, fn,
                 QCOW2_MAX_REFTABLE_BYTES >> 20, cs);
    return -1;
  }
  if (alloc_host (w, (t + b) * cs, &rt) < 0)
    return -1;

  area = (t + b) * cs;
  chunk = cs > REFCOUNT_CHUNK ? cs : REFCOUNT_CHUNK;
  if (chunk > area)
    chunk = area;
  buf = malloc (chunk);
  if (!buf) {
    set_nomem ();
    return -1;
  }
  for (done = 0; done < area; done += chunk) {
    uint64_t len = area - done < chunk ? area - done : chunk;
    for (uint64_t o = 0; o < len; o += cs)
      fill_refcount_cluster (w, buf + o, (done + o) >> w->cluster_bits, t,
                             rt + t * cs, b, c);
    if (qbak_file_pwrite (w->file, buf, len, rt + done) < 0) {
      free (buf);
      w->failed = true;
      return -1;
    }
  }
  free (buf);
  *rt_offset = rt;
  *rt_clusters = (uint32_t) t;
  return 0;
}

/* Build cluster 0 as qemu-img create lays it out (reference §1.1-1.2):
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

int
qcow2_writer_finish (struct qcow2_writer *w)
{
  uint64_t l1_offset = 0, rt_offset;
  uint32_t rt_clusters;
  uint8_t *header;

  if (check_usable (w, "finish") < 0)
    return -1;
  if (flush_l2 (w) < 0)
    return -1;

  if (w->l1_size > 0) {
    uint64_t bytes = w->l1_alloc * 8;
    if (alloc_host (w, bytes, &l1_offset) < 0)
      return -1;
    for (uint64_t i = 0; i < w->l1_alloc; i++)
      put_be64 ((uint8_t *) &w->l1[i], w->l1[i]);
    /* From here on the in-memory L1 is big-endian: never go back. */
    w->failed = true;
    if (qbak_file_pwrite (w->file, w->l1, bytes, l1_offset) < 0)
      return -1;
  }
  else
    w->failed = true;

  if (write_refcounts (w, &rt_offset, &rt_clusters) < 0)
    return -1;

  /* Everything the header points to is durable before the header is
   * written: the header is the commit point (DESIGN §4). */
  if (qbak_file_flush (w->file) < 0)
    return -1;
  header = malloc (w->cluster_size);
  if (!header) {
    set_nomem ();
    return -1;
  }
  build_header (w, header, l1_offset, rt_offset, rt_clusters);
  if (qbak_file_pwrite (w->file, header, w->cluster_size, 0) < 0) {
    free (header);
    return -1;
  }
  free (header);
  if (qbak_file_flush (w->file) < 0)
    return -1;
  w->failed = false;
  w->finished = true;
  return 0;
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
  free (w->l2);
  free (w);
}
