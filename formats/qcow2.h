/* formats/ internal header for qcow2, sectioned by the file that defines
 * each function, as QEMU's qcow2.h is.  On-disk fields are big-endian;
 * each has a named offset mask and reserved-bits mask below. */
#ifndef QBAK_FORMATS_QCOW2_H
#define QBAK_FORMATS_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/image.h"
#include "formats/qcow2-header.h"

struct qcow2_refmap;

#define L1E_OFFSET_MASK        0x00fffffffffffe00ULL
#define L1E_RESERVED_MASK      0x7f000000000001ffULL
#define L2E_OFFSET_MASK        0x00fffffffffffe00ULL
#define L2E_STD_RESERVED_MASK  0x3f000000000001feULL
#define QCOW_OFLAG_COPIED      (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED  (1ULL << 62)
#define QCOW_OFLAG_ZERO        (1ULL << 0)
#define REFT_OFFSET_MASK       0xfffffffffffffe00ULL
#define REFT_RESERVED_MASK     0x1ffULL

/* L2 tables are cached in slices of at most 4 KiB (as QEMU's
 * l2-cache-entry-size): a scattered incremental over a huge disk then
 * reads 4 KiB per table it touches, not a whole cluster.  A lookup whose
 * query goes on past its slice (a walk: verify, prune, map) reads up to
 * QCOW2_L2_READAHEAD_SLICES slices of the same table with one pread: a
 * walk of a 64 KiB table costs one read, not 16.  Both bounds are fixed,
 * so the cache never grows with the image. */
#define QCOW2_L2_SLICE_BYTES 4096
#define QCOW2_L2_READAHEAD_SLICES 16
struct qcow2_l2_cache_entry {
  uint64_t offset;       /* host offset of the slice; 0 = empty slot */
  uint64_t *table;       /* entries, CPU order */
  uint64_t last_use;
};
#define QCOW2_L2_CACHE_SIZE 64

struct qcow2 {
  struct image base;     /* must be first */

  /* Header fields, CPU order. */
  uint32_t version;
  uint64_t backing_file_offset;
  uint32_t backing_file_size;
  uint32_t cluster_bits;
  uint32_t cluster_size;
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
  uint8_t compression_type;   /* 0 deflate, 1 zstd */
  uint8_t *unknown_header;    /* header bytes past 112 (kept) */
  uint32_t unknown_header_len;

  /* Extensions. */
  struct qcow2_ext *unknown_exts;
  size_t n_unknown_exts;
  struct qcow2_feature_name *features;
  size_t n_features;
  char *data_file_name;
  bool has_crypto_ext;
  bool has_partial_id;        /* qbak's partial marker, kept for rewrites */
  uint8_t partial_id[QCOW2_PARTIAL_ID_BYTES];
  /* The bitmaps extension, when consistent (bitmaps/ checks it). */
  bool has_bitmaps_ext;       /* present (whether consistent or not) */
  uint32_t nb_bitmaps;
  uint32_t bitmaps_reserved;
  uint64_t bitmap_directory_size;
  uint64_t bitmap_directory_offset;

  /* Derived. */
  bool extended_l2;
  uint32_t l2_entries;        /* per L2 table */
  uint32_t l2_entry_bytes;    /* 8 or 16 */
  uint32_t subcluster_size;
  uint64_t file_size;         /* at open */
  uint64_t *l1;               /* CPU order */
  struct qbak_file *data_file; /* external data file, or NULL */

  struct qcow2_l2_cache_entry l2_cache[QCOW2_L2_CACHE_SIZE];
  uint64_t l2_cache_clock;
  int l2_cache_last;          /* the slot hit last (sequential lookups hit
                                 it again) */
  uint8_t *l2_readahead;      /* QCOW2_L2_READAHEAD_SLICES slices, raw */

  /* The extent block_status answered last, from guest offset
   * status_start: a chain walk asks every layer again for the rest of an
   * extent a higher layer cut short, and the mapping never changes while
   * the image is open (the L2 cache above relies on that too). */
  bool status_valid;
  uint64_t status_start;
  struct layer_extent status;

  /* Refcounts (qcow2-refcount.c), loaded for writable opens only. */
  uint64_t *reftable;         /* CPU order */
  uint64_t reftable_entries;
  uint32_t refblock_entries;  /* refcounts per block */
  struct qcow2_refblock *refblocks;   /* write-back cache, direct-mapped
                                         by refcount table index */
  size_t n_refblock_slots;
  uint64_t free_hint;         /* first cluster index that may be free */
  uint64_t *alloc_log;        /* clusters allocated since the last
                                 qcow2_refcount_forget (for rollback) */
  size_t n_alloc_log, cap_alloc_log;

  /* Who uses each host cluster, built before metadata is written
   * (qcow2-refmap.h); the allocator never hands out a cluster in it. */
  struct qcow2_refmap *refmap;

  /* QEMU's qcow2_detect_metadata_preallocation, computed on first use. */
  bool prealloc_checked, metadata_prealloc;

  /* One decompressed cluster (sequential reads hit it repeatedly). */
  uint64_t zbuf_host;         /* descriptor of the cached cluster, 0 = none */
  uint8_t *zbuf;
  void *zstd_dctx;
};

struct qcow2_refblock {
  uint64_t offset;            /* host offset of the block; 0 = empty slot */
  uint8_t *data;              /* raw on-disk bytes (cluster_size) */
  bool dirty;
};
/* The refcount block cache holds at most this many bytes (and at least 4
 * blocks): a scan of a whole file then costs one read per block and
 * memory stays flat, whatever the file size. */
#define QCOW2_REFBLOCK_CACHE_BYTES (1u << 20)
#define QCOW2_REFBLOCK_CACHE_MAX_SLOTS 256

static inline struct qcow2 *
to_qcow2 (struct image *img)
{
  return (struct qcow2 *) img;
}


/* Rewrite cluster 0 from the in-memory header fields and extensions as
 * QEMU's qcow2_update_header does: unknown header fields, unknown
 * extensions and the backing file name kept byte-identical, unknown
 * autoclear bits cleared.  One write, then a flush: a commit point. */
int qcow2_update_header (struct qcow2 *s);

/* Refuse metadata writes to images whose refcounts cannot be trusted or
 * that QEMU would not let us write (corrupt, dirty, v2 for bitmaps). */
int qcow2_check_writable (struct qcow2 *s);

/* qcow2-refcount.c */
/* The size of a new refcount area: TABLE_CLUSTERS clusters of refcount
 * table followed by BLOCKS new refcount blocks, placed at host cluster
 * START.  It must describe itself: every cluster from FIRST to the end of
 * the area lies in the range of a block (one the range already has, as
 * HAS_BLOCK (OPAQUE, R) says for range R, or one of the new ones), and the
 * table has an entry for every range up to there, at least MIN_ENTRIES,
 * plus a quarter for growth with HEADROOM.  Found as a fixpoint (the area
 * grows by far less than it covers, so a few rounds).  HAS_BLOCK NULL:
 * no range has a block yet.  Shared by the allocator, which grows the
 * table of an image, and the backup writer, which lays out a new one. */
struct qcow2_refcount_area {
  uint64_t table_clusters;
  uint64_t blocks;
  uint64_t entries;           /* table_clusters' worth */
};
void qcow2_refcount_area (uint32_t cluster_bits, uint32_t refcount_order,
                          uint64_t first, uint64_t start,
                          uint64_t min_entries, bool headroom,
                          bool (*has_block) (const void *opaque, uint64_t r),
                          const void *opaque,
                          struct qcow2_refcount_area *out);
/* Load the refcount table (writable opens). */
int qcow2_refcount_init (struct qcow2 *s);
/* Whether the image looks metadata-preallocated: more clusters with a
 * refcount than the file really occupies (QEMU's heuristic). */
int qcow2_detect_metadata_prealloc (struct qcow2 *s, bool *out);
void qcow2_refcount_cleanup (struct qcow2 *s);
/* Refcount of host cluster INDEX into *OUT; 0 or -1. */
int qcow2_get_refcount (struct qcow2 *s, uint64_t index, uint64_t *out);
/* Allocate BYTES (rounded up to clusters) of contiguous free clusters
 * with refcount 1; returns the host offset or -1.  A cluster with refcount
 * 0 that s->refmap (or the header) says is in use is refused, never
 * handed out.  The refcount blocks are
 * written by qcow2_refcount_flush (call it before anything references the
 * new clusters). */
int64_t qcow2_alloc_clusters (struct qcow2 *s, uint64_t bytes);
/* Decrement the refcounts of the clusters of [OFFSET, +BYTES). */
int qcow2_free_clusters (struct qcow2 *s, uint64_t offset, uint64_t bytes);
/* Write dirty refcount blocks, then fsync the image file. */
int qcow2_refcount_flush (struct qcow2 *s);
/* Forget / roll back (free again) the clusters allocated since the last
 * forget.  Rollback is best effort: what it cannot free is leaked. */
void qcow2_refcount_forget (struct qcow2 *s);
void qcow2_refcount_rollback (struct qcow2 *s);

/* qcow2-cluster.c */
int qcow2_block_status (struct image *img, uint64_t offset, uint64_t length,
                        struct layer_extent *ext);
int qcow2_read_layer (struct image *img, void *buf, uint64_t count,
                      uint64_t offset);
void qcow2_cluster_cleanup (struct qcow2 *s);
/* Check that [OFFSET, +LEN) of metadata lies inside the file and OFFSET is
 * cluster aligned.  WHAT names it for the message. */
int qcow2_check_metadata_range (struct qcow2 *s, uint64_t offset,
                                uint64_t len, const char *what);

/* qcow2-compress.c */
/* Decompress one cluster: SRC/SRCLEN (padded to sectors) into DST of
 * cluster_size bytes. */
int qcow2_decompress (struct qcow2 *s, const uint8_t *src, size_t srclen,
                      uint8_t *dst);

#endif
