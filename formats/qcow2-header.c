/* The qcow2 header codec: see qcow2-header.h.  The checks and their
 * messages are QEMU's qcow2_do_open/qcow2_read_extensions, as far as they
 * are about the structure of cluster 0. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/qcow2-header.h"

const struct qcow2_known_feature
qcow2_known_features[QCOW2_N_KNOWN_FEATURES] = {
  { QCOW2_FEAT_INCOMPAT, 0, "dirty bit" },
  { QCOW2_FEAT_INCOMPAT, 1, "corrupt bit" },
  { QCOW2_FEAT_INCOMPAT, 2, "external data file" },
  { QCOW2_FEAT_INCOMPAT, 3, "compression type" },
  { QCOW2_FEAT_INCOMPAT, 4, "extended L2 entries" },
  { QCOW2_FEAT_COMPAT, 0, "lazy refcounts" },
  { QCOW2_FEAT_AUTOCLEAR, 0, "bitmaps" },
  { QCOW2_FEAT_AUTOCLEAR, 1, "raw external data" },
};
_Static_assert (sizeof qcow2_known_features / sizeof qcow2_known_features[0]
                == QCOW2_N_KNOWN_FEATURES, "every known feature is named");

_Static_assert (QCOW2_INCOMPAT_KNOWN == (1ULL << 5) - 1,
                "the table names incompatible bits 0..4");
_Static_assert (QCOW2_AUTOCLEAR_KNOWN == (1ULL << 2) - 1,
                "the table names autoclear bits 0..1");
_Static_assert (QCOW2_MAX_BITMAP_DIRECTORY_SIZE == 67107840,
                "QEMU's maximum bitmap directory size");

const char *
qcow2_known_feature_name (int type, int bit)
{
  for (size_t i = 0; i < QCOW2_N_KNOWN_FEATURES; i++)
    if (qcow2_known_features[i].type == type &&
        qcow2_known_features[i].bit == bit)
      return qcow2_known_features[i].name;
  return NULL;
}

void
qcow2_header_decode_fields (const uint8_t *buf, size_t len,
                            struct qcow2_header *hdr)
{
  uint8_t h[QCOW2_V3_HEADER_LENGTH] = { 0 };

  memcpy (h, buf, len < sizeof h ? len : sizeof h);
  hdr->magic = be32_at (h);
  hdr->version = be32_at (h + 4);
  hdr->backing_file_offset = be64_at (h + 8);
  hdr->backing_file_size = be32_at (h + 16);
  hdr->cluster_bits = be32_at (h + 20);
  hdr->size = be64_at (h + 24);
  hdr->crypt_method = be32_at (h + 32);
  hdr->l1_size = be32_at (h + 36);
  hdr->l1_table_offset = be64_at (h + 40);
  hdr->refcount_table_offset = be64_at (h + 48);
  hdr->refcount_table_clusters = be32_at (h + 56);
  hdr->nb_snapshots = be32_at (h + 60);
  hdr->snapshots_offset = be64_at (h + 64);
  if (hdr->version < 3) {
    hdr->header_length = QCOW2_V2_HEADER_LENGTH;
    hdr->refcount_order = 4;
    return;
  }
  hdr->incompatible_features = be64_at (h + 72);
  hdr->compatible_features = be64_at (h + 80);
  hdr->autoclear_features = be64_at (h + 88);
  hdr->refcount_order = be32_at (h + 96);
  hdr->header_length = be32_at (h + 100);
  if (hdr->header_length > QCOW2_V3_MIN_HEADER_LENGTH)
    hdr->compression_type = h[104];
}

int
qcow2_header_check_fixed (const char *fn, const struct qcow2_header *hdr,
                          uint64_t file_size)
{
  if (file_size < QCOW2_V2_HEADER_LENGTH) {
    set_invalid ("%s: truncated qcow2 header (file is %" PRIu64 " bytes)",
                 fn, file_size);
    return -1;
  }
  if (hdr->magic != QCOW2_MAGIC) {
    set_invalid ("%s: not a qcow2 image (bad magic)", fn);
    return -1;
  }
  if (hdr->version < 2 || hdr->version > 3) {
    set_invalid ("%s: unsupported qcow2 version %" PRIu32, fn,
                 hdr->version);
    return -1;
  }
  if (hdr->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
      hdr->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
    set_invalid ("%s: invalid cluster size: cluster_bits %" PRIu32
                 " is outside %d..%d", fn, hdr->cluster_bits,
                 QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
    return -1;
  }
  if (hdr->version == 2)
    return 0;
  if (file_size < QCOW2_V3_MIN_HEADER_LENGTH) {
    set_invalid ("%s: truncated qcow2 v3 header", fn);
    return -1;
  }
  if (hdr->header_length < QCOW2_V3_MIN_HEADER_LENGTH) {
    set_invalid ("%s: invalid qcow2 header_length %" PRIu32
                 " (v3 needs at least %d)", fn, hdr->header_length,
                 QCOW2_V3_MIN_HEADER_LENGTH);
    return -1;
  }
  if (hdr->header_length > (1u << hdr->cluster_bits)) {
    set_invalid ("%s: qcow2 header_length %" PRIu32
                 " is larger than the cluster size", fn, hdr->header_length);
    return -1;
  }
  if (file_size < hdr->header_length) {
    set_invalid ("%s: truncated qcow2 header (header_length %" PRIu32
                 ", file is %" PRIu64 " bytes)", fn, hdr->header_length,
                 file_size);
    return -1;
  }
  return 0;
}

/* A NUL-terminated copy of the LEN bytes at P, or NULL (with no error set)
 * if they hold a NUL byte, or NULL after set_nomem. */
static char *
dup_string (const uint8_t *p, size_t len, bool *nomem)
{
  char *r;

  *nomem = false;
  if (memchr (p, '\0', len))
    return NULL;
  r = malloc (len + 1);
  if (!r) {
    set_nomem ();
    *nomem = true;
    return NULL;
  }
  memcpy (r, p, len);
  r[len] = '\0';
  return r;
}

/* Set *OUT to a copy of a name, or refuse it with MESSAGE (FN first). */
static int
decode_name (const char *fn, const uint8_t *p, size_t len, char **out,
             const char *message)
{
  bool nomem;

  free (*out);
  *out = dup_string (p, len, &nomem);
  if (*out)
    return 0;
  if (!nomem)
    set_invalid ("%s: %s", fn, message);
  return -1;
}

static int
add_unknown (struct qcow2_header *hdr, uint32_t type, const uint8_t *d,
             uint32_t len)
{
  struct qcow2_ext *n = realloc (hdr->unknown_exts,
                                 (hdr->n_unknown_exts + 1) * sizeof *n);
  if (!n) {
    set_nomem ();
    return -1;
  }
  hdr->unknown_exts = n;
  n += hdr->n_unknown_exts;
  n->type = type;
  n->len = len;
  n->data = malloc (len ? len : 1);
  if (!n->data) {
    set_nomem ();
    return -1;
  }
  memcpy (n->data, d, len);
  hdr->n_unknown_exts++;
  return 0;
}

static int
decode_features (struct qcow2_header *hdr, const uint8_t *d, uint32_t len)
{
  size_t n = len / QCOW2_FEATURE_ENTRY_BYTES;

  free (hdr->features);
  hdr->n_features = 0;
  hdr->features = calloc (n ? n : 1, sizeof *hdr->features);
  if (!hdr->features) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const uint8_t *e = d + i * QCOW2_FEATURE_ENTRY_BYTES;
    hdr->features[i].type = e[0];
    hdr->features[i].bit = e[1];
    memcpy (hdr->features[i].name, e + 2, QCOW2_FEATURE_NAME_BYTES);
    hdr->features[i].name[QCOW2_FEATURE_NAME_BYTES] = '\0';
  }
  hdr->n_features = n;
  return 0;
}

/* One extension: TYPE with LEN bytes at D. */
static int
decode_ext (const char *fn, struct qcow2_header *hdr, uint32_t type,
            const uint8_t *d, uint32_t len)
{
  switch (type) {
  case QCOW2_EXT_BACKING_FMT:
    if (len > QCOW2_MAX_BACKING_FORMAT) {
      set_invalid ("%s: backing format extension too long (%" PRIu32
                   " bytes)", fn, len);
      return -1;
    }
    return decode_name (fn, d, len, &hdr->backing_format,
                        "invalid backing format name");
  case QCOW2_EXT_FEATURES:
    return decode_features (hdr, d, len);
  case QCOW2_EXT_BITMAPS:
    if (len != QCOW2_BITMAPS_EXT_BYTES) {
      set_invalid ("%s: bitmaps extension: invalid extension length %"
                   PRIu32 " (must be %d)", fn, len, QCOW2_BITMAPS_EXT_BYTES);
      return -1;
    }
    hdr->has_bitmaps_ext = true;
    hdr->nb_bitmaps = be32_at (d);
    hdr->bitmaps_reserved = be32_at (d + 4);
    hdr->bitmap_directory_size = be64_at (d + 8);
    hdr->bitmap_directory_offset = be64_at (d + 16);
    return 0;
  case QCOW2_EXT_CRYPTO:
    /* Whatever its length: the reader refuses encrypted images. */
    hdr->has_crypto_ext = true;
    hdr->crypto_offset = len >= 8 ? be64_at (d) : 0;
    hdr->crypto_length = len >= QCOW2_CRYPTO_EXT_BYTES ? be64_at (d + 8) : 0;
    return 0;
  case QCOW2_EXT_DATA_FILE:
    if (len == 0) {
      free (hdr->data_file_name);
      hdr->data_file_name = NULL;
      set_invalid ("%s: invalid external data file name", fn);
      return -1;
    }
    return decode_name (fn, d, len, &hdr->data_file_name,
                        "invalid external data file name");
  case QCOW2_EXT_QBAK_PARTIAL:
    if (len == QCOW2_PARTIAL_ID_BYTES && !hdr->has_partial_id) {
      memcpy (hdr->partial_id, d, len);
      hdr->has_partial_id = true;
      return 0;
    }
    /* Malformed or repeated: kept as it is, for a reopen to refuse. */
    return add_unknown (hdr, type, d, len);
  default:
    return add_unknown (hdr, type, d, len);
  }
}

/* Walk the extensions of C0 (one cluster, CS bytes). */
static int
decode_exts (const char *fn, struct qcow2_header *hdr, const uint8_t *c0,
             uint64_t cs)
{
  if (hdr->backing_file_offset > cs) {
    set_invalid ("%s: invalid backing file offset %" PRIu64 " (past the "
                 "first cluster)", fn, hdr->backing_file_offset);
    return -1;
  }
  uint64_t end = hdr->backing_file_offset ? hdr->backing_file_offset : cs;
  uint64_t off = hdr->header_length;

  while (off < end) {
    if (end - off < 8) {
      set_invalid ("%s: header extension at offset %" PRIu64
                   " is truncated", fn, off);
      return -1;
    }
    uint32_t type = be32_at (c0 + off), len = be32_at (c0 + off + 4);
    off += 8;
    if (type == QCOW2_EXT_END) {
      hdr->has_end_marker = true;
      hdr->end_marker_len = len;
      break;
    }
    if (len > end - off) {
      set_invalid ("%s: header extension 0x%08" PRIx32 " too large "
                   "(length %" PRIu32 " runs past the header area)",
                   fn, type, len);
      return -1;
    }
    if (decode_ext (fn, hdr, type, c0 + off, len) < 0)
      return -1;
    off += ((uint64_t) len + 7) & ~7ULL;
  }
  hdr->ext_end = off;
  return 0;
}

static int
decode_backing_name (const char *fn, struct qcow2_header *hdr,
                     const uint8_t *c0, uint64_t cs)
{
  if (!hdr->backing_file_offset)
    return 0;
  if (hdr->backing_file_size > QCOW2_MAX_BACKING_NAME ||
      hdr->backing_file_size > cs - hdr->backing_file_offset) {
    set_invalid ("%s: backing file name too long (%" PRIu32 " bytes)",
                 fn, hdr->backing_file_size);
    return -1;
  }
  if (hdr->backing_file_size == 0)
    return 0;
  return decode_name (fn, c0 + hdr->backing_file_offset,
                      hdr->backing_file_size, &hdr->backing_name,
                      "invalid backing file name");
}

int
qcow2_header_decode (const char *fn, const uint8_t *buf, size_t len,
                     uint64_t file_size, struct qcow2_header *hdr)
{
  uint8_t *copy = NULL;
  const uint8_t *c0 = buf;
  uint64_t cs;

  memset (hdr, 0, sizeof *hdr);
  qcow2_header_decode_fields (buf, len, hdr);
  if (qcow2_header_check_fixed (fn, hdr, file_size) < 0)
    return -1;
  cs = 1ULL << hdr->cluster_bits;
  if (len < cs) {
    copy = calloc (1, cs);
    if (!copy) {
      set_nomem ();
      return -1;
    }
    memcpy (copy, buf, len);
    c0 = copy;
  }
  if (hdr->header_length > QCOW2_V3_HEADER_LENGTH) {
    hdr->unknown_header_len = hdr->header_length - QCOW2_V3_HEADER_LENGTH;
    hdr->unknown_header = malloc (hdr->unknown_header_len);
    if (!hdr->unknown_header) {
      set_nomem ();
      goto fail;
    }
    memcpy (hdr->unknown_header, c0 + QCOW2_V3_HEADER_LENGTH,
            hdr->unknown_header_len);
  }
  if (decode_exts (fn, hdr, c0, cs) < 0 ||
      decode_backing_name (fn, hdr, c0, cs) < 0)
    goto fail;
  free (copy);
  return 0;

 fail:
  free (copy);
  qcow2_header_free (hdr);
  return -1;
}

/* Append extension TYPE with LEN bytes of DATA at *OFF in BUF (SIZE
 * bytes). */
static int
put_ext (uint8_t *buf, size_t size, uint64_t *off, uint32_t type,
         const void *data, uint32_t len)
{
  uint64_t padded = ((uint64_t) len + 7) & ~7ULL;
  if (*off + 8 + padded > size)
    return -1;
  put_be32 (buf + *off, type);
  put_be32 (buf + *off + 4, len);
  if (len)
    memcpy (buf + *off + 8, data, len);
  *off += 8 + padded;
  return 0;
}

static int
put_features (const struct qcow2_header *hdr, uint8_t *buf, size_t size,
              uint64_t *off)
{
  size_t bytes = hdr->n_features * QCOW2_FEATURE_ENTRY_BYTES;
  uint8_t *t;
  int r;

  if (bytes > size)
    return -1;
  t = calloc (1, bytes ? bytes : 1);
  if (!t)
    return -1;
  for (size_t i = 0; i < hdr->n_features; i++) {
    uint8_t *e = t + i * QCOW2_FEATURE_ENTRY_BYTES;
    e[0] = hdr->features[i].type;
    e[1] = hdr->features[i].bit;
    memcpy (e + 2, hdr->features[i].name,
            strnlen (hdr->features[i].name, QCOW2_FEATURE_NAME_BYTES));
  }
  r = put_ext (buf, size, off, QCOW2_EXT_FEATURES, t, (uint32_t) bytes);
  free (t);
  return r;
}

static int
put_exts (const struct qcow2_header *hdr, uint8_t *buf, size_t size,
          uint64_t *off)
{
  if (hdr->has_bitmaps_ext) {
    uint8_t b[QCOW2_BITMAPS_EXT_BYTES] = { 0 };
    put_be32 (b, hdr->nb_bitmaps);
    put_be32 (b + 4, hdr->bitmaps_reserved);
    put_be64 (b + 8, hdr->bitmap_directory_size);
    put_be64 (b + 16, hdr->bitmap_directory_offset);
    if (put_ext (buf, size, off, QCOW2_EXT_BITMAPS, b, sizeof b) < 0)
      return -1;
  }
  if (hdr->backing_format &&
      put_ext (buf, size, off, QCOW2_EXT_BACKING_FMT, hdr->backing_format,
               (uint32_t) strlen (hdr->backing_format)) < 0)
    return -1;
  if (hdr->data_file_name &&
      put_ext (buf, size, off, QCOW2_EXT_DATA_FILE, hdr->data_file_name,
               (uint32_t) strlen (hdr->data_file_name)) < 0)
    return -1;
  if (hdr->has_crypto_ext) {
    uint8_t c[QCOW2_CRYPTO_EXT_BYTES];
    put_be64 (c, hdr->crypto_offset);
    put_be64 (c + 8, hdr->crypto_length);
    if (put_ext (buf, size, off, QCOW2_EXT_CRYPTO, c, sizeof c) < 0)
      return -1;
  }
  if (hdr->n_features && put_features (hdr, buf, size, off) < 0)
    return -1;
  if (hdr->has_partial_id &&
      put_ext (buf, size, off, QCOW2_EXT_QBAK_PARTIAL, hdr->partial_id,
               QCOW2_PARTIAL_ID_BYTES) < 0)
    return -1;
  for (size_t i = 0; i < hdr->n_unknown_exts; i++)
    if (put_ext (buf, size, off, hdr->unknown_exts[i].type,
                 hdr->unknown_exts[i].data, hdr->unknown_exts[i].len) < 0)
      return -1;
  return put_ext (buf, size, off, QCOW2_EXT_END, NULL, 0);
}

int
qcow2_header_encode (struct qcow2_header *hdr, uint8_t *buf, size_t len)
{
  bool v3 = hdr->version >= 3;
  uint64_t off = v3 ? hdr->header_length : QCOW2_V2_HEADER_LENGTH;

  memset (buf, 0, len);
  if (off > len ||
      (v3 && (off < QCOW2_V3_MIN_HEADER_LENGTH ||
              (hdr->unknown_header_len &&
               off < QCOW2_V3_HEADER_LENGTH +
                     (uint64_t) hdr->unknown_header_len))))
    return QCOW2_ENCODE_EXTS_TOO_BIG;
  put_be32 (buf, hdr->magic);
  put_be32 (buf + 4, hdr->version);
  put_be32 (buf + 20, hdr->cluster_bits);
  put_be64 (buf + 24, hdr->size);
  put_be32 (buf + 32, hdr->crypt_method);
  put_be32 (buf + 36, hdr->l1_size);
  put_be64 (buf + 40, hdr->l1_table_offset);
  put_be64 (buf + 48, hdr->refcount_table_offset);
  put_be32 (buf + 56, hdr->refcount_table_clusters);
  put_be32 (buf + 60, hdr->nb_snapshots);
  put_be64 (buf + 64, hdr->snapshots_offset);
  if (v3) {
    put_be64 (buf + 72, hdr->incompatible_features);
    put_be64 (buf + 80, hdr->compatible_features);
    put_be64 (buf + 88, hdr->autoclear_features);
    put_be32 (buf + 96, hdr->refcount_order);
    put_be32 (buf + 100, hdr->header_length);
    if (hdr->header_length > QCOW2_V3_MIN_HEADER_LENGTH)
      buf[104] = hdr->compression_type;
    if (hdr->unknown_header_len)
      memcpy (buf + QCOW2_V3_HEADER_LENGTH, hdr->unknown_header,
              hdr->unknown_header_len);
  }
  if (put_exts (hdr, buf, len, &off) < 0)
    return QCOW2_ENCODE_EXTS_TOO_BIG;
  hdr->ext_end = off;
  hdr->has_end_marker = true;
  hdr->end_marker_len = 0;
  hdr->backing_file_offset = 0;
  hdr->backing_file_size = 0;
  if (hdr->backing_name) {
    size_t n = strlen (hdr->backing_name);
    if (n > len - off)
      return QCOW2_ENCODE_NAME_TOO_BIG;
    memcpy (buf + off, hdr->backing_name, n);
    hdr->backing_file_offset = off;
    hdr->backing_file_size = (uint32_t) n;
  }
  put_be64 (buf + 8, hdr->backing_file_offset);
  put_be32 (buf + 16, hdr->backing_file_size);
  return 0;
}

static bool
str_equal (const char *a, const char *b)
{
  return a == b || (a && b && strcmp (a, b) == 0);
}

bool
qcow2_header_equal (const struct qcow2_header *a,
                    const struct qcow2_header *b)
{
  if (a->magic != b->magic || a->version != b->version ||
      a->cluster_bits != b->cluster_bits || a->size != b->size ||
      a->crypt_method != b->crypt_method || a->l1_size != b->l1_size ||
      a->l1_table_offset != b->l1_table_offset ||
      a->refcount_table_offset != b->refcount_table_offset ||
      a->refcount_table_clusters != b->refcount_table_clusters ||
      a->nb_snapshots != b->nb_snapshots ||
      a->snapshots_offset != b->snapshots_offset ||
      a->incompatible_features != b->incompatible_features ||
      a->compatible_features != b->compatible_features ||
      a->autoclear_features != b->autoclear_features ||
      a->refcount_order != b->refcount_order ||
      a->header_length != b->header_length ||
      a->compression_type != b->compression_type ||
      a->unknown_header_len != b->unknown_header_len ||
      (a->unknown_header_len &&
       memcmp (a->unknown_header, b->unknown_header, a->unknown_header_len)))
    return false;
  if (!str_equal (a->backing_name, b->backing_name) ||
      !str_equal (a->backing_format, b->backing_format) ||
      !str_equal (a->data_file_name, b->data_file_name))
    return false;
  if (a->n_features != b->n_features)
    return false;
  for (size_t i = 0; i < a->n_features; i++)
    if (a->features[i].type != b->features[i].type ||
        a->features[i].bit != b->features[i].bit ||
        strcmp (a->features[i].name, b->features[i].name))
      return false;
  if (a->has_bitmaps_ext != b->has_bitmaps_ext ||
      a->nb_bitmaps != b->nb_bitmaps ||
      a->bitmaps_reserved != b->bitmaps_reserved ||
      a->bitmap_directory_size != b->bitmap_directory_size ||
      a->bitmap_directory_offset != b->bitmap_directory_offset ||
      a->has_crypto_ext != b->has_crypto_ext ||
      a->crypto_offset != b->crypto_offset ||
      a->crypto_length != b->crypto_length ||
      a->has_partial_id != b->has_partial_id ||
      (a->has_partial_id &&
       memcmp (a->partial_id, b->partial_id, QCOW2_PARTIAL_ID_BYTES)))
    return false;
  if (a->n_unknown_exts != b->n_unknown_exts)
    return false;
  for (size_t i = 0; i < a->n_unknown_exts; i++)
    if (a->unknown_exts[i].type != b->unknown_exts[i].type ||
        a->unknown_exts[i].len != b->unknown_exts[i].len ||
        memcmp (a->unknown_exts[i].data, b->unknown_exts[i].data,
                a->unknown_exts[i].len))
      return false;
  return true;
}

void
qcow2_header_free (struct qcow2_header *hdr)
{
  free (hdr->unknown_header);
  free (hdr->backing_name);
  free (hdr->backing_format);
  free (hdr->features);
  free (hdr->data_file_name);
  for (size_t i = 0; i < hdr->n_unknown_exts; i++)
    free (hdr->unknown_exts[i].data);
  free (hdr->unknown_exts);
  memset (hdr, 0, sizeof *hdr);
}
