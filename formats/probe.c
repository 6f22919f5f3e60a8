/* Open an image by content (never by file name) and its backing chain,
 * honouring the backing format extension and refusing loops and missing
 * files. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/error.h"
#include "formats/image.h"
#include "formats/qcow2.h"

#define MAX_CHAIN_DEPTH 256

char *
image_resolve_backing (const char *image_path, const char *name)
{
  char *r;
  if (name[0] == '/') {
    r = strdup (name);
  }
  else {
    const char *slash = strrchr (image_path, '/');
    int dirlen = slash ? (int) (slash - image_path + 1) : 0;
    if (asprintf (&r, "%.*s%s", dirlen, image_path, name) < 0)
      r = NULL;
  }
  if (!r)
    set_nomem ();
  return r;
}

/* Open one layer.  FORMAT is NULL to probe, or the backing format named by
 * the layer above. */
static struct image *
open_layer (const char *path, const char *format, unsigned flags,
            image_lock_fn lock, void *opaque, int depth)
{
  struct qbak_file *f = qbak_file_open (path, (flags & IMAGE_OPEN_WRITE) != 0);
  if (!f)
    return NULL;
  if (lock && lock (f, depth, opaque) < 0) {
    qbak_file_close (f);
    return NULL;
  }

  uint8_t magic[8] = { 0 };
  int64_t size = qbak_file_size (f);
  if (size < 0) {
    qbak_file_close (f);
    return NULL;
  }
  if (size >= 8 && qbak_file_pread (f, magic, 8, 0) < 0) {
    qbak_file_close (f);
    return NULL;
  }
  bool is_qcow = size >= 4 && be32_at (magic) == QCOW2_MAGIC;
  uint32_t version = size >= 8 ? be32_at (magic + 4) : 0;

  if (format && strcmp (format, "raw") == 0)
    return raw_open (f, path);
  if (format && strcmp (format, "qcow2") != 0 && strcmp (format, "qcow") != 0) {
    qbak_file_close (f);
    set_invalid ("%s: unsupported image format '%s'", path, format);
    return NULL;
  }
  if (format && !is_qcow) {
    qbak_file_close (f);
    set_invalid ("%s: not a %s image (bad magic)", path, format);
    return NULL;
  }
  if (!is_qcow)
    return raw_open (f, path);
  if (format && (strcmp (format, "qcow") == 0) != (version == 1)) {
    qbak_file_close (f);
    set_invalid ("%s: not a %s image (version %" PRIu32 ")", path, format,
                 version);
    return NULL;
  }
  if (version == 1)
    return qcow1_open (f, path);
  return qcow2_open (f, path, flags);
}

static int
same_file (struct image *a, struct image *b)
{
  struct stat sa, sb;
  if (!a->file || !b->file ||
      fstat (a->file->fd, &sa) < 0 || fstat (b->file->fd, &sb) < 0)
    return 0;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

struct image *
image_open (const char *path, const char *format, unsigned flags,
            image_lock_fn lock, void *lock_opaque)
{
  struct image *top = open_layer (path, format, flags, lock, lock_opaque, 0);
  if (!top || (flags & IMAGE_OPEN_NO_BACKING))
    return top;

  struct image *layer = top;
  for (int depth = 1; layer->backing_path; depth++) {
    if (depth > MAX_CHAIN_DEPTH) {
      set_invalid ("%s: backing chain deeper than %d images", path,
                   MAX_CHAIN_DEPTH);
      goto fail;
    }
    /* Backing files are only ever read. */
    struct image *next = open_layer (layer->backing_path,
                                     layer->backing_format,
                                     flags & ~IMAGE_OPEN_WRITE, lock,
                                     lock_opaque, depth);
    if (!next) {
      qbak_internal_error_prefix ("%s: backing file '%s'", layer->filename,
                                  layer->backing_name);
      goto fail;
    }
    for (struct image *l = top; l; l = l->backing) {
      if (same_file (l, next)) {
        set_invalid ("%s: backing chain loop: '%s' refers back to '%s'",
                     path, layer->filename, next->filename);
        image_close (next);
        goto fail;
      }
    }
    layer->backing = next;
    layer = next;
  }
  return top;

fail:
  image_close (top);
  return NULL;
}
