/* Prune's merges on a storage whose files cannot be rewritten in place
 * (an object store, storage_can_continue_in_place false): the merged
 * file is written whole as a new object, and the caller renames it over
 * the file it replaces.
 *
 * What layer_merge (layer-merge.c) appends to the receiving file and
 * commits with one header write, this writes in one pass, in increasing
 * guest offset order as the qcow2 writer requires: at each offset the top
 * file's own cluster (data or zero) if it has one, else the bottom file's
 * own, else nothing (the merged file's backing file, if any, is read
 * there).  Both files are read through the storage (ranged reads), never
 * by path.  Nothing is at the new key until the commit: a failure aborts
 * the object, and a process killed before it leaves no object (an object
 * store shows an upload only once it is completed). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/storage.h"
#include "formats/image.h"
#include "formats/qcow2-header.h"
#include "formats/qcow2-writer.h"
#include "lib/job.h"
#include "lib/repo-objects.h"

#define REQUEST_BYTES LAYER_MERGE_BUFFER_BYTES
/* What is read at first of a file's header: the fixed header, which
 * gives the size of cluster 0 (header, extensions and backing name). */
#define FIXED_BYTES 4096u

int
layer_object_header (struct storage *st, const char *key,
                     struct qcow2_header *hdr)
{
  struct qbak_file *f = storage_open_object (st, key);
  uint8_t *buf = NULL;
  int ret = -1;
  memset (hdr, 0, sizeof *hdr);
  if (!f)
    return -1;
  int64_t size = qbak_file_size (f);
  if (size < 0 || !(buf = malloc ((size_t) 1 << QCOW2_MAX_CLUSTER_BITS))) {
    if (size >= 0)
      set_nomem ();
    goto out;
  }
  size_t first = (uint64_t) size < FIXED_BYTES ? (size_t) size : FIXED_BYTES;
  if (qbak_file_pread (f, buf, first, 0) < 0)
    goto out;
  qcow2_header_decode_fields (buf, first, hdr);
  if (qcow2_header_check_fixed (f->path, hdr, (uint64_t) size) < 0)
    goto out;
  /* Cluster 0, as far as the file goes (the check bounded the bits). */
  uint64_t cs = (uint64_t) 1 << hdr->cluster_bits;
  size_t len = (size_t) ((uint64_t) size < cs ? (uint64_t) size : cs);
  if (len > first && qbak_file_pread (f, buf + first, len - first, first) < 0)
    goto out;
  ret = qcow2_header_decode (f->path, buf, len, (uint64_t) size, hdr);
 out:
  if (ret < 0)
    memset (hdr, 0, sizeof *hdr);
  free (buf);
  qbak_file_close (f);
  return ret;
}

/* KEY's own layer, opened through the storage; its backing files are
 * not opened (only the file's own clusters are merged). */
static struct image *
open_layer (struct storage *st, const char *key)
{
  struct qbak_file *f = storage_open_object (st, key);
  if (!f)
    return NULL;
  return image_open_file (f, "qcow2", IMAGE_OPEN_NO_BACKING,
                          repo_backing_opener, st, NULL, NULL);
}

/* [OFF, END) where TOP holds nothing: BOTTOM's own clusters there. */
static int
put_bottom (struct image *bottom, struct qcow2_writer *w, uint64_t off,
            uint64_t end, uint8_t *buf)
{
  if (end > bottom->size)
    end = bottom->size;
  while (off < end) {
    struct layer_extent e;
    if (bottom->ops->block_status (bottom, off, end - off, &e) < 0)
      return -1;
    if (e.length == 0) {
      set_invalid ("%s: no extent at %" PRIu64, bottom->filename, off);
      return -1;
    }
    uint64_t n = e.length < end - off ? e.length : end - off;
    if (e.state != LAYER_UNALLOCATED &&
        layer_put_extent (bottom, w, e.state, off, n, buf) < 0)
      return -1;
    off += n;
  }
  return 0;
}

/* Every cluster of the merged file, in guest order. */
static int
merge_layers (struct image *top, struct image *bottom,
              struct qcow2_writer *w, uint64_t size)
{
  uint8_t *buf = malloc (REQUEST_BYTES);
  int ret = -1;
  if (!buf) {
    set_nomem ();
    return -1;
  }
  for (uint64_t off = 0; off < size;) {
    struct layer_extent e = { .length = size - off,
                              .state = LAYER_UNALLOCATED };
    if (off < top->size &&
        top->ops->block_status (top, off, top->size - off, &e) < 0)
      goto out;
    if (e.length == 0) {
      set_invalid ("%s: no extent at %" PRIu64, top->filename, off);
      goto out;
    }
    uint64_t n = e.length < size - off ? e.length : size - off;
    if (e.state == LAYER_UNALLOCATED
        ? put_bottom (bottom, w, off, off + n, buf) < 0
        : layer_put_extent (top, w, e.state, off, n, buf) < 0)
      goto out;
    off += n;
  }
  ret = 0;
 out:
  free (buf);
  return ret;
}

int
layer_merge_object (struct storage *st, const char *bottom_key,
                    const char *top_key, const char *new_key,
                    const char *backing, const char *backing_format)
{
  struct image *top = open_layer (st, top_key);
  struct image *bottom = top ? open_layer (st, bottom_key) : NULL;
  struct qcow2_writer *w = NULL;
  int ret = -1;
  if (!bottom)
    goto out;
  if (top->cluster_size != bottom->cluster_size) {
    set_invalid ("%s/%s and %s: clusters of %" PRIu32 " and %" PRIu32
                 " bytes cannot be merged", st->location, top_key,
                 bottom_key, top->cluster_size, bottom->cluster_size);
    goto out;
  }
  /* A disk that grew keeps its larger size, as layer_merge grows the
   * receiving file. */
  uint64_t size = top->size > bottom->size ? top->size : bottom->size;
  struct qcow2_writer_opts o = {
    .size = size, .cluster_size = top->cluster_size,
    .backing_name = backing, .backing_format = backing ? backing_format
                                                       : NULL,
  };
  struct qbak_file *f = new_key ? storage_create_object (st, new_key)
                                : storage_replace_object (st, top_key);
  if (!f || !(w = qcow2_writer_create_file (f, &o)))
    goto out;
  if (merge_layers (top, bottom, w, size) < 0 ||
      qcow2_writer_finish (w) < 0 ||
      storage_commit_object (st, qcow2_writer_file (w)) < 0)
    goto out;
  ret = 0;
 out:
  if (ret < 0) {
    if (w) {
      struct qbak_saved_error err;
      qbak_error_save (&err);
      storage_abort_object (st, qcow2_writer_file (w));
      qbak_error_put_back (&err, "merge failed");
    }
    qbak_internal_error_prefix ("%s: merging %s into %s%s%s",
                                st->location, bottom_key, top_key,
                                new_key ? " as " : "", new_key ? new_key : "");
  }
  qcow2_writer_free (w);
  image_close (bottom);
  image_close (top);
  return ret;
}
