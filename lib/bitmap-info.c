/* Reading persistent bitmaps through the public API: list and extents. */
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/internal.h"

size_t
qbak_bitmap_count (struct qbak_image *h)
{
  return h->bitmaps.n;
}

int
qbak_bitmap_get_info (struct qbak_image *h, size_t i,
                      struct qbak_bitmap_info *info)
{
  api_enter (__func__);
  size_t size = info->size;
  if (api_check_size (size, sizeof (struct qbak_bitmap_info),
                      "qbak_bitmap_info") < 0)
    return -1;
  if (i >= h->bitmaps.n) {
    set_usage_error ("%s: no bitmap number %zu", h->img->filename, i);
    return -1;
  }
  const struct qcow2_bitmap *b = &h->bitmaps.v[i];
  struct qbak_bitmap_info all = {
    .size = size, .name = b->name,
    .granularity = 1ULL << b->granularity_bits,
    .in_use = b->in_use, .enabled = b->enabled, .dirty_known = !b->in_use,
  };
  /* Counted from the table, so listing bitmaps loads none of them. */
  if (!b->in_use &&
      qcow2_bitmap_dirty_bytes (h->img, b, &all.dirty_bytes) < 0)
    return -1;
  memcpy (info, &all, size);
  return 0;
}

int
qbak_bitmap_extents (struct qbak_image *h, const char *name,
                     qbak_bitmap_extent_cb cb, void *opaque)
{
  api_enter (__func__);
  struct qcow2_bitmap *b = qbak_internal_find_bitmap (h, name);
  if (!b) {
    set_invalid ("%s: no bitmap named '%s'", h->img->filename, name);
    error_set_hint (HINT_LIST_BITMAPS);
    return -1;
  }
  const struct dirty_bitmap *bm = qbak_internal_bitmap_data (h, b);
  if (!bm)
    return -1;
  uint64_t size = dirty_bitmap_size (bm), off = 0;
  while (off < size) {
    bool dirty = dirty_bitmap_test (bm, off);
    int64_t next = dirty ? dirty_bitmap_next_clean (bm, off)
                         : dirty_bitmap_next_dirty (bm, off);
    uint64_t end = next < 0 ? size : (uint64_t) next;
    struct qbak_bitmap_extent e = {
      .size = sizeof e, .start = off, .length = end - off, .dirty = dirty,
    };
    int r = cb (&e, opaque);
    if (r)
      return r;
    off = end;
  }
  return 0;
}
