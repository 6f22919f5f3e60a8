/* qcow2 persistent dirty bitmaps: the bitmaps extension, the directory
 * and the tables, loaded and validated exactly as QEMU does
 * (shared/reference/qcow2-bitmaps.md §1.4-1.6, §2, §4). */
#ifndef QBAK_BITMAPS_QCOW2_BITMAP_H
#define QBAK_BITMAPS_QCOW2_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmaps/dirty-bitmap.h"
#include "formats/image.h"

#define BME_FLAG_IN_USE        (1u << 0)
#define BME_FLAG_AUTO          (1u << 1)
#define BME_RESERVED_FLAGS     0xfffffffcu
#define BME_TYPE_DIRTY         1
#define BME_MIN_GRANULARITY_BITS 9
#define BME_MAX_GRANULARITY_BITS 31
#define BME_MAX_NAME_SIZE      1023
#define BME_MAX_TABLE_SIZE     0x8000000u
#define BME_MAX_PHYS_SIZE      0x20000000u
#define BME_TABLE_ENTRY_RESERVED_MASK 0xff000000000001feULL
#define BME_TABLE_ENTRY_OFFSET_MASK   0x00fffffffffffe00ULL
#define BME_TABLE_ENTRY_FLAG_ALL_ONES 1ULL
#define QCOW2_MAX_BITMAPS      65535
#define QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1024u * QCOW2_MAX_BITMAPS)

struct qcow2_bitmap {
  char *name;
  uint64_t table_offset;
  uint32_t table_size;
  uint32_t flags;
  uint8_t granularity_bits;
  bool in_use;
  bool enabled;                 /* auto flag */
  struct dirty_bitmap *bm;      /* NULL for in_use bitmaps */
};

struct qcow2_bitmap_list {
  struct qcow2_bitmap *v;
  size_t n;
};

/* Load every bitmap of IMG (a qcow2 image; for other formats the list is
 * empty).  Refuses (QBAK_STATUS_INVALID) any directory or table QEMU would
 * refuse.  Data of in_use bitmaps is not read. */
int qcow2_bitmaps_load (struct image *img, struct qcow2_bitmap_list *out);
void qcow2_bitmaps_free (struct qcow2_bitmap_list *list);

/* Stream bytes and table entries that a bitmap of GRAN_BITS over a disk of
 * SIZE bytes needs in an image with CLUSTER_SIZE clusters. */
uint64_t qcow2_bitmap_stream_bytes (uint64_t size, unsigned gran_bits);
uint64_t qcow2_bitmap_table_size (uint64_t size, unsigned gran_bits,
                                  uint32_t cluster_size);

#endif
