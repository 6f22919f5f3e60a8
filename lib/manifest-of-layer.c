/* The manifest of a finished backup file made by reading it: for a
 * target continued after an interrupted run, whose clusters were copied
 * by two runs and hashed by neither as a whole. */
#include <stdlib.h>

#include "common/error.h"
#include "lib/job.h"

#define READ_BYTES (8u << 20)

int
manifest_of_layer (const char *path, const char *manifest, char *digest)
{
  struct image *img = image_open (path, "qcow2", IMAGE_OPEN_NO_BACKING, NULL,
                                  NULL);
  struct manifest_writer *w = NULL;
  uint8_t *buf = NULL;
  int ret = -1;
  if (!img)
    return -1;
  uint32_t cs = image_target_cluster_size (img);
  struct qbak_file *f = qbak_file_create (manifest);
  if (!f || !(w = manifest_writer_create (f, cs, img->size)))
    goto out;
  if (!(buf = malloc (READ_BYTES))) {
    set_nomem ();
    goto out;
  }
  for (uint64_t off = 0; off < img->size;) {
    struct layer_extent e;
    if (img->ops->block_status (img, off, img->size - off, &e) < 0)
      goto out;
    if (e.state == LAYER_ZERO &&
        manifest_writer_zero (w, off, e.length) < 0)
      goto out;
    for (uint64_t p = off; e.state == LAYER_DATA && p < off + e.length;) {
      uint64_t n = off + e.length - p < READ_BYTES ? off + e.length - p
                                                   : READ_BYTES;
      if (image_read (img, buf, n, p) < 0 ||
          manifest_writer_data (w, p, buf, n) < 0)
        goto out;
      p += n;
    }
    off += e.length;
  }
  ret = manifest_writer_finish (w, digest);
 out:
  manifest_writer_free (w);
  image_close (img);
  free (buf);
  return ret;
}
