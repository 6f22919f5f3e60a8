/* Image handles: open (probe, chain, bitmaps), info, close. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/internal.h"

const char *
qbak_version (void)
{
  return QBAK_VERSION;     /* from CMake's project() version */
}

static struct qbak_image *
wrap (struct image *img, unsigned flags, bool top)
{
  struct qbak_image *h = calloc (1, sizeof *h);
  if (!h) {
    set_nomem ();
    return NULL;
  }
  h->img = img;
  h->flags = flags;
  h->is_top = top;
  if (qcow2_bitmaps_load (img, &h->bitmaps) < 0) {
    free (h);
    return NULL;
  }
  return h;
}

/* QEMU's permissions, taken before a byte of the file is read.  The top
 * image: reading holds consistent-read and does not share write or resize,
 * as a read-only QEMU user does; changing metadata holds everything and
 * shares nothing.  Backing files are only ever read. */
static int
lock_layer (struct qbak_file *file, int depth, void *opaque)
{
  unsigned flags = *(unsigned *) opaque;
  /* An object of an object store has no descriptor to lock: the
   * repository's own lock (storage_lock) keeps other qbaks away, and no
   * QEMU opens it. */
  if (file->fd < 0)
    return 0;
  if (depth == 0 && (flags & QBAK_OPEN_WRITE))
    return qbak_internal_lock (file, QBAK_PERM_ALL, 0);
  return qbak_internal_lock (file, QBAK_PERM_CONSISTENT_READ,
                             QBAK_PERM_ALL &
                             ~(QBAK_PERM_WRITE | QBAK_PERM_RESIZE));
}

struct qbak_image *
qbak_image_open (const char *path, unsigned flags)
{
  api_enter (__func__);
  return qbak_image_open_format (path, NULL, flags);
}

/* The image flags of handle flags FLAGS. */
static unsigned
image_flags (unsigned flags)
{
  unsigned iflags = 0;
  if (flags & QBAK_OPEN_WRITE)
    iflags |= IMAGE_OPEN_WRITE;
  if (flags & QBAK_OPEN_NO_BACKING)
    iflags |= IMAGE_OPEN_NO_BACKING;
  return iflags;
}

/* The handle of IMG, opened as NAME with FLAGS (NULL if IMG is). */
static struct qbak_image *
handle_of (struct image *img, const char *name, unsigned flags)
{
  if (!img)
    return NULL;
  /* QEMU refuses a chain in which any file has a broken bitmaps
   * extension, backing files included (their bitmaps are loaded only if
   * their handle is asked for). */
  for (struct image *l = img->backing; l; l = l->backing)
    if (qcow2_bitmaps_check_extension (l) < 0) {
      image_close (img);
      return NULL;
    }
  if (img->corrupt && !(flags & QBAK_OPEN_INSPECT)) {
    set_invalid ("%s: image is marked corrupt; run 'qemu-img check -r all' "
                 "on it first", name);
    image_close (img);
    return NULL;
  }
  struct qbak_image *h = wrap (img, flags, true);
  if (!h)
    image_close (img);
  return h;
}

struct qbak_image *
qbak_image_open_format (const char *path, const char *format, unsigned flags)
{
  api_enter (__func__);
  error_clear ();
  struct image *img = image_open (path, format, image_flags (flags),
                                  (flags & QBAK_OPEN_FORCE_SHARE) ? NULL
                                                                  : lock_layer,
                                  &flags);
  return handle_of (img, path, flags);
}

struct qbak_image *
qbak_internal_open_file (struct qbak_file *file, const char *format,
                         unsigned flags, image_opener_fn opener,
                         void *opener_opaque)
{
  char *name = strdup (file->path);
  if (!name) {
    qbak_file_close (file);
    set_nomem ();
    return NULL;
  }
  struct image *img = image_open_file (file, format, image_flags (flags),
                                       opener, opener_opaque,
                                       (flags & QBAK_OPEN_FORCE_SHARE)
                                       ? NULL : lock_layer, &flags);
  struct qbak_image *h = handle_of (img, name, flags);
  free (name);
  return h;
}

void
qbak_image_close (struct qbak_image *h)
{
  if (!h)
    return;
  qbak_image_close (h->backing);
  qcow2_bitmaps_free (&h->bitmaps);
  if (h->is_top)
    image_close (h->img);
  free (h);
}

int
qbak_image_backing (struct qbak_image *h, struct qbak_image **backing)
{
  api_enter (__func__);
  *backing = NULL;
  if (!h->img->backing)
    return 0;
  if (!h->backing && !(h->backing = wrap (h->img->backing, h->flags, false)))
    return -1;
  *backing = h->backing;
  return 1;
}

/* Fill INFO whole (the library's size). */
static void
get_info (struct qbak_image *h, struct qbak_image_info *info)
{
  struct image *img = h->img;
  memset (info, 0, sizeof *info);
  info->size = sizeof *info;
  info->filename = img->filename;
  info->format = img->ops->name;
  info->virtual_size = img->size;
  int64_t fs = img->file ? qbak_file_size (img->file) : -1;
  info->file_size = fs < 0 ? 0 : (uint64_t) fs;
  info->cluster_size = img->cluster_size;
  info->backing_filename = img->backing_name;
  info->backing_full = img->backing_path;
  info->backing_format = img->backing_format;
  info->corrupt = img->corrupt;
  struct image_details d;
  image_describe (img, &d);
  info->qcow2_version = d.version;
  info->refcount_bits = d.refcount_bits;
  info->compression_type = d.compression_type;
  info->extended_l2 = d.extended_l2;
  info->lazy_refcounts = d.lazy_refcounts;
  info->dirty = d.dirty;
  info->bitmaps_consistent = d.bitmaps_consistent;
  info->data_file = d.data_file;
  info->data_file_full = img->data_file_path;
  if (info->data_file)
    info->data_file_mode = d.data_file_raw ? QBAK_DATA_FILE_RAW
                                           : QBAK_DATA_FILE_PLAIN;
  info->incompatible_features = d.incompatible_features;
  info->compatible_features = d.compatible_features;
  info->autoclear_features = d.autoclear_features;
}

int
qbak_image_get_info (struct qbak_image *h, struct qbak_image_info *info)
{
  api_enter (__func__);
  struct qbak_image_info all;
  size_t size = info->size;
  if (api_check_size (size, sizeof all, "qbak_image_info") < 0)
    return -1;
  get_info (h, &all);
  all.size = size;
  memcpy (info, &all, size);
  return 0;
}

int
qbak_image_pread (struct qbak_image *h, void *buf, uint64_t count,
                  uint64_t offset)
{
  api_enter (__func__);
  if (offset > h->img->size || count > h->img->size - offset) {
    set_usage_error ("%s: read of %llu bytes at %llu is beyond the virtual "
                     "size", h->img->filename, (unsigned long long) count,
                     (unsigned long long) offset);
    return -1;
  }
  if (h->img->data_file_closed) {
    set_usage_error ("%s: guest data lives in the external data file, which "
                     "was not opened (QBAK_OPEN_NO_BACKING): open the image "
                     "with its chain to read it", h->img->filename);
    return -1;
  }
  /* The public call fails with -1 whatever kind of failure it was. */
  return image_read (h->img, buf, count, offset) < 0 ? -1 : 0;
}

struct qcow2_bitmap *
qbak_internal_find_bitmap (struct qbak_image *h, const char *name)
{
  for (size_t i = 0; i < h->bitmaps.n; i++)
    if (strcmp (h->bitmaps.v[i].name, name) == 0)
      return &h->bitmaps.v[i];
  return NULL;
}

const struct dirty_bitmap *
qbak_internal_bitmap_data (struct qbak_image *h, const struct qcow2_bitmap *b)
{
  if (b->in_use) {
    qbak_internal_set_in_use_error (h->img->filename, b->name);
    return NULL;
  }
  /* B is one of H's bitmaps (the list is H's to change): loading its data
   * fills a cache, it does not change the bitmap. */
  struct qcow2_bitmap *mb = &h->bitmaps.v[b - h->bitmaps.v];
  if (qcow2_bitmap_load_data (h->img, mb) < 0)
    return NULL;
  return mb->bm;
}
