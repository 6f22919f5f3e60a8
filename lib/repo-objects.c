/* A repository's backup files opened through its storage: see
 * repo-objects.h. */
#include "common/error.h"
#include "lib/internal.h"
#include "lib/repo-objects.h"

struct qbak_file *
repo_backing_opener (struct image *from, const char *name, void *opaque)
{
  return storage_open_backing (opaque, from->file, name);
}

struct qbak_image *
repo_image_open (struct storage *st, const char *key, unsigned flags)
{
  struct qbak_file *f = storage_open_object (st, key);
  if (!f)
    return NULL;
  return qbak_internal_open_file (f, "qcow2", flags, repo_backing_opener,
                                  st);
}
