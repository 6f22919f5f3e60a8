/* formats/: the qcow2 header codec.  Cluster 0 of a qcow2 image holds the
 * fixed header (72 bytes in v2, header_length bytes in v3), then header
 * extensions (type, length, data padded to 8 bytes, ended by type 0),
 * then the backing file name.  All fields are big-endian on disk.
 *
 * qcow2_header_decode() turns cluster 0 into a struct qcow2_header and
 * refuses what cannot be decoded (the structure of the header and the
 * extensions); what an image may use (features, encryption, tables) is
 * the reader's business (qcow2.c), and the bitmaps extension's rules are
 * bitmaps/' (qcow2-bitmap.c).  qcow2_header_encode() is its inverse: an
 * encoded header decodes to an equal struct. */
#ifndef QBAK_FORMATS_QCOW2_HEADER_H
#define QBAK_FORMATS_QCOW2_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/qcow2-limits.h"

#define QCOW2_MAGIC 0x514649fbU
#define QCOW2_V2_HEADER_LENGTH 72
#define QCOW2_V3_MIN_HEADER_LENGTH 104
/* The v3 header qbak writes: up to and including the compression type,
 * padded to 8 bytes. */
#define QCOW2_V3_HEADER_LENGTH 112

#define QCOW2_INCOMPAT_DIRTY        (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN        0x1fULL
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)
#define QCOW2_AUTOCLEAR_BITMAPS     (1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ULL << 1)
#define QCOW2_AUTOCLEAR_KNOWN       0x3ULL

/* Feature types, as the feature name table stores them. */
#define QCOW2_FEAT_INCOMPAT  0
#define QCOW2_FEAT_COMPAT    1
#define QCOW2_FEAT_AUTOCLEAR 2

#define QCOW2_EXT_END          0x00000000U
#define QCOW2_EXT_BACKING_FMT  0xe2792acaU
#define QCOW2_EXT_FEATURES     0x6803f857U
#define QCOW2_EXT_BITMAPS      0x23852875U
#define QCOW2_EXT_CRYPTO       0x0537be77U
#define QCOW2_EXT_DATA_FILE    0x44415441U
/* qbak's own extension ("qbkp"): marks a partial backup target and holds
 * the id of the interrupted job it belongs to.  QEMU ignores extensions
 * it does not know. */
#define QCOW2_EXT_QBAK_PARTIAL 0x71626b70U
#define QCOW2_PARTIAL_ID_BYTES 16

/* Sizes of the extensions with a fixed layout. */
#define QCOW2_BITMAPS_EXT_BYTES 24
#define QCOW2_CRYPTO_EXT_BYTES 16
/* One entry of the feature name table: type, bit, 46 bytes of name. */
#define QCOW2_FEATURE_ENTRY_BYTES 48
#define QCOW2_FEATURE_NAME_BYTES 46

/* Big-endian helpers for on-disk fields. */
static inline uint16_t be16_at (const uint8_t *p)
{ return (uint16_t) ((p[0] << 8) | p[1]); }
static inline uint32_t be32_at (const uint8_t *p)
{ return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
         ((uint32_t) p[2] << 8) | p[3]; }
static inline uint64_t be64_at (const uint8_t *p)
{ return ((uint64_t) be32_at (p) << 32) | be32_at (p + 4); }
static inline void put_be16 (uint8_t *p, uint16_t v)
{ p[0] = (uint8_t) (v >> 8); p[1] = (uint8_t) v; }
static inline void put_be32 (uint8_t *p, uint32_t v)
{ p[0] = (uint8_t) (v >> 24); p[1] = (uint8_t) (v >> 16);
  p[2] = (uint8_t) (v >> 8); p[3] = (uint8_t) v; }
static inline void put_be64 (uint8_t *p, uint64_t v)
{ put_be32 (p, (uint32_t) (v >> 32)); put_be32 (p + 4, (uint32_t) v); }

/* An extension qbak does not interpret, kept byte-identical for rewrites. */
struct qcow2_ext {
  uint32_t type;
  uint32_t len;
  uint8_t *data;
};

struct qcow2_feature_name {
  uint8_t type, bit;
  char name[QCOW2_FEATURE_NAME_BYTES + 1];
};

/* The features qbak knows, with QEMU's names: the one table both the
 * reader (to name a bit an image's own table does not) and the writers
 * (the feature name table they store) use. */
struct qcow2_known_feature {
  uint8_t type, bit;
  const char *name;
};
#define QCOW2_N_KNOWN_FEATURES 8
extern const struct qcow2_known_feature
qcow2_known_features[QCOW2_N_KNOWN_FEATURES];
/* The name of feature BIT of TYPE, or NULL if qbak does not know it. */
const char *qcow2_known_feature_name (int type, int bit);

struct qcow2_header {
  /* The fixed header (v2 fields, then the v3 ones; a v2 header decodes
   * with header_length 72 and refcount_order 4). */
  uint32_t magic;
  uint32_t version;
  uint64_t backing_file_offset;   /* layout: set by encode */
  uint32_t backing_file_size;     /* layout: set by encode */
  uint32_t cluster_bits;
  uint64_t size;
  uint32_t crypt_method;
  uint32_t l1_size;
  uint64_t l1_table_offset;
  uint64_t refcount_table_offset;
  uint32_t refcount_table_clusters;
  uint32_t nb_snapshots;
  uint64_t snapshots_offset;
  uint64_t incompatible_features;
  uint64_t compatible_features;
  uint64_t autoclear_features;
  uint32_t refcount_order;
  uint32_t header_length;
  uint8_t compression_type;       /* 0 deflate, 1 zstd */
  uint8_t *unknown_header;        /* header bytes past 112, kept */
  uint32_t unknown_header_len;

  /* The backing file name, and the extensions qbak knows.  Strings are
   * NUL-terminated copies (a stored name with a NUL byte is refused). */
  char *backing_name;             /* NULL: none */
  char *backing_format;           /* NULL: no extension */
  struct qcow2_feature_name *features;
  size_t n_features;
  bool has_bitmaps_ext;           /* the raw fields; their rules are in
                                     bitmaps/qcow2-bitmap.c */
  uint32_t nb_bitmaps;
  uint32_t bitmaps_reserved;
  uint64_t bitmap_directory_size;
  uint64_t bitmap_directory_offset;
  char *data_file_name;           /* NULL: no extension */
  bool has_crypto_ext;            /* full disk encryption header */
  uint64_t crypto_offset;
  uint64_t crypto_length;
  bool has_partial_id;            /* qbak's partial marker */
  uint8_t partial_id[QCOW2_PARTIAL_ID_BYTES];
  /* Other extensions (and a second or malformed partial marker), in
   * their order on disk. */
  struct qcow2_ext *unknown_exts;
  size_t n_unknown_exts;

  /* Layout found by decode (encode sets them too): the offset just past
   * the extensions, and whether they ended with an end marker (and its
   * length field, which should be 0). */
  uint64_t ext_end;
  bool has_end_marker;
  uint32_t end_marker_len;
};

/* The fixed header's fields from BUF (LEN bytes; missing bytes read as
 * zero), without any check and without allocating.  For a caller that
 * applies rules of its own before decoding the rest. */
void qcow2_header_decode_fields (const uint8_t *buf, size_t len,
                                 struct qcow2_header *hdr);

/* The checks of the fixed header HDR (from qcow2_header_decode_fields) of
 * a file of FILE_SIZE bytes: magic, version, cluster size, header length.
 * FN names the file in the message.  0 or -1 (STATUS_INVALID). */
int qcow2_header_check_fixed (const char *fn, const struct qcow2_header *hdr,
                              uint64_t file_size);

/* Decode cluster 0 (BUF, LEN bytes; bytes past LEN up to the cluster size
 * read as zero) of FN, a file of FILE_SIZE bytes, into *HDR: the fixed
 * header checked as qcow2_header_check_fixed does, the extensions, the
 * backing file name.  Returns 0, or -1 (STATUS_INVALID naming the field,
 * or out of memory) with *HDR freed.  Free with qcow2_header_free(). */
int qcow2_header_decode (const char *fn, const uint8_t *buf, size_t len,
                         uint64_t file_size, struct qcow2_header *hdr);

/* Why qcow2_header_encode() failed: the extensions, or the backing file
 * name after them, do not fit in LEN bytes.  The caller words the
 * message. */
#define QCOW2_ENCODE_EXTS_TOO_BIG (-1)
#define QCOW2_ENCODE_NAME_TOO_BIG (-2)

/* Encode *HDR into BUF (LEN bytes, normally one cluster; zeroed first):
 * the fixed header (v3 fields when version >= 3, header_length as given),
 * then the extensions in a fixed order (bitmaps first, so a bitmap commit
 * changes one 512-byte sector only; backing format, external data file,
 * encryption, feature names, partial marker, the unknown ones in their
 * order; end marker), then the backing file name.  Sets the layout fields
 * of *HDR (backing_file_offset/size, ext_end).  Returns 0 or one of the
 * QCOW2_ENCODE_* codes (no error is set). */
int qcow2_header_encode (struct qcow2_header *hdr, uint8_t *buf, size_t len);

/* Whether A and B hold the same header, layout fields aside. */
bool qcow2_header_equal (const struct qcow2_header *a,
                         const struct qcow2_header *b);

/* Free what *HDR owns and zero it. */
void qcow2_header_free (struct qcow2_header *hdr);

#endif
