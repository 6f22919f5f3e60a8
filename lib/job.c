/* The backup job (DESIGN §3, §4): see job.h for the stages.
 *
 * Plan builds the copy set at the target's cluster granularity from the
 * sync mode, in O(allocated extents) or O(dirty), never a scan of the
 * whole disk.  Copy walks the copy set with find-next-set, coalesces
 * contiguous clusters into large requests, skips what the chain already
 * says is zero, detects zero clusters in what it reads, and streams the
 * rest to the target.  Completion makes the target durable, renames it
 * into place, and only then rewrites the bitmap through the crash-safe
 * store path.
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

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "common/iszero.h"
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"
#include "formats/raw-writer.h"
#include "lib/job.h"

#define COPY_REQUEST_BYTES (8u << 20)

struct target {
  struct qcow2_writer *qcow2;
  struct raw_writer *raw;
  bool has_backing;
  bool created;          /* TARGET.part exists because of us */
};

struct copy_job {
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
  char *spare_path;      /* room kept for finishing a partial target */
  uint32_t cs;
  uint8_t *buf;
  double t0;
};

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

const char *
job_name (struct copy_job *j)
{
  return j->o->target;
}

/* ---- Arguments: QEMU's rules (blockdev.c do_backup_common) ----------- */

static int
check_args (const struct qbak_copy_opts *o, enum qbak_bitmap_mode *mode)
{
  const char *t = o->target;
  *mode = o->bitmap_mode;
  if (!o->source || !o->target) {
    set_usage_error ("copy: a job needs a source and a target");
    return -1;
  }
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
  if (o->resume && (*mode != QBAK_BITMAP_MODE_ALWAYS ||
                    o->format != QBAK_TARGET_QCOW2)) {
    set_usage_error ("%s: --resume continues a bitmap-mode 'always' job "
                     "into a qcow2 target", t);
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

/* ---- Source ------------------------------------------------------------ */

static int
open_source (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  /* The bitmap is rewritten at the end unless mode is never: hold the
   * write permission from the start, as QEMU's job does. */
  bool write = o->bitmap && j->mode != QBAK_BITMAP_MODE_NEVER;
  j->src = qbak_image_open_format (o->source, o->source_format,
                                   write ? QBAK_OPEN_WRITE : QBAK_OPEN_READ);
  if (!j->src)
    return -1;
  j->img = j->src->img;
  if (write && j->img->format == IMAGE_QCOW2 &&
      qcow2_check_writable (to_qcow2 (j->img)) < 0)
    return -1;
  j->cs = o->cluster_size ? o->cluster_size
        : j->img->format == IMAGE_QCOW2 ? j->img->cluster_size : 65536;
  if (!o->bitmap)
    return 0;

  const struct qcow2_bitmap *b = qbak_internal_find_bitmap (j->src, o->bitmap);
  if (!b) {
    set_invalid ("%s: no bitmap named '%s' ('qbak bitmap list' "
                 "shows them)", o->source, o->bitmap);
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
  return 0;
}

/* ---- Target ------------------------------------------------------------ */

static int
target_open (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  char *backing_format = NULL;
  int ret = -1;

  if (access (o->target, F_OK) == 0) {
    set_exists_error ("%s: target exists; qbak never overwrites a backup "
                     "(choose a new name or remove it)", o->target);
    return -1;
  }
  if (asprintf (&j->part_path, "%s.part", o->target) < 0) {
    j->part_path = NULL;
    set_nomem ();
    return -1;
  }
  if (o->resume) {
    j->tgt.qcow2 = qcow2_writer_reopen (j->part_path);
    if (!j->tgt.qcow2) {
      qbak_internal_error_prefix ("%s: cannot resume", o->target);
      return -1;
    }
    j->tgt.created = true;
    /* The target must be the one the failed job started: same disk, same
     * backing file. */
    struct qcow2_writer_opts wo;
    qcow2_writer_get_opts (j->tgt.qcow2, &wo);
    const char *want = o->backing ? o->backing : "";
    const char *have = wo.backing_name ? wo.backing_name : "";
    if (wo.size != j->img->size || strcmp (want, have) != 0 ||
        (o->cluster_size && o->cluster_size != wo.cluster_size)) {
      set_invalid ("%s: cannot resume: %s was started for another job "
                   "(size %" PRIu64 ", backing '%s'); run without --resume "
                   "to start again", o->target, j->part_path, wo.size, have);
      return -1;
    }
    j->cs = wo.cluster_size;
    j->res->cluster_size = j->cs;
    j->tgt.has_backing = wo.backing_name != NULL;
    return 0;
  }
  /* A stale TARGET.part is an incomplete copy of ours, never a backup;
   * a new job starts it again. */
  if (unlink (j->part_path) < 0 && errno != ENOENT) {
    set_io_error (errno, "%s: cannot remove the stale %s", o->target,
                  j->part_path);
    return -1;
  }

  if (o->format == QBAK_TARGET_RAW) {
    j->tgt.raw = raw_writer_create (j->part_path, j->img->size);
    j->tgt.created = j->tgt.raw != NULL;
    if (!j->tgt.raw)
      unlink (j->part_path);
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
  j->tgt.created = j->tgt.qcow2 != NULL;
  if (!j->tgt.qcow2)
    unlink (j->part_path);    /* a half-created one (any stale one is gone) */
  ret = j->tgt.qcow2 ? 0 : -1;
  free (backing_format);
  return ret;
}

static int
target_write (struct copy_job *j, uint64_t off, const void *buf, size_t len)
{
  return j->tgt.qcow2 ? qcow2_writer_write (j->tgt.qcow2, off, buf, len)
                      : raw_writer_write (j->tgt.raw, off, buf, len);
}

/* Zero clusters matter only where they must shadow a backing file, or
 * replace what an earlier pass wrote (resume). */
static int
target_zero (struct copy_job *j, uint64_t off, uint64_t len)
{
  if (!j->tgt.has_backing && !j->o->resume)
    return 0;
  return qcow2_writer_zero (j->tgt.qcow2, off, len);
}

static int
target_finish (struct copy_job *j)
{
  if (j->tgt.qcow2)
    return qcow2_writer_finish (j->tgt.qcow2);
  if (j->tgt.raw)
    return raw_writer_finish (j->tgt.raw);
  set_io_error (0, "%s: no target to finish", j->o->target);
  return -1;
}

static void
target_close (struct copy_job *j)
{
  qcow2_writer_free (j->tgt.qcow2);
  raw_writer_free (j->tgt.raw);
  j->tgt.qcow2 = NULL;
  j->tgt.raw = NULL;
}

static int
sync_dir_of (const char *path)
{
  char *dir = strdup (path);
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
    set_io_error (errno, "%s: cannot flush its directory", path);
    if (fd >= 0)
      close (fd);
    return -1;
  }
  close (fd);
  return 0;
}

/* ---- The spare ---------------------------------------------------------
 *
 * A failed job keeps what it copied only if it can finish TARGET.part
 * (last L2 table, L1, refcounts), and the commonest failure is a full
 * disk.  So the job sets aside, in TARGET.part.spare, the space that
 * finishing needs, and gives it back just before finishing. */

static uint64_t
finish_bytes (const struct copy_job *j)
{
  uint64_t cs = j->cs, size = j->img->size;
  uint64_t per_l2 = cs * (cs / 8);
  uint64_t l1 = ((size + per_l2 - 1) / per_l2 * 8 + cs - 1) / cs * cs;
  uint64_t file = j->res->bytes_planned + (j->res->bytes_planned / per_l2 + 2)
                  * cs + l1 + cs;
  uint64_t blocks = (file / cs) / (cs / 2) + 2;
  uint64_t table = (blocks * 8 + cs - 1) / cs + 1;
  return l1 + (blocks + table + 2) * cs;
}

static void
spare_make (struct copy_job *j)
{
  if (!j->tgt.qcow2 || asprintf (&j->spare_path, "%s.spare",
                                 j->part_path) < 0) {
    j->spare_path = NULL;
    return;
  }
  int fd = open (j->spare_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                 0600);
  if (fd < 0 || posix_fallocate (fd, 0, (off_t) finish_bytes (j)) != 0) {
    /* No room even for that: the job will most likely fail anyway. */
    if (fd >= 0)
      close (fd);
    unlink (j->spare_path);
    free (j->spare_path);
    j->spare_path = NULL;
    return;
  }
  close (fd);
}

static void
spare_release (struct copy_job *j)
{
  if (j->spare_path) {
    unlink (j->spare_path);
    free (j->spare_path);
    j->spare_path = NULL;
  }
}

/* ---- Stages ------------------------------------------------------------ */

struct copy_job *
job_prepare (const struct qbak_copy_opts *o, struct qbak_copy_result *res)
{
  struct copy_job *j = calloc (1, sizeof *j);
  if (!j) {
    set_nomem ();
    return NULL;
  }
  j->o = o;
  j->res = res;
  j->t0 = now ();
  memset (res, 0, sizeof *res);
  res->outcome = "not-started";
  if (check_args (o, &j->mode) < 0 || open_source (j) < 0)
    goto fail;
  res->virtual_size = j->img->size;
  res->cluster_size = j->cs;
  j->buf = malloc (COPY_REQUEST_BYTES + j->cs);
  if (!j->buf) {
    set_nomem ();
    goto fail;
  }
  if (target_open (j) < 0)
    goto fail;
  return j;
fail:
  job_discard (j);
  return NULL;
}

int
job_plan (struct copy_job *j)
{
  struct image *img = j->img;
  uint64_t size = img->size;

  j->copy_set = dirty_bitmap_create (size, j->cs);
  if (!j->copy_set)
    return -1;
  if (j->bitmap) {
    const struct dirty_bitmap *data = qbak_internal_bitmap_data (j->src,
                                                                 j->bitmap);
    if (!data)
      return -1;
    j->sync_set = dirty_bitmap_copy (data);
    j->successor = dirty_bitmap_create (size,
                                        dirty_bitmap_granularity (data));
    if (!j->sync_set || !j->successor)
      return -1;
  }

  if (j->o->resume) {
    /* Only what the bitmap still holds: what the failed job left. */
    if (dirty_bitmap_merge (j->copy_set, j->sync_set) < 0)
      return -1;
  }
  else switch (j->o->sync) {
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
  uint64_t planned = dirty_bitmap_count (j->copy_set) * j->cs;
  j->res->bytes_planned = planned > size ? size : planned;
  j->res->bytes_skipped = size - j->res->bytes_planned;
  spare_make (j);
  return 0;
}

/* Write with retries for transient target errors (the writer's state is
 * unchanged by a failed call). */
static int
write_retrying (struct copy_job *j, bool zero, uint64_t off, const void *buf,
                uint64_t len)
{
  for (unsigned attempt = 0;; attempt++) {
    int r = zero ? target_zero (j, off, len)
                 : target_write (j, off, buf, (size_t) len);
    if (r == 0 || attempt >= j->o->retries ||
        qbak_get_status () != QBAK_STATUS_IO)
      return r;
    unsigned ms = 100u << (attempt < 6 ? attempt : 6);
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    nanosleep (&ts, NULL);
  }
}

/* Emit BUF, holding guest [POS, +N), as runs of data and zero clusters. */
static int
emit (struct copy_job *j, uint64_t pos, const uint8_t *buf, uint64_t n)
{
  uint64_t cs = j->cs, i = 0;
  while (i < n) {
    uint64_t c = n - i < cs ? n - i : cs;
    bool z = is_zero (buf + i, c);
    uint64_t k = i + c;
    while (k < n) {
      uint64_t c2 = n - k < cs ? n - k : cs;
      if (is_zero (buf + k, c2) != z)
        break;
      k += c2;
    }
    if (write_retrying (j, z, pos + i, buf + i, k - i) < 0)
      return -1;
    if (z)
      j->res->zero_clusters += (k - i + cs - 1) / cs;
    else {
      j->res->bytes_copied += k - i;
      j->res->clusters_copied += (k - i + cs - 1) / cs;
    }
    dirty_bitmap_clear (j->copy_set, pos + i, k - i);
    i = k;
  }
  return 0;
}

/* Copy [OFF, +LEN) (cluster aligned, inside one copy-set run).  Each
 * cluster leaves the copy set once the target has accepted it. */
static int
copy_range (struct copy_job *j, uint64_t off, uint64_t len)
{
  uint64_t cs = j->cs, end = off + len, pos = off;

  while (pos < end) {
    struct chain_extent e;
    if (image_chain_status (j->img, pos, end - pos, &e) < 0)
      return -1;
    uint64_t n = e.length;
    if (e.zero && !e.data) {
      /* Known zero: no read.  Whole clusters only; a partial one is read
       * below. */
      uint64_t last = (pos + n) / cs * cs;
      if (pos + n == j->img->size)
        last = pos + n;
      if (last > pos) {
        if (write_retrying (j, true, pos, NULL, last - pos) < 0)
          return -1;
        j->res->zero_clusters += (last - pos + cs - 1) / cs;
        dirty_bitmap_clear (j->copy_set, pos, last - pos);
        pos = last;
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
    if (emit (j, pos, j->buf, n) < 0)
      return -1;
    pos += n;
  }
  return 0;
}

/* --on-error ignore: redo a failed range cluster by cluster, skipping the
 * clusters that fail (they stay in the copy set). */
static int
copy_range_ignoring (struct copy_job *j, uint64_t off, uint64_t len,
                     char **first_error)
{
  for (uint64_t pos = off; pos < off + len; pos += j->cs) {
    uint64_t n = off + len - pos < j->cs ? off + len - pos : j->cs;
    if (!dirty_bitmap_test (j->copy_set, pos))
      continue;
    if (copy_range (j, pos, n) < 0) {
      if (qbak_get_status () == QBAK_STATUS_INVALID &&
          strstr (qbak_get_error (), "internal"))
        return -1;
      if (!*first_error)
        *first_error = strdup (qbak_get_error ());
      j->res->clusters_failed++;
    }
  }
  return 0;
}

int
job_copy (struct copy_job *j, volatile int *cancel, qbak_progress_cb progress,
          void *opaque)
{
  uint64_t size = j->img->size, done = 0, total = j->res->bytes_planned;
  char *first_error = NULL;
  int64_t off = dirty_bitmap_next_dirty (j->copy_set, 0);

  j->res->outcome = "running";
  while (off >= 0) {
    int64_t next = dirty_bitmap_next_clean (j->copy_set, (uint64_t) off);
    uint64_t run_end = next < 0 ? size : (uint64_t) next;
    for (uint64_t pos = (uint64_t) off; pos < run_end;) {
      if (cancel && *cancel) {
        free (first_error);
        qbak_internal_error (QBAK_STATUS_CANCELLED, 0, "%s: backup "
                             "cancelled", j->o->target);
        return -1;
      }
      uint64_t n = run_end - pos < COPY_REQUEST_BYTES ? run_end - pos
                                                      : COPY_REQUEST_BYTES;
      if (copy_range (j, pos, n) < 0) {
        if (!j->o->on_error_ignore ||
            copy_range_ignoring (j, pos, n, &first_error) < 0) {
          free (first_error);
          return -1;
        }
      }
      pos += n;
      done += n;
      if (progress)
        progress (done < total ? done : total, total, opaque);
    }
    if (next < 0)
      break;
    off = dirty_bitmap_next_dirty (j->copy_set, run_end);
  }
  if (j->res->clusters_failed) {
    qbak_internal_error (QBAK_STATUS_IO, 0, "%s: %" PRIu64 " clusters could "
                         "not be copied (first error: %s)", j->o->target,
                         j->res->clusters_failed,
                         first_error ? first_error : "?");
    free (first_error);
    return -1;
  }
  free (first_error);
  return 0;
}

int
job_finish_target (struct copy_job *j)
{
  spare_release (j);
  if (target_finish (j) < 0)
    return -1;
  target_close (j);
  return 0;
}

static int
set_bitmap (struct copy_job *j, const struct dirty_bitmap *data,
            const char *state)
{
  if (qbak_internal_bitmap_set (j->src, j->o->bitmap, data) < 0)
    return -1;
  j->res->bitmap_state = state;
  j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (data);
  return 0;
}

int
job_promote (struct copy_job *j)
{
  const char *t = j->o->target;
  /* link() refuses to replace: a TARGET created meanwhile is kept. */
  if (link (j->part_path, t) < 0) {
    set_io_error (errno, "%s: cannot rename %s into place", t, j->part_path);
    return -1;
  }
  if (unlink (j->part_path) < 0) {
    set_io_error (errno, "%s: cannot complete the rename of %s", t,
                  j->part_path);
    return -1;
  }
  /* Its own message (the folder, the errno), not a stale errno here. */
  if (sync_dir_of (t) < 0)
    return -1;
  j->tgt.created = false;
  j->res->seconds = now () - j->t0;
  j->res->outcome = "ok";
  if (!j->bitmap)
    return 0;
  if (j->mode == QBAK_BITMAP_MODE_NEVER) {
    j->res->bitmap_state = "unchanged";
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
    return 0;
  }
  /* on-success and always: the bitmap becomes the successor. */
  if (set_bitmap (j, j->successor, "cleared") < 0) {
    j->res->bitmap_state = "unchanged";
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
    qbak_internal_error_prefix ("%s: the backup is complete, but the bitmap "
                                "could not be cleared (the next incremental "
                                "will copy these clusters again)", t);
    return -1;
  }
  return 0;
}

void
job_fail (struct copy_job *j, enum qbak_status status)
{
  char *err = strdup (qbak_get_error ());
  int e = qbak_get_errno ();
  const char *what = "";

  j->res->outcome = status == QBAK_STATUS_CANCELLED ? "cancelled" : "failed";
  j->res->clusters_left = j->copy_set ? dirty_bitmap_count (j->copy_set) : 0;
  j->res->seconds = now () - j->t0;

  /* What was copied stays, durable, in TARGET.part (never promoted). */
  spare_release (j);
  bool kept = (j->tgt.qcow2 || j->tgt.raw) && target_finish (j) == 0;
  target_close (j);
  if (!kept && j->tgt.created) {
    unlink (j->part_path);
    j->tgt.created = false;
  }

  if (j->bitmap && j->mode == QBAK_BITMAP_MODE_ALWAYS && j->copy_set) {
    /* always: the bitmap becomes what was not copied (plus new writes),
     * so --resume copies only the rest into TARGET.part.  Only if what
     * was copied is durable there; otherwise everything stays. */
    struct dirty_bitmap *left = dirty_bitmap_copy (j->successor);
    if (kept && left && dirty_bitmap_merge (left, j->copy_set) == 0 &&
        set_bitmap (j, left, "not-copied") == 0)
      what = "; the bitmap now holds the clusters not copied: run the same "
             "command with --resume to finish";
    else {
      j->res->bitmap_state = "unchanged";
      j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
      what = "; the bitmap is unchanged: run the same command again";
    }
    dirty_bitmap_free (left);
  }
  else if (j->bitmap) {
    j->res->bitmap_state = "unchanged";
    j->res->bitmap_dirty_bytes = j->sync_set
      ? dirty_bitmap_dirty_bytes (j->sync_set)
      : j->bitmap->bm ? dirty_bitmap_dirty_bytes (j->bitmap->bm) : 0;
    what = "; the bitmap is unchanged: run the same command again";
  }
  char *msg = NULL;
  if (asprintf (&msg, "%s%s", err ? err : "backup failed", what) < 0)
    msg = NULL;
  qbak_internal_error_restore (status, e, msg ? msg : err);
  free (msg);
  free (err);
}

void
job_discard (struct copy_job *j)
{
  if (!j)
    return;
  target_close (j);
  if (j->tgt.created && !j->o->resume)
    unlink (j->part_path);
  j->tgt.created = false;
  job_free (j);
}

void
job_free (struct copy_job *j)
{
  if (!j)
    return;
  target_close (j);
  spare_release (j);
  free (j->part_path);
  free (j->buf);
  dirty_bitmap_free (j->sync_set);
  dirty_bitmap_free (j->copy_set);
  dirty_bitmap_free (j->successor);
  qbak_image_close (j->src);
  free (j);
}
