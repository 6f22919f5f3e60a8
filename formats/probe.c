/* Open an image and its backing chain: the top image by its content
 * (never by file name) unless a format is given, every backing file in the
 * format the layer above records; loops, missing files and formats qbak
 * does not read are refused. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/file-names.h"
#include "formats/image.h"
#include "formats/qcow2.h"

#define MAX_CHAIN_DEPTH 256

/* Formats qbak does not read, by the signatures QEMU's probes look for
 * (and the VHD and DMG trailers, at the end of the file).  Backing up
 * such a file as raw would silently copy its container, not the disk. */
struct foreign_format {
  const char *name;
  uint64_t offset;      /* of the signature in the first 512 bytes */
  const char *magic;
  size_t len;
  bool at_end;          /* in the last 512 bytes instead */
};

static const struct foreign_format foreign_formats[] = {
  { "VMDK", 0, "KDMV", 4, false },
  { "VMDK", 0, "COWD", 4, false },
  { "VMDK (descriptor)", 0, "# Disk DescriptorFile", 21, false },
  { "VDI", 64, "\x7f\x10\xda\xbe", 4, false },
  { "VHDX", 0, "vhdxfile", 8, false },
  { "QED", 0, "QED\0", 4, false },
  { "VHD (vpc)", 0, "conectix", 8, false },
  { "VHD (vpc)", 0, "conectix", 8, true },
  { "Parallels", 0, "WithoutFreeSpace", 16, false },
  { "Parallels", 0, "WithouFreSpacExt", 16, false },
  { "LUKS", 0, "LUKS\xba\xbe", 6, false },
  { "DMG", 0, "koly", 4, true },
  { "Bochs", 0, "Bochs Virtual HD Image", 23, false },
  { "cloop", 0, "#!/bin/sh\n#V2.0 Format\n", 23, false },
};

/* Refuse F if its content is an image format qbak does not read. */
static int
refuse_foreign (struct qbak_file *f, const char *path, int64_t size)
{
  uint8_t head[512], tail[512];
  if (size <= 0)
    return 0;
  if (qbak_file_pread_zerofill (f, head, sizeof head, 0) < 0)
    return -1;
  memset (tail, 0, sizeof tail);
  if (size >= 512 && qbak_file_pread (f, tail, sizeof tail,
                                      (uint64_t) size - 512) < 0)
    return -1;
  for (size_t i = 0; i < sizeof foreign_formats / sizeof foreign_formats[0];
       i++) {
    const struct foreign_format *ff = &foreign_formats[i];
    const uint8_t *buf = ff->at_end ? tail : head;
    if (memcmp (buf + ff->offset, ff->magic, ff->len) != 0)
      continue;
    set_invalid ("%s: this is a %s image, which qbak does not read: convert "
                 "it with 'qemu-img convert -O qcow2 %s NEW.qcow2', or pass "
                 "-f raw to back up the file's bytes as they are", path,
                 ff->name, path);
    return -1;
  }
  return 0;
}

/* Open one layer.  FORMAT is NULL to probe (the top image only), or the
 * format the caller or the layer above requires. */
static struct image *
open_layer (struct qbak_file *f, const char *format, unsigned flags,
            image_lock_fn lock, void *opaque, int depth)
{
  const char *path = f->path;
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
  /* PATH is the file's own name: each message is made before the close
   * that frees it. */
  if (format && strcmp (format, "qcow2") != 0 && strcmp (format, "qcow") != 0) {
    set_invalid ("%s: unsupported image format '%s': qbak reads qcow2, qcow "
                 "and raw; convert it with 'qemu-img convert -O qcow2'",
                 path, format);
    qbak_file_close (f);
    return NULL;
  }
  if (format && !is_qcow) {
    set_invalid ("%s: not a %s image (bad magic)", path, format);
    qbak_file_close (f);
    return NULL;
  }
  if (!is_qcow) {
    if (refuse_foreign (f, path, size) < 0) {
      qbak_file_close (f);
      return NULL;
    }
    return raw_open (f, path);
  }
  if (format && (strcmp (format, "qcow") == 0) != (version == 1)) {
    set_invalid ("%s: not a %s image (version %" PRIu32 ")", path, format,
                 version);
    qbak_file_close (f);
    return NULL;
  }
  if (version == 1)
    return qcow1_open (f, path);
  return qcow2_open (f, path, flags);
}

/* A backing file is opened only in the format the image above records.
 * Its content may be a guest's (a raw backing file is a guest disk), and
 * a guest that wrote a qcow2 header into it would, if the content were
 * probed, make qbak follow that header to any host file it names. */
static int
check_backing_format (struct image *layer)
{
  if (layer->backing_format)
    return 0;
  if (layer->format == IMAGE_QCOW1)
    set_invalid ("%s: backing file '%s' has no recorded format (qcow v1 "
                 "cannot record one), and qbak does not guess a backing "
                 "file's format from its content, which a guest may "
                 "control: convert the image to qcow2 ('qemu-img convert "
                 "-O qcow2 -B %s -F FMT %s NEW.qcow2')", layer->filename,
                 layer->backing_name, layer->backing_name, layer->filename);
  else
    set_invalid ("%s: backing file '%s' has no recorded format, and qbak "
                 "does not guess a backing file's format from its content, "
                 "which a guest may control: record it with 'qemu-img rebase "
                 "-u -b %s -F FMT %s' (FMT raw or qcow2)", layer->filename,
                 layer->backing_name, layer->backing_name, layer->filename);
  return -1;
}

static int
same_file (struct image *a, struct image *b)
{
  return a->file && b->file && qbak_file_same (a->file, b->file);
}

/* Where a chain's backing files come from: host paths resolved as
 * qemu-img resolves them (image_open), or a caller's opener
 * (image_open_file). */
struct chain_source {
  image_opener_fn opener;       /* NULL: host paths */
  void *opaque;
};

static struct qbak_file *
open_backing (const struct chain_source *src, struct image *layer)
{
  if (src->opener)
    return src->opener (layer, layer->backing_name, src->opaque);
  return qbak_file_open (layer->backing_path, false);
}

/* An image from an opener's chain that names an external data file: an
 * opener hands out backing files only, so the data file would be opened
 * by its host path. */
static int
refuse_data_file (struct image *img)
{
  if (!img->data_file_closed)
    return 0;
  set_invalid ("%s: names an external data file, which an image opened "
               "from storage cannot have (qbak never writes one)",
               img->filename);
  return -1;
}

static struct image *
open_chain (struct qbak_file *file, const char *format, unsigned flags,
            const struct chain_source *src, image_lock_fn lock,
            void *lock_opaque)
{
  /* From an opener, no file is opened by a host path: not even an
   * external data file, which the format would open itself. */
  unsigned lflags = src->opener ? flags | IMAGE_OPEN_NO_BACKING : flags;
  struct image *top = open_layer (file, format, lflags, lock, lock_opaque, 0);
  if (!top || (flags & IMAGE_OPEN_NO_BACKING))
    return top;
  if (src->opener && refuse_data_file (top) < 0)
    goto fail;

  struct image *layer = top;
  const char *path = top->filename;
  for (int depth = 1; layer->backing_path; depth++) {
    if (depth > MAX_CHAIN_DEPTH) {
      set_invalid ("%s: backing chain deeper than %d images", path,
                   MAX_CHAIN_DEPTH);
      goto fail;
    }
    if (check_backing_format (layer) < 0 ||
        image_check_local_name (layer->filename, "backing file",
                                layer->backing_name) < 0)
      goto fail;
    /* Backing files are only ever read. */
    struct qbak_file *f = open_backing (src, layer);
    struct image *next = f ? open_layer (f, layer->backing_format,
                                         lflags & ~IMAGE_OPEN_WRITE, lock,
                                         lock_opaque, depth)
                           : NULL;
    if (next && src->opener && refuse_data_file (next) < 0) {
      image_close (next);
      next = NULL;
    }
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

struct image *
image_open (const char *path, const char *format, unsigned flags,
            image_lock_fn lock, void *lock_opaque)
{
  struct qbak_file *f = qbak_file_open (path, (flags & IMAGE_OPEN_WRITE) != 0);
  if (!f)
    return NULL;
  struct chain_source src = { NULL, NULL };
  return open_chain (f, format, flags, &src, lock, lock_opaque);
}

struct image *
image_open_file (struct qbak_file *file, const char *format, unsigned flags,
                 image_opener_fn opener, void *opener_opaque,
                 image_lock_fn lock, void *lock_opaque)
{
  if (!opener) {
    qbak_file_close (file);
    set_usage_error ("%s: an image opened from a file needs an opener for "
                     "its backing files", file->path);
    return NULL;
  }
  if ((flags & IMAGE_OPEN_WRITE) && !file->writable) {
    set_usage_error ("%s: opened read-only, cannot be written", file->path);
    qbak_file_close (file);
    return NULL;
  }
  struct chain_source src = { opener, opener_opaque };
  return open_chain (file, format, flags, &src, lock, lock_opaque);
}
