/* qcow2 backup writer: finish.  The last L2 tables, the L1 table, the
 * refcount table and blocks computed from the actual references, then the
 * header (through the codec) as the commit point; see
 * qcow2_writer_finish() in qcow2-writer.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fileio.h"
#include "formats/qcow2-header.h"
#include "formats/qcow2-writer-internal.h"


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
      if (qcow2_writer_check_l2_entry (w, e, data_end, i, j) < 0)
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
  uint64_t n = end >> w->cluster_bits;
  struct qcow2_refcount_area area;

  /* Every cluster from 0 to the end of the area itself needs a block: no
   * block exists yet. */
  qcow2_refcount_area (w->cluster_bits, REFCOUNT_ORDER, 0, n, 0, false,
                       NULL, NULL, &area);
  *t = area.table_clusters;
  *b = area.blocks;
  *c = n + *b + *t;
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

/* Encode cluster 0 into P as qemu-img create lays it out: header,
 * backing format extension, (the partial marker,) end marker, backing
 * file name. */
static int
build_header (const struct qcow2_writer *w, uint8_t *p, uint64_t l1_offset,
              uint64_t rt_offset, uint32_t rt_clusters)
{
  struct qcow2_header hdr;

  memset (&hdr, 0, sizeof hdr);
  hdr.magic = QCOW2_MAGIC;
  hdr.version = 3;
  hdr.cluster_bits = w->cluster_bits;
  hdr.size = w->size;
  hdr.l1_size = w->l1_size;
  hdr.l1_table_offset = l1_offset;
  hdr.refcount_table_offset = rt_offset;
  hdr.refcount_table_clusters = rt_clusters;
  hdr.refcount_order = REFCOUNT_ORDER;
  hdr.header_length = QCOW2_V3_HEADER_LENGTH;
  hdr.backing_name = w->backing_name;
  hdr.backing_format = w->backing_format;
  hdr.has_partial_id = w->has_partial_id;
  memcpy (hdr.partial_id, w->partial_id, QCOW2_PARTIAL_ID_BYTES);
  /* Create made sure that all of it fits, the partial marker included. */
  if (qcow2_header_encode (&hdr, p, w->cluster_size) < 0) {
    set_invalid ("%s: header extensions do not fit in the first cluster",
                 w->file->path);
    return -1;
  }
  return 0;
}

/* Give back the space of what the committed image no longer references
 * below DATA_END (an earlier pass's L1 and refcount structures, replaced
 * L2 tables and data): the file stays the same size, but a target
 * checkpointed many times, or resumed, does not keep every old copy.
 * Only after the commit, so a crash still finds the old image intact; a
 * file system that cannot punch holes keeps the garbage, which nothing
 * reads. */
static void
release_garbage (struct qcow2_writer *w, const struct refs *r,
                 uint64_t data_end)
{
  uint64_t n = data_end >> w->cluster_bits;
  for (uint64_t k = 1; k < n;) {
    if (r->bits[k / 8] & (1u << (k % 8))) {
      k++;
      continue;
    }
    uint64_t k0 = k;
    while (k < n && !(r->bits[k / 8] & (1u << (k % 8))))
      k++;
    if (qbak_file_punch_hole (w->file, k0 << w->cluster_bits,
                              (k - k0) << w->cluster_bits) < 0) {
      error_clear ();
      return;
    }
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

  if (qcow2_writer_check_flushable (w, "finish") < 0)
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
    if (qcow2_writer_reserve (w, &end,
                              (w->npending + (w->l2_dirty ? 1 : 0)) * cs)
        < 0 ||
        qcow2_writer_write_pending (w, off) < 0 ||
        (w->l2_dirty &&
         qcow2_writer_write_l2 (w, &w->l2, off + w->npending * cs) < 0))
      return -1;
    off = qcow2_writer_commit_pending (w, off);
    if (w->l2_dirty)
      w->l1[w->l2_index] = off | QCOW_OFLAG_COPIED;
    w->next_host = end;
    w->l2_dirty = false;
  }

  data_end = end = w->next_host;
  if (w->l1_size > 0) {
    l1_offset = end;
    if (qcow2_writer_reserve (w, &end, w->l1_alloc * 8) < 0)
      return -1;
  }
  if (refcount_layout (w, end, &t, &b, &r.clusters) < 0)
    return -1;
  rt = end;
  if (qcow2_writer_reserve (w, &end, (t + b) * cs) < 0)
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
  if (build_header (w, buf, l1_offset, rt, (uint32_t) t) < 0 ||
      qbak_file_pwrite (w->file, buf, cs, 0) < 0)
    goto out;
  if (qbak_file_flush (w->file) < 0) {
    w->flush_failed = true;
    goto out;
  }
  w->finished = true;
  w->end = end;
  if (w->reopened)
    release_garbage (w, &r, data_end);
  ret = 0;

 out:
  free (r.bits);
  free (buf);
  return ret;
}


int
qcow2_writer_checkpoint (struct qcow2_writer *w)
{
  if (qcow2_writer_finish (w) < 0)
    return -1;
  /* The pass goes on where it was, as over a reopened image: what the
   * committed header references (the current L2 table included) is
   * never written again; new data, and new copies of tables that change,
   * go past the end. */
  w->finished = false;
  w->finishing = false;
  w->reopened = true;
  w->next_host = w->hwm = w->wb_start = w->end;
  return 0;
}
