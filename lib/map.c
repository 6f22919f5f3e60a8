/* qbak_image_map: the chain's allocation as qemu-img map reports it,
 * merged into maximal extents. */
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/internal.h"

static bool
mergeable (const struct qbak_map_extent *a, const struct chain_extent *b)
{
  if (a->depth != b->depth || a->present != b->present ||
      a->zero != b->zero || a->data != b->data ||
      a->offset_valid != b->offset_valid)
    return false;
  return !a->offset_valid || a->offset + a->length == b->offset;
}

int
qbak_image_map (struct qbak_image *h, uint64_t start, uint64_t length,
                qbak_map_cb cb, void *opaque)
{
  api_enter (__func__);
  struct image *img = h->img;
  struct qbak_map_extent cur;
  bool have = false;

  if (start > img->size)
    start = img->size;
  if (length > img->size - start)
    length = img->size - start;
  uint64_t end = start + length, off = start;
  for (struct image *l = img; l; l = l->backing)
    l->want_recurse = true;
  while (off < end) {
    struct chain_extent e;
    if (image_chain_status (img, off, end - off, &e) < 0)
      return -1;
    if (have && mergeable (&cur, &e))
      cur.length += e.length;
    else {
      if (have) {
        int r = cb (&cur, opaque);
        if (r)
          return r;
      }
      cur = (struct qbak_map_extent) {
        .size = sizeof cur, .start = off, .length = e.length, .depth = e.depth,
        .present = e.present, .zero = e.zero, .data = e.data,
        .offset_valid = e.offset_valid, .offset = e.offset,
      };
      have = true;
    }
    off += e.length;
  }
  if (have)
    return cb (&cur, opaque);
  return 0;
}
