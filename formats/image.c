/* Chain-level reads and allocation status built from each layer's
 * block_status and read_layer (see image.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/image.h"

void
image_close (struct image *img)
{
  while (img) {
    struct image *next = img->backing;
    img->backing = NULL;
    img->ops->close (img);
    img = next;
  }
}

int
image_read (struct image *img, void *buf, uint64_t count, uint64_t offset)
{
  char *p = buf;

  while (count > 0) {
    if (offset >= img->size) {
      /* Past the end of a shorter backing file: zeroes, as in QEMU. */
      memset (p, 0, count);
      return 0;
    }
    uint64_t n = count;
    if (n > img->size - offset)
      n = img->size - offset;

    struct layer_extent ext;
    if (img->ops->block_status (img, offset, n, &ext) < 0)
      return -1;
    if (ext.length == 0 || ext.length > n) {
      set_invalid ("%s: internal error: bad extent length at %" PRIu64,
                   img->filename, offset);
      return IMAGE_ERR_BUG;
    }
    n = ext.length;
    switch (ext.state) {
    case LAYER_DATA:
      if (img->ops->read_layer (img, p, n, offset) < 0)
        return -1;
      break;
    case LAYER_ZERO:
      memset (p, 0, n);
      break;
    case LAYER_UNALLOCATED:
      if (img->backing) {
        int r = image_read (img->backing, p, n, offset);
        if (r < 0)
          return r;
      }
      else
        memset (p, 0, n);
      break;
    }
    p += n;
    offset += n;
    count -= n;
  }
  return 0;
}

/* qemu-img map's view (qemu-img.c get_block_status): walk down the chain
 * until a layer has data or zeroes; the extent shrinks to what every layer
 * visited agrees on.  Where the layer asks for it (QEMU's BDRV_BLOCK_RECURSE:
 * qcow2 images that look metadata-preallocated), holes of the host file
 * under data are reported as zero too. */
int
image_chain_status (struct image *img, uint64_t offset, uint64_t length,
                    struct chain_extent *out)
{
  int depth = 0;
  struct image *layer = img;

  memset (out, 0, sizeof *out);
  for (;;) {
    struct layer_extent ext;
    if (layer->ops->block_status (layer, offset, length, &ext) < 0)
      return -1;
    length = ext.length;
    if (ext.state == LAYER_DATA) {
      out->present = out->data = true;
      out->offset_valid = ext.offset_valid;
      out->offset = ext.offset;
      if (ext.recurse && layer->data_file) {
        bool is_data;
        uint64_t pnum;
        if (qbak_file_extent (layer->data_file, ext.offset, length,
                              &is_data, &pnum) < 0)
          return -1;
        out->zero = !is_data;
        length = pnum;
      }
      break;
    }
    if (ext.state == LAYER_ZERO) {
      out->present = out->zero = true;
      out->offset_valid = ext.offset_valid;
      out->offset = ext.offset;
      break;
    }
    /* Unallocated in this layer. */
    struct image *next = layer->backing;
    if (!next) {
      out->zero = true;
      break;
    }
    if (offset >= next->size) {
      /* Beyond the end of the backing file: zeroes, not present. */
      out->zero = true;
      break;
    }
    if (length > next->size - offset)
      length = next->size - offset;
    layer = next;
    depth++;
  }
  out->depth = depth;
  out->length = length;
  return 0;
}

bool
image_can_hold_bitmaps (const struct image *img)
{
  return img->ops->can_hold_bitmaps;
}

int
image_check_writable (struct image *img)
{
  return img->ops->check_writable ? img->ops->check_writable (img) : 0;
}

void
image_describe (struct image *img, struct image_details *details)
{
  memset (details, 0, sizeof *details);
  if (img->ops->describe)
    img->ops->describe (img, details);
}

/* 64 KiB, QEMU's default cluster size, where the source has none to keep
 * (raw) or one a qcow2 target should not inherit (qcow v1). */
uint32_t
image_target_cluster_size (const struct image *img)
{
  return img->ops->target_cluster_size ? img->ops->target_cluster_size (img)
                                       : 65536;
}
