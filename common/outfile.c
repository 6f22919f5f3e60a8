/* Files qbak creates: see outfile.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/outfile.h"

char *
outfile_folder (const char *path)
{
  const char *slash = strrchr (path, '/');
  char *dir;
  if (!slash)
    dir = strdup (".");
  else if (slash == path)
    dir = strdup ("/");
  else
    dir = strndup (path, (size_t) (slash - path));
  if (!dir)
    set_nomem ();
  return dir;
}

/* Errors that say the path given cannot hold a new file: the argument is
 * wrong, not the job. */
static bool
is_path_error (int e)
{
  return e == ENOENT || e == ENOTDIR || e == EACCES || e == EPERM ||
         e == EROFS || e == EEXIST || e == ELOOP || e == EISDIR ||
         e == ENAMETOOLONG;
}

static void
set_create_error (int e, const char *path, const char *dir)
{
  if (e == EEXIST) {
    set_exists_error ("%s: exists; qbak never overwrites a file (choose a "
                      "new name or remove it)", path);
    return;
  }
  qbak_internal_error_errno_only (is_path_error (e) ? STATUS_USAGE
                                                    : STATUS_IO, e,
                                  "%s: cannot create it in the folder "
                                  "'%s': %s", path, dir, strerror (e));
}

struct qbak_file *
outfile_create (const char *path, const char *label, bool *anonymous)
{
  char *dir = outfile_folder (path);
  if (!dir)
    return NULL;

  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
  *anonymous = fd >= 0;
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR ||
                 errno == EINVAL)) {
    /* No anonymous files here: the name itself, never an existing one,
     * never through a symlink. */
    fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               0644);
  }
  else if (fd >= 0) {
    /* The name must be free now too: a job that would end on EEXIST is
     * refused before it copies anything. */
    struct stat st;
    if (lstat (path, &st) == 0) {
      close (fd);
      fd = -1;
      errno = EEXIST;
    }
  }
  if (fd < 0) {
    set_create_error (errno, errno == EEXIST ? path : label, dir);
    free (dir);
    return NULL;
  }
  free (dir);
  return qbak_file_from_fd (fd, path, true);
}

int
outfile_link (int fd, const char *name)
{
  /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for
   * everyone where /proc is mounted. */
  if (linkat (fd, "", AT_FDCWD, name, AT_EMPTY_PATH) == 0)
    return 0;
  if (errno == ENOENT || errno == EPERM || errno == EINVAL) {
    char proc[64];
    snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (linkat (AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0)
      return 0;
  }
  int e = errno;
  char *dir = outfile_folder (name);
  set_create_error (e, name, dir ? dir : ".");
  free (dir);
  return -1;
}

int
outfile_unlink_own (int fd, const char *name)
{
  struct stat mine, there;
  if (fstat (fd, &mine) < 0) {
    set_io_error (errno, "%s: stat", name);
    return -1;
  }
  if (lstat (name, &there) < 0)
    return errno == ENOENT ? 0 : (set_io_error (errno, "%s: stat", name), -1);
  if (there.st_dev != mine.st_dev || there.st_ino != mine.st_ino)
    return 0;
  if (unlink (name) < 0 && errno != ENOENT) {
    set_io_error (errno, "%s: cannot remove", name);
    return -1;
  }
  return 0;
}

/* Folders whose flush failed, for the whole process: each flush opens
 * its folder afresh, and a new descriptor does not see an earlier
 * write-back error, so a later fsync could succeed and prove nothing
 * (fileio.h).  A process meets few such folders; past the table's size,
 * the oldest is forgotten. */
#define N_FAILED_FOLDERS 16
static struct failed_folder {
  dev_t dev;
  ino_t ino;
  int err;
} failed_folders[N_FAILED_FOLDERS];
static unsigned n_failed_folders;
static pthread_mutex_t failed_folders_lock = PTHREAD_MUTEX_INITIALIZER;

/* The errno that poisoned the folder of ST, or 0. */
static int
folder_failed (const struct stat *st)
{
  int e = 0;
  pthread_mutex_lock (&failed_folders_lock);
  for (unsigned i = 0; i < N_FAILED_FOLDERS && i < n_failed_folders; i++)
    if (failed_folders[i].dev == st->st_dev &&
        failed_folders[i].ino == st->st_ino)
      e = failed_folders[i].err;
  pthread_mutex_unlock (&failed_folders_lock);
  return e;
}

static void
folder_poison (const struct stat *st, int e)
{
  pthread_mutex_lock (&failed_folders_lock);
  failed_folders[n_failed_folders++ % N_FAILED_FOLDERS] =
    (struct failed_folder) { st->st_dev, st->st_ino, e };
  pthread_mutex_unlock (&failed_folders_lock);
}

int
outfile_sync_folder (const char *path)
{
  char *dir = outfile_folder (path);
  if (!dir)
    return -1;
  struct stat st;
  int e = 0;
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fstat (fd, &st) < 0)
    e = errno;
  else if (!(e = folder_failed (&st)) && fsync (fd) < 0) {
    e = errno;
    folder_poison (&st, e);
  }
  if (e)
    set_io_error (e, "%s: cannot flush the folder '%s'", path, dir);
  if (fd >= 0)
    close (fd);
  free (dir);
  return e ? -1 : 0;
}

int
outfile_reserve (const char *path, uint64_t bytes)
{
  char *dir = outfile_folder (path);
  if (!dir)
    return -1;
  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  free (dir);
  if (fd < 0)
    return -1;
  if (bytes > INT64_MAX || posix_fallocate (fd, 0, (off_t) bytes) != 0) {
    close (fd);
    return -1;
  }
  return fd;
}
