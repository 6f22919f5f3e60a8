/* A repository in a local folder (see storage.h).
 *
 * Every object is reached from the repository's folder descriptor one
 * component at a time with O_NOFOLLOW, so a symbolic link planted
 * anywhere inside the repository is refused instead of followed, and no
 * name can lead outside it.  New objects are anonymous files (O_TMPFILE)
 * until they are complete and durable; they are then linked at their key,
 * which fails if the key exists, and the folder is flushed.  Where the
 * file system has no anonymous files, a hidden temporary name (".tmp-...",
 * never a valid key) is used and linked the same way.  A replaced object
 * (mutable state) is written under such a hidden name, flushed, renamed
 * over its key, and the folder flushed: the rename is the commit point.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/storage.h"

#define TMP_PREFIX ".tmp-"
#define MAX_GET (64u << 20)

struct folder {
  struct storage st;
  int dirfd;
};

struct folder_lock {
  int fd;
  int parent;
  char *leaf;
};

static struct folder *
to_folder (struct storage *st)
{
  return (struct folder *) st;
}

/* "LOCATION/KEY" for messages, in BUF (keys are at most 1024 bytes; a
 * longer location is cut, which only shortens a message). */
#define KEY_PATH_SIZE 6144
static const char *
key_path (struct storage *st, const char *key, char *buf)
{
  snprintf (buf, KEY_PATH_SIZE, "%s/%s", st->location, key);
  return buf;
}

/* An errno from opening a component, as the error it means here. */
static void
set_open_error (struct storage *st, const char *key, int e)
{
  char pbuf[KEY_PATH_SIZE];
  const char *p = key_path (st, key, pbuf);
  if (e == ELOOP || e == ENOTDIR)
    qbak_internal_error (STATUS_INVALID, 0,
                         "%s: a symbolic link or a non-folder is in the way; "
                         "a repository holds only folders and files qbak "
                         "made", p);
  else if (e == ENOENT)
    qbak_internal_error_errno_only (STATUS_INVALID, ENOENT,
                                    "%s: no such object", p);
  else
    set_io_error (e, "%s", p);
}

/* Open the folder that holds KEY's last component, walking from the
 * repository's folder without following links; with CREATE, missing
 * folders are made (and their parents flushed so they last).  *LEAF points
 * into KEY.  Returns the folder's descriptor, or -1 with the error set
 * (errno ENOENT recorded when a folder is missing and not CREATE). */
static int
open_parent (struct folder *f, const char *key, bool create,
             const char **leaf)
{
  int dfd = dup (f->dirfd);
  if (dfd < 0) {
    set_io_error (errno, "%s", f->st.location);
    return -1;
  }
  const char *p = key;
  for (;;) {
    const char *slash = strchr (p, '/');
    if (!slash) {
      *leaf = p;
      return dfd;
    }
    char comp[256];
    size_t n = (size_t) (slash - p);
    memcpy (comp, p, n);
    comp[n] = '\0';
    int nfd = openat (dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                      O_CLOEXEC);
    if (nfd < 0 && errno == ENOENT && create) {
      if (mkdirat (dfd, comp, 0700) < 0 && errno != EEXIST) {
        set_io_error (errno, "%s: creating folder for '%s'",
                      f->st.location, key);
        close (dfd);
        return -1;
      }
      if (fsync (dfd) < 0) {
        set_io_error (errno, "%s: flushing folder for '%s'",
                      f->st.location, key);
        close (dfd);
        return -1;
      }
      nfd = openat (dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                    O_CLOEXEC);
    }
    if (nfd < 0) {
      int e = errno;
      set_open_error (&f->st, key, e);
      close (dfd);
      errno = e;
      return -1;
    }
    close (dfd);
    dfd = nfd;
    p = slash + 1;
  }
}

/* Open LEAF in PARENT read-only: a regular file, never a link. */
static int
open_regular (struct storage *st, const char *key, int parent,
              const char *leaf, int flags)
{
  int fd = openat (parent, leaf, flags | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK |
                   O_CLOEXEC);
  if (fd < 0) {
    set_open_error (st, key, errno);
    return -1;
  }
  struct stat sb;
  if (fstat (fd, &sb) < 0 || !S_ISREG (sb.st_mode)) {
    char pbuf[KEY_PATH_SIZE];
    const char *p = key_path (st, key, pbuf);
    set_invalid ("%s: not a regular file; a repository holds only folders "
                 "and files qbak made", p);
    close (fd);
    return -1;
  }
  /* Back to blocking I/O: O_NONBLOCK was only so that opening a FIFO
   * planted at the name could not hang. */
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

static int
write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    len -= (size_t) r;
  }
  return 0;
}

/* A hidden temporary name in PARENT (never a valid key, so never listed
 * and never an object), opened new. */
static int
new_named_file (int parent, const char *leaf, char **tmp_name)
{
  for (int tries = 0; tries < 100; tries++) {
    char *name;
    if (asprintf (&name, TMP_PREFIX "%s-%ld-%d-%d", leaf, (long) getpid (),
                  rand (), tries) < 0) {
      errno = ENOMEM;
      return -1;
    }
    int fd = openat (parent, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                     O_CLOEXEC, 0600);
    if (fd >= 0) {
      *tmp_name = name;
      return fd;
    }
    free (name);
    if (errno != EEXIST)
      return -1;
  }
  errno = EEXIST;
  return -1;
}

/* A new file in PARENT that has no name yet (O_TMPFILE), or failing that
 * a hidden temporary name returned in *TMP_NAME. */
static int
new_file (int parent, const char *leaf, char **tmp_name)
{
  *tmp_name = NULL;
  int fd = openat (parent, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0)
    return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
    return -1;
  return new_named_file (parent, leaf, tmp_name);
}

/* Give FD (anonymous, or named TMP_NAME) the name LEAF in PARENT, never
 * replacing an existing name, and flush PARENT. */
static int
link_new (int fd, int parent, const char *tmp_name, const char *leaf)
{
  int r;
  if (tmp_name) {
    r = linkat (parent, tmp_name, parent, leaf, 0);
    int e = errno;
    unlinkat (parent, tmp_name, 0);
    errno = e;
  }
  else {
    char proc[64];
    snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
    r = linkat (AT_FDCWD, proc, parent, leaf, AT_SYMLINK_FOLLOW);
  }
  if (r < 0)
    return -1;
  if (fsync (parent) < 0)
    return -1;
  return 0;
}

/* A new file in PARENT for LEAF (P in messages) holding BUF, flushed:
 * what put-once links and replace renames into place.  NAMED: a
 * temporary name in *TMP even where anonymous files exist (a rename needs
 * one).  The descriptor, or -1 with the error set (a temporary name in
 * *TMP is the caller's to remove either way). */
static int
durable_file (int parent, const char *leaf, const char *p, bool named,
              const void *buf, size_t len, char **tmp)
{
  int fd = named ? new_named_file (parent, leaf, tmp)
                 : new_file (parent, leaf, tmp);
  const char *what = "creating";
  if (fd >= 0 && write_all (fd, buf, len) < 0)
    what = "writing";
  else if (fd >= 0 && fsync (fd) < 0)
    what = "flushing";
  else if (fd >= 0)
    return fd;
  set_io_error (errno, "%s: %s", p, what);
  if (fd >= 0)
    close (fd);
  return -1;
}

static int
folder_put_once (struct storage *st, const char *key, const void *buf,
                 size_t len)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, true, &leaf);
  if (parent < 0)
    return -1;
  char *tmp = NULL;
  char pbuf[KEY_PATH_SIZE];
  const char *p = key_path (st, key, pbuf);
  int r = -1;
  /* Durable before it has a name: a crash leaves the whole object or
   * none. */
  int fd = durable_file (parent, leaf, p, false, buf, len, &tmp);
  if (fd < 0)
    goto out;
  if (link_new (fd, parent, tmp, leaf) < 0) {
    if (errno == EEXIST)
      qbak_internal_error_errno_only (STATUS_USAGE, EEXIST,
                                      "%s: exists already and is never "
                                      "replaced", p);
    else
      set_io_error (errno, "%s: naming", p);
    tmp = NULL;       /* link_new removed it */
    goto out;
  }
  tmp = NULL;
  r = 0;
 out:
  if (tmp) {
    unlinkat (parent, tmp, 0);
    free (tmp);
  }
  if (fd >= 0)
    close (fd);
  close (parent);
  return r;
}

static int
folder_replace (struct storage *st, const char *key, const void *buf,
                size_t len)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, true, &leaf);
  if (parent < 0)
    return -1;
  char *tmp = NULL;
  char pbuf[KEY_PATH_SIZE];
  const char *p = key_path (st, key, pbuf);
  int r = -1;
  /* Durable before it takes the name: a crash leaves the old object or
   * the new one, whole. */
  int fd = durable_file (parent, leaf, p, true, buf, len, &tmp);
  if (fd < 0)
    goto out;
  /* A folder or anything else planted at the name is not replaced: only
   * a regular file (or nothing) is. */
  struct stat sb;
  if (fstatat (parent, leaf, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
      !S_ISREG (sb.st_mode)) {
    set_invalid ("%s: not a regular file; a repository holds only folders "
                 "and files qbak made", p);
    goto out;
  }
  if (renameat (parent, tmp, parent, leaf) < 0) {
    set_io_error (errno, "%s: naming", p);
    goto out;
  }
  free (tmp);
  tmp = NULL;
  if (fsync (parent) < 0) {
    set_io_error (errno, "%s: flushing its folder", p);
    goto out;
  }
  r = 0;
 out:
  if (tmp) {
    unlinkat (parent, tmp, 0);
    free (tmp);
  }
  if (fd >= 0)
    close (fd);
  close (parent);
  return r;
}

static int
folder_get (struct storage *st, const char *key, void **bufp, size_t *lenp)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, false, &leaf);
  if (parent < 0)
    return -1;
  int fd = open_regular (st, key, parent, leaf, O_RDONLY);
  close (parent);
  if (fd < 0)
    return -1;
  char pbuf[KEY_PATH_SIZE];
  const char *p = key_path (st, key, pbuf);
  struct stat sb;
  char *buf = NULL;
  int r = -1;
  if (fstat (fd, &sb) < 0) {
    set_io_error (errno, "%s", p);
    goto out;
  }
  if ((uint64_t) sb.st_size > MAX_GET) {
    set_invalid ("%s: %" PRIu64 " bytes, too large for a record", p,
                 (uint64_t) sb.st_size);
    goto out;
  }
  size_t size = (size_t) sb.st_size, got = 0;
  buf = malloc (size + 1);
  if (!buf) {
    set_nomem ();
    goto out;
  }
  while (got < size) {
    ssize_t n = pread (fd, buf + got, size - got, (off_t) got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      set_io_error (errno, "%s: reading", p);
      goto out;
    }
    if (n == 0)
      break;
    got += (size_t) n;
  }
  if (got != size) {
    set_invalid ("%s: changed size while it was read", p);
    goto out;
  }
  buf[size] = '\0';
  *bufp = buf;
  *lenp = size;
  buf = NULL;
  r = 0;
 out:
  free (buf);
  close (fd);
  return r;
}

static int
folder_size (struct storage *st, const char *key, uint64_t *size)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, false, &leaf);
  if (parent < 0)
    return error_get_errno () == ENOENT ? 0 : -1;
  struct stat sb;
  int r = fstatat (parent, leaf, &sb, AT_SYMLINK_NOFOLLOW);
  int e = errno;
  close (parent);
  if (r < 0) {
    if (e == ENOENT)
      return 0;
    set_open_error (st, key, e);
    return -1;
  }
  if (!S_ISREG (sb.st_mode)) {
    char pbuf[KEY_PATH_SIZE];
    const char *p = key_path (st, key, pbuf);
    set_invalid ("%s: not a regular file; a repository holds only folders "
                 "and files qbak made", p);
    return -1;
  }
  *size = (uint64_t) sb.st_size;
  return 1;
}

/* ---- listing ---------------------------------------------------------- */

struct key_list {
  struct storage_entry *v;
  size_t n, cap;
};

static int
add_entry (struct key_list *l, char *key, uint64_t size)
{
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct storage_entry *v = realloc (l->v, cap * sizeof *v);
    if (!v) {
      free (key);
      set_nomem ();
      return -1;
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (struct storage_entry) { .key = key, .size = size };
  return 0;
}

/* Collect every object under the folder DFD, whose keys start with BASE
 * ("" or "a/b/"). */
static int
walk (struct storage *st, int dfd, const char *base, struct key_list *l,
      int depth)
{
  if (depth > 16) {
    set_invalid ("%s/%s: folders nested too deep for a repository",
                 st->location, base);
    return -1;
  }
  DIR *d = fdopendir (dfd);
  if (!d) {
    set_io_error (errno, "%s/%s", st->location, base);
    close (dfd);
    return -1;
  }
  int r = 0;
  struct dirent *de;
  errno = 0;
  while ((de = readdir (d)) != NULL) {
    const char *name = de->d_name;
    if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
      continue;
    /* An interrupted write's temporary file: not an object. */
    if (strncmp (name, TMP_PREFIX, strlen (TMP_PREFIX)) == 0)
      continue;
    char *key;
    if (asprintf (&key, "%s%s", base, name) < 0) {
      set_nomem ();
      r = -1;
      break;
    }
    if (storage_check_key (st->location, key) < 0) {
      set_invalid ("%s/%s: a name qbak never makes; a repository holds "
                   "only folders and files qbak made", st->location, key);
      free (key);
      r = -1;
      break;
    }
    struct stat sb;
    if (fstatat (dirfd (d), name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
      set_io_error (errno, "%s/%s", st->location, key);
      free (key);
      r = -1;
      break;
    }
    if (S_ISDIR (sb.st_mode)) {
      int sub = openat (dirfd (d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                        O_CLOEXEC);
      char *subbase;
      if (sub < 0) {
        set_open_error (st, key, errno);
        r = -1;
      }
      else if (asprintf (&subbase, "%s/", key) < 0) {
        close (sub);
        set_nomem ();
        r = -1;
      }
      else {
        r = walk (st, sub, subbase, l, depth + 1);
        free (subbase);
      }
      free (key);
      if (r < 0)
        break;
    }
    else if (S_ISREG (sb.st_mode)) {
      if (add_entry (l, key, (uint64_t) sb.st_size) < 0) {
        r = -1;
        break;
      }
    }
    else {
      set_invalid ("%s/%s: not a regular file or folder; a repository "
                   "holds only folders and files qbak made", st->location,
                   key);
      free (key);
      r = -1;
      break;
    }
    errno = 0;
  }
  if (r == 0 && errno != 0) {
    set_io_error (errno, "%s/%s", st->location, base);
    r = -1;
  }
  closedir (d);
  return r;
}

static int
compare_keys (const void *a, const void *b)
{
  return strcmp (((const struct storage_entry *) a)->key,
                 ((const struct storage_entry *) b)->key);
}

static int
folder_list (struct storage *st, const char *prefix, storage_list_cb cb,
             void *opaque)
{
  struct folder *f = to_folder (st);
  /* Walk from the folder part of PREFIX ("a/b/" of "a/b/c"). */
  const char *slash = strrchr (prefix, '/');
  size_t blen = slash ? (size_t) (slash - prefix) + 1 : 0;
  char *base = strndup (prefix, blen);
  if (!base) {
    set_nomem ();
    return -1;
  }
  int dfd;
  if (blen == 0)
    dfd = dup (f->dirfd);
  else {
    /* open_parent wants a key: "a/b/x" opens "a/b". */
    char *probe;
    const char *leaf;
    if (asprintf (&probe, "%sx", base) < 0) {
      free (base);
      set_nomem ();
      return -1;
    }
    dfd = open_parent (f, probe, false, &leaf);
    free (probe);
    if (dfd < 0 && error_get_errno () == ENOENT) {
      free (base);
      return 0;         /* no such folder: nothing under the prefix */
    }
  }
  if (dfd < 0) {
    if (blen == 0)
      set_io_error (errno, "%s", st->location);
    free (base);
    return -1;
  }
  struct key_list l = { 0 };
  int r = walk (st, dfd, base, &l, 0);
  free (base);
  if (r == 0 && l.n) {
    qsort (l.v, l.n, sizeof *l.v, compare_keys);
    for (size_t i = 0; i < l.n && r == 0; i++)
      if (strncmp (l.v[i].key, prefix, strlen (prefix)) == 0)
        r = cb (&l.v[i], opaque);
  }
  for (size_t i = 0; i < l.n; i++)
    free ((char *) l.v[i].key);
  free (l.v);
  return r;
}

static int
folder_remove (struct storage *st, const char *key)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, false, &leaf);
  if (parent < 0)
    return error_get_errno () == ENOENT ? 0 : -1;
  int r = 0;
  if (unlinkat (parent, leaf, 0) < 0) {
    if (errno != ENOENT) {
      set_open_error (st, key, errno);
      r = -1;
    }
  }
  else if (fsync (parent) < 0) {
    char pbuf[KEY_PATH_SIZE];
    const char *p = key_path (st, key, pbuf);
    set_io_error (errno, "%s: flushing its folder", p);
    r = -1;
  }
  close (parent);
  return r;
}

static int
folder_rename (struct storage *st, const char *from, const char *to)
{
  const char *fleaf, *tleaf;
  const char *fs = strrchr (from, '/'), *ts = strrchr (to, '/');
  size_t fl = fs ? (size_t) (fs - from) : 0, tl = ts ? (size_t) (ts - to) : 0;
  if (fl != tl || strncmp (from, to, fl) != 0) {
    set_usage_error ("%s: %s and %s are in different folders", st->location,
                     from, to);
    return -1;
  }
  int parent = open_parent (to_folder (st), from, false, &fleaf);
  if (parent < 0)
    return -1;
  tleaf = ts ? ts + 1 : to;
  int r = 0;
  char pbuf[KEY_PATH_SIZE];
  if (renameat (parent, fleaf, parent, tleaf) < 0) {
    set_open_error (st, from, errno);
    r = -1;
  }
  else if (fsync (parent) < 0) {
    set_io_error (errno, "%s: flushing its folder", key_path (st, to, pbuf));
    r = -1;
  }
  close (parent);
  return r;
}

/* ---- the lock --------------------------------------------------------- */

/* The lock is a file whose open file description holds a write lock
 * (F_OFD_SETLK) for as long as the holder runs: the kernel drops it when
 * the holder exits, however it exits, so a lock left by a process that is
 * gone is taken over without guessing from pids or times.  The file's
 * text names the holder for the message the others print.  After taking
 * the lock, the holder checks that the name still leads to the file it
 * locked (a releasing holder may have removed it meanwhile), and starts
 * again if not. */
static int
ofd_trylock (int fd)
{
  struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
  return fcntl (fd, F_OFD_SETLK, &fl);
}

static bool
same_file (int fd, int parent, const char *leaf)
{
  struct stat a, b;
  return fstat (fd, &a) == 0 &&
    fstatat (parent, leaf, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
    a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static void
set_busy_holder (struct storage *st, int fd)
{
  char text[512] = "";
  ssize_t n = pread (fd, text, sizeof text - 1, 0);
  if (n > 0) {
    text[n] = '\0';
    text[strcspn (text, "\n")] = '\0';
  }
  set_busy (0, "%s: in use by another qbak (%s)", st->location,
            n > 0 && text[0] ? text : "holder unknown");
}

static struct storage_lock *
folder_lock (struct storage *st, const char *name, const char *holder)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), name, true, &leaf);
  if (parent < 0)
    return NULL;
  for (int attempt = 0; attempt < 10; attempt++) {
    int fd = openat (parent, leaf, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                     O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
      fd = open_regular (st, name, parent, leaf, O_RDWR);
      if (fd < 0) {
        if (error_get_errno () == ENOENT)
          continue;             /* released meanwhile: try again */
        close (parent);
        return NULL;
      }
    }
    else if (fd < 0) {
      set_open_error (st, name, errno);
      close (parent);
      return NULL;
    }
    if (ofd_trylock (fd) < 0) {
      if (errno == EAGAIN || errno == EACCES)
        set_busy_holder (st, fd);
      else
        set_io_error (errno, "%s: locking", st->location);
      close (fd);
      close (parent);
      return NULL;
    }
    if (!same_file (fd, parent, leaf)) {
      close (fd);
      continue;
    }
    /* Ours: record the holder.  Not flushed: the kernel's lock is what
     * excludes the others, and it does not outlive the holder, so after a
     * crash the file (lost, empty or stale) is simply taken over; the
     * text only names a live holder to the others, who read it from the
     * page cache. */
    size_t len = strlen (holder);
    if (ftruncate (fd, 0) < 0 || pwrite (fd, holder, len, 0) != (ssize_t) len
        || pwrite (fd, "\n", 1, (off_t) len) != 1) {
      set_io_error (errno, "%s: writing the lock", st->location);
      close (fd);
      close (parent);
      return NULL;
    }
    struct storage_lock *lk = calloc (1, sizeof *lk);
    struct folder_lock *fl = calloc (1, sizeof *fl);
    char *lleaf = strdup (leaf);
    if (!lk || !fl || !lleaf) {
      free (lk);
      free (fl);
      free (lleaf);
      set_nomem ();
      close (fd);
      close (parent);
      return NULL;
    }
    *fl = (struct folder_lock) { .fd = fd, .parent = parent, .leaf = lleaf };
    lk->st = st;
    lk->impl = fl;
    return lk;
  }
  set_busy (0, "%s: the lock keeps changing hands", st->location);
  close (parent);
  return NULL;
}

static void
folder_unlock (struct storage_lock *lk)
{
  struct folder_lock *fl = lk->impl;
  /* Remove the name while still holding the lock, so no one takes a file
   * that is about to disappear (a waiting process checks the name after
   * locking, and starts again). */
  unlinkat (fl->parent, fl->leaf, 0);
  close (fl->fd);
  close (fl->parent);
  free (fl->leaf);
  free (fl);
  free (lk);
}

static int
folder_prepare (struct storage *st, const char *key)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, true, &leaf);
  if (parent < 0)
    return -1;
  close (parent);
  return 0;
}

static char *
folder_local_path (struct storage *st, const char *key)
{
  char *p;
  if (asprintf (&p, "%s/%s", st->location, key) < 0) {
    set_nomem ();
    return NULL;
  }
  return p;
}

/* ---- big objects (storage.h) ------------------------------------------
 *
 * A big object is a file written in place at its key, as a repository's
 * backup targets always were: made with O_EXCL and O_NOFOLLOW (never over
 * an existing name, never through a link), so that a checkpointed target
 * outlives a crash under its name and the next backup can continue it.
 * The commit makes it durable and flushes its folder; an abort removes
 * it if its key still names this very file. */

static struct qbak_file *
folder_open_object (struct storage *st, const char *key)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, false, &leaf);
  if (parent < 0)
    return NULL;
  int fd = open_regular (st, key, parent, leaf, O_RDONLY);
  close (parent);
  if (fd < 0)
    return NULL;
  char pbuf[KEY_PATH_SIZE];
  return qbak_file_from_fd (fd, key_path (st, key, pbuf), false);
}

static struct qbak_file *
folder_create_object (struct storage *st, const char *key)
{
  const char *leaf;
  int parent = open_parent (to_folder (st), key, true, &leaf);
  if (parent < 0)
    return NULL;
  char pbuf[KEY_PATH_SIZE];
  const char *p = key_path (st, key, pbuf);
  int fd = openat (parent, leaf, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                   O_CLOEXEC, 0644);
  int e = errno;
  close (parent);
  if (fd < 0) {
    if (e == EEXIST)
      qbak_internal_error_errno_only (STATUS_USAGE, EEXIST,
                                      "%s: exists already and is never "
                                      "replaced", p);
    else
      set_io_error (e, "%s: cannot create", p);
    return NULL;
  }
  return qbak_file_from_fd (fd, p, true);
}

/* The folder that holds F, an object of ST. */
static int
object_parent (struct storage *st, struct qbak_file *f, const char **leaf)
{
  const char *key = storage_object_key (st, f);
  if (!key)
    return -1;
  if (f->fd < 0) {
    set_usage_error ("%s: not a file of a folder", f->path);
    return -1;
  }
  return open_parent (to_folder (st), key, false, leaf);
}

static int
folder_commit_object (struct storage *st, struct qbak_file *f)
{
  if (qbak_file_flush (f) < 0)
    return -1;
  const char *leaf;
  int parent = object_parent (st, f, &leaf);
  if (parent < 0)
    return -1;
  int r = 0;
  if (fsync (parent) < 0) {
    set_io_error (errno, "%s: flushing its folder", f->path);
    r = -1;
  }
  close (parent);
  return r;
}

static int
folder_abort_object (struct storage *st, struct qbak_file *f)
{
  const char *leaf;
  int parent = object_parent (st, f, &leaf);
  if (parent < 0)
    return -1;
  int r = 0;
  /* Only the file this handle made: another name in its place stays. */
  if (same_file (f->fd, parent, leaf)) {
    if (unlinkat (parent, leaf, 0) < 0 || fsync (parent) < 0) {
      set_io_error (errno, "%s: removing", f->path);
      r = -1;
    }
  }
  close (parent);
  return r;
}

static const struct storage_object_ops folder_object_ops = {
  .in_place = true,
  .open = folder_open_object,
  .create = folder_create_object,
  .commit = folder_commit_object,
  .abort = folder_abort_object,
};

static void
folder_close (struct storage *st)
{
  struct folder *f = to_folder (st);
  close (f->dirfd);
  free (st->location);
  free (f);
}

static const struct storage_ops folder_ops = {
  .name = "folder",
  .put_once = folder_put_once,
  .replace = folder_replace,
  .get = folder_get,
  .size = folder_size,
  .list = folder_list,
  .remove = folder_remove,
  .rename = folder_rename,
  .lock = folder_lock,
  .unlock = folder_unlock,
  .prepare = folder_prepare,
  .local_path = folder_local_path,
  .close = folder_close,
  .objects = &folder_object_ops,
};

struct storage *
storage_open_folder (const char *path, bool create, bool *created)
{
  if (created)
    *created = false;
  int fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && create) {
    if (mkdir (path, 0700) < 0 && errno != EEXIST) {
      qbak_internal_error_errno_only (errno == ENOENT || errno == EACCES ||
                                      errno == EROFS ? STATUS_USAGE
                                      : STATUS_IO, errno,
                                      "%s: cannot create the repository "
                                      "folder: %s", path, strerror (errno));
      return NULL;
    }
    /* The new folder's name lasts only once its parent is flushed. */
    char *copy = strdup (path);
    if (!copy) {
      set_nomem ();
      return NULL;
    }
    char *slash = strrchr (copy, '/');
    const char *up = slash ? (slash == copy ? "/" : copy) : ".";
    if (slash && slash != copy)
      *slash = '\0';
    int pfd = open (up, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = pfd >= 0 ? fsync (pfd) : -1;
    int e = errno;
    if (pfd >= 0)
      close (pfd);
    free (copy);
    if (r < 0) {
      set_io_error (e, "%s: flushing the folder that holds it", path);
      return NULL;
    }
    if (created)
      *created = true;
    fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT)
      qbak_internal_error_errno_only (STATUS_USAGE, e,
                                      "%s: no such repository", path);
    else if (e == ELOOP || e == ENOTDIR)
      set_invalid ("%s: not a folder (a repository is a folder, never "
                   "reached through a symbolic link)", path);
    else
      qbak_internal_error (STATUS_IO, e, "%s", path);
    return NULL;
  }
  struct folder *f = calloc (1, sizeof *f);
  if (!f || !(f->st.location = strdup (path))) {
    free (f);
    close (fd);
    set_nomem ();
    return NULL;
  }
  /* "repo/" in messages would print "repo//points". */
  size_t len = strlen (f->st.location);
  while (len > 1 && f->st.location[len - 1] == '/')
    f->st.location[--len] = '\0';
  f->st.ops = &folder_ops;
  f->dirfd = fd;
  return &f->st;
}
