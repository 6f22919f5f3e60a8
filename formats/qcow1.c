/* Legacy QCOW version 1 images, read through libqcow (libyal).
 *
 * libqcow reads the guest data.  It does not expose allocation, so the
 * map comes from the v1 L1/L2 tables, parsed here (48-byte header: size at
 * 24, cluster_bits at 32, l2_bits at 33, crypt_method at 36, L1 offset at
 * 40; L2 entries with bit 63 = compressed).  Never route qcow2 (v2/v3)
 * data through libqcow: its 20201213 release ignores the v3 zero flag
 * and returns a cluster's stale contents where QEMU reads zeroes. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <libqcow.h>

#include "common/error.h"
#include "common/fileio.h"
#include "formats/file-names.h"
#include "formats/image.h"
#include "formats/qcow2.h"     /* be32_at/be64_at */

/* QEMU's qcow driver allows backing file names as long as qcow2 does. */
#define QCOW1_MAX_BACKING_NAME QCOW2_MAX_BACKING_NAME

#define QCOW1_HEADER_SIZE 48
#define QCOW1_OFLAG_COMPRESSED (1ULL << 63)

struct qcow1 {
  struct image base;
  libqcow_file_t *handle;
  unsigned cluster_bits, l2_bits;
  uint64_t l1_offset, l1_size, file_size;
  uint64_t *l1;
  uint64_t l2_offset;          /* cached L2 table */
  uint64_t *l2;
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

/* Entry for guest cluster CLUSTER: 0 if unallocated. */
static int
l2_entry (struct qcow1 *q, uint64_t cluster, uint64_t *entry,
          uint64_t *run_if_unallocated)
{
  uint64_t per_l2 = 1ULL << q->l2_bits;
  uint64_t l1i = cluster >> q->l2_bits, l2i = cluster & (per_l2 - 1);
  *entry = 0;
  *run_if_unallocated = 1;
  if (l1i >= q->l1_size)
    return 0;
  uint64_t l2off = q->l1[l1i];
  if (!l2off) {
    *run_if_unallocated = per_l2 - l2i;
    return 0;
  }
  if (l2off != q->l2_offset) {
    size_t bytes = (size_t) (per_l2 * 8);
    if (l2off > q->file_size || bytes > q->file_size - l2off) {
      set_invalid ("%s: qcow L2 table at offset %#" PRIx64 " lies past the "
                   "end of the file", q->base.filename, l2off);
      return -1;
    }
    q->l2_offset = 0;
    if (qbak_file_pread (q->base.file, q->l2, bytes, l2off) < 0)
      return -1;
    for (uint64_t i = 0; i < per_l2; i++)
      q->l2[i] = be64_at ((uint8_t *) q->l2 + i * 8);
    q->l2_offset = l2off;
  }
  *entry = q->l2[l2i];
  return 0;
}

static int
qcow1_block_status (struct image *img, uint64_t offset, uint64_t length,
                    struct layer_extent *ext)
{
  struct qcow1 *q = (struct qcow1 *) img;
  uint64_t cs = 1ULL << q->cluster_bits;
  if (length > img->size - offset)
    length = img->size - offset;
  memset (ext, 0, sizeof *ext);

  uint64_t done = 0;
  bool first = true;
  while (done < length) {
    uint64_t pos = offset + done, e, run;
    if (l2_entry (q, pos >> q->cluster_bits, &e, &run) < 0)
      return -1;
    enum layer_state st = e ? LAYER_DATA : LAYER_UNALLOCATED;
    bool comp = e & QCOW1_OFLAG_COMPRESSED;
    uint64_t host = comp ? 0 : e + (pos & (cs - 1));
    uint64_t n = (e ? 1 : run) * cs - (pos & (cs - 1));
    if (first) {
      ext->state = st;
      ext->compressed = comp;
      ext->offset_valid = e && !comp;
      ext->offset = host;
      first = false;
    }
    else if (st != ext->state || comp || ext->compressed ||
             (ext->offset_valid && host != ext->offset + done))
      break;
    done += n;
  }
  ext->length = done < length ? done : length;
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
      qbak_internal_error (STATUS_IO, 0, "%s", error_get_message ());
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
  qbak_file_close (img->file);
  free (q->l1);
  free (q->l2);
  free (img->filename);
  free (img->backing_name);
  free (img->backing_path);
  free (q);
}

static const struct image_ops qcow1_ops = {
  .name = "qcow",
  .block_status = qcow1_block_status,
  .read_layer = qcow1_read_layer,
  .close = qcow1_close,
  .can_hold_bitmaps = false,   /* no bitmaps, no metadata to write, a
                                 64 KiB target */
};

/* Parse the v1 header and L1 table that the map needs. */
static int
load_tables (struct qcow1 *q)
{
  const char *fn = q->base.filename;
  uint8_t h[QCOW1_HEADER_SIZE];
  int64_t fsize = qbak_file_size (q->base.file);
  if (fsize < 0)
    return -1;
  q->file_size = (uint64_t) fsize;
  if (q->file_size < QCOW1_HEADER_SIZE) {
    set_invalid ("%s: truncated qcow header", fn);
    return -1;
  }
  if (qbak_file_pread (q->base.file, h, sizeof h, 0) < 0)
    return -1;
  uint64_t backing_offset = be64_at (h + 8);
  uint32_t backing_size = be32_at (h + 16);
  q->cluster_bits = h[32];
  q->l2_bits = h[33];
  q->l1_offset = be64_at (h + 40);
  if (q->cluster_bits < 9 || q->cluster_bits > 16 || q->l2_bits < 6 ||
      q->l2_bits > q->cluster_bits - 3) {
    set_invalid ("%s: invalid qcow cluster_bits %u / l2_bits %u", fn,
                 q->cluster_bits, q->l2_bits);
    return -1;
  }
  uint64_t shift = q->cluster_bits + q->l2_bits;
  q->l1_size = (q->base.size + (1ULL << shift) - 1) >> shift;
  if (q->l1_size > (32u << 20) / 8 || q->l1_offset > q->file_size ||
      q->l1_size * 8 > q->file_size - q->l1_offset) {
    set_invalid ("%s: qcow L1 table lies past the end of the file", fn);
    return -1;
  }
  q->l1 = malloc (q->l1_size * 8 + 8);
  q->l2 = malloc ((1ULL << q->l2_bits) * 8);
  if (!q->l1 || !q->l2) {
    set_nomem ();
    return -1;
  }
  if (qbak_file_pread (q->base.file, q->l1, q->l1_size * 8, q->l1_offset) < 0)
    return -1;
  for (uint64_t i = 0; i < q->l1_size; i++)
    q->l1[i] = be64_at ((uint8_t *) q->l1 + i * 8);

  if (backing_offset && backing_size) {
    if (backing_size > QCOW1_MAX_BACKING_NAME ||
        backing_offset > q->file_size ||
        backing_size > q->file_size - backing_offset) {
      set_invalid ("%s: invalid qcow backing file name", fn);
      return -1;
    }
    q->base.backing_name = calloc (1, backing_size + 1);
    if (!q->base.backing_name) {
      set_nomem ();
      return -1;
    }
    if (qbak_file_pread (q->base.file, q->base.backing_name, backing_size,
                         backing_offset) < 0)
      return -1;
    q->base.backing_path = image_resolve_backing (fn, q->base.backing_name);
    if (!q->base.backing_path)
      return -1;
  }
  return 0;
}

/* F stays open (and so do the locks taken on it) for as long as the
 * image: libqcow opens it again, through /proc/self/fd, for its own
 * reads. */
struct image *
qcow1_open (struct qbak_file *f, const char *path)
{
  struct qcow1 *q = calloc (1, sizeof *q);
  libqcow_error_t *err = NULL;
  size64_t size = 0;

  if (!q || !(q->base.filename = strdup (path))) {
    free (q);
    qbak_file_close (f);
    set_nomem ();
    return NULL;
  }
  q->base.file = f;
  q->base.ops = &qcow1_ops;
  q->base.format = IMAGE_QCOW1;
  if (libqcow_file_initialize (&q->handle, &err) != 1) {
    set_libqcow_error (path, "cannot initialise libqcow", err);
    goto fail;
  }
  /* libqcow opens by name: give it the file already open and checked
   * (its locks held), never whatever PATH names by now. */
  char self[64];
  snprintf (self, sizeof self, "/proc/self/fd/%d", f->fd);
  if (libqcow_file_open (q->handle, self, LIBQCOW_OPEN_READ, &err) != 1) {
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
  if (load_tables (q) < 0)
    goto fail;
  return &q->base;

fail:
  qcow1_close (&q->base);
  return NULL;
}
