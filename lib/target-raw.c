/* A raw backup target: a whole disk (sync full, no backing file), so it
 * is never a partial to continue. */
#include "formats/raw-writer.h"
#include "lib/target.h"

static void *
t_create (struct qbak_file *file, const struct target_shape *shape)
{
  return raw_writer_create_file (file, shape->size);
}

static int
t_fd (const void *w)
{
  return raw_writer_fd (w);
}

static int
t_write (void *w, uint64_t off, const void *buf, size_t len)
{
  return raw_writer_write (w, off, buf, len);
}

static int
t_zero (void *w, uint64_t off, uint64_t len)
{
  return raw_writer_zero (w, off, len);
}

static int
t_finish (void *w)
{
  return raw_writer_finish (w);
}

static void
t_close (void *w)
{
  raw_writer_free (w);
}

const struct target_ops target_raw_ops = {
  .resumable = false,
  .create = t_create,
  .fd = t_fd,
  .write = t_write,
  .zero = t_zero,
  .finish = t_finish,
  .close = t_close,
};
