/* Image locking that interoperates with QEMU.
 *
 * QEMU's file-posix driver takes OFD locks on single bytes: 100+N (shared
 * read lock) for each permission N it holds, 200+N for each permission it
 * does not share.  N: 0 consistent-read, 1 write, 2 write-unchanged,
 * 3 resize.  A conflict is: we want N and someone else locks 200+N, or we
 * do not share N and someone else locks 100+N.
 *
 * The order matters.  Locks are taken first and conflicts are looked for
 * afterwards, as QEMU does: testing first and locking afterwards would let
 * two processes both pass the test before either locks, and both write.
 * With lock-then-test, of two racing processes at least one sees the
 * other's bytes, so they never both go ahead (both may back off, as two
 * racing QEMUs may).  The test is F_OFD_GETLK of a write lock, which does
 * not see the locks of our own open file description.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/failpoint.h"
#include "lib/internal.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

static const char *perm_names[] = {
  "consistent read", "write", "write unchanged", "resize",
};

/* Name process PID in BUF as " (held by COMM, pid PID)". */
static void
name_process (long pid, char *buf, size_t bufsize)
{
  char path[64], comm[64] = "?";
  snprintf (path, sizeof path, "/proc/%ld/comm", pid);
  FILE *c = fopen (path, "re");
  if (c) {
    if (fgets (comm, sizeof comm, c))
      comm[strcspn (comm, "\n")] = '\0';
    fclose (c);
  }
  snprintf (buf, bufsize, " (held by %s, pid %ld)", comm, pid);
}

/* Does the "lock:" line LINE (the format of /proc/locks) cover byte OFF? */
static bool
lock_line_covers (const char *line, int off)
{
  char start[32], end[32];
  const char *p = strchr (line, ':');
  if (!p)
    return false;
  /* "lock:\t1: OFDLCK ADVISORY  READ -1 fe:00:5678 100 100" */
  if (strncmp (line, "lock:", 5) == 0 && !(p = strchr (p + 1, ':')))
    return false;
  /* Only the range matters: kind, class, type, pid and file are skipped. */
  if (sscanf (p + 1, "%*s %*s %*s %*s %*s %31s %31s", start, end) != 2)
    return false;
  long long s0 = atoll (start), e0 = strcmp (end, "EOF") ? atoll (end)
                                                          : INT64_MAX;
  return off >= s0 && off <= e0;
}

/* Find another process with a file description of FD's file that locks
 * byte OFF.  OFD locks belong to no process, so /proc/locks shows no pid
 * for them; each process's /proc/PID/fdinfo lists the locks of its open
 * files instead.  Processes we may not inspect are skipped. */
static void
describe_holder (int fd, int off, char *buf, size_t bufsize)
{
  struct stat st;
  buf[0] = '\0';
  if (fstat (fd, &st) < 0)
    return;
  DIR *procs = opendir ("/proc");
  if (!procs)
    return;
  struct dirent *pe;
  while (!buf[0] && (pe = readdir (procs))) {
    char *endp;
    long pid = strtol (pe->d_name, &endp, 10);
    if (*endp || pid <= 0 || pid == getpid ())
      continue;
    char path[320];
    snprintf (path, sizeof path, "/proc/%ld/fd", pid);
    DIR *fds = opendir (path);
    if (!fds)
      continue;
    struct dirent *fe;
    while (!buf[0] && (fe = readdir (fds))) {
      struct stat fst;
      if (fe->d_name[0] == '.' ||
          fstatat (dirfd (fds), fe->d_name, &fst, 0) < 0 ||
          fst.st_dev != st.st_dev || fst.st_ino != st.st_ino)
        continue;
      snprintf (path, sizeof path, "/proc/%ld/fdinfo/%s", pid, fe->d_name);
      FILE *fp = fopen (path, "re");
      if (!fp)
        continue;
      char line[256];
      while (fgets (line, sizeof line, fp))
        if (strncmp (line, "lock:", 5) == 0 && lock_line_covers (line, off)) {
          name_process (pid, buf, bufsize);
          break;
        }
      fclose (fp);
    }
    closedir (fds);
  }
  closedir (procs);
}

/* Does another open file description hold a lock on byte OFF of FD?
 * 1 yes, 0 no, -1 with errno set. */
static int
held_by_other (int fd, int off)
{
  struct flock fl = {
    .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
  };
  if (fcntl (fd, F_OFD_GETLK, &fl) < 0)
    return -1;
  return fl.l_type != F_UNLCK;
}

static int
set_byte_lock (int fd, int off, short type)
{
  struct flock fl = {
    .l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
  };
  return fcntl (fd, F_OFD_SETLK, &fl);
}

/* Drop every lock byte this file description may have taken. */
static void
release_all (int fd)
{
  struct flock fl = {
    .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = LOCK_PERM_BASE,
    .l_len = LOCK_SHARED_BASE + 4 - LOCK_PERM_BASE,
  };
  (void) fcntl (fd, F_OFD_SETLK, &fl);
}

/* Take our read locks: 100+N for each permission N held, 200+N for each
 * permission N not shared (QEMU's raw_apply_lock_bytes). */
static int
apply_lock_bytes (struct qbak_file *file, unsigned perm, unsigned shared)
{
  char holder[128];
  for (int n = 0; n < 4; n++) {
    int offs[2] = { (perm >> n & 1) ? LOCK_PERM_BASE + n : -1,
                    !(shared >> n & 1) ? LOCK_SHARED_BASE + n : -1 };
    for (int k = 0; k < 2; k++) {
      if (offs[k] < 0 || set_byte_lock (file->fd, offs[k], F_RDLCK) == 0)
        continue;
      int e = errno;
      if (e == EAGAIN || e == EACCES) {
        /* Only a write lock blocks a read lock: someone locked the byte
         * exclusively, which means the image is in use. */
        describe_holder (file->fd, offs[k], holder, sizeof holder);
        /* The errno only says the byte is taken, which the message says
         * in words: recorded, not appended. */
        qbak_internal_error_errno_only (STATUS_BUSY, e, "%s: image is "
                                        "locked%s", file->path, holder);
        error_set_hint (HINT_IMAGE_LOCKED);
      }
      else
        set_io_error (e, "%s: cannot take the image lock on byte %d",
                      file->path, offs[k]);
      return -1;
    }
  }
  return 0;
}

/* With our locks in place, is another process in the way?  (QEMU's
 * raw_check_lock_bytes.) */
static int
check_lock_bytes (struct qbak_file *file, unsigned perm, unsigned shared)
{
  char holder[128];
  for (int n = 0; n < 4; n++) {
    int off = -1, r;
    const char *why = NULL;
    if ((perm >> n & 1) &&
        (r = held_by_other (file->fd, LOCK_SHARED_BASE + n)) != 0) {
      off = LOCK_SHARED_BASE + n;
      why = "does not share";
    }
    else if (!(shared >> n & 1) &&
             (r = held_by_other (file->fd, LOCK_PERM_BASE + n)) != 0) {
      off = LOCK_PERM_BASE + n;
      why = "holds";
    }
    if (off < 0)
      continue;
    if (r < 0) {
      set_io_error (errno, "%s: cannot test the image lock on byte %d",
                    file->path, off);
      return -1;
    }
    describe_holder (file->fd, off, holder, sizeof holder);
    set_busy (0, "%s: image is locked: another process%s %s the \"%s\" "
              "permission", file->path, holder, why, perm_names[n]);
    error_set_hint (HINT_IMAGE_PERMISSION_HELD);
    return -1;
  }
  return 0;
}

int
qbak_internal_lock (struct qbak_file *file, unsigned perm, unsigned shared)
{
  /* Take first, then look: of two racing writers at least one sees the
   * other.  The fail point between the two lets tests stop a writer in
   * that window (lock-race.bats); only its stop and abort act here. */
  int r = apply_lock_bytes (file, perm, shared);
  if (r == 0) {
    (void) qbak_failpoint (FP_LOCK, file->path);
    r = check_lock_bytes (file, perm, shared);
  }
  if (r < 0) {
    release_all (file->fd);
    return -1;
  }
  return 0;
}
