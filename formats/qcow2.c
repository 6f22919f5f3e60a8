/* qcow2: open and close, and the header rewrite of writable opens.
 *
 * The header codec (qcow2-header.c) decodes cluster 0; here are the rules
 * of what qbak reads (features, encryption, the tables QEMU loads at
 * open).  Every field is checked before it is used; the rules are QEMU's
 * qcow2_do_open.  A malformed image is refused with STATUS_INVALID and a
 * message naming the field.  The bitmaps extension is checked where the
 * bitmaps are loaded (bitmaps/qcow2-bitmap.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/file-names.h"
#include "formats/qcow2.h"

/* Look up a feature's name from the image's feature table ("bit N" when
 * absent).  Returns a static or image-owned string. */
static const char *
qcow2_feature_name (struct qcow2 *s, int type, int bit, char *buf,
                    size_t bufsize)
{
  for (size_t i = 0; i < s->n_features; i++)
    if (s->features[i].type == type && s->features[i].bit == bit &&
        s->features[i].name[0])
      return s->features[i].name;
  const char *known = qcow2_known_feature_name (type, bit);
  if (known)
    return known;
  snprintf (buf, bufsize, "bit %d", bit);
  return buf;
}

static void
qcow2_close (struct image *img)
{
  struct qcow2 *s = to_qcow2 (img);
  if (!s)
    return;
  qcow2_cluster_cleanup (s);
  qcow2_refcount_cleanup (s);
  for (size_t i = 0; i < s->n_unknown_exts; i++)
    free (s->unknown_exts[i].data);
  free (s->unknown_exts);
  free (s->features);
  free (s->data_file_name);
  free (s->base.data_file_path);
  free (s->unknown_header);
  free (s->l1);
  if (s->data_file && s->data_file != s->base.file)
    qbak_file_close (s->data_file);
  qbak_file_close (s->base.file);
  free (s->base.filename);
  free (s->base.backing_name);
  free (s->base.backing_path);
  free (s->base.backing_format);
  free (s);
}

static int
qcow2_check_writable_op (struct image *img)
{
  return qcow2_check_writable (to_qcow2 (img));
}

static void
qcow2_describe (struct image *img, struct image_details *d)
{
  struct qcow2 *s = to_qcow2 (img);
  d->version = s->version;
  d->refcount_bits = 1u << s->refcount_order;
  d->compression_type = s->compression_type == 1 ? "zstd" : "zlib";
  d->extended_l2 = s->extended_l2;
  d->lazy_refcounts = s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS;
  d->dirty = s->incompatible_features & QCOW2_INCOMPAT_DIRTY;
  d->bitmaps_consistent = !s->has_bitmaps_ext ||
                          (s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
  d->data_file = s->data_file_name;
  d->data_file_raw = s->autoclear_features & QCOW2_AUTOCLEAR_DATA_RAW;
  d->incompatible_features = s->incompatible_features;
  d->compatible_features = s->compatible_features;
  d->autoclear_features = s->autoclear_features;
}

/* A target keeps a qcow2 source's cluster size: the granularity its
 * allocation already has. */
static uint32_t
qcow2_target_cluster_size (const struct image *img)
{
  return img->cluster_size;
}

static const struct image_ops qcow2_ops = {
  .name = "qcow2",
  .block_status = qcow2_block_status,
  .read_layer = qcow2_read_layer,
  .close = qcow2_close,
  .can_hold_bitmaps = true,
  .check_writable = qcow2_check_writable_op,
  .describe = qcow2_describe,
  .target_cluster_size = qcow2_target_cluster_size,
};

/* Take the decoded header HDR over (its allocations move to S). */
static void
take_header (struct qcow2 *s, struct qcow2_header *hdr)
{
  s->version = hdr->version;
  s->backing_file_offset = hdr->backing_file_offset;
  s->backing_file_size = hdr->backing_file_size;
  s->cluster_bits = hdr->cluster_bits;
  s->cluster_size = 1u << hdr->cluster_bits;
  s->base.cluster_size = s->cluster_size;
  s->base.size = hdr->size;
  s->crypt_method = hdr->crypt_method;
  s->l1_size = hdr->l1_size;
  s->l1_table_offset = hdr->l1_table_offset;
  s->refcount_table_offset = hdr->refcount_table_offset;
  s->refcount_table_clusters = hdr->refcount_table_clusters;
  s->nb_snapshots = hdr->nb_snapshots;
  s->snapshots_offset = hdr->snapshots_offset;
  s->incompatible_features = hdr->incompatible_features;
  s->compatible_features = hdr->compatible_features;
  s->autoclear_features = hdr->autoclear_features;
  s->refcount_order = hdr->refcount_order;
  s->header_length = hdr->header_length;
  s->compression_type = hdr->compression_type;
  s->unknown_header = hdr->unknown_header;
  s->unknown_header_len = hdr->unknown_header_len;
  s->features = hdr->features;
  s->n_features = hdr->n_features;
  s->data_file_name = hdr->data_file_name;
  s->base.backing_name = hdr->backing_name;
  s->base.backing_format = hdr->backing_format;
  /* The partial marker is not the reader's business: kept, as any
   * extension it does not interpret, for rewrites. */
  s->has_partial_id = hdr->has_partial_id;
  memcpy (s->partial_id, hdr->partial_id, sizeof s->partial_id);
  s->unknown_exts = hdr->unknown_exts;
  s->n_unknown_exts = hdr->n_unknown_exts;
  s->has_bitmaps_ext = hdr->has_bitmaps_ext;
  s->has_crypto_ext = hdr->has_crypto_ext;
  /* An extension without the autoclear bit is inconsistent (a program
   * that does not know bitmaps changed the image): ignored, as QEMU
   * does.  v2 has no autoclear bits. */
  if (hdr->has_bitmaps_ext && hdr->version >= 3 &&
      (hdr->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
    s->nb_bitmaps = hdr->nb_bitmaps;
    s->bitmaps_reserved = hdr->bitmaps_reserved;
    s->bitmap_directory_size = hdr->bitmap_directory_size;
    s->bitmap_directory_offset = hdr->bitmap_directory_offset;
  }
  memset (hdr, 0, sizeof *hdr);
}

static int
check_features (struct qcow2 *s)
{
  const char *fn = s->base.filename;
  char buf[32];
  uint64_t unknown = s->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;

  if (unknown) {
    int bit = __builtin_ctzll (unknown);
    set_invalid ("%s: unsupported incompatible feature: %s; qbak cannot "
                 "read this image safely", fn,
                 qcow2_feature_name (s, 0, bit, buf, sizeof buf));
    return -1;
  }
  if (s->crypt_method != 0) {
    set_invalid ("%s: encrypted image (%s): encryption is not supported",
                 fn, s->crypt_method == 1 ? "AES" :
                 s->crypt_method == 2 ? "LUKS" : "unknown method");
    return -1;
  }
  if (s->header_length > QCOW2_V3_MIN_HEADER_LENGTH) {
    if (s->compression_type > 1) {
      set_invalid ("%s: unknown compression type %u", fn,
                   s->compression_type);
      return -1;
    }
  }
  if ((s->compression_type != 0) !=
      !!(s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
    set_invalid ("%s: compression type %u does not match the compression "
                 "type incompatible bit", fn, s->compression_type);
    return -1;
  }
  if (s->refcount_order > QCOW2_MAX_REFCOUNT_ORDER) {
    set_invalid ("%s: invalid refcount order %" PRIu32 " (at most %d)",
                 fn, s->refcount_order, QCOW2_MAX_REFCOUNT_ORDER);
    return -1;
  }
  s->extended_l2 = !!(s->incompatible_features & QCOW2_INCOMPAT_EXTL2);
  if (s->extended_l2 &&
      s->cluster_bits < QCOW2_EXTL2_MIN_CLUSTER_BITS) {
    set_invalid ("%s: extended L2 entries need clusters of at least 16 KiB "
                 "(cluster_bits %" PRIu32 ")", fn, s->cluster_bits);
    return -1;
  }
  s->l2_entry_bytes = s->extended_l2 ? 16 : 8;
  s->l2_entries = s->cluster_size / s->l2_entry_bytes;
  s->subcluster_size = s->extended_l2 ? s->cluster_size / 32 : s->cluster_size;
  if (s->base.size > INT64_MAX) {
    set_invalid ("%s: virtual size %" PRIu64 " is too large", fn,
                 s->base.size);
    return -1;
  }
  if ((s->autoclear_features & QCOW2_AUTOCLEAR_DATA_RAW) &&
      !(s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)) {
    set_invalid ("%s: data_file_raw is set without an external data file",
                 fn);
    return -1;
  }
  if ((s->autoclear_features & QCOW2_AUTOCLEAR_DATA_RAW) &&
      s->backing_file_offset) {
    set_invalid ("%s: data_file_raw cannot be combined with a backing "
                 "file", fn);
    return -1;
  }
  return 0;
}

/* Where the backing file name leads (the name itself was decoded with
 * the header). */
static int
resolve_backing (struct qcow2 *s)
{
  if (!s->base.backing_name)
    return 0;
  s->base.backing_path = image_resolve_backing (s->base.filename,
                                                s->base.backing_name);
  return s->base.backing_path ? 0 : -1;
}

/* Checks of the tables that QEMU loads at open. */
static int
check_tables (struct qcow2 *s)
{
  const char *fn = s->base.filename;
  uint64_t cs = s->cluster_size;

  if (s->refcount_table_clusters == 0) {
    set_invalid ("%s: refcount table has zero clusters", fn);
    return -1;
  }
  if ((uint64_t) s->refcount_table_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
    set_invalid ("%s: refcount table too large (%" PRIu32 " clusters)", fn,
                 s->refcount_table_clusters);
    return -1;
  }
  if (qcow2_check_metadata_range (s, s->refcount_table_offset,
                                  (uint64_t) s->refcount_table_clusters * cs,
                                  "refcount table") < 0)
    return -1;

  if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
    set_invalid ("%s: too many snapshots (%" PRIu32 ")", fn,
                 s->nb_snapshots);
    return -1;
  }
  if (s->nb_snapshots &&
      qcow2_check_metadata_range (s, s->snapshots_offset, 1,
                                  "snapshot table") < 0)
    return -1;

  if ((uint64_t) s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
    set_invalid ("%s: L1 table too large (l1_size %" PRIu32 ")", fn,
                 s->l1_size);
    return -1;
  }
  /* Entries needed to map the virtual size. */
  uint64_t per_l1 = (uint64_t) s->l2_entries * cs;
  uint64_t need = s->base.size / per_l1 + (s->base.size % per_l1 != 0);
  if (s->l1_size < need) {
    set_invalid ("%s: L1 table too small: l1_size %" PRIu32 " maps less "
                 "than the virtual size (%" PRIu64 " entries needed)", fn,
                 s->l1_size, need);
    return -1;
  }
  if (s->l1_size == 0)
    return 0;
  if (qcow2_check_metadata_range (s, s->l1_table_offset,
                                  (uint64_t) s->l1_size * 8, "L1 table") < 0)
    return -1;

  uint8_t *raw = malloc ((size_t) s->l1_size * 8);
  s->l1 = malloc ((size_t) s->l1_size * 8);
  if (!raw || !s->l1) {
    free (raw);
    set_nomem ();
    return -1;
  }
  if (qbak_file_pread (s->base.file, raw, (size_t) s->l1_size * 8,
                       s->l1_table_offset) < 0) {
    free (raw);
    return -1;
  }
  for (uint32_t i = 0; i < s->l1_size; i++) {
    uint64_t e = be64_at (raw + (size_t) i * 8);
    s->l1[i] = e;
    if (e & L1E_RESERVED_MASK) {
      free (raw);
      set_invalid ("%s: L1 entry %" PRIu32 " has reserved bits set "
                   "(%#" PRIx64 ")", fn, i, e);
      return -1;
    }
    uint64_t l2 = e & L1E_OFFSET_MASK;
    char what[48];
    snprintf (what, sizeof what, "L1 entry %" PRIu32 ": L2 table", i);
    if (l2 && qcow2_check_metadata_range (s, l2, cs, what) < 0) {
      free (raw);
      return -1;
    }
  }
  free (raw);
  return 0;
}

static int
open_data_file (struct qcow2 *s, unsigned flags)
{
  const char *fn = s->base.filename;

  if (!(s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)) {
    if (s->data_file_name) {
      set_invalid ("%s: external data file extension without the external "
                   "data file feature", fn);
      return -1;
    }
    s->base.data_file = s->base.file;
    return 0;
  }
  if (!s->data_file_name) {
    set_invalid ("%s: image uses an external data file but does not name "
                 "it", fn);
    return -1;
  }
  if (image_check_local_name (fn, "external data file", s->data_file_name) < 0)
    return -1;
  s->base.data_file_path = image_resolve_backing (fn, s->data_file_name);
  if (!s->base.data_file_path)
    return -1;
  /* Without the chain, no file the image names is opened: the caller
   * wants only the image's own metadata (a bitmap command, or an image
   * from an untrusted source being inspected). */
  if (flags & IMAGE_OPEN_NO_BACKING) {
    s->base.data_file_closed = true;
    return 0;
  }
  /* Guest data is only ever read: bitmap changes write metadata, which
   * lives in the image itself, never in the data file. */
  s->data_file = qbak_file_open (s->base.data_file_path, false);
  if (!s->data_file) {
    qbak_internal_error_prefix ("%s: external data file '%s'", fn,
                                s->data_file_name);
    return -1;
  }
  s->base.data_file = s->data_file;
  return 0;
}

struct image *
qcow2_open (struct qbak_file *file, const char *path, unsigned flags)
{
  struct qcow2 *s = calloc (1, sizeof *s);
  struct qcow2_header hdr;
  uint8_t *c0 = NULL;
  uint8_t h[QCOW2_V3_HEADER_LENGTH] = { 0 };

  if (!s || !(s->base.filename = strdup (path))) {
    free (s);
    qbak_file_close (file);
    set_nomem ();
    return NULL;
  }
  s->base.ops = &qcow2_ops;
  s->base.format = IMAGE_QCOW2;
  s->base.file = file;

  int64_t fsize = qbak_file_size (file);
  if (fsize < 0)
    goto fail;
  s->file_size = (uint64_t) fsize;
  /* The fixed header first: it says how large cluster 0 is. */
  memset (&hdr, 0, sizeof hdr);
  size_t hlen = s->file_size < sizeof h ? (size_t) s->file_size : sizeof h;
  if (s->file_size >= QCOW2_V2_HEADER_LENGTH &&
      qbak_file_pread (file, h, hlen, 0) < 0)
    goto fail;
  qcow2_header_decode_fields (h, hlen, &hdr);
  if (qcow2_header_check_fixed (path, &hdr, s->file_size) < 0)
    goto fail;

  /* Cluster 0 holds the header, the extensions and the backing name. */
  uint32_t cs = 1u << hdr.cluster_bits;
  c0 = calloc (1, cs);
  if (!c0) {
    set_nomem ();
    goto fail;
  }
  if (qbak_file_pread_zerofill (file, c0, cs, 0) < 0 ||
      qcow2_header_decode (path, c0, cs, s->file_size, &hdr) < 0)
    goto fail;
  take_header (s, &hdr);
  if (s->has_crypto_ext) {
    set_invalid ("%s: encrypted image (full disk encryption header "
                 "extension): encryption is not supported", path);
    goto fail;
  }
  if (check_features (s) < 0 || resolve_backing (s) < 0 ||
      check_tables (s) < 0 || open_data_file (s, flags) < 0)
    goto fail;
  if ((flags & IMAGE_OPEN_WRITE) && qcow2_refcount_init (s) < 0)
    goto fail;
  s->base.corrupt = !!(s->incompatible_features & QCOW2_INCOMPAT_CORRUPT);
  free (c0);
  return &s->base;

fail:
  free (c0);
  qcow2_close (&s->base);
  return NULL;
}

/* ---- Writing the header ---------------------------------------------- */

int
qcow2_update_header (struct qcow2 *s)
{
  struct qcow2_feature_name table[QCOW2_N_KNOWN_FEATURES];
  struct qcow2_header hdr;
  uint8_t *h = malloc (s->cluster_size);
  int ret = -1, r;

  if (!h) {
    set_nomem ();
    return -1;
  }
  /* Autoclear bits we do not understand must be cleared by a writer. */
  s->autoclear_features &= QCOW2_AUTOCLEAR_KNOWN;
  if (s->nb_bitmaps)
    s->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
  else
    s->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
  s->header_length = QCOW2_V3_HEADER_LENGTH + s->unknown_header_len;

  memset (&hdr, 0, sizeof hdr);
  hdr.magic = QCOW2_MAGIC;
  hdr.version = s->version;
  hdr.cluster_bits = s->cluster_bits;
  hdr.size = s->base.size;
  hdr.crypt_method = s->crypt_method;
  hdr.l1_size = s->l1_size;
  hdr.l1_table_offset = s->l1_table_offset;
  hdr.refcount_table_offset = s->refcount_table_offset;
  hdr.refcount_table_clusters = s->refcount_table_clusters;
  hdr.nb_snapshots = s->nb_snapshots;
  hdr.snapshots_offset = s->snapshots_offset;
  hdr.incompatible_features = s->incompatible_features;
  hdr.compatible_features = s->compatible_features;
  hdr.autoclear_features = s->autoclear_features;
  hdr.refcount_order = s->refcount_order;
  hdr.header_length = s->header_length;
  hdr.compression_type = s->compression_type;
  hdr.unknown_header = s->unknown_header;
  hdr.unknown_header_len = s->unknown_header_len;
  hdr.backing_name = s->base.backing_name;
  hdr.backing_format = s->base.backing_format;
  hdr.data_file_name = s->data_file_name;
  /* The bitmaps extension only while there are bitmaps; the encoder puts
   * it first, inside the first 512-byte sector with the header, so that a
   * bitmap commit changes bytes of one sector only, which the disk writes
   * atomically.  (QEMU puts it later; the order of extensions is free.) */
  hdr.has_bitmaps_ext = s->nb_bitmaps != 0;
  hdr.nb_bitmaps = s->nb_bitmaps;
  hdr.bitmap_directory_size = s->bitmap_directory_size;
  hdr.bitmap_directory_offset = s->bitmap_directory_offset;
  hdr.has_partial_id = s->has_partial_id;
  memcpy (hdr.partial_id, s->partial_id, sizeof hdr.partial_id);
  hdr.unknown_exts = s->unknown_exts;
  hdr.n_unknown_exts = s->n_unknown_exts;
  /* QEMU's feature name table, where it fits with room to spare, as
   * qemu-img writes it. */
  if (s->cluster_size > 4096) {
    memset (table, 0, sizeof table);
    for (size_t i = 0; i < QCOW2_N_KNOWN_FEATURES; i++) {
      table[i].type = qcow2_known_features[i].type;
      table[i].bit = qcow2_known_features[i].bit;
      strncpy (table[i].name, qcow2_known_features[i].name,
               QCOW2_FEATURE_NAME_BYTES);
    }
    hdr.features = table;
    hdr.n_features = QCOW2_N_KNOWN_FEATURES;
  }

  r = qcow2_header_encode (&hdr, h, s->cluster_size);
  if (r == QCOW2_ENCODE_EXTS_TOO_BIG) {
    set_invalid ("%s: header extensions do not fit in the first cluster",
                 s->base.filename);
    goto out;
  }
  if (r == QCOW2_ENCODE_NAME_TOO_BIG) {
    set_invalid ("%s: backing file name does not fit in the first cluster",
                 s->base.filename);
    goto out;
  }
  s->backing_file_offset = hdr.backing_file_offset;
  s->backing_file_size = hdr.backing_file_size;

  if (qbak_file_pwrite (s->base.file, h, s->cluster_size, 0) < 0 ||
      qbak_file_flush (s->base.file) < 0)
    goto out;
  ret = 0;
out:
  free (h);
  return ret;
}

int
qcow2_check_writable (struct qcow2 *s)
{
  const char *fn = s->base.filename;
  if (s->version < 3) {
    set_invalid ("%s: cannot store dirty bitmaps in qcow2 v2 (compat=0.10) "
                 "images; upgrade with 'qemu-img amend -o compat=1.1'", fn);
    return -1;
  }
  if (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
    set_invalid ("%s: image is marked corrupt; qbak will not write to it; "
                 "run 'qemu-img check -r all' first", fn);
    return -1;
  }
  if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) {
    set_invalid ("%s: image is marked dirty (its refcounts may be stale "
                 "after a crash with lazy refcounts); run 'qemu-img check -r "
                 "all' first", fn);
    return -1;
  }
  if (!s->base.file->writable || !s->reftable) {
    set_invalid ("%s: image was not opened for writing", fn);
    return -1;
  }
  return 0;
}
