/* A qcow2 backup target: the only resumable one, as it can carry the
 * mark of the interrupted job it belongs to. */
#include "formats/qcow2-writer.h"
#include "lib/target.h"

static void *
t_create (struct qbak_file *file, const struct target_shape *shape)
{
  struct qcow2_writer_opts wo = {
    .size = shape->size,
    .cluster_size = shape->cluster_size,
    .backing_name = shape->backing_name,
    .backing_format = shape->backing_format,
  };
  return qcow2_writer_create_file (file, &wo);
}

static void *
t_reopen (const char *path)
{
  return qcow2_writer_reopen (path);
}

static int
t_fd (const void *w)
{
  return qcow2_writer_fd (w);
}

static void
t_get_shape (const void *w, struct target_shape *shape)
{
  struct qcow2_writer_opts wo;
  qcow2_writer_get_opts (w, &wo);
  *shape = (struct target_shape) {
    .size = wo.size,
    .cluster_size = wo.cluster_size,
    .backing_name = wo.backing_name,
    .backing_format = wo.backing_format,
  };
}

static int
t_write (void *w, uint64_t off, const void *buf, size_t len)
{
  return qcow2_writer_write (w, off, buf, len);
}

static int
t_zero (void *w, uint64_t off, uint64_t len)
{
  return qcow2_writer_zero (w, off, len);
}

static void
t_set_partial_id (void *w, const uint8_t *id)
{
  qcow2_writer_set_partial_id (w, id);
}

static bool
t_get_partial_id (const void *w, uint8_t *id)
{
  return qcow2_writer_get_partial_id (w, id);
}

static int
t_finish (void *w)
{
  return qcow2_writer_finish (w);
}

static int
t_checkpoint (void *w)
{
  return qcow2_writer_checkpoint (w);
}

static void
t_close (void *w)
{
  qcow2_writer_free (w);
}

const struct target_ops target_qcow2_ops = {
  .resumable = true,
  .create = t_create,
  .reopen = t_reopen,
  .fd = t_fd,
  .get_shape = t_get_shape,
  .write = t_write,
  .zero = t_zero,
  .set_partial_id = t_set_partial_id,
  .get_partial_id = t_get_partial_id,
  .finish = t_finish,
  .checkpoint = t_checkpoint,
  .close = t_close,
};
