/* The backup job (DESIGN §3, §4): plan, copy, finish.
 *
 * Plan builds the copy set at the target's cluster granularity from the
 * sync mode, in O(allocated extents) or O(dirty) (never a scan of the
 * whole disk).  Copy walks the copy set with find-next-set, coalesces
 * contiguous clusters into large requests, skips what the chain already
 * says is zero, detects zero clusters in what it reads, and streams the
 * rest to the target.  Finish makes the target durable, renames it into
 * place, and only then rewrites the bitmap per bitmap-mode through the
 * crash-safe store path.
 *
 * The job keeps QEMU's three sets apart: the sync set (the bitmap's bits
 * at the start), the copy set (what is still to copy) and the successor
 * (writes during the job; empty offline, where the source is locked).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "common/iszero.h"
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"
#include "formats/raw-writer.h"
#include "lib/internal.h"

#define COPY_REQUEST_BYTES (8u << 20)

struct target {
  struct qcow2_writer *qcow2;
  struct raw_writer *raw;
  bool has_backing;
};

struct job {
  const struct qbak_copy_opts *o;
  struct qbak_copy_result *res;
  enum qbak_bitmap_mode mode;
  struct qbak_image *src;
  struct image *img;
  const struct qcow2_bitmap *bitmap;
  struct dirty_bitmap *sync_set;
  struct dirty_bitmap *copy_set;
  struct dirty_bitmap *successor;
  struct target tgt;
  char *part_path;
  uint32_t cs;
  uint8_t *buf;
};

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- Arguments: QEMU's rules (blockdev.c do_backup_common) ----------- */

static int
check_args (const struct qbak_copy_opts *o, enum qbak_bitmap_mode *mode)
{
  const char *t = o->target;
  *mode = o->bitmap_mode;
  if (o->sync == QBAK_SYNC_INCREMENTAL) {
    if (!o->bitmap) {
      set_usage_error ("%s: sync 'incremental' needs --bitmap", t);
      return -1;
    }
    if (*mode != QBAK_BITMAP_MODE_UNSET &&
        *mode != QBAK_BITMAP_MODE_ON_SUCCESS) {
      set_usage_error ("%s: sync 'incremental' means bitmap-mode "
                       "'on-success'; use sync 'bitmap' for another mode", t);
      return -1;
    }
    *mode = QBAK_BITMAP_MODE_ON_SUCCESS;
  }
  if (o->sync == QBAK_SYNC_BITMAP && !o->bitmap) {
    set_usage_error ("%s: sync 'bitmap' needs --bitmap", t);
    return -1;
  }
  if (o->bitmap && *mode == QBAK_BITMAP_MODE_UNSET) {
    set_usage_error ("%s: --bitmap needs --bitmap-mode (on-success, always "
                     "or never)", t);
    return -1;
  }
  if (!o->bitmap && *mode != QBAK_BITMAP_MODE_UNSET) {
    set_usage_error ("%s: --bitmap-mode needs --bitmap", t);
    return -1;
  }
  if (*mode == QBAK_BITMAP_MODE_NEVER && o->sync != QBAK_SYNC_BITMAP) {
    set_usage_error ("%s: bitmap-mode 'never' is only allowed with sync "
                     "'bitmap'", t);
    return -1;
  }
  if (o->format == QBAK_TARGET_RAW &&
      (o->sync != QBAK_SYNC_FULL || o->backing)) {
    set_usage_error ("%s: a raw target holds a whole disk: only sync 'full' "
                     "without --backing", t);
    return -1;
  }
  if (o->cluster_size &&
      (o->cluster_size < 512 || o->cluster_size > (2u << 20) ||
       (o->cluster_size & (o->cluster_size - 1)))) {
    set_usage_error ("%s: cluster size %" PRIu32 " must be a power of two "
                     "from 512 to 2M", t, o->cluster_size);
    return -1;
  }
  return 0;
}

/* ---- Target ------------------------------------------------------------ */

static int
target_open (struct job *j)
{
  const struct qbak_copy_opts *o = j->o;
  char *backing_format = NULL;
  int ret = -1;

  if (access (o->target, F_OK) == 0) {
    set_usage_error ("%s: target exists; qbak never overwrites a backup "
                     "(choose a new name or remove it)", o->target);
    return -1;
  }
  if (asprintf (&j->part_path, "%s.part", o->target) < 0) {
    j->part_path = NULL;
    set_nomem ();
    return -1;
  }
  /* A stale TARGET.part is an incomplete copy of ours, never a backup. */
  unlink (j->part_path);

  if (o->format == QBAK_TARGET_RAW) {
    j->tgt.raw = raw_writer_create (j->part_path, j->img->size);
    return j->tgt.raw ? 0 : -1;
  }
  if (o->backing) {
    char *path = image_resolve_backing (o->target, o->backing);
    if (!path)
      return -1;
    struct qbak_image *prev = qbak_image_open (path, QBAK_OPEN_FORCE_SHARE |
                                               QBAK_OPEN_NO_BACKING |
                                               QBAK_OPEN_INSPECT);
    free (path);
    if (!prev) {
      qbak_internal_error_prefix ("%s: backing file '%s'", o->target,
                                  o->backing);
      return -1;
    }
    backing_format = strdup (prev->img->ops->name);
    qbak_image_close (prev);
    if (!backing_format) {
      set_nomem ();
      return -1;
    }
    j->tgt.has_backing = true;
  }
  struct qcow2_writer_opts wo = {
    .size = j->img->size,
    .cluster_size = j->cs,
    .backing_name = o->backing,
    .backing_format = backing_format,
  };
  j->tgt.qcow2 = qcow2_writer_create (j->part_path, &wo);
  ret = j->tgt.qcow2 ? 0 : -1;
  free (backing_format);
  return ret;
}

static int
target_write (struct job *j, uint64_t off, const void *buf, size_t len)
{
  return j->tgt.qcow2 ? qcow2_writer_write (j->tgt.qcow2, off, buf, len)
                      : raw_writer_write (j->tgt.raw, off, buf, len);
}

/* Zero clusters matter only where they must shadow a backing file. */
static int
target_zero (struct job *j, uint64_t off, uint64_t len)
{
  if (!j->tgt.has_backing)
    return 0;
  return qcow2_writer_zero (j->tgt.qcow2, off, len);
}

static int
target_finish (struct job *j)
{
  return j->tgt.qcow2 ? qcow2_writer_finish (j->tgt.qcow2)
                      : raw_writer_finish (j->tgt.raw);
}

static void
target_free (struct job *j)
{
  qcow2_writer_free (j->tgt.qcow2);
  raw_writer_free (j->tgt.raw);
  j->tgt.qcow2 = NULL;
  j->tgt.raw = NULL;
}

/* Rename TARGET.part into place and make the rename durable. */
static int
target_commit (struct job *j)
{
  const char *t = j->o->target;
  if (link (j->part_path, t) < 0) {
    /* link() refuses to replace: a TARGET created meanwhile is kept. */
    set_io_error (errno, "%s: cannot rename %s into place", t, j->part_path);
    return -1;
  }
  unlink (j->part_path);
  char *dir = strdup (t);
  if (!dir) {
    set_nomem ();
    return -1;
  }
  char *slash = strrchr (dir, '/');
  if (slash)
    slash[slash == dir ? 1 : 0] = '\0';
  int fd = open (slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free (dir);
  if (fd < 0 || fsync (fd) < 0) {
    set_io_error (errno, "%s: cannot flush the directory", t);
    if (fd >= 0)
      close (fd);
    return -1;
  }
  close (fd);
  return 0;
}

/* ---- Plan -------------------------------------------------------------- */

static int
plan (struct job *j)
{
  struct image *img = j->img;
  uint64_t size = img->size;

  j->copy_set = dirty_bitmap_create (size, j->cs);
  if (!j->copy_set)
    return -1;

  switch (j->o->sync) {
  case QBAK_SYNC_FULL:
    if (j->tgt.has_backing) {
      /* Every cluster must shadow the backing file. */
      dirty_bitmap_set (j->copy_set, 0, size);
      break;
    }
    for (uint64_t off = 0; off < size;) {
      struct chain_extent e;
      if (image_chain_status (img, off, size - off, &e) < 0)
        return -1;
      if (e.data)
        dirty_bitmap_set (j->copy_set, off, e.length);
      off += e.length;
    }
    break;
  case QBAK_SYNC_TOP:
    for (uint64_t off = 0; off < size;) {
      struct layer_extent e;
      if (img->ops->block_status (img, off, size - off, &e) < 0)
        return -1;
      if (e.state != LAYER_UNALLOCATED)
        dirty_bitmap_set (j->copy_set, off, e.length);
      off += e.length;
    }
    break;
  case QBAK_SYNC_INCREMENTAL:
  case QBAK_SYNC_BITMAP:
    if (dirty_bitmap_merge (j->copy_set, j->sync_set) < 0)
      return -1;
    break;
  }
  j->res->bytes_planned = dirty_bitmap_count (j->copy_set) * j->cs;
  if (j->res->bytes_planned > size)
    j->res->bytes_planned = size;
  j->res->bytes_skipped = size - j->res->bytes_planned;
  return 0;
}

/* ---- Copy -------------------------------------------------------------- */

/* Copy [OFF, +LEN) (cluster aligned, inside one copy-set run). */
static int
copy_range (struct job *j, uint64_t off, uint64_t len)
{
  uint64_t cs = j->cs, end = off + len;

  /* What the chain already knows to be zero is not read. */
  uint64_t pos = off;
  while (pos < end) {
    struct chain_extent e;
    if (image_chain_status (j->img, pos, end - pos, &e) < 0)
      return -1;
    uint64_t n = e.length;
    if (e.zero && !e.data) {
      /* Whole clusters only; a partial one is read below. */
      uint64_t first = (pos + cs - 1) / cs * cs, last = (pos + n) / cs * cs;
      if (pos + n == j->img->size)
        last = pos + n;
      if (first == pos && last > first) {
        if (target_zero (j, first, last - first) < 0)
          return -1;
        j->res->zero_clusters += (last - first + cs - 1) / cs;
        n = last - first;
        pos += n;
        continue;
      }
    }
    /* Read up to the next cluster boundary past this extent. */
    uint64_t rend = (pos + n + cs - 1) / cs * cs;
    if (rend > end)
      rend = end;
    n = rend - pos;
    if (image_read (j->img, j->buf, n, pos) < 0)
      return -1;
    /* Emit runs of data clusters as single writes, zeroes as zero. */
    uint64_t i = 0;
    while (i < n) {
      uint64_t c = n - i < cs ? n - i : cs;
      bool z = is_zero (j->buf + i, c);
      uint64_t k = i + c;
      while (k < n) {
        uint64_t c2 = n - k < cs ? n - k : cs;
        if (is_zero (j->buf + k, c2) != z)
          break;
        k += c2;
      }
      if (z) {
        if (target_zero (j, pos + i, k - i) < 0)
          return -1;
        j->res->zero_clusters += (k - i + cs - 1) / cs;
      }
      else {
        if (target_write (j, pos + i, j->buf + i, k - i) < 0)
          return -1;
        j->res->bytes_copied += k - i;
        j->res->clusters_copied += (k - i + cs - 1) / cs;
      }
      i = k;
    }
    pos += n;
  }
  return 0;
}

static int
copy (struct job *j)
{
  uint64_t size = j->img->size, done = 0, total = j->res->bytes_planned;
  int64_t off = dirty_bitmap_next_dirty (j->copy_set, 0);

  while (off >= 0) {
    int64_t next = dirty_bitmap_next_clean (j->copy_set, (uint64_t) off);
    uint64_t run_end = next < 0 ? size : (uint64_t) next;
    for (uint64_t pos = (uint64_t) off; pos < run_end;) {
      if (j->o->cancel && *j->o->cancel) {
        qbak_internal_error (QBAK_STATUS_CANCELLED, 0, "%s: backup "
                             "cancelled", j->o->target);
        return -1;
      }
      uint64_t n = run_end - pos < COPY_REQUEST_BYTES ? run_end - pos
                                                      : COPY_REQUEST_BYTES;
      if (copy_range (j, pos, n) < 0)
        return -1;
      /* Copied: out of the copy set (what is left is what always-mode
       * failure puts back into the bitmap). */
      dirty_bitmap_clear (j->copy_set, pos, n);
      pos += n;
      done += n;
      if (j->o->progress)
        j->o->progress (done < total ? done : total, total,
                        j->o->progress_opaque);
    }
    if (next < 0)
      break;
    off = dirty_bitmap_next_dirty (j->copy_set, run_end);
  }
  return 0;
}

/* ---- Finish ------------------------------------------------------------ */

static int
set_bitmap (struct job *j, const struct dirty_bitmap *data, const char *state)
{
  if (qbak_internal_bitmap_set (j->src, j->o->bitmap, data) < 0)
    return -1;
  j->res->bitmap_state = state;
  j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (data);
  return 0;
}

/* The job failed or was cancelled: QEMU's backup_cleanup_sync_bitmap with
 * ret < 0.  The caller's error is kept. */
static void
finish_failed (struct job *j)
{
  char *err = strdup (qbak_get_error ());
  enum qbak_status st = qbak_get_status ();
  int e = qbak_get_errno ();

  j->res->clusters_left = dirty_bitmap_count (j->copy_set);
  if (j->bitmap)
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
  if (j->bitmap && j->mode == QBAK_BITMAP_MODE_ALWAYS) {
    /* always: the bitmap becomes what was not copied (plus new writes),
     * so a retry copies only the rest.  That is true only if what was
     * copied is durable: finish the partial target first. */
    if (target_finish (j) == 0) {
      struct dirty_bitmap *left = dirty_bitmap_copy (j->successor);
      if (left && dirty_bitmap_merge (left, j->copy_set) == 0 &&
          set_bitmap (j, left, "not-copied") == 0) {
        dirty_bitmap_free (left);
        goto out;
      }
      dirty_bitmap_free (left);
    }
    /* Nothing durable: the bitmap keeps everything. */
    j->res->bitmap_state = "unchanged";
    target_free (j);
    unlink (j->part_path);
    goto out;
  }
  if (j->bitmap)
    j->res->bitmap_state = "unchanged";
  /* on-success, never, no bitmap: the partial target is of no use. */
  target_free (j);
  if (j->part_path)
    unlink (j->part_path);
out:
  qbak_internal_error (st, e, "%s", err ? err : "backup failed");
  free (err);
}

static int
finish_success (struct job *j)
{
  if (target_finish (j) < 0)
    return -1;
  target_free (j);
  if (target_commit (j) < 0)
    return -1;
  if (!j->bitmap)
    return 0;
  if (j->mode == QBAK_BITMAP_MODE_NEVER) {
    j->res->bitmap_state = "unchanged";
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
    return 0;
  }
  /* on-success and always: the bitmap becomes the successor. */
  if (set_bitmap (j, j->successor, "cleared") < 0) {
    qbak_internal_error_prefix ("%s: the backup is complete but the bitmap "
                                "could not be cleared (the next incremental "
                                "will copy these clusters again)",
                                j->o->target);
    return -1;
  }
  return 0;
}

/* ---- Entry point ------------------------------------------------------- */

static int
open_source (struct job *j)
{
  const struct qbak_copy_opts *o = j->o;
  /* The bitmap is rewritten at the end unless mode is never: hold the
   * write permission from the start, as QEMU's job does. */
  bool write = o->bitmap && j->mode != QBAK_BITMAP_MODE_NEVER;
  j->src = qbak_image_open (o->source, write ? QBAK_OPEN_WRITE
                                             : QBAK_OPEN_READ);
  if (!j->src)
    return -1;
  j->img = j->src->img;
  if (write && j->img->format == IMAGE_QCOW2 &&
      qcow2_check_writable (to_qcow2 (j->img)) < 0)
    return -1;
  j->cs = o->cluster_size ? o->cluster_size
        : j->img->cluster_size && j->img->format == IMAGE_QCOW2
        ? j->img->cluster_size : 65536;
  if (!o->bitmap)
    return 0;

  const struct qcow2_bitmap *b = qbak_internal_find_bitmap (j->src, o->bitmap);
  if (!b) {
    set_invalid ("%s: no bitmap named '%s'", o->source, o->bitmap);
    return -1;
  }
  if (b->in_use) {
    set_invalid ("%s: bitmap '%s' is in use: the program that wrote it did "
                 "not close the image, so it may have missed writes; make a "
                 "full backup (--sync full) and then clear the bitmap "
                 "(qbak bitmap clear) to start a new chain", o->source,
                 o->bitmap);
    return -1;
  }
  j->bitmap = b;
  j->sync_set = dirty_bitmap_copy (b->bm);
  j->successor = dirty_bitmap_create (j->img->size,
                                      dirty_bitmap_granularity (b->bm));
  return j->sync_set && j->successor ? 0 : -1;
}

int
qbak_copy (const struct qbak_copy_opts *o, struct qbak_copy_result *res)
{
  struct job j = { .o = o, .res = res };
  double t0 = now ();
  int ret = -1;

  qbak_clear_error ();
  memset (res, 0, sizeof *res);
  if (check_args (o, &j.mode) < 0 || open_source (&j) < 0)
    goto out;
  res->virtual_size = j.img->size;
  res->cluster_size = j.cs;
  j.buf = malloc (COPY_REQUEST_BYTES + j.cs);
  if (!j.buf) {
    set_nomem ();
    goto out;
  }
  if (target_open (&j) < 0)
    goto out;
  if (plan (&j) < 0 || copy (&j) < 0) {
    finish_failed (&j);
    goto out;
  }
  if (finish_success (&j) < 0)
    goto out;
  ret = 0;
out:
  res->seconds = now () - t0;
  if (ret < 0 && j.tgt.qcow2 == NULL && j.tgt.raw == NULL &&
      res->bitmap_state == NULL && j.bitmap)
    res->bitmap_state = "unchanged";
  target_free (&j);
  free (j.part_path);
  free (j.buf);
  dirty_bitmap_free (j.sync_set);
  dirty_bitmap_free (j.copy_set);
  dirty_bitmap_free (j.successor);
  qbak_image_close (j.src);
  return ret;
}
