/* lib/ internal header: the handle behind struct qbak_image. */
#ifndef QBAK_LIB_INTERNAL_H
#define QBAK_LIB_INTERNAL_H

#include "qbak.h"
#include "bitmaps/qcow2-bitmap.h"
#include "formats/image.h"

struct qbak_image {
  struct image *img;            /* this layer (owned only by the top) */
  unsigned flags;
  struct qcow2_bitmap_list bitmaps;
  struct qbak_image *backing;   /* wrapper of img->backing, lazily made */
  bool bitmaps_stale;           /* a committed change could not be read
                                   back: reopen before changing more */
  bool is_top;
};

/* lock.c: QEMU permission bits. */
#define QBAK_PERM_CONSISTENT_READ 0x1
#define QBAK_PERM_WRITE           0x2
#define QBAK_PERM_WRITE_UNCHANGED 0x4
#define QBAK_PERM_RESIZE          0x8
#define QBAK_PERM_ALL             0xf
/* Take QEMU's locks on FILE for holding PERM and sharing SHARED.
 * -1 with STATUS_BUSY if another process conflicts. */
int qbak_internal_lock (struct qbak_file *file, unsigned perm,
                        unsigned shared);

/* handle.c */
/* qbak_image_open_format for an image in FILE (owned from now on), whose
 * backing files OPENER opens (formats/image.h image_open_file). */
struct qbak_image *qbak_internal_open_file (struct qbak_file *file,
                                            const char *format,
                                            unsigned flags,
                                            image_opener_fn opener,
                                            void *opener_opaque);
struct qcow2_bitmap *qbak_internal_find_bitmap (struct qbak_image *h,
                                                const char *name);
/* The data of H's bitmap B, read on first use (bitmaps are opened without
 * their data, so only the bitmaps an operation needs cost memory).  NULL
 * with the error set if B is in use or cannot be read. */
const struct dirty_bitmap *qbak_internal_bitmap_data (
  struct qbak_image *h, const struct qcow2_bitmap *b);

/* bitmap-ops.c: the error for bitmap NAME of FILE being in use, with the
 * commands that start a new chain. */
void qbak_internal_set_in_use_error (const char *file, const char *name);

/* Several changes to the bitmaps of H, committed together in one header
 * write (all or none).  CREATE adds a disabled bitmap holding DATA (its
 * granularity is DATA's); SET replaces a bitmap's data; REMOVE drops one
 * (DATA unused). */
enum qbak_internal_bitmap_change_kind {
  QBAK_INTERNAL_BITMAP_SET,
  QBAK_INTERNAL_BITMAP_CREATE,
  QBAK_INTERNAL_BITMAP_REMOVE,
  QBAK_INTERNAL_BITMAP_ADD,     /* enabled and empty (DATA unused) */
};
struct qbak_internal_bitmap_change {
  enum qbak_internal_bitmap_change_kind kind;
  const char *name;
  const struct dirty_bitmap *data;
};
int qbak_internal_bitmap_update (struct qbak_image *h,
                                 const struct qbak_internal_bitmap_change *c,
                                 size_t n);

#endif
