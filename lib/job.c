/* The backup job, with QEMU's backup semantics and crash safe at every
 * step: see job.h for the stages.  This file holds the stages; the
 * argument rules are in job-args.c, the companion bitmaps in
 * job-companion.c, the copy loop in copy-loop.c, the target's writers
 * behind target.h.
 *
 * Plan builds the copy set at the target's cluster granularity from the
 * sync mode, in O(allocated extents) or O(dirty), never a scan of the
 * whole disk.  Completion makes the target durable, renames it into
 * place, and only then rewrites the bitmap through the crash-safe store
 * path.
 *
 * The job keeps QEMU's three sets apart: the sync set (the bitmap's bits
 * at the start), the copy set (what is still to copy) and the successor
 * (writes during the job; empty offline, where the source is locked).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "common/failpoint.h"
#include "common/outfile.h"
#include "common/storage.h"
#include "formats/file-names.h"
#include "lib/job-internal.h"
#include "lib/repo-objects.h"

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

static int
open_source (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  /* The bitmap is rewritten at the end unless mode is never: hold the
   * write permission from the start, as QEMU's job does. */
  bool write = o->bitmap && j->mode != QBAK_BITMAP_MODE_NEVER;
  unsigned flags = write ? QBAK_OPEN_WRITE : QBAK_OPEN_READ;
  j->src = j->source ? repo_image_open (j->source->st, j->source->key, flags)
                     : qbak_image_open_format (o->source, o->source_format,
                                               flags);
  if (!j->src)
    return -1;
  j->img = j->src->img;
  if (write && image_check_writable (j->img) < 0)
    return -1;
  j->cs = o->cluster_size ? o->cluster_size
                          : image_target_cluster_size (j->img);
  if (!o->bitmap)
    return 0;

  const struct qcow2_bitmap *b = qbak_internal_find_bitmap (j->src, o->bitmap);
  if (!b) {
    set_invalid ("%s: no bitmap named '%s'", o->source, o->bitmap);
    error_set_hint (HINT_LIST_BITMAPS);
    return -1;
  }
  if (b->in_use) {
    qbak_internal_set_in_use_error (o->source, o->bitmap);
    return -1;
  }
  j->bitmap = b;
  return job_find_companions (j);
}

/* ---- Target ------------------------------------------------------------ */

/* Refuse a TARGET.part that is there before the job: it is the partial
 * target of an interrupted job (or not ours at all), and deleting or
 * overwriting it would lose what it holds. */
static int
check_no_stale_part (struct copy_job *j)
{
  struct stat st;
  const char *t = j->o->target;
  if (lstat (j->part_path, &st) < 0)
    return 0;
  if (job_is_source_file (j, &st)) {
    set_exists_error ("%s: %s is the source (or a file of its chain); it "
                      "cannot be the partial file of a backup: choose "
                      "another target name", t, j->part_path);
    return -1;
  }
  set_exists_error ("%s: %s exists: the partial target of an interrupted "
                    "job; remove it to start again (the bitmap still covers "
                    "everything that job had to copy)", t, j->part_path);
  error_set_hint (HINT_PARTIAL_EXISTS);
  return -1;
}

/* The partial of an interrupted job, to resume: a regular file made by
 * qbak (its own mark, never a link or any qcow2), for this source's bitmap
 * (the mark names a companion that must exist), for the same job. */
static int
reopen_partial (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  struct stat st;
  if (lstat (j->part_path, &st) == 0 && job_is_source_file (j, &st)) {
    set_usage_error ("%s: cannot resume: %s is the source (or a file of its "
                     "chain)", o->target, j->part_path);
    return -1;
  }
  if (target_reopen (&j->tgt) < 0)
    return -1;
  char want_name[128];
  bool found = false;
  if (target_get_partial_id (&j->tgt, j->job_id)) {
    job_companion_name (o->bitmap, j->job_id, want_name, sizeof want_name);
    for (size_t i = 0; i < j->n_companions; i++)
      found |= strcmp (j->companions[i].name, want_name) == 0;
  }
  if (!found) {
    set_invalid ("%s: cannot resume: %s is not the partial target of an "
                 "interrupted job of bitmap '%s' on %s", o->target,
                 j->part_path, o->bitmap, o->source);
    error_set_hint (HINT_NOT_OUR_PARTIAL);
    return -1;
  }
  /* The target must be the one the failed job started: same disk, same
   * backing file. */
  struct target_shape shape;
  target_get_shape (&j->tgt, &shape);
  const char *want = o->backing ? o->backing : "";
  const char *have = shape.backing_name ? shape.backing_name : "";
  if (shape.size != j->img->size || strcmp (want, have) != 0 ||
      (o->cluster_size && o->cluster_size != shape.cluster_size)) {
    set_invalid ("%s: cannot resume: %s was started for another job "
                 "(size %" PRIu64 ", backing '%s')", o->target, j->part_path,
                 shape.size, have);
    error_set_hint (HINT_PARTIAL_OF_OTHER_JOB);
    return -1;
  }
  j->cs = shape.cluster_size;
  j->res->cluster_size = j->cs;
  return 0;
}

/* The target and manifest are objects written in one pass (job.h). */
static bool
streamed (const struct copy_job *j)
{
  return j->place && j->place->st;
}

/* A streamed target: a new object, never a continued one; its backing
 * file is the repository's previous point, which the repository checked
 * (there is no path to open it by). */
static int
create_streamed (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  if (j->place->resume) {
    set_usage_error ("%s: an object cannot be continued in place",
                     o->target);
    return -1;
  }
  struct qbak_file *f = storage_create_object (j->place->st, j->place->key);
  if (!f)
    return -1;
  struct target_shape shape = {
    .size = j->img->size,
    .cluster_size = j->cs,
    .backing_name = o->backing,
    .backing_format = o->backing ? (o->backing_format ? o->backing_format
                                                      : "qcow2") : NULL,
  };
  return target_create_object (&j->tgt, j->place->st, f, &shape);
}

/* An in-place target (job.h): created at its own name, or the file of
 * an interrupted run continued, which must be this job's: the caller's
 * mark (or none: it was complete), the source's size, the same backing
 * file. */
static int
open_in_place (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  const char *backing_format = NULL;

  if (!(j->part_path = strdup (o->target))) {
    set_nomem ();
    return -1;
  }
  j->tgt.part_path = j->part_path;
  j->tgt.in_place = j->tgt.explicit_zeroes = true;
  if (streamed (j))
    return create_streamed (j);
  if (!j->place->resume) {
    if (o->backing && job_check_backing (j, &backing_format) < 0)
      return -1;
    struct target_shape shape = {
      .size = j->img->size,
      .cluster_size = j->cs,
      .backing_name = o->backing,
      .backing_format = backing_format,
    };
    return target_create (&j->tgt, &shape);
  }
  if (target_reopen (&j->tgt) < 0)
    return -1;
  uint8_t id[TARGET_PARTIAL_ID_BYTES];
  struct target_shape shape;
  target_get_shape (&j->tgt, &shape);
  const char *want = o->backing ? o->backing : "";
  const char *have = shape.backing_name ? shape.backing_name : "";
  if ((target_get_partial_id (&j->tgt, id) &&
       memcmp (id, j->place->mark, sizeof id) != 0) ||
      shape.size != j->img->size || strcmp (want, have) != 0) {
    set_invalid ("%s: cannot continue: the file was started for another "
                 "backup (size %" PRIu64 ", backing '%s')", o->target,
                 shape.size, have);
    return -1;
  }
  j->cs = shape.cluster_size;
  j->res->cluster_size = j->cs;
  j->checkpointed = true;
  return 0;
}

/* Sync checksums: the previous backup's chain, which the target will
 * read through, opened to compare every cluster with (read-only, shared:
 * it is a backup, not a disk in use). */
static int
open_reference (struct copy_job *j, const char *format)
{
  char *path = image_resolve_backing (j->o->target, j->o->backing);
  if (!path)
    return -1;
  j->ref = qbak_image_open_format (path, format, QBAK_OPEN_FORCE_SHARE);
  free (path);
  if (!j->ref) {
    qbak_internal_error_prefix ("%s: backing file '%s'", j->o->target,
                                j->o->backing);
    return -1;
  }
  if (!(j->ref_buf = malloc (COPY_REQUEST_BYTES + j->cs)) ||
      !(j->hashes = malloc ((COPY_REQUEST_BYTES / j->cs + 2)
                            * sizeof *j->hashes))) {
    set_nomem ();
    return -1;
  }
  return 0;
}

static int
open_target (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  const char *backing_format = NULL;
  struct stat st;

  if (j->place)
    return open_in_place (j);
  if (lstat (o->target, &st) == 0) {
    set_exists_error ("%s: target exists; qbak never overwrites a backup "
                     "(choose a new name or remove it)", o->target);
    return -1;
  }
  if (asprintf (&j->part_path, "%s.part", o->target) < 0) {
    j->part_path = NULL;
    set_nomem ();
    return -1;
  }
  j->tgt.part_path = j->part_path;
  if (o->resume)
    return reopen_partial (j);
  if (check_no_stale_part (j) < 0)
    return -1;
  if (o->backing && job_check_backing (j, &backing_format) < 0)
    return -1;
  if (o->sync == QBAK_SYNC_CHECKSUMS && open_reference (j, backing_format) < 0)
    return -1;
  struct target_shape shape = {
    .size = j->img->size,
    .cluster_size = j->cs,
    .backing_name = o->backing,
    .backing_format = backing_format,
  };
  return target_create (&j->tgt, &shape);
}

/* ---- The spare ---------------------------------------------------------
 *
 * A failed job keeps what it copied only if it can finish its partial
 * target (last L2 table, L1, refcounts), and the commonest failure is a
 * full disk.  So the job sets aside, in an anonymous file beside the
 * target, the space that finishing needs, and gives it back just before
 * finishing. */

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
  /* An object's space is the object store's, not a folder's. */
  if (j->tgt.ops->resumable && !streamed (j))
    j->spare_fd = outfile_reserve (j->part_path, finish_bytes (j));
}

static void
spare_release (struct copy_job *j)
{
  if (j->spare_fd >= 0)
    close (j->spare_fd);
  j->spare_fd = -1;
}

/* "1.5 GiB" */
static void
human_size (uint64_t bytes, char *buf, size_t size)
{
  static const char *units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
  double v = (double) bytes;
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf (buf, size, "%" PRIu64 " bytes", bytes);
  else
    snprintf (buf, size, "%.1f %s", v, units[u]);
}

/* After ENOSPC: how much the target needs and how much its folder has. */
static char *
space_hint (struct copy_job *j)
{
  char *dir = outfile_folder (j->o->target), *hint = NULL;
  struct statvfs vfs;
  if (!dir)
    return NULL;
  if (statvfs (dir, &vfs) == 0) {
    char need[32], have[32];
    human_size (j->res->bytes_planned + finish_bytes (j), need, sizeof need);
    human_size ((uint64_t) vfs.f_bavail * vfs.f_frsize, have, sizeof have);
    if (asprintf (&hint, "; the backup needs up to %s and '%s' has %s free",
                  need, dir, have) < 0)
      hint = NULL;
  }
  free (dir);
  return hint;
}

/* ---- Stages ------------------------------------------------------------ */

struct copy_job *
job_prepare (const struct qbak_copy_opts *o, struct qbak_copy_result *res,
             struct job_in_place *place, const struct job_source *source)
{
  struct copy_job *j = calloc (1, sizeof *j);
  if (!j) {
    set_nomem ();
    return NULL;
  }
  j->o = o;
  j->res = res;
  j->place = place;
  j->source = source;
  if (place && o->bitmap && o->bitmap_mode != QBAK_BITMAP_MODE_NEVER) {
    set_usage_error ("%s: a checkpointed job leaves its bitmap alone",
                     o->target);
    free (j);
    return NULL;
  }
  /* The target's name and format are the caller's; its .part name is
   * made with the target. */
  target_init (&j->tgt, o->format, o->target, NULL);
  j->spare_fd = -1;
  j->t0 = now ();
  if (getrandom (j->job_id, sizeof j->job_id, 0) != sizeof j->job_id) {
    set_io_error (errno, "%s: cannot make a job id", o->target);
    goto fail;
  }
  memset (res, 0, sizeof *res);
  res->size = sizeof *res;
  res->outcome = QBAK_OUTCOME_NOT_STARTED;
  if (job_check_args (o, &j->mode) < 0 || open_source (j) < 0 ||
      job_check_chain_args (o) < 0)
    goto fail;
  res->virtual_size = j->img->size;
  res->cluster_size = j->cs;
  j->buf = malloc (COPY_REQUEST_BYTES + j->cs);
  if (!j->buf) {
    set_nomem ();
    goto fail;
  }
  if (open_target (j) < 0)
    goto fail;
  return j;
fail:
  job_discard (j);
  return NULL;
}

/* The manifest of an in-place target, written while copying (a new
 * target's); a continued target's is made from the file at the end. */
static int
open_manifest (struct copy_job *j)
{
  if (j->place->reference &&
      !(j->hashes = malloc ((COPY_REQUEST_BYTES / j->cs + 2)
                            * sizeof *j->hashes))) {
    set_nomem ();
    return -1;
  }
  if (!j->place->manifest_path || j->place->resume)
    return 0;
  struct qbak_file *f = streamed (j)
    ? storage_create_object (j->place->st, j->place->manifest_key)
    : qbak_file_create (j->place->manifest_path);
  if (!f)
    return -1;
  j->manifest = manifest_writer_create (f, j->cs, j->img->size);
  if (!j->manifest)
    return -1;
  if (!(j->put_hashes = malloc ((COPY_REQUEST_BYTES / j->cs + 2)
                                * sizeof *j->put_hashes))) {
    set_nomem ();
    return -1;
  }
  return 0;
}

/* Bytes of [OFF, +LEN) that BM leaves clean. */
static uint64_t
clean_bytes (const struct dirty_bitmap *bm, uint64_t off, uint64_t len)
{
  uint64_t clean = 0, end = off + len;
  while (off < end) {
    int64_t d = dirty_bitmap_next_dirty (bm, off);
    uint64_t stop = d < 0 || (uint64_t) d > end ? end : (uint64_t) d;
    clean += stop - off;
    if (stop == end)
      break;
    int64_t c = dirty_bitmap_next_clean (bm, stop);
    off = c < 0 ? end : (uint64_t) c;
  }
  return clean;
}

/* Walk the layer T (the in-place target) over [0, SIZE): clear what it
 * holds from the copy set, or (COUNT) add up the data it keeps. */
static int
walk_target (struct copy_job *j, struct image *t, bool count)
{
  uint64_t size = j->img->size;
  for (uint64_t off = 0; off < size;) {
    struct layer_extent e;
    if (t->ops->block_status (t, off, size - off, &e) < 0)
      return -1;
    if (!count && e.state != LAYER_UNALLOCATED)
      dirty_bitmap_clear (j->copy_set, off, e.length);
    if (count && e.state == LAYER_DATA)
      j->place->bytes_kept += clean_bytes (j->copy_set, off, e.length);
    off += e.length;
  }
  return 0;
}

/* Continuing an in-place target: what it holds was copied (data or
 * zeroes, every cluster stored), except where the source changed since
 * the interrupted run began. */
static int
plan_resume (struct copy_job *j)
{
  struct image *t = image_open (j->part_path, "qcow2", IMAGE_OPEN_NO_BACKING,
                                NULL, NULL);
  int ret = -1;
  if (!t)
    return -1;
  j->place->bytes_kept = 0;
  if (walk_target (j, t, false) < 0)
    goto out;
  if (j->place->redo_bitmap) {
    const struct qcow2_bitmap *b =
      qbak_internal_find_bitmap (j->src, j->place->redo_bitmap);
    const struct dirty_bitmap *redo = NULL;
    if (!b || b->in_use) {
      set_invalid ("%s: cannot continue: bitmap '%s' of %s, which tells "
                   "what changed since, is %s", j->o->target,
                   j->place->redo_bitmap, j->o->source,
                   b ? "in use" : "missing");
      goto out;
    }
    if (!(redo = qbak_internal_bitmap_data (j->src, b)) ||
        dirty_bitmap_merge (j->copy_set, redo) < 0)
      goto out;
  }
  ret = walk_target (j, t, true);
 out:
  image_close (t);
  return ret;
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
    /* What interrupted jobs had to copy is still to copy, unless this job
     * continues their partial target (which holds it). */
    if (!j->o->resume)
      for (size_t i = 0; i < j->n_companions; i++) {
        const struct dirty_bitmap *c =
          qbak_internal_bitmap_data (j->src, j->companions[i].b);
        if (!c || dirty_bitmap_merge (j->sync_set, c) < 0)
          return -1;
      }
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
  case QBAK_SYNC_CHECKSUMS:
    /* Every cluster is read and compared with the backing file's. */
    dirty_bitmap_set (j->copy_set, 0, size);
    break;
  case QBAK_SYNC_INCREMENTAL:
  case QBAK_SYNC_BITMAP:
    if (dirty_bitmap_merge (j->copy_set, j->sync_set) < 0)
      return -1;
    break;
  }
  if (j->place && j->place->resume && plan_resume (j) < 0)
    return -1;
  if (j->place && open_manifest (j) < 0)
    return -1;
  uint64_t planned = dirty_bitmap_count (j->copy_set) * j->cs;
  j->res->bytes_planned = planned > size ? size : planned;
  j->res->bytes_skipped = size - j->res->bytes_planned;
  spare_make (j);
  return 0;
}

/* Checkpoints of an in-place target: every few seconds of copying, and
 * never more than a small share of the copy's time (a checkpoint reads
 * the target's L2 tables and writes its refcounts: it grows with the
 * target). */
#define CHECKPOINT_SECONDS 2.0
#define CHECKPOINT_MAX_SHARE 0.05

int
job_maybe_checkpoint (struct copy_job *j)
{
  if (!j->place || streamed (j))
    return 0;
  double t = now ();
  if (j->last_checkpoint == 0) {
    j->last_checkpoint = t;
    return 0;
  }
  double every = qbak_failpoint_checkpoint_seconds (CHECKPOINT_SECONDS);
  double wait = j->checkpoint_cost / CHECKPOINT_MAX_SHARE;
  if (every > 0 && t - j->last_checkpoint < (wait > every ? wait : every))
    return 0;
  target_set_partial_id (&j->tgt, j->place->mark);
  if (target_checkpoint (&j->tgt) < 0)
    return -1;
  /* The file's name is durable from its first checkpoint on. */
  if (!j->checkpointed && outfile_sync_folder (j->o->target) < 0)
    return -1;
  j->checkpointed = true;
  j->last_checkpoint = now ();
  j->checkpoint_cost = j->last_checkpoint - t;
  return 0;
}

int
job_finish_target (struct copy_job *j)
{
  spare_release (j);
  /* A complete target is no partial: a resumed one loses its mark. */
  target_set_partial_id (&j->tgt, NULL);
  if (target_finish (&j->tgt) < 0)
    return -1;
  target_close (&j->tgt);
  /* An in-place target is complete now, whatever becomes of the group. */
  if (j->place)
    j->checkpointed = true;
  if (j->manifest) {
    int r = manifest_writer_finish (j->manifest, j->place->manifest_digest);
    if (r == 0 && streamed (j))
      r = storage_commit_object (j->place->st,
                                 manifest_writer_file (j->manifest));
    manifest_writer_free (j->manifest);
    j->manifest = NULL;
    return r;
  }
  if (j->place && j->place->manifest_path && j->place->resume)
    return manifest_of_layer (j->part_path, j->place->manifest_path,
                              j->place->manifest_digest);
  return 0;
}

/* Rewrite the job's bitmap to DATA and, in the same commit, drop its
 * companions and (if ADD_COMPANION) record the sync set as the companion
 * of this job's partial target. */
static int
set_bitmap (struct copy_job *j, const struct dirty_bitmap *data,
            bool drop_companions, bool add_companion,
            enum qbak_bitmap_state state)
{
  size_t n = 0;
  char name[128];
  struct qbak_internal_bitmap_change *c = calloc (j->n_companions + 2,
                                                  sizeof *c);
  if (!c) {
    set_nomem ();
    return -1;
  }
  c[n++] = (struct qbak_internal_bitmap_change) {
    QBAK_INTERNAL_BITMAP_SET, j->o->bitmap, data,
  };
  if (drop_companions)
    for (size_t i = 0; i < j->n_companions; i++)
      c[n++] = (struct qbak_internal_bitmap_change) {
        QBAK_INTERNAL_BITMAP_REMOVE, j->companions[i].name, NULL,
      };
  if (add_companion) {
    job_companion_name (j->o->bitmap, j->job_id, name, sizeof name);
    c[n++] = (struct qbak_internal_bitmap_change) {
      QBAK_INTERNAL_BITMAP_CREATE, name, j->sync_set,
    };
  }
  /* The commit reloads the image's bitmap list: the pointers into it are
   * stale from here on, success or not. */
  int r = qbak_internal_bitmap_update (j->src, c, n);
  free (c);
  j->n_companions = 0;
  j->bitmap = NULL;
  if (r < 0)
    return -1;
  j->res->bitmap_state = state;
  j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (data);
  return 0;
}

int
job_promote (struct copy_job *j)
{
  const char *t = j->o->target;
  if (j->place)
    goto named;
  /* A new target gets its name now (never replacing one made meanwhile);
   * a named partial (a resumed one) gets its final name, then loses the
   * partial one. */
  if (outfile_link (j->tgt.fd, t) < 0) {
    qbak_internal_error_prefix ("%s: cannot put the backup in place", t);
    return -1;
  }
  if (!j->tgt.anonymous && outfile_unlink_own (j->tgt.fd, j->part_path) < 0)
    return -1;
named:
  j->tgt.named_by_us = false;
  /* Its own message (the folder, the errno), not a stale errno here.  An
   * object was made durable by its commit. */
  if (!streamed (j) && outfile_sync_folder (t) < 0)
    return -1;
  j->res->seconds = now () - j->t0;
  j->res->outcome = QBAK_OUTCOME_OK;
  if (!j->bitmap)
    return 0;
  if (j->mode == QBAK_BITMAP_MODE_NEVER) {
    j->res->bitmap_state = QBAK_BITMAP_STATE_UNCHANGED;
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
    return 0;
  }
  /* on-success and always: the bitmap becomes the successor, and what
   * interrupted jobs had to copy is in this backup now. */
  if (set_bitmap (j, j->successor, true, false,
                  QBAK_BITMAP_STATE_CLEARED) < 0) {
    j->res->bitmap_state = QBAK_BITMAP_STATE_UNCHANGED;
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
    qbak_internal_error_prefix ("%s: the backup is complete, but the bitmap "
                                "could not be cleared (the next incremental "
                                "will copy these clusters again)", t);
    return -1;
  }
  return 0;
}

/* Keep what a failed bitmap-mode 'always' job copied as TARGET.part:
 * finished (durable) and marked with the job's id, then named.  Returns
 * whether it is kept. */
static bool
keep_partial (struct copy_job *j)
{
  struct qbak_saved_error err;
  bool kept = false;
  qbak_error_save (&err);
  spare_release (j);
  target_set_partial_id (&j->tgt, j->place ? j->place->mark : j->job_id);
  if (target_finish (&j->tgt) == 0) {
    target_close (&j->tgt);
    if (j->tgt.anonymous) {
      kept = outfile_link (j->tgt.fd, j->part_path) == 0;
      j->tgt.named_by_us = kept;
    }
    else
      kept = true;
    kept = kept && outfile_sync_folder (j->part_path) == 0;
  }
  qbak_error_put_back (&err, "backup failed");
  return kept;
}

void
job_fail (struct copy_job *j, enum status status)
{
  /* The job's error is kept across the cleanup below (which may set
   * errors of its own) and then told what became of target and bitmap. */
  struct qbak_saved_error err;
  qbak_error_save (&err);
  err.status = status;
  int e = err.errnum;
  const char *what = "";
  char *space = NULL;
  enum hint hint = err.hint;

  j->res->outcome = status == STATUS_CANCELLED ? QBAK_OUTCOME_CANCELLED
                                               : QBAK_OUTCOME_FAILED;
  j->res->clusters_left = j->copy_set ? dirty_bitmap_count (j->copy_set) : 0;
  j->res->seconds = now () - j->t0;
  if (e == ENOSPC || e == EDQUOT)
    space = space_hint (j);

  /* Only a partial that a resumed job can continue is kept: bitmap-mode
   * always, a resumable target.  Anything else is dropped (never a file this
   * job did not create). */
  bool always = j->bitmap && j->mode == QBAK_BITMAP_MODE_ALWAYS &&
                j->copy_set;
  bool kept = always && j->tgt.ops->resumable && keep_partial (j);
  if (streamed (j)) {
    /* Nothing of an object that was never committed is kept (the next
     * run takes the point anew); one committed already is no point's
     * until a record names it, and the next run removes it. */
    target_drop (&j->tgt);
    manifest_writer_free (j->manifest);
    j->manifest = NULL;
    what = "; nothing of it was stored, and the next backup takes it anew";
    hint = HINT_RUN_AGAIN;
  }
  else if (j->place) {
    /* An in-place target is kept as its last good image: finished now
     * with its mark if that works, else as of its last checkpoint.  Only
     * a new one never made valid is dropped. */
    kept = j->copy_set && keep_partial (j);
    if (!kept && !j->checkpointed)
      target_drop (&j->tgt);
    else
      target_close (&j->tgt);
    if (kept || j->checkpointed) {
      what = "; what was copied is kept, and the next backup continues it";
      hint = HINT_RUN_AGAIN;
    }
  }
  else if (!kept) {
    if (j->o->resume)
      target_close (&j->tgt);   /* the partial is still its old self */
    else
      target_drop (&j->tgt);
  }
  /* A repository's job leaves its bitmap alone (bitmap mode never). */
  if (j->place && j->o->bitmap) {
    j->res->bitmap_state = QBAK_BITMAP_STATE_UNCHANGED;
    j->res->bitmap_dirty_bytes = j->sync_set
      ? dirty_bitmap_dirty_bytes (j->sync_set) : 0;
  }
  spare_release (j);

  if (always && kept) {
    /* always: the bitmap becomes what was not copied (plus new writes),
     * so resuming copies only the rest into TARGET.part; the companion
     * keeps what this job had to copy for any other target.  A resumed
     * job keeps its companion, which still describes the partial. */
    struct dirty_bitmap *left = dirty_bitmap_copy (j->successor);
    bool fresh = !j->o->resume;
    if (left && dirty_bitmap_merge (left, j->copy_set) == 0 &&
        set_bitmap (j, left, fresh, fresh,
                    QBAK_BITMAP_STATE_NOT_COPIED) == 0) {
      what = "; the bitmap now holds the clusters not copied";
      hint = HINT_RESUME_TO_FINISH;
    }
    else {
      /* The partial has no companion: it must not be resumed. */
      if (fresh)
        target_drop (&j->tgt);
      j->res->bitmap_state = QBAK_BITMAP_STATE_UNCHANGED;
      j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
      what = "; the bitmap is unchanged";
      hint = HINT_RUN_AGAIN;
    }
    dirty_bitmap_free (left);
  }
  else if (j->o->bitmap && !j->place) {
    j->res->bitmap_state = QBAK_BITMAP_STATE_UNCHANGED;
    j->res->bitmap_dirty_bytes =
      j->sync_set ? dirty_bitmap_dirty_bytes (j->sync_set)
      : j->bitmap && j->bitmap->bm ? dirty_bitmap_dirty_bytes (j->bitmap->bm) : 0;
    what = j->o->resume ? "; the bitmap and the partial target are unchanged"
                        : "; the bitmap is unchanged";
    hint = j->o->resume ? HINT_RESUME_AGAIN : HINT_RUN_AGAIN;
  }
  qbak_error_put_back (&err, "backup failed");
  if (space || *what)
    qbak_internal_error_suffix ("%s%s", space ? space : "", what);
  error_set_hint (hint);
  free (space);
}

void
job_discard (struct copy_job *j)
{
  if (!j)
    return;
  if (j->o->resume || (j->place && j->place->resume))
    target_close (&j->tgt);
  else
    target_drop (&j->tgt);
  job_free (j);
}

void
job_free (struct copy_job *j)
{
  if (!j)
    return;
  target_close (&j->tgt);
  if (j->tgt.fd >= 0)
    close (j->tgt.fd);
  spare_release (j);
  free (j->part_path);
  free (j->companions);
  free (j->put_hashes);
  free (j->hashes);
  free (j->ref_buf);
  qbak_image_close (j->ref);
  manifest_writer_free (j->manifest);
  if (j->place) {
    manifest_view_free (j->place->reference);
    j->place->reference = NULL;
  }
  free (j->buf);
  dirty_bitmap_free (j->sync_set);
  dirty_bitmap_free (j->copy_set);
  dirty_bitmap_free (j->successor);
  qbak_image_close (j->src);
  free (j);
}
