/* The backup job, with QEMU's backup semantics and crash safe at every
 * step: see job.h for the stages.
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
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "common/iszero.h"
#include "common/outfile.h"
#include "formats/file-names.h"
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"
#include "formats/raw-writer.h"
#include "lib/job.h"

#define COPY_REQUEST_BYTES (8u << 20)

struct target {
  struct qcow2_writer *qcow2;
  struct raw_writer *raw;
  bool has_backing;
  int fd;                /* a second descriptor of the target file, so it
                            outlives its writer until it is linked into
                            place (-1: none) */
  bool anonymous;        /* the file has no name yet (O_TMPFILE) */
  bool named_by_us;      /* TARGET.part is the file this job created */
};

/* A companion of the job's bitmap: a disabled bitmap that records what an
 * interrupted bitmap-mode 'always' job had to copy, while its partial
 * target holds part of it and the job's bitmap holds only the rest. */
struct companion {
  const char *name;      /* owned by the image's bitmap list */
  struct qcow2_bitmap *b;
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
  int spare_fd;          /* room kept for finishing a partial target */
  struct companion *companions;
  size_t n_companions;
  uint8_t job_id[QCOW2_PARTIAL_ID_BYTES];  /* this job's partial mark */
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
  if (o->backing && o->no_backing) {
    set_usage_error ("%s: --backing and --no-backing exclude each other", t);
    return -1;
  }
  if (o->backing_format && !o->backing) {
    set_usage_error ("%s: a backing format (-F) needs --backing", t);
    return -1;
  }
  if (o->backing_format && strcmp (o->backing_format, "qcow2") != 0 &&
      strcmp (o->backing_format, "raw") != 0 &&
      strcmp (o->backing_format, "qcow") != 0) {
    set_usage_error ("%s: invalid backing format '%s' (qcow2, raw or qcow)",
                     t, o->backing_format);
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

/* An incremental without a backing file restores wrong (what it does not
 * hold reads as zeroes); QEMU allows it, so qbak asks that it be meant.
 * Checked after the source, whose refusals say more. */
static int
check_chain_args (const struct qbak_copy_opts *o)
{
  if ((o->sync == QBAK_SYNC_INCREMENTAL || o->sync == QBAK_SYNC_BITMAP) &&
      o->format == QBAK_TARGET_QCOW2 && !o->backing && !o->no_backing) {
    set_usage_error ("%s: an incremental holds only the changed clusters, "
                     "and without a backing file the others read as zeroes "
                     "at restore: give --backing PREV (the previous backup), "
                     "or --no-backing if a target without one is meant",
                     o->target);
    return -1;
  }
  return 0;
}

/* ---- Source ------------------------------------------------------------ */

/* Whether the file ST is the source or any file its chain reads (backing
 * files, external data files): a job must never write, replace or delete
 * one of those.  Inodes, not names: a name can be spelled many ways. */
static bool
is_source_file (const struct copy_job *j, const struct stat *st)
{
  for (const struct image *l = j->img; l; l = l->backing) {
    const struct qbak_file *files[2] = { l->file, l->data_file };
    for (int k = 0; k < 2; k++) {
      struct stat fs;
      if (files[k] && fstat (files[k]->fd, &fs) == 0 &&
          fs.st_dev == st->st_dev && fs.st_ino == st->st_ino)
        return true;
    }
  }
  return false;
}

/* The companions of bitmap NAME are named after a hash of NAME, so any
 * name (up to QEMU's 1023 bytes) gives a short, fixed-length prefix. */
#define COMPANION_PREFIX "qbak-partial-"

static void
companion_prefix (const char *bitmap, char *buf, size_t size)
{
  snprintf (buf, size, COMPANION_PREFIX "%016llx-",
            (unsigned long long) XXH64 (bitmap, strlen (bitmap), 0));
}

static void
companion_name (const char *bitmap, const uint8_t *id, char *buf,
                size_t size)
{
  char hex[2 * QCOW2_PARTIAL_ID_BYTES + 1];
  for (int i = 0; i < QCOW2_PARTIAL_ID_BYTES; i++)
    snprintf (hex + 2 * i, 3, "%02x", id[i]);
  companion_prefix (bitmap, buf, size);
  size_t n = strlen (buf);
  snprintf (buf + n, size - n, "%s", hex);
}

static int
find_companions (struct copy_job *j)
{
  char prefix[64];
  companion_prefix (j->o->bitmap, prefix, sizeof prefix);
  size_t plen = strlen (prefix);
  struct qcow2_bitmap_list *l = &j->src->bitmaps;
  j->companions = calloc (l->n ? l->n : 1, sizeof *j->companions);
  if (!j->companions) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < l->n; i++) {
    struct qcow2_bitmap *b = &l->v[i];
    if (strncmp (b->name, prefix, plen) != 0)
      continue;
    if (b->in_use) {
      set_invalid ("%s: bitmap '%s' (what an interrupted job of bitmap "
                   "'%s' had to copy) is in use: the program that wrote it "
                   "did not close the image; remove it ('qbak bitmap remove "
                   "%s %s') and make a full backup", j->o->source, b->name,
                   j->o->bitmap, j->o->source, b->name);
      return -1;
    }
    j->companions[j->n_companions++] = (struct companion) { b->name, b };
  }
  return 0;
}

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
    qbak_internal_set_in_use_error (o->source, o->bitmap);
    return -1;
  }
  j->bitmap = b;
  return find_companions (j);
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
  if (is_source_file (j, &st)) {
    set_exists_error ("%s: %s is the source (or a file of its chain); it "
                      "cannot be the partial file of a backup: choose "
                      "another target name", t, j->part_path);
    return -1;
  }
  set_exists_error ("%s: %s exists: the partial target of an interrupted "
                    "job; finish it with the same command and --resume, or "
                    "remove it to start again (the bitmap still covers "
                    "everything that job had to copy)", t, j->part_path);
  return -1;
}

/* The previous backup given by --backing: opened in the format given
 * (-F) or as qcow2, never probed, since a raw file's first bytes are the
 * guest's; never the source or a file of its chain.  Sets *FORMAT to the
 * format to record in the target. */
static int
check_backing (struct copy_job *j, const char **format)
{
  const struct qbak_copy_opts *o = j->o;
  const char *fmt = o->backing_format ? o->backing_format : "qcow2";
  char *path = image_resolve_backing (o->target, o->backing);
  if (!path)
    return -1;
  struct qbak_image *prev = qbak_image_open_format (path, fmt,
                                                    QBAK_OPEN_FORCE_SHARE |
                                                    QBAK_OPEN_NO_BACKING |
                                                    QBAK_OPEN_INSPECT);
  free (path);
  if (!prev) {
    struct qbak_saved_error err;
    qbak_error_save (&err);
    char *msg = NULL;
    if (asprintf (&msg, "%s: backing file '%s': %s%s", o->target, o->backing,
                  err.msg ? err.msg : "cannot open",
                  o->backing_format ? ""
                  : "; qbak reads a backing file as qcow2 unless -F gives "
                    "its format (-F raw for a raw backup)") < 0)
      msg = NULL;
    qbak_internal_error_restore (err.status, err.errnum, msg ? msg : err.msg);
    free (msg);
    free (err.msg);
    return -1;
  }
  struct stat st;
  bool same = fstat (prev->img->file->fd, &st) == 0 && is_source_file (j, &st);
  qbak_image_close (prev);
  if (same) {
    set_usage_error ("%s: backing file '%s' is the source (or a file of its "
                     "chain); a backup chains to an earlier backup, never to "
                     "the disk it backs up", o->target, o->backing);
    return -1;
  }
  *format = fmt;
  return 0;
}

/* The partial of an interrupted job, for --resume: a regular file made by
 * qbak (its own mark, never a link or any qcow2), for this source's bitmap
 * (the mark names a companion that must exist), for the same job. */
static int
target_reopen (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  struct stat st;
  if (lstat (j->part_path, &st) == 0 && is_source_file (j, &st)) {
    set_usage_error ("%s: cannot resume: %s is the source (or a file of its "
                     "chain)", o->target, j->part_path);
    return -1;
  }
  j->tgt.qcow2 = qcow2_writer_reopen (j->part_path);
  if (!j->tgt.qcow2) {
    qbak_internal_error_prefix ("%s: cannot resume", o->target);
    return -1;
  }
  j->tgt.fd = dup (qcow2_writer_fd (j->tgt.qcow2));
  if (j->tgt.fd < 0) {
    set_io_error (errno, "%s: dup", j->part_path);
    return -1;
  }
  char want_name[128];
  bool found = false;
  if (qcow2_writer_get_partial_id (j->tgt.qcow2, j->job_id)) {
    companion_name (o->bitmap, j->job_id, want_name, sizeof want_name);
    for (size_t i = 0; i < j->n_companions; i++)
      found |= strcmp (j->companions[i].name, want_name) == 0;
  }
  if (!found) {
    set_invalid ("%s: cannot resume: %s is not the partial target of an "
                 "interrupted job of bitmap '%s' on %s; remove it and run "
                 "without --resume", o->target, j->part_path, o->bitmap,
                 o->source);
    return -1;
  }
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

static int
target_open (struct copy_job *j)
{
  const struct qbak_copy_opts *o = j->o;
  const char *backing_format = NULL;
  struct stat st;

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
  if (o->resume)
    return target_reopen (j);
  if (check_no_stale_part (j) < 0)
    return -1;
  if (o->backing && check_backing (j, &backing_format) < 0)
    return -1;
  j->tgt.has_backing = o->backing != NULL;

  struct qbak_file *f = outfile_create (j->part_path, o->target,
                                        &j->tgt.anonymous);
  if (!f)
    return -1;
  j->tgt.named_by_us = !j->tgt.anonymous;
  j->tgt.fd = dup (f->fd);
  if (j->tgt.fd < 0) {
    set_io_error (errno, "%s: dup", j->part_path);
    qbak_file_close (f);
    return -1;
  }
  if (o->format == QBAK_TARGET_RAW) {
    j->tgt.raw = raw_writer_create_file (f, j->img->size);
    return j->tgt.raw ? 0 : -1;
  }
  struct qcow2_writer_opts wo = {
    .size = j->img->size,
    .cluster_size = j->cs,
    .backing_name = o->backing,
    .backing_format = backing_format,
  };
  j->tgt.qcow2 = qcow2_writer_create_file (f, &wo);
  return j->tgt.qcow2 ? 0 : -1;
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

/* Forget the target file: an anonymous one disappears with its last
 * descriptor; a named one is removed only if this job created it. */
static void
target_drop (struct copy_job *j)
{
  target_close (j);
  if (j->tgt.fd >= 0 && j->tgt.named_by_us) {
    struct qbak_saved_error err;
    qbak_error_save (&err);
    outfile_unlink_own (j->tgt.fd, j->part_path);
    qbak_error_put_back (&err, "error");
  }
  j->tgt.named_by_us = false;
  if (j->tgt.fd >= 0)
    close (j->tgt.fd);
  j->tgt.fd = -1;
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
  if (j->tgt.qcow2)
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
job_prepare (const struct qbak_copy_opts *o, struct qbak_copy_result *res)
{
  struct copy_job *j = calloc (1, sizeof *j);
  if (!j) {
    set_nomem ();
    return NULL;
  }
  j->o = o;
  j->res = res;
  j->tgt.fd = -1;
  j->spare_fd = -1;
  j->t0 = now ();
  if (getrandom (j->job_id, sizeof j->job_id, 0) != sizeof j->job_id) {
    set_io_error (errno, "%s: cannot make a job id", o->target);
    goto fail;
  }
  memset (res, 0, sizeof *res);
  res->outcome = "not-started";
  if (check_args (o, &j->mode) < 0 || open_source (j) < 0 ||
      check_chain_args (o) < 0)
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
        error_get_status () != STATUS_IO)
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
      if (error_get_status () == STATUS_INVALID &&
          strstr (error_get_message (), "internal"))
        return -1;
      if (!*first_error)
        *first_error = strdup (error_get_message ());
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
        qbak_internal_error (STATUS_CANCELLED, 0, "%s: backup "
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
    qbak_internal_error (STATUS_IO, 0, "%s: %" PRIu64 " clusters could "
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
  /* A complete target is no partial: a resumed one loses its mark. */
  if (j->tgt.qcow2)
    qcow2_writer_set_partial_id (j->tgt.qcow2, NULL);
  if (target_finish (j) < 0)
    return -1;
  target_close (j);
  return 0;
}

/* Rewrite the job's bitmap to DATA and, in the same commit, drop its
 * companions and (if ADD_COMPANION) record the sync set as the companion
 * of this job's partial target. */
static int
set_bitmap (struct copy_job *j, const struct dirty_bitmap *data,
            bool drop_companions, bool add_companion, const char *state)
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
    companion_name (j->o->bitmap, j->job_id, name, sizeof name);
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
  /* A new target gets its name now (never replacing one made meanwhile);
   * a named partial (a resumed one) gets its final name, then loses the
   * partial one. */
  if (outfile_link (j->tgt.fd, t) < 0) {
    qbak_internal_error_prefix ("%s: cannot put the backup in place", t);
    return -1;
  }
  if (!j->tgt.anonymous && outfile_unlink_own (j->tgt.fd, j->part_path) < 0)
    return -1;
  j->tgt.named_by_us = false;
  /* Its own message (the folder, the errno), not a stale errno here. */
  if (outfile_sync_folder (t) < 0)
    return -1;
  j->res->seconds = now () - j->t0;
  j->res->outcome = "ok";
  if (!j->bitmap)
    return 0;
  if (j->mode == QBAK_BITMAP_MODE_NEVER) {
    j->res->bitmap_state = "unchanged";
    j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
    return 0;
  }
  /* on-success and always: the bitmap becomes the successor, and what
   * interrupted jobs had to copy is in this backup now. */
  if (set_bitmap (j, j->successor, true, false, "cleared") < 0) {
    j->res->bitmap_state = "unchanged";
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
  qcow2_writer_set_partial_id (j->tgt.qcow2, j->job_id);
  if (target_finish (j) == 0) {
    target_close (j);
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
  char *err = strdup (error_get_message ());
  int e = error_get_errno ();
  const char *what = "";
  char *space = NULL;

  j->res->outcome = status == STATUS_CANCELLED ? "cancelled" : "failed";
  j->res->clusters_left = j->copy_set ? dirty_bitmap_count (j->copy_set) : 0;
  j->res->seconds = now () - j->t0;
  if (e == ENOSPC || e == EDQUOT)
    space = space_hint (j);

  /* Only a partial that --resume can continue is kept: bitmap-mode
   * always, a qcow2 target.  Anything else is dropped (never a file this
   * job did not create). */
  bool always = j->bitmap && j->mode == QBAK_BITMAP_MODE_ALWAYS &&
                j->copy_set;
  bool kept = always && j->tgt.qcow2 && keep_partial (j);
  if (!kept) {
    if (j->o->resume)
      target_close (j);     /* the partial is still its old valid self */
    else
      target_drop (j);
  }
  spare_release (j);

  if (always && kept) {
    /* always: the bitmap becomes what was not copied (plus new writes),
     * so --resume copies only the rest into TARGET.part; the companion
     * keeps what this job had to copy for any other target.  A resumed
     * job keeps its companion, which still describes the partial. */
    struct dirty_bitmap *left = dirty_bitmap_copy (j->successor);
    bool fresh = !j->o->resume;
    if (left && dirty_bitmap_merge (left, j->copy_set) == 0 &&
        set_bitmap (j, left, fresh, fresh, "not-copied") == 0)
      what = "; the bitmap now holds the clusters not copied: run the same "
             "command with --resume to finish";
    else {
      /* The partial has no companion: it must not be resumed. */
      if (fresh)
        target_drop (j);
      j->res->bitmap_state = "unchanged";
      j->res->bitmap_dirty_bytes = dirty_bitmap_dirty_bytes (j->sync_set);
      what = "; the bitmap is unchanged: run the same command again";
    }
    dirty_bitmap_free (left);
  }
  else if (j->o->bitmap) {
    j->res->bitmap_state = "unchanged";
    j->res->bitmap_dirty_bytes =
      j->sync_set ? dirty_bitmap_dirty_bytes (j->sync_set)
      : j->bitmap && j->bitmap->bm ? dirty_bitmap_dirty_bytes (j->bitmap->bm) : 0;
    what = j->o->resume
           ? "; the bitmap and the partial target are unchanged: run the "
             "same command with --resume again"
           : "; the bitmap is unchanged: run the same command again";
  }
  char *msg = NULL;
  if (asprintf (&msg, "%s%s%s", err ? err : "backup failed",
                space ? space : "", what) < 0)
    msg = NULL;
  qbak_internal_error_restore (status, e, msg ? msg : err);
  free (msg);
  free (space);
  free (err);
}

void
job_discard (struct copy_job *j)
{
  if (!j)
    return;
  if (j->o->resume)
    target_close (j);
  else
    target_drop (j);
  job_free (j);
}

void
job_free (struct copy_job *j)
{
  if (!j)
    return;
  target_close (j);
  if (j->tgt.fd >= 0)
    close (j->tgt.fd);
  spare_release (j);
  free (j->part_path);
  free (j->companions);
  free (j->buf);
  dirty_bitmap_free (j->sync_set);
  dirty_bitmap_free (j->copy_set);
  dirty_bitmap_free (j->successor);
  qbak_image_close (j->src);
  free (j);
}
