/* Legacy QCOW version 1 images, read through libqcow (libyal).
 *
 * libqcow does the reading; allocation status is not exposed by libqcow,
 * so every offset is reported as data (a full copy reads it all, which is
 * correct, only not sparse).  XXX: parse the v1 L1/L2 for a real map.
 * Never route qcow2 (v2/v3) data through libqcow: its 20201213 release
 * ignores the v3 zero flag (DESIGN §5). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <libqcow.h>

#include "common/error.h"
#include "formats/image.h"

struct qcow1 {
  struct image base;
  libqcow_file_t *handle;
};

static void
set_libqcow_error (const char *path, const char *what, libqcow_error_t *err)
{
  char buf[512] = "";
  if (err) {
    libqcow_error_sprint (err, buf, sizeof buf);
    libqcow_error_free (&err);
  }
  char *nl = strchr (buf, '\n');
  if (nl)
    *nl = '\0';
  set_invalid ("%s: qcow (v1) image: %s%s%s", path, what, *buf ? ": " : "",
               buf);
}

static int
qcow1_block_status (struct image *img, uint64_t offset, uint64_t length,
                    struct layer_extent *ext)
{
  memset (ext, 0, sizeof *ext);
  ext->state = LAYER_DATA;
  ext->length = length < img->size - offset ? length : img->size - offset;
  return 0;
}

static int
qcow1_read_layer (struct image *img, void *buf, uint64_t count,
                  uint64_t offset)
{
  struct qcow1 *q = (struct qcow1 *) img;
  uint8_t *p = buf;
  while (count > 0) {
    size_t n = count > (1u << 30) ? (1u << 30) : (size_t) count;
    libqcow_error_t *err = NULL;
    ssize_t r = libqcow_file_read_buffer_at_offset (q->handle, p, n,
                                                    (off64_t) offset, &err);
    if (r <= 0) {
      set_libqcow_error (img->filename, "read failed", err);
      qbak_internal_error (QBAK_STATUS_IO, 0, "%s", qbak_get_error ());
      return -1;
    }
    p += r;
    offset += (uint64_t) r;
    count -= (uint64_t) r;
  }
  return 0;
}

static void
qcow1_close (struct image *img)
{
  struct qcow1 *q = (struct qcow1 *) img;
  if (q->handle) {
    libqcow_file_close (q->handle, NULL);
    libqcow_file_free (&q->handle, NULL);
  }
  free (img->filename);
  free (q);
}

static const struct image_ops qcow1_ops = {
  .name = "qcow",
  .block_status = qcow1_block_status,
  .read_layer = qcow1_read_layer,
  .close = qcow1_close,
};

struct image *
qcow1_open (const char *path)
{
  struct qcow1 *q = calloc (1, sizeof *q);
  libqcow_error_t *err = NULL;
  size64_t size = 0;

  if (!q || !(q->base.filename = strdup (path))) {
    free (q);
    set_nomem ();
    return NULL;
  }
  q->base.ops = &qcow1_ops;
  q->base.format = IMAGE_QCOW1;
  if (libqcow_file_initialize (&q->handle, &err) != 1) {
    set_libqcow_error (path, "cannot initialise libqcow", err);
    goto fail;
  }
  if (libqcow_file_open (q->handle, path, LIBQCOW_OPEN_READ, &err) != 1) {
    set_libqcow_error (path, "cannot open", err);
    libqcow_file_free (&q->handle, NULL);
    goto fail;
  }
  int enc = 0;
  if (libqcow_file_get_encryption_method (q->handle, (uint32_t *) &enc,
                                          NULL) == 1 && enc != 0) {
    set_invalid ("%s: encrypted qcow image: encryption is not supported",
                 path);
    goto fail;
  }
  if (libqcow_file_get_media_size (q->handle, &size, &err) != 1) {
    set_libqcow_error (path, "cannot read the size", err);
    goto fail;
  }
  q->base.size = size;
  return &q->base;

fail:
  qcow1_close (&q->base);
  return NULL;
}
