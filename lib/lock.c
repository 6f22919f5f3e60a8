/* Image locking that interoperates with QEMU (DESIGN §4).
 *
 * QEMU's file-posix driver takes OFD locks on single bytes: 100+N (shared
 * read lock) for each permission N it holds, 200+N for each permission it
 * does not share.  N: 0 consistent-read, 1 write, 2 write-unchanged,
 * 3 resize.  A conflict is: we want N and someone locks 200+N, or we do
 * not share N and someone locks 100+N.  We test with F_OFD_GETLK for a
 * write lock on those bytes, then take our read locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "lib/internal.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

static const char *perm_names[] = {
  "consistent read", "write", "write unchanged", "resize",
};

/* Who holds a lock on byte OFF of FD's file, from /proc/locks ("" if it
 * cannot be told). */
static void
describe_holder (int fd, int off, char *buf, size_t bufsize)
{
  struct stat st;
  buf[0] = '\0';
  if (fstat (fd, &st) < 0)
    return;
  FILE *fp = fopen ("/proc/locks", "re");
  if (!fp)
    return;
  char line[256];
  while (fgets (line, sizeof line, fp)) {
    char kind[16], adv[16], rw[16], devino[64], start[32], end[32];
    long pid;
    /* "1: OFDLCK ADVISORY  READ 1234 08:01:5678 100 100" */
    char *p = strchr (line, ':');
    if (!p || sscanf (p + 1, "%15s %15s %15s %ld %63s %31s %31s", kind, adv,
                      rw, &pid, devino, start, end) != 7)
      continue;
    unsigned maj, min;
    unsigned long long ino;
    if (sscanf (devino, "%x:%x:%llu", &maj, &min, &ino) != 3 ||
        ino != (unsigned long long) st.st_ino)
      continue;
    long long s0 = atoll (start), e0 = strcmp (end, "EOF") ? atoll (end)
                                                            : INT64_MAX;
    if (off < s0 || off > e0 || pid <= 0 || pid == getpid ())
      continue;
    char path[64], comm[64] = "?";
    snprintf (path, sizeof path, "/proc/%ld/comm", pid);
    FILE *c = fopen (path, "re");
    if (c) {
      if (fgets (comm, sizeof comm, c))
        comm[strcspn (comm, "\n")] = '\0';
      fclose (c);
    }
    snprintf (buf, bufsize, " (held by %s, pid %ld)", comm, pid);
    break;
  }
  fclose (fp);
}

static int
conflict (int fd, int off)
{
  struct flock fl = {
    .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1,
  };
  if (fcntl (fd, F_OFD_GETLK, &fl) < 0)
    return -1;
  return fl.l_type != F_UNLCK;
}

int
qbak_internal_lock (struct qbak_file *file, unsigned perm, unsigned shared)
{
  int fd = file->fd;
  char holder[128];

  for (int n = 0; n < 4; n++) {
    int off = -1;
    const char *why = NULL;
    if ((perm >> n & 1) && conflict (fd, LOCK_SHARED_BASE + n) == 1) {
      off = LOCK_SHARED_BASE + n;
      why = "does not share";
    }
    else if (!(shared >> n & 1) && conflict (fd, LOCK_PERM_BASE + n) == 1) {
      off = LOCK_PERM_BASE + n;
      why = "holds";
    }
    if (off >= 0) {
      describe_holder (fd, off, holder, sizeof holder);
      set_busy (0, "%s: image is locked: another process%s %s the \"%s\" "
                "permission; stop it (or use -U/--force-share for read-only "
                "commands)", file->path, holder, why, perm_names[n]);
      return -1;
    }
  }
  for (int n = 0; n < 4; n++) {
    int offs[2] = { (perm >> n & 1) ? LOCK_PERM_BASE + n : -1,
                    !(shared >> n & 1) ? LOCK_SHARED_BASE + n : -1 };
    for (int k = 0; k < 2; k++) {
      if (offs[k] < 0)
        continue;
      struct flock fl = {
        .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = offs[k],
        .l_len = 1,
      };
      if (fcntl (fd, F_OFD_SETLK, &fl) < 0) {
        int e = errno;
        describe_holder (fd, offs[k], holder, sizeof holder);
        set_busy (e, "%s: cannot lock the image%s", file->path, holder);
        return -1;
      }
    }
  }
  return 0;
}
