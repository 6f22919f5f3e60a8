/* qcow2 backup writer: taking a finished (or partial) target back for
 * another pass of writes; see qcow2_writer_reopen() in qcow2-writer.h.
 * Only what qcow2_writer_finish() writes is accepted: the header is
 * decoded by the codec, then held to the layout qbak writes. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fileio.h"
#include "formats/qcow2-header.h"
#include "formats/qcow2-writer-internal.h"

/* Check the fixed header HDR (decoded without checks) against what
 * finish writes; the header's bytes H are there for the padding only. */
static int
check_header (const char *fn, const struct qcow2_header *hdr,
              const uint8_t *h, uint64_t file_size)
{
  uint64_t incompat = hdr->incompatible_features;
  uint64_t cs, l1_off, rt_off, rt_clusters;
  uint32_t l1_size;

  if (hdr->magic != QCOW2_MAGIC) {
    set_invalid ("%s: not a qcow2 image (an unfinished target?)", fn);
    return -1;
  }
  if (hdr->version != 3) {
    set_invalid ("%s: qcow2 version %" PRIu32 ": only version 3 images "
                 "written by qbak can be resumed", fn, hdr->version);
    return -1;
  }
  if (hdr->header_length != QCOW2_V3_HEADER_LENGTH) {
    set_invalid ("%s: header length %" PRIu32 ", qbak writes %d", fn,
                 hdr->header_length, QCOW2_V3_HEADER_LENGTH);
    return -1;
  }
  if (incompat & QCOW2_INCOMPAT_COMPRESSION || hdr->compression_type != 0) {
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
  if (incompat || hdr->compatible_features || hdr->autoclear_features) {
    set_invalid ("%s: feature bits set (incompatible 0x%" PRIx64
                 ", compatible 0x%" PRIx64 ", autoclear 0x%" PRIx64 "): "
                 "qbak resumes only images it wrote", fn, incompat,
                 hdr->compatible_features, hdr->autoclear_features);
    return -1;
  }
  if (hdr->nb_snapshots || hdr->snapshots_offset) {
    set_invalid ("%s: the image has snapshots", fn);
    return -1;
  }
  if (hdr->crypt_method) {
    set_invalid ("%s: the image is encrypted", fn);
    return -1;
  }
  if (hdr->refcount_order != REFCOUNT_ORDER) {
    set_invalid ("%s: refcount order %" PRIu32 ", qbak writes %d", fn,
                 hdr->refcount_order, REFCOUNT_ORDER);
    return -1;
  }
  /* The codec does not keep the padding after the compression type. */
  for (int i = QCOW2_V3_MIN_HEADER_LENGTH + 1; i < QCOW2_V3_HEADER_LENGTH;
       i++)
    if (h[i]) {
      set_invalid ("%s: header padding is not zero", fn);
      return -1;
    }
  if (hdr->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
      hdr->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
    set_invalid ("%s: cluster bits %" PRIu32 " out of range", fn,
                 hdr->cluster_bits);
    return -1;
  }
  cs = 1ULL << hdr->cluster_bits;
  if (hdr->size % 512 || hdr->size > INT64_MAX) {
    set_invalid ("%s: invalid virtual size %" PRIu64, fn, hdr->size);
    return -1;
  }
  l1_size = hdr->l1_size;
  l1_off = hdr->l1_table_offset;
  if (l1_size != div_round_up (hdr->size, cs * (cs / 8)) ||
      (uint64_t) l1_size * 8 > QCOW2_MAX_L1_BYTES ||
      (l1_size && (l1_off < cs || l1_off % cs || l1_off > file_size ||
                   (uint64_t) l1_size * 8 > file_size - l1_off))) {
    set_invalid ("%s: invalid L1 table (%" PRIu32 " entries at %" PRIu64
                 ")", fn, l1_size, l1_off);
    return -1;
  }
  rt_off = hdr->refcount_table_offset;
  rt_clusters = hdr->refcount_table_clusters;
  if (rt_clusters == 0 || rt_clusters * cs > QCOW2_MAX_REFTABLE_BYTES ||
      rt_off < cs || rt_off % cs || rt_off > file_size ||
      rt_clusters * cs > file_size - rt_off) {
    set_invalid ("%s: invalid refcount table (%" PRIu64 " clusters at %"
                 PRIu64 ")", fn, rt_clusters, rt_off);
    return -1;
  }
  return 0;
}

/* Where the fixed header puts the backing file name: in cluster 0, after
 * the header and at least an end marker, 8-byte aligned. */
static int
check_backing_name_place (const char *fn, const struct qcow2_header *hdr)
{
  uint64_t cs = 1ULL << hdr->cluster_bits;
  uint64_t bf_off = hdr->backing_file_offset;
  uint32_t bf_len = hdr->backing_file_size;

  if (bf_off > cs || bf_off % 8 ||
      (bf_off && bf_off < QCOW2_V3_HEADER_LENGTH + 8)) {
    set_invalid ("%s: backing file name offset %" PRIu64 " is not in the "
                 "first cluster after the header", fn, bf_off);
    return -1;
  }
  if (bf_off && (bf_len == 0 || bf_len > QCOW2_MAX_BACKING_NAME ||
                 bf_len > cs - bf_off)) {
    set_invalid ("%s: invalid backing file name (offset %" PRIu64
                 ", length %" PRIu32 ")", fn, bf_off, bf_len);
    return -1;
  }
  return 0;
}

/* The extensions and backing file name of HDR (decoded cluster 0) must be
 * what create and finish write: the backing format, the partial marker,
 * an end marker, the name after them. */
static int
check_cluster0 (const char *fn, const struct qcow2_header *hdr)
{
  uint32_t other = 0;

  if (!hdr->has_end_marker) {
    set_invalid ("%s: header extensions run past their area", fn);
    return -1;
  }
  if (hdr->end_marker_len != 0) {
    set_invalid ("%s: end of header extensions with length %" PRIu32,
                 fn, hdr->end_marker_len);
    return -1;
  }
  for (size_t i = 0; i < hdr->n_unknown_exts; i++)
    if (hdr->unknown_exts[i].type == QCOW2_EXT_QBAK_PARTIAL) {
      set_invalid ("%s: invalid partial-target marker", fn);
      return -1;
    }
  if (hdr->has_bitmaps_ext)
    other = QCOW2_EXT_BITMAPS;
  else if (hdr->data_file_name)
    other = QCOW2_EXT_DATA_FILE;
  else if (hdr->has_crypto_ext)
    other = QCOW2_EXT_CRYPTO;
  else if (hdr->features)
    other = QCOW2_EXT_FEATURES;
  else if (hdr->n_unknown_exts)
    other = hdr->unknown_exts[0].type;
  if (other) {
    set_invalid ("%s: header extension 0x%08" PRIx32 ": qbak resumes "
                 "only images it wrote", fn, other);
    return -1;
  }
  if (hdr->backing_format && hdr->backing_format[0] == '\0') {
    set_invalid ("%s: invalid backing format extension", fn);
    return -1;
  }
  if (hdr->backing_file_offset) {
    if (hdr->backing_file_offset < hdr->ext_end) {
      set_invalid ("%s: invalid backing file name (offset %" PRIu64
                   ", length %" PRIu32 ")", fn, hdr->backing_file_offset,
                   hdr->backing_file_size);
      return -1;
    }
  }
  else if (hdr->backing_format) {
    set_invalid ("%s: a backing format without a backing file", fn);
    return -1;
  }
  return 0;
}

struct qcow2_writer *
qcow2_writer_reopen (const char *path)
{
  struct qcow2_writer *w = NULL;
  struct qbak_file *f;
  struct qcow2_header hdr;
  uint8_t h[QCOW2_V3_HEADER_LENGTH], *c0 = NULL;
  int64_t file_size;

  memset (&hdr, 0, sizeof hdr);
  f = qbak_file_open_own (path);
  if (!f)
    return NULL;
  file_size = qbak_file_size (f);
  if (file_size < 0)
    goto err;
  /* qbak's own rules first, with their own messages: the codec's would
   * speak of a broken image where this is one qbak did not write. */
  if (qbak_file_pread (f, h, sizeof h, 0) < 0)
    goto err;
  qcow2_header_decode_fields (h, sizeof h, &hdr);
  if (check_header (path, &hdr, h, (uint64_t) file_size) < 0 ||
      check_backing_name_place (path, &hdr) < 0)
    goto err;
  w = qcow2_writer_new (hdr.size, 1u << hdr.cluster_bits);
  if (!w)
    goto err;
  w->file = f;
  f = NULL;
  if (!(c0 = malloc (w->cluster_size))) {
    set_nomem ();
    goto err;
  }
  if (qbak_file_pread (w->file, c0, w->cluster_size, 0) < 0 ||
      qcow2_header_decode (path, c0, w->cluster_size, (uint64_t) file_size,
                           &hdr) < 0 ||
      check_cluster0 (path, &hdr) < 0)
    goto err;
  /* The names move to the writer. */
  w->backing_name = hdr.backing_name;
  w->backing_format = hdr.backing_format;
  hdr.backing_name = hdr.backing_format = NULL;
  w->has_partial_id = hdr.has_partial_id;
  memcpy (w->partial_id, hdr.partial_id, QCOW2_PARTIAL_ID_BYTES);

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
  if (w->l1_size &&
      qbak_file_pread (w->file, w->l1, (size_t) w->l1_size * 8,
                       hdr.l1_table_offset) < 0)
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
  qcow2_header_free (&hdr);
  free (c0);
  return w;

 err:
  qcow2_header_free (&hdr);
  free (c0);
  qbak_file_close (f);
  qcow2_writer_free (w);
  return NULL;
}
