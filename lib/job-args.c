/* The rules a backup job's options follow, QEMU's where QEMU has them
 * (blockdev.c do_backup_common), checked before anything is written: the
 * options alone, then what needs the source, then the backing file. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/file-names.h"
#include "lib/job-internal.h"

/* A usage error with a hint: the message says what is wrong, the hint
 * lets a program say how its user fixes it. */
#define usage_hint(hint, ...) \
  (set_usage_error (__VA_ARGS__), error_set_hint (hint))

int
job_check_args (const struct qbak_copy_opts *o, enum qbak_bitmap_mode *mode)
{
  const char *t = o->target;
  *mode = o->bitmap_mode;
  if (!o->source || !o->target) {
    set_usage_error ("copy: a job needs a source and a target");
    return -1;
  }
  if (o->sync == QBAK_SYNC_INCREMENTAL) {
    if (!o->bitmap) {
      usage_hint (HINT_NEED_BITMAP, "%s: sync 'incremental' needs a bitmap",
                  t);
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
  if (o->sync == QBAK_SYNC_CHECKSUMS) {
    if (o->bitmap) {
      set_usage_error ("%s: sync 'checksums' compares with the backing file "
                       "and takes no bitmap", t);
      return -1;
    }
    if (!o->backing) {
      set_usage_error ("%s: sync 'checksums' copies what differs from the "
                       "previous backup, named as the backing file", t);
      return -1;
    }
  }
  if (o->sync == QBAK_SYNC_BITMAP && !o->bitmap) {
    usage_hint (HINT_NEED_BITMAP, "%s: sync 'bitmap' needs a bitmap", t);
    return -1;
  }
  if (o->bitmap && *mode == QBAK_BITMAP_MODE_UNSET) {
    usage_hint (HINT_NEED_BITMAP_MODE, "%s: a bitmap needs a bitmap mode "
                "(on-success, always or never)", t);
    return -1;
  }
  if (!o->bitmap && *mode != QBAK_BITMAP_MODE_UNSET) {
    usage_hint (HINT_NEED_BITMAP, "%s: a bitmap mode needs a bitmap", t);
    return -1;
  }
  if (*mode == QBAK_BITMAP_MODE_NEVER && o->sync != QBAK_SYNC_BITMAP) {
    set_usage_error ("%s: bitmap-mode 'never' is only allowed with sync "
                     "'bitmap'", t);
    return -1;
  }
  if (o->backing && o->no_backing) {
    usage_hint (HINT_BACKING_CONFLICT, "%s: a backing file cannot be both "
                "given and refused", t);
    return -1;
  }
  if (o->backing_format && !o->backing) {
    usage_hint (HINT_BACKING_FORMAT_ALONE, "%s: a backing format needs a "
                "backing file", t);
    return -1;
  }
  if (o->backing_format && strcmp (o->backing_format, "qcow2") != 0 &&
      strcmp (o->backing_format, "raw") != 0 &&
      strcmp (o->backing_format, "qcow") != 0) {
    set_usage_error ("%s: invalid backing format '%s' (qcow2, raw or qcow)",
                     t, o->backing_format);
    return -1;
  }
  if (o->sync > QBAK_SYNC_CHECKSUMS) {
    set_usage_error ("%s: unknown sync mode %d", t, (int) o->sync);
    return -1;
  }
  if (o->format == QBAK_TARGET_RAW &&
      (o->sync != QBAK_SYNC_FULL || o->backing)) {
    set_usage_error ("%s: a raw target holds a whole disk: only sync 'full' "
                     "without a backing file", t);
    return -1;
  }
  if (o->resume && (*mode != QBAK_BITMAP_MODE_ALWAYS ||
                    o->format != QBAK_TARGET_QCOW2)) {
    set_usage_error ("%s: resume continues a bitmap-mode 'always' job "
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
int
job_check_chain_args (const struct qbak_copy_opts *o)
{
  if ((o->sync == QBAK_SYNC_INCREMENTAL || o->sync == QBAK_SYNC_BITMAP) &&
      o->format == QBAK_TARGET_QCOW2 && !o->backing && !o->no_backing) {
    usage_hint (HINT_NEED_BACKING, "%s: an incremental holds only the "
                "changed clusters, and without a backing file the others "
                "read as zeroes at restore", o->target);
    return -1;
  }
  return 0;
}

/* Inodes, not names: a name can be spelled many ways. */
bool
job_is_source_file (const struct copy_job *j, const struct stat *st)
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

/* The previous backup named as the backing file: opened in the format
 * given or as qcow2, never probed, since a raw file's first bytes are the
 * guest's; never the source or a file of its chain. */
int
job_check_backing (struct copy_job *j, const char **format)
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
    qbak_internal_error_prefix ("%s: backing file '%s'", o->target,
                                o->backing);
    /* Without a format given, the likeliest cause is a raw backing file
     * read as qcow2. */
    if (!o->backing_format)
      error_set_hint (HINT_BACKING_FORMAT_GUESSED);
    return -1;
  }
  struct stat st;
  bool same = fstat (prev->img->file->fd, &st) == 0 &&
              job_is_source_file (j, &st);
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
