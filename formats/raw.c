/* raw images: the file is the disk.  Allocation comes from the file
 * system (SEEK_DATA/SEEK_HOLE), one range at a time, so a huge sparse
 * file costs no more than its extents. */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/image.h"

static int
raw_block_status (struct image *img, uint64_t offset, uint64_t length,
                  struct layer_extent *ext)
{
  bool is_data;
  uint64_t pnum;

  if (qbak_file_extent (img->file, offset, length, &is_data, &pnum) < 0)
    return -1;
  memset (ext, 0, sizeof *ext);
  ext->length = pnum;
  /* A hole in a raw file is allocated (present) and reads as zeroes. */
  ext->state = is_data ? LAYER_DATA : LAYER_ZERO;
  ext->offset_valid = true;
  ext->offset = offset;
  return 0;
}

static int
raw_read_layer (struct image *img, void *buf, uint64_t count, uint64_t offset)
{
  return qbak_file_pread_zerofill (img->file, buf, count, offset);
}

static void
raw_close (struct image *img)
{
  qbak_file_close (img->file);
  free (img->filename);
  free (img);
}

static const struct image_ops raw_ops = {
  .name = "raw",
  .block_status = raw_block_status,
  .read_layer = raw_read_layer,
  .close = raw_close,
  .can_hold_bitmaps = false,   /* no bitmaps, no metadata to write, a
                                 64 KiB target */
};

struct image *
raw_open (struct qbak_file *file, const char *path)
{
  int64_t size = qbak_file_size (file);
  if (size < 0)
    return NULL;
  struct image *img = calloc (1, sizeof *img);
  if (!img || !(img->filename = strdup (path))) {
    free (img);
    set_nomem ();
    return NULL;
  }
  img->ops = &raw_ops;
  img->format = IMAGE_RAW;
  img->file = file;
  img->data_file = NULL;   /* block_status already is the file's view */
  /* QEMU sees whole 512-byte sectors: a raw file's tail reads as zeroes
   * up to the next sector boundary. */
  img->size = ((uint64_t) size + 511) & ~511ULL;
  return img;
}
