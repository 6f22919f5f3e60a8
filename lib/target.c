/* The backup target's file and the dispatch to its format's writer (see
 * target.h). */
#include <errno.h>
#include <unistd.h>

#include "common/error.h"
#include "common/outfile.h"
#include "common/storage.h"
#include "lib/target.h"

void
target_init (struct target *t, enum qbak_target_format format,
             const char *name, const char *part_path)
{
  *t = (struct target) {
    .ops = format == QBAK_TARGET_RAW ? &target_raw_ops : &target_qcow2_ops,
    .name = name,
    .part_path = part_path,
    .fd = -1,
  };
}

int
target_create (struct target *t, const struct target_shape *shape)
{
  struct qbak_file *f;
  if (t->in_place) {
    /* Checkpoints need a name to survive a crash under. */
    f = qbak_file_create (t->part_path);
    t->anonymous = false;
  }
  else
    f = outfile_create (t->part_path, t->name, &t->anonymous);
  if (!f)
    return -1;
  t->named_by_us = !t->anonymous;
  t->has_backing = shape->backing_name != NULL;
  t->fd = dup (f->fd);
  if (t->fd < 0) {
    set_io_error (errno, "%s: dup", t->part_path);
    qbak_file_close (f);
    return -1;
  }
  t->w = t->ops->create (f, shape);
  return t->w ? 0 : -1;
}

int
target_create_object (struct target *t, struct storage *st,
                      struct qbak_file *file, const struct target_shape *shape)
{
  t->anonymous = t->named_by_us = false;
  t->has_backing = shape->backing_name != NULL;
  t->object_st = st;
  t->object = file;
  t->w = t->ops->create (file, shape);
  if (!t->w)
    t->object = NULL;   /* closed by the writer: its upload is dropped */
  return t->w ? 0 : -1;
}

int
target_reopen (struct target *t)
{
  t->w = t->ops->resumable ? t->ops->reopen (t->part_path) : NULL;
  if (!t->w) {
    if (!t->ops->resumable)
      set_usage_error ("%s: this target format keeps no partial target",
                       t->part_path);
    qbak_internal_error_prefix ("%s: cannot resume", t->name);
    return -1;
  }
  t->reopened = true;
  t->fd = dup (t->ops->fd (t->w));
  if (t->fd < 0) {
    set_io_error (errno, "%s: dup", t->part_path);
    return -1;
  }
  struct target_shape shape;
  target_get_shape (t, &shape);
  t->has_backing = shape.backing_name != NULL;
  return 0;
}

void
target_get_shape (const struct target *t, struct target_shape *shape)
{
  t->ops->get_shape (t->w, shape);
}

bool
target_get_partial_id (const struct target *t, uint8_t *id)
{
  return t->ops->get_partial_id && t->ops->get_partial_id (t->w, id);
}

void
target_set_partial_id (struct target *t, const uint8_t *id)
{
  if (t->w && t->ops->set_partial_id)
    t->ops->set_partial_id (t->w, id);
}

int
target_write (struct target *t, uint64_t off, const void *buf, size_t len)
{
  return t->ops->write (t->w, off, buf, len);
}

/* Zero clusters matter only where they must shadow a backing file, or
 * replace what an earlier pass wrote (resume), or where the target must
 * tell what was copied: a new file reads as zeroes already. */
int
target_zero (struct target *t, uint64_t off, uint64_t len)
{
  if (!t->has_backing && !t->reopened && !t->explicit_zeroes)
    return 0;
  return t->ops->zero (t->w, off, len);
}

int
target_finish (struct target *t)
{
  if (t->w) {
    if (t->ops->finish (t->w) < 0)
      return -1;
    /* An object exists only once committed, after the writer made it
     * whole. */
    if (t->object && !t->object_committed) {
      if (storage_commit_object (t->object_st, t->object) < 0)
        return -1;
      t->object_committed = true;
    }
    return 0;
  }
  set_io_error (0, "%s: no target to finish", t->name);
  return -1;
}

int
target_checkpoint (struct target *t)
{
  if (t->w && t->ops->checkpoint)
    return t->ops->checkpoint (t->w);
  set_usage_error ("%s: this target cannot be checkpointed", t->name);
  return -1;
}

void
target_close (struct target *t)
{
  if (t->w)
    t->ops->close (t->w);
  t->w = NULL;
  t->object = NULL;
}

void
target_drop (struct target *t)
{
  if (t->w && t->object && !t->object_committed) {
    /* Nothing of an object that was never committed may appear. */
    struct qbak_saved_error err;
    qbak_error_save (&err);
    storage_abort_object (t->object_st, t->object);
    qbak_error_put_back (&err, "error");
  }
  target_close (t);
  if (t->fd >= 0 && t->named_by_us) {
    struct qbak_saved_error err;
    qbak_error_save (&err);
    outfile_unlink_own (t->fd, t->part_path);
    qbak_error_put_back (&err, "error");
  }
  t->named_by_us = false;
  if (t->fd >= 0)
    close (t->fd);
  t->fd = -1;
}
