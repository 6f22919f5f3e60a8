/* qcow2 persistent dirty bitmaps: the bitmaps extension (count, directory
 * size and offset), the directory (one entry per bitmap: table offset and
 * size, flags, type, granularity, name), and the tables (one entry per
 * cluster of bitmap data: its offset, or 0 with bit 0 meaning all ones),
 * loaded and validated exactly as QEMU does. */
#ifndef QBAK_BITMAPS_QCOW2_BITMAP_H
#define QBAK_BITMAPS_QCOW2_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmaps/dirty-bitmap.h"
#include "formats/image.h"
#include "formats/qcow2-limits.h"

#define BME_FLAG_IN_USE        (1u << 0)
#define BME_FLAG_AUTO          (1u << 1)
#define BME_RESERVED_FLAGS     0xfffffffcu
#define BME_TYPE_DIRTY         1
#define BME_MIN_GRANULARITY_BITS 9
#define BME_MAX_GRANULARITY_BITS 31
#define BME_MAX_NAME_SIZE      QCOW2_MAX_BITMAP_NAME
#define BME_MAX_TABLE_SIZE     0x8000000u
#define BME_MAX_PHYS_SIZE      0x20000000u
#define BME_TABLE_ENTRY_RESERVED_MASK 0xff000000000001feULL
#define BME_TABLE_ENTRY_OFFSET_MASK   0x00fffffffffffe00ULL
#define BME_TABLE_ENTRY_FLAG_ALL_ONES 1ULL

struct qcow2_bitmap {
  char *name;
  uint64_t table_offset;
  uint32_t table_size;
  uint32_t flags;
  uint8_t granularity_bits;
  bool in_use;
  bool enabled;                 /* auto flag */
  struct dirty_bitmap *bm;      /* NULL until qcow2_bitmap_load_data */
};

struct qcow2_bitmap_list {
  struct qcow2_bitmap *v;
  size_t n;
};

/* Load the bitmap directory of IMG (a qcow2 image; for other formats the
 * list is empty) and check the bitmaps extension and every table.
 * Refuses (STATUS_INVALID) any extension, directory or table QEMU would
 * refuse, and clusters that two bitmaps (or a bitmap and the header, L1
 * or refcount table) claim.  No bitmap
 * data is read: memory stays bounded by the directory and one table. */
int qcow2_bitmaps_load (struct image *img, struct qcow2_bitmap_list *out);
/* Check IMG's bitmaps extension as QEMU does when it opens the file,
 * without loading the bitmaps (qcow2_bitmaps_load checks it too). */
int qcow2_bitmaps_check_extension (struct image *img);
void qcow2_bitmaps_free (struct qcow2_bitmap_list *list);

/* Read B's data into B->bm (once; in_use bitmaps are refused). */
int qcow2_bitmap_load_data (struct image *img, struct qcow2_bitmap *b);
/* B's dirty bytes (whole granules, as QEMU counts them), streamed from
 * the table one cluster at a time without loading the bitmap. */
int qcow2_bitmap_dirty_bytes (struct image *img, const struct qcow2_bitmap *b,
                              uint64_t *out);

/* The reference map of IMG (see formats/qcow2-refmap.h) with LIST's
 * directory, tables and data clusters registered too.  NULL, with the
 * offsets and owners named, if any cluster is claimed twice. */
struct qcow2_refmap;
struct qcow2_refmap *qcow2_bitmaps_refmap (struct image *img,
                                           const struct qcow2_bitmap_list *list,
                                           unsigned what);

/* Stream bytes and table entries that a bitmap of GRAN_BITS over a disk of
 * SIZE bytes needs in an image with CLUSTER_SIZE clusters. */
uint64_t qcow2_bitmap_stream_bytes (uint64_t size, unsigned gran_bits);
uint64_t qcow2_bitmap_table_size (uint64_t size, unsigned gran_bits,
                                  uint32_t cluster_size);


/* ---- Storing (qcow2-bitmap-store.c) -------------------------------------
 *
 * QEMU's protocol, made crash safe: new data clusters, new tables, a new
 * directory, all flushed; one header write as the commit point; flush;
 * then free the old clusters.  It is split in two so that several images
 * can form one transaction: qcow2_bitmaps_commit() on each, then
 * qcow2_bitmaps_finish() on each (frees the old clusters) or, if a later
 * image failed, qcow2_bitmaps_revert() (points the header back at the old
 * directory, which is still intact, and frees the new clusters).
 */

/* A bitmap of the new state.  REWRITE: write BM as new data and table;
 * otherwise reuse TABLE_OFFSET/TABLE_SIZE as they are on disk (a flag
 * change, or an in_use entry kept verbatim). */
struct qcow2_bitmap_state {
  const char *name;
  uint8_t granularity_bits;
  uint32_t flags;                 /* BME_FLAG_* */
  bool rewrite;
  const struct dirty_bitmap *bm;  /* when REWRITE */
  uint64_t table_offset;          /* when !REWRITE */
  uint32_t table_size;
};

struct qcow2_bitmap_pending;

/* Validate the new state against QEMU's limits, write it and commit it.
 * OLD is the image's current list (its clusters are freed by finish).
 * On error nothing is committed and what was allocated is freed. */
int qcow2_bitmaps_commit (struct image *img,
                          const struct qcow2_bitmap_list *old,
                          const struct qcow2_bitmap_state *state, size_t n,
                          struct qcow2_bitmap_pending **pending);
/* Free the clusters the commit made garbage.  Errors only leak clusters,
 * so this never fails; PENDING is freed. */
void qcow2_bitmaps_finish (struct image *img,
                           struct qcow2_bitmap_pending *pending);
/* Undo a commit whose finish has not run.  -1 if the old header could not
 * be restored (the image then holds the new state, still consistent). */
int qcow2_bitmaps_revert (struct image *img,
                          struct qcow2_bitmap_pending *pending);

/* QEMU's default granularity: the cluster size clamped to 4k..64k. */
uint64_t qcow2_bitmap_default_granularity (struct image *img);
/* Check a new bitmap against QEMU's constraints (name, granularity,
 * size); 0 or -1 with the reason. */
int qcow2_bitmap_check_new (struct image *img, const char *name,
                            uint64_t granularity);

#endif
