/* Streaming sparse raw writer for targets and restores: see raw-writer.h.
 *
 * ftruncate makes the whole file a hole first; data is written where it
 * belongs and zero ranges are left alone.  Because requests never go back
 * (the same order rule as qcow2_writer), a zeroed range cannot have been
 * written before, so leaving it alone is exact, not an approximation.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/error.h"
#include "common/fileio.h"
#include "formats/raw-writer.h"
#include "formats/writer-request.h"

/* Write-back is started (on a background thread) after every this many
 * bytes written, as the qcow2 writer does: the disk works during the copy
 * instead of all of it waiting for the flush at the end. */
#define WRITEBACK_WINDOW (2u << 20)

struct raw_writer {
  struct qbak_file *file;
  uint64_t size;
  uint64_t next;                /* end of the previous request */
  uint64_t wb_start;            /* start of what was written since
                                   write-back was last started */
  uint64_t wb_bytes;            /* bytes written since then */
  bool failed;                  /* a failed flush, or a failed write that
                                   could not be undone: refuse further
                                   calls */
  bool finished;
};

static int
check_request (struct raw_writer *w, const char *op, uint64_t offset,
               uint64_t len)
{
  const char *fn = w->file->path;
  uint64_t end;

  if (w->finished) {
    set_usage_error ("%s: %s after the image was finished", fn, op);
    return -1;
  }
  if (w->failed) {
    qbak_internal_error (STATUS_IO, 0, "%s: %s after an earlier "
                         "error left the image unusable", fn, op);
    return -1;
  }
  return writer_check_range (fn, op, offset, len, w->size, w->next, &end);
}

struct raw_writer *
raw_writer_create (const char *path, uint64_t size)
{
  if (size > INT64_MAX) {
    set_usage_error ("%s: invalid size %" PRIu64, path, size);
    return NULL;
  }
  struct qbak_file *f = qbak_file_create (path);
  return f ? raw_writer_create_file (f, size) : NULL;
}

struct raw_writer *
raw_writer_create_file (struct qbak_file *file, uint64_t size)
{
  struct raw_writer *w;

  if (size > INT64_MAX) {
    set_usage_error ("%s: invalid size %" PRIu64, file->path, size);
    qbak_file_close (file);
    return NULL;
  }
  w = calloc (1, sizeof *w);
  if (!w) {
    set_nomem ();
    qbak_file_close (file);
    return NULL;
  }
  w->size = size;
  w->file = file;
  if (qbak_file_truncate (w->file, size) < 0) {
    raw_writer_free (w);
    return NULL;
  }
  return w;
}

int
raw_writer_fd (const struct raw_writer *w)
{
  return w->file->fd;
}

int
raw_writer_write (struct raw_writer *w, uint64_t offset, const void *buf,
                  size_t len)
{
  if (check_request (w, "write", offset, len) < 0)
    return -1;
  if (len == 0)
    return 0;
  if (qbak_file_pwrite (w->file, buf, len, offset) < 0) {
    /* Requests never go back, so the range was a hole: deallocating it
     * again leaves the writer as it was, and the call can be repeated
     * (--retry) or the range skipped.  If even that fails, part of the
     * range may hold garbage that a skip would leave: refuse from now
     * on. */
    struct qbak_saved_error err;
    qbak_error_save (&err);
    if (qbak_file_punch_hole (w->file, offset, len) < 0)
      w->failed = true;
    qbak_error_put_back (&err, "write failed");
    return -1;
  }
  w->next = offset + len;
  if (w->wb_bytes == 0)
    w->wb_start = offset;
  w->wb_bytes += len;
  if (w->wb_bytes >= WRITEBACK_WINDOW) {
    /* The holes in between cost the kernel nothing to skip. */
    qbak_file_writeback (w->file, w->wb_start, w->next - w->wb_start);
    w->wb_bytes = 0;
  }
  return 0;
}

int
raw_writer_zero (struct raw_writer *w, uint64_t offset, uint64_t len)
{
  if (check_request (w, "zero", offset, len) < 0)
    return -1;
  w->next = offset + len;
  return 0;
}

int
raw_writer_finish (struct raw_writer *w)
{
  if (w->finished) {
    set_usage_error ("%s: finish after the image was finished",
                     w->file->path);
    return -1;
  }
  if (w->failed) {
    qbak_internal_error (STATUS_IO, 0, "%s: finish after an earlier "
                         "error left the image unusable", w->file->path);
    return -1;
  }
  /* A failed flush is final (see qcow2-writer.h): a second one would
   * succeed over lost data. */
  if (qbak_file_flush (w->file) < 0) {
    w->failed = true;
    return -1;
  }
  w->finished = true;
  return 0;
}

void
raw_writer_free (struct raw_writer *w)
{
  if (!w)
    return;
  qbak_file_close (w->file);
  free (w);
}
