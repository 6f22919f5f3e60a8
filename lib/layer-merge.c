/* Moving the clusters of one backup file into another, for prune: the
 * two merges that remove a point from the middle or the bottom of a chain
 * at a cost of the removed file's data, never of the disk's size.
 *
 * Both go through the qcow2 writer reopened on the receiving file: the new
 * clusters are appended and the header write that switches to them (and
 * to the new backing file) is the one commit point.  A crash before it
 * leaves the receiving file as it was; after it, as it is meant to be. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/qcow2-writer.h"
#include "lib/job.h"

#define REQUEST_BYTES LAYER_MERGE_BUFFER_BYTES

int
layer_put_extent (struct image *from, struct qcow2_writer *w,
                  enum layer_state st, uint64_t off, uint64_t len,
                  uint8_t *buf)
{
  if (st == LAYER_ZERO)
    return qcow2_writer_zero (w, off, len);
  for (uint64_t p = off; p < off + len;) {
    uint64_t n = off + len - p < REQUEST_BYTES ? off + len - p
                                               : REQUEST_BYTES;
    if (image_read (from, buf, n, p) < 0 ||
        qcow2_writer_write (w, p, buf, (size_t) n) < 0)
      return -1;
    p += n;
  }
  return 0;
}

int
layer_merge (const char *from_path, const char *into_path, bool only_holes,
             const char *backing, const char *backing_format)
{
  struct image *from = image_open (from_path, "qcow2", IMAGE_OPEN_NO_BACKING,
                                   NULL, NULL);
  struct image *into = NULL;
  struct qcow2_writer *w = NULL;
  uint8_t *buf = NULL;
  int ret = -1;
  if (!from)
    return -1;
  /* The receiving file's own layer is read only to find its holes. */
  if ((only_holes &&
       !(into = image_open (into_path, "qcow2", IMAGE_OPEN_NO_BACKING, NULL,
                            NULL))) ||
      !(w = qcow2_writer_reopen (into_path)))
    goto out;
  struct qcow2_writer_opts wo;
  qcow2_writer_get_opts (w, &wo);
  if (image_target_cluster_size (from) != wo.cluster_size) {
    set_invalid ("%s and %s: clusters of %" PRIu32 " and %" PRIu32 " bytes "
                 "cannot be merged", from_path, into_path,
                 image_target_cluster_size (from), wo.cluster_size);
    goto out;
  }
  if (from->size > wo.size && qcow2_writer_grow (w, from->size) < 0)
    goto out;
  if (!(buf = malloc (REQUEST_BYTES))) {
    set_nomem ();
    goto out;
  }
  uint64_t size = from->size;
  for (uint64_t off = 0; off < size;) {
    struct layer_extent e;
    if (from->ops->block_status (from, off, size - off, &e) < 0)
      goto out;
    uint64_t end = off + e.length;
    /* Where the receiving file holds the cluster itself, it wins (its
     * point reads it there) unless it takes the other's place. */
    for (uint64_t p = off; e.state != LAYER_UNALLOCATED && p < end;) {
      uint64_t n = end - p;
      bool put = true;
      if (into && p < into->size) {
        struct layer_extent d;
        if (into->ops->block_status (into, p, n, &d) < 0)
          goto out;
        n = d.length < n ? d.length : n;
        put = d.state == LAYER_UNALLOCATED;
      }
      if (put && layer_put_extent (from, w, e.state, p, n, buf) < 0)
        goto out;
      p += n;
    }
    off = end;
  }
  if (qcow2_writer_set_backing (w, backing, backing ? backing_format : NULL)
      < 0 || qcow2_writer_finish (w) < 0)
    goto out;
  ret = 0;
 out:
  if (ret < 0)
    qbak_internal_error_prefix ("merging %s into %s", from_path, into_path);
  qcow2_writer_free (w);
  image_close (into);
  image_close (from);
  free (buf);
  return ret;
}
