/* qcow2: header, header extensions, open and close.
 *
 * Every field is checked before it is used; the rules are QEMU's
 * qcow2_do_open/qcow2_read_extensions.  A malformed image is
 * refused with STATUS_INVALID and a message naming the field.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/qcow2.h"

static const char *incompat_names[] = {
  "dirty bit", "corrupt bit", "external data file", "compression type",
  "extended L2 entries",
};

const char *
qcow2_feature_name (struct qcow2 *s, int type, int bit, char *buf,
                    size_t bufsize)
{
  for (size_t i = 0; i < s->n_features; i++)
    if (s->features[i].type == type && s->features[i].bit == bit &&
        s->features[i].name[0])
      return s->features[i].name;
  if (type == 0 && bit < 5)
    return incompat_names[bit];
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

/* Parse the fixed header in H (at least 72 bytes, HLEN valid). */
static int
parse_header (struct qcow2 *s, const uint8_t *h, size_t hlen)
{
  const char *fn = s->base.filename;

  if (be32_at (h) != QCOW2_MAGIC) {
    set_invalid ("%s: not a qcow2 image (bad magic)", fn);
    return -1;
  }
  s->version = be32_at (h + 4);
  if (s->version < 2 || s->version > 3) {
    set_invalid ("%s: unsupported qcow2 version %" PRIu32, fn, s->version);
    return -1;
  }
  s->backing_file_offset = be64_at (h + 8);
  s->backing_file_size = be32_at (h + 16);
  s->cluster_bits = be32_at (h + 20);
  s->base.size = be64_at (h + 24);
  s->crypt_method = be32_at (h + 32);
  s->l1_size = be32_at (h + 36);
  s->l1_table_offset = be64_at (h + 40);
  s->refcount_table_offset = be64_at (h + 48);
  s->refcount_table_clusters = be32_at (h + 56);
  s->nb_snapshots = be32_at (h + 60);
  s->snapshots_offset = be64_at (h + 64);

  if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
      s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
    set_invalid ("%s: invalid cluster size: cluster_bits %" PRIu32
                 " is outside 9..21", fn, s->cluster_bits);
    return -1;
  }
  s->cluster_size = 1u << s->cluster_bits;
  s->base.cluster_size = s->cluster_size;

  if (s->version == 2) {
    s->header_length = QCOW2_V2_HEADER_LENGTH;
    s->refcount_order = 4;
    return 0;
  }

  if (hlen < QCOW2_V3_MIN_HEADER_LENGTH) {
    set_invalid ("%s: truncated qcow2 v3 header", fn);
    return -1;
  }
  s->incompatible_features = be64_at (h + 72);
  s->compatible_features = be64_at (h + 80);
  s->autoclear_features = be64_at (h + 88);
  s->refcount_order = be32_at (h + 96);
  s->header_length = be32_at (h + 100);
  if (s->header_length < QCOW2_V3_MIN_HEADER_LENGTH) {
    set_invalid ("%s: invalid qcow2 header_length %" PRIu32
                 " (v3 needs at least 104)", fn, s->header_length);
    return -1;
  }
  if (s->header_length > s->cluster_size) {
    set_invalid ("%s: qcow2 header_length %" PRIu32
                 " is larger than the cluster size", fn, s->header_length);
    return -1;
  }
  return 0;
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
  if (s->header_length > 104) {
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
  if (s->refcount_order > 6) {
    set_invalid ("%s: invalid refcount order %" PRIu32 " (at most 6)",
                 fn, s->refcount_order);
    return -1;
  }
  s->extended_l2 = !!(s->incompatible_features & QCOW2_INCOMPAT_EXTL2);
  if (s->extended_l2 && s->cluster_bits < 14) {
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

static char *
dup_string (const uint8_t *p, size_t len)
{
  char *r = malloc (len + 1);
  if (!r) {
    set_nomem ();
    return NULL;
  }
  memcpy (r, p, len);
  r[len] = '\0';
  if (strlen (r) != len) {
    free (r);
    return NULL;                /* embedded NUL */
  }
  return r;
}

/* Walk the extension area of cluster 0 (C0, cluster_size bytes). */
static int
parse_extensions (struct qcow2 *s, const uint8_t *c0)
{
  const char *fn = s->base.filename;
  if (s->backing_file_offset > s->cluster_size) {
    set_invalid ("%s: invalid backing file offset %" PRIu64 " (past the "
                 "first cluster)", fn, s->backing_file_offset);
    return -1;
  }
  uint64_t end = s->backing_file_offset ? s->backing_file_offset
                                        : s->cluster_size;
  uint64_t off = s->header_length;

  while (off < end) {
    if (end - off < 8) {
      set_invalid ("%s: header extension at offset %" PRIu64
                   " is truncated", fn, off);
      return -1;
    }
    uint32_t type = be32_at (c0 + off), len = be32_at (c0 + off + 4);
    off += 8;
    if (type == QCOW2_EXT_END)
      break;
    if (len > end - off) {
      set_invalid ("%s: header extension 0x%08" PRIx32 " too large "
                   "(length %" PRIu32 " runs past the header area)",
                   fn, type, len);
      return -1;
    }
    const uint8_t *d = c0 + off;
    switch (type) {
    case QCOW2_EXT_BACKING_FMT:
      if (len >= 16) {
        set_invalid ("%s: backing format extension too long (%" PRIu32
                     " bytes)", fn, len);
        return -1;
      }
      free (s->base.backing_format);
      if (!(s->base.backing_format = dup_string (d, len))) {
        set_invalid ("%s: invalid backing format name", fn);
        return -1;
      }
      break;
    case QCOW2_EXT_FEATURES: {
      size_t n = len / 48;
      free (s->features);
      s->features = calloc (n ? n : 1, sizeof *s->features);
      if (!s->features) {
        set_nomem ();
        return -1;
      }
      for (size_t i = 0; i < n; i++) {
        s->features[i].type = d[i * 48];
        s->features[i].bit = d[i * 48 + 1];
        memcpy (s->features[i].name, d + i * 48 + 2, 46);
        s->features[i].name[46] = '\0';
      }
      s->n_features = n;
      break;
    }
    case QCOW2_EXT_BITMAPS:
      if (len != 24) {
        set_invalid ("%s: bitmaps extension: invalid extension length %"
                     PRIu32 " (must be 24)", fn, len);
        return -1;
      }
      s->has_bitmaps_ext = true;
      if (!(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        break;        /* inconsistent: ignored, as QEMU does */
      s->nb_bitmaps = be32_at (d);
      if (be32_at (d + 4) != 0) {
        set_invalid ("%s: bitmaps extension: reserved field is not zero",
                     fn);
        return -1;
      }
      s->bitmap_directory_size = be64_at (d + 8);
      s->bitmap_directory_offset = be64_at (d + 16);
      if (s->nb_bitmaps > 65535) {
        set_invalid ("%s: bitmaps extension: %" PRIu32 " bitmaps exceed "
                     "the maximum of 65535", fn, s->nb_bitmaps);
        return -1;
      }
      if (s->nb_bitmaps == 0) {
        set_invalid ("%s: bitmaps extension with zero bitmaps", fn);
        return -1;
      }
      if (s->bitmap_directory_offset & (s->cluster_size - 1)) {
        set_invalid ("%s: bitmaps extension: bitmap directory offset %#"
                     PRIx64 " is not cluster aligned", fn,
                     s->bitmap_directory_offset);
        return -1;
      }
      if (s->bitmap_directory_size > 67107840) {
        set_invalid ("%s: bitmaps extension: bitmap directory size %" PRIu64
                     " exceeds the maximum of 67107840", fn,
                     s->bitmap_directory_size);
        return -1;
      }
      break;
    case QCOW2_EXT_CRYPTO:
      set_invalid ("%s: encrypted image (full disk encryption header "
                   "extension): encryption is not supported", fn);
      return -1;
    case QCOW2_EXT_DATA_FILE:
      free (s->data_file_name);
      if (len == 0 || !(s->data_file_name = dup_string (d, len))) {
        set_invalid ("%s: invalid external data file name", fn);
        return -1;
      }
      break;
    default: {
      struct qcow2_ext *n = realloc (s->unknown_exts,
                                     (s->n_unknown_exts + 1) * sizeof *n);
      if (!n) {
        set_nomem ();
        return -1;
      }
      s->unknown_exts = n;
      n[s->n_unknown_exts].type = type;
      n[s->n_unknown_exts].len = len;
      n[s->n_unknown_exts].data = malloc (len ? len : 1);
      if (!n[s->n_unknown_exts].data) {
        set_nomem ();
        return -1;
      }
      memcpy (n[s->n_unknown_exts].data, d, len);
      s->n_unknown_exts++;
    }
    }
    off += ((uint64_t) len + 7) & ~7ULL;
  }
  if (s->has_bitmaps_ext && s->version < 3)
    s->nb_bitmaps = 0;
  return 0;
}

static int
load_backing_name (struct qcow2 *s, const uint8_t *c0)
{
  const char *fn = s->base.filename;

  if (!s->backing_file_offset)
    return 0;
  if (s->backing_file_offset > s->cluster_size) {
    set_invalid ("%s: invalid backing file offset %" PRIu64, fn,
                 s->backing_file_offset);
    return -1;
  }
  if (s->backing_file_size > QCOW2_MAX_BACKING_NAME ||
      s->backing_file_size > s->cluster_size - s->backing_file_offset) {
    set_invalid ("%s: backing file name too long (%" PRIu32 " bytes)",
                 fn, s->backing_file_size);
    return -1;
  }
  if (s->backing_file_size == 0)
    return 0;
  s->base.backing_name = dup_string (c0 + s->backing_file_offset,
                                     s->backing_file_size);
  if (!s->base.backing_name) {
    set_invalid ("%s: invalid backing file name", fn);
    return -1;
  }
  s->base.backing_path = image_resolve_backing (fn, s->base.backing_name);
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

  if (s->nb_snapshots > 65536) {
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
  uint8_t *c0 = NULL;
  uint8_t h[QCOW2_V3_MIN_HEADER_LENGTH + 8];

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
  if (s->file_size < QCOW2_V2_HEADER_LENGTH) {
    set_invalid ("%s: truncated qcow2 header (file is %" PRIu64 " bytes)",
                 path, s->file_size);
    goto fail;
  }
  size_t hlen = s->file_size < sizeof h ? (size_t) s->file_size : sizeof h;
  if (qbak_file_pread (file, h, hlen, 0) < 0 ||
      parse_header (s, h, hlen) < 0)
    goto fail;
  if (s->file_size < s->header_length) {
    set_invalid ("%s: truncated qcow2 header (header_length %" PRIu32
                 ", file is %" PRIu64 " bytes)", path, s->header_length,
                 s->file_size);
    goto fail;
  }

  /* Cluster 0 holds the header, the extensions and the backing name. */
  c0 = calloc (1, s->cluster_size);
  if (!c0) {
    set_nomem ();
    goto fail;
  }
  if (qbak_file_pread_zerofill (file, c0, s->cluster_size, 0) < 0)
    goto fail;
  if (s->header_length > 104)
    s->compression_type = c0[104];
  if (s->header_length > 112) {
    s->unknown_header_len = s->header_length - 112;
    s->unknown_header = malloc (s->unknown_header_len);
    if (!s->unknown_header) {
      set_nomem ();
      goto fail;
    }
    memcpy (s->unknown_header, c0 + 112, s->unknown_header_len);
  }
  if (parse_extensions (s, c0) < 0 || check_features (s) < 0 ||
      load_backing_name (s, c0) < 0 || check_tables (s) < 0 ||
      open_data_file (s, flags) < 0)
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

static const struct { uint8_t type, bit; const char *name; } qemu_features[] = {
  { 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" },
  { 0, 2, "external data file" }, { 0, 3, "compression type" },
  { 0, 4, "extended L2 entries" }, { 1, 0, "lazy refcounts" },
  { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
};

/* Append extension TYPE with LEN bytes of DATA at *OFF in BUF. */
static int
put_ext (struct qcow2 *s, uint8_t *buf, uint64_t *off, uint32_t type,
         const void *data, uint32_t len)
{
  uint64_t padded = ((uint64_t) len + 7) & ~7ULL;
  if (*off + 8 + padded > s->cluster_size) {
    set_invalid ("%s: header extensions do not fit in the first cluster",
                 s->base.filename);
    return -1;
  }
  put_be32 (buf + *off, type);
  put_be32 (buf + *off + 4, len);
  if (len)
    memcpy (buf + *off + 8, data, len);
  *off += 8 + padded;
  return 0;
}

int
qcow2_update_header (struct qcow2 *s)
{
  uint8_t *h = calloc (1, s->cluster_size);
  int ret = -1;
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
  s->header_length = 112 + s->unknown_header_len;

  put_be32 (h, QCOW2_MAGIC);
  put_be32 (h + 4, s->version);
  put_be32 (h + 16, s->backing_file_size);
  put_be32 (h + 20, s->cluster_bits);
  put_be64 (h + 24, s->base.size);
  put_be32 (h + 32, s->crypt_method);
  put_be32 (h + 36, s->l1_size);
  put_be64 (h + 40, s->l1_table_offset);
  put_be64 (h + 48, s->refcount_table_offset);
  put_be32 (h + 56, s->refcount_table_clusters);
  put_be32 (h + 60, s->nb_snapshots);
  put_be64 (h + 64, s->snapshots_offset);
  put_be64 (h + 72, s->incompatible_features);
  put_be64 (h + 80, s->compatible_features);
  put_be64 (h + 88, s->autoclear_features);
  put_be32 (h + 96, s->refcount_order);
  put_be32 (h + 100, s->header_length);
  h[104] = s->compression_type;
  if (s->unknown_header_len)
    memcpy (h + 112, s->unknown_header, s->unknown_header_len);

  /* The bitmaps extension goes first, inside the first 512-byte sector
   * with the header: a bitmap commit then changes bytes of one sector
   * only, which the disk writes atomically.  (QEMU puts it later; the
   * order of extensions is free.) */
  uint64_t off = s->header_length;
  if (s->nb_bitmaps) {
    uint8_t b[24] = { 0 };
    put_be32 (b, s->nb_bitmaps);
    put_be64 (b + 8, s->bitmap_directory_size);
    put_be64 (b + 16, s->bitmap_directory_offset);
    if (put_ext (s, h, &off, QCOW2_EXT_BITMAPS, b, sizeof b) < 0)
      goto out;
  }
  if (s->base.backing_format &&
      put_ext (s, h, &off, QCOW2_EXT_BACKING_FMT, s->base.backing_format,
               (uint32_t) strlen (s->base.backing_format)) < 0)
    goto out;
  if (s->data_file_name &&
      put_ext (s, h, &off, QCOW2_EXT_DATA_FILE, s->data_file_name,
               (uint32_t) strlen (s->data_file_name)) < 0)
    goto out;
  if (s->cluster_size > 4096) {
    uint8_t table[sizeof qemu_features / sizeof qemu_features[0] * 48];
    memset (table, 0, sizeof table);
    for (size_t i = 0; i < sizeof qemu_features / sizeof qemu_features[0]; i++) {
      table[i * 48] = qemu_features[i].type;
      table[i * 48 + 1] = qemu_features[i].bit;
      memcpy (table + i * 48 + 2, qemu_features[i].name,
              strlen (qemu_features[i].name));
    }
    if (put_ext (s, h, &off, QCOW2_EXT_FEATURES, table, sizeof table) < 0)
      goto out;
  }
  for (size_t i = 0; i < s->n_unknown_exts; i++)
    if (put_ext (s, h, &off, s->unknown_exts[i].type, s->unknown_exts[i].data,
                 s->unknown_exts[i].len) < 0)
      goto out;
  if (put_ext (s, h, &off, QCOW2_EXT_END, NULL, 0) < 0)
    goto out;
  if (s->base.backing_name) {
    size_t n = strlen (s->base.backing_name);
    if (off + n > s->cluster_size) {
      set_invalid ("%s: backing file name does not fit in the first cluster",
                   s->base.filename);
      goto out;
    }
    memcpy (h + off, s->base.backing_name, n);
    s->backing_file_offset = off;
    s->backing_file_size = (uint32_t) n;
  }
  else {
    s->backing_file_offset = 0;
    s->backing_file_size = 0;
  }
  put_be64 (h + 8, s->backing_file_offset);
  put_be32 (h + 16, s->backing_file_size);

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
