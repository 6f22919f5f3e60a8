/* The storage interface's entry points: key rules, then the backend. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/s3-config.h"
#include "common/storage.h"

struct storage *
storage_open (const char *location, bool create, bool *created)
{
  if (s3_is_location (location))
    return storage_open_s3 (location, create, created);
  return storage_open_folder (location, create, created);
}

/* A key component: [A-Za-z0-9._-], not starting with '.', so that no
 * component is "." or "..", and names that start with a dot stay free for
 * an implementation's own temporary files. */
static bool
valid_component (const char *s, size_t n)
{
  if (n == 0 || n > 255 || s[0] == '.')
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

bool
storage_key_valid (const char *key)
{
  size_t len = strlen (key);
  if (len == 0 || len > 1024)
    return false;
  for (const char *p = key;;) {
    const char *slash = strchr (p, '/');
    size_t n = slash ? (size_t) (slash - p) : strlen (p);
    if (!valid_component (p, n))
      return false;
    if (!slash)
      return true;
    p = slash + 1;
  }
}

int
storage_check_key (const char *location, const char *key)
{
  if (storage_key_valid (key))
    return 0;
  set_usage_error ("%s: '%s' is not a valid object name in a repository",
                   location, key);
  return -1;
}

/* A prefix is a key, a key followed by '/', or empty (everything). */
static int
check_prefix (const char *location, const char *prefix)
{
  size_t len = strlen (prefix);
  if (len == 0)
    return 0;
  char *copy = strdup (prefix);
  if (!copy) {
    set_nomem ();
    return -1;
  }
  if (copy[len - 1] == '/')
    copy[len - 1] = '\0';
  int r = storage_check_key (location, copy);
  free (copy);
  return r;
}

int
storage_put_once (struct storage *st, const char *key, const void *buf,
                  size_t len)
{
  if (storage_check_key (st->location, key) < 0)
    return -1;
  return st->ops->put_once (st, key, buf, len);
}

int
storage_replace (struct storage *st, const char *key, const void *buf,
                 size_t len)
{
  if (storage_check_key (st->location, key) < 0)
    return -1;
  return st->ops->replace (st, key, buf, len);
}

int
storage_get (struct storage *st, const char *key, void **buf, size_t *len)
{
  if (storage_check_key (st->location, key) < 0)
    return -1;
  return st->ops->get (st, key, buf, len);
}

int
storage_size (struct storage *st, const char *key, uint64_t *size)
{
  if (storage_check_key (st->location, key) < 0)
    return -1;
  return st->ops->size (st, key, size);
}

int
storage_list (struct storage *st, const char *prefix, storage_list_cb cb,
              void *opaque)
{
  if (check_prefix (st->location, prefix) < 0)
    return -1;
  return st->ops->list (st, prefix, cb, opaque);
}

int
storage_delete (struct storage *st, const char *key)
{
  if (storage_check_key (st->location, key) < 0)
    return -1;
  return st->ops->remove (st, key);
}

int
storage_rename (struct storage *st, const char *from, const char *to)
{
  if (storage_check_key (st->location, from) < 0 ||
      storage_check_key (st->location, to) < 0)
    return -1;
  return st->ops->rename (st, from, to);
}

struct storage_lock *
storage_lock (struct storage *st, const char *name, const char *holder)
{
  if (storage_check_key (st->location, name) < 0)
    return NULL;
  return st->ops->lock (st, name, holder);
}

void
storage_unlock (struct storage_lock *lk)
{
  if (lk)
    lk->st->ops->unlock (lk);
}

int
storage_prepare (struct storage *st, const char *key)
{
  if (storage_check_key (st->location, key) < 0)
    return -1;
  return st->ops->prepare (st, key);
}

char *
storage_local_path (struct storage *st, const char *key)
{
  if (storage_check_key (st->location, key) < 0)
    return NULL;
  return st->ops->local_path (st, key);
}

/* ---- Big objects ------------------------------------------------------ */

static const struct storage_object_ops *
object_ops (struct storage *st, const char *what)
{
  if (st->ops->objects)
    return st->ops->objects;
  set_usage_error ("%s: %s is not supported on %s storage", st->location,
                   what, st->ops->name);
  return NULL;
}

struct qbak_file *
storage_open_object (struct storage *st, const char *key)
{
  const struct storage_object_ops *o = object_ops (st, "reading a file");
  if (!o || storage_check_key (st->location, key) < 0)
    return NULL;
  return o->open (st, key);
}

struct qbak_file *
storage_create_object (struct storage *st, const char *key)
{
  const struct storage_object_ops *o = object_ops (st, "writing a file");
  if (!o || storage_check_key (st->location, key) < 0)
    return NULL;
  return o->create (st, key);
}

int
storage_commit_object (struct storage *st, struct qbak_file *f)
{
  const struct storage_object_ops *o = object_ops (st, "writing a file");
  return o ? o->commit (st, f) : -1;
}

int
storage_abort_object (struct storage *st, struct qbak_file *f)
{
  const struct storage_object_ops *o = object_ops (st, "writing a file");
  return o ? o->abort (st, f) : -1;
}

const char *
storage_object_key (struct storage *st, const struct qbak_file *f)
{
  size_t n = strlen (st->location);
  if (strncmp (f->path, st->location, n) == 0 && f->path[n] == '/' &&
      storage_key_valid (f->path + n + 1))
    return f->path + n + 1;
  set_usage_error ("%s: not an object of the repository %s", f->path,
                   st->location);
  return NULL;
}

struct qbak_file *
storage_open_backing (struct storage *st, const struct qbak_file *from,
                      const char *name)
{
  const char *key = storage_object_key (st, from);
  if (!key)
    return NULL;
  if (strchr (name, '/') || !valid_component (name, strlen (name))) {
    set_invalid ("%s: not a file in the same folder of the repository "
                 "(a repository's files name only their neighbours)", name);
    return NULL;
  }
  const char *slash = strrchr (key, '/');
  int dirlen = slash ? (int) (slash - key + 1) : 0;
  char *bkey;
  if (asprintf (&bkey, "%.*s%s", dirlen, key, name) < 0) {
    set_nomem ();
    return NULL;
  }
  struct qbak_file *f = storage_open_object (st, bkey);
  free (bkey);
  return f;
}

int
storage_lock_held (struct storage_lock *lk)
{
  return lk->st->ops->lock_held ? lk->st->ops->lock_held (lk) : 0;
}

int
storage_drop_unfinished (struct storage *st)
{
  const struct storage_object_ops *o = st->ops->objects;
  return o && o->drop_unfinished ? o->drop_unfinished (st) : 0;
}

bool
storage_can_continue_in_place (struct storage *st)
{
  return st->ops->objects && st->ops->objects->in_place;
}

void
storage_close (struct storage *st)
{
  if (st)
    st->ops->close (st);
}
