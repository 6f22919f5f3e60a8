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
  bool is_top;
};

/* handle.c */
struct qcow2_bitmap *qbak_internal_find_bitmap (struct qbak_image *h,
                                                const char *name);

#endif
