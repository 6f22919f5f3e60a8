/* Fail points: see failpoint.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/failpoint.h"

#define MAX_POINTS 8

struct point {
  int cls;          /* enum failpoint_class, or -1 for any */
  unsigned long n;
  int effect;       /* errno, or -1 abort, -2 stop */
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct point points[MAX_POINTS];
static int npoints;
static unsigned long counts[4], count_any;
static const char *count_file;

static const char *class_names[] = { "read", "write", "flush", "lock" };

static void
write_counts (void)
{
  FILE *fp = fopen (count_file, "w");
  if (!fp)
    return;
  fprintf (fp, "read %lu\nwrite %lu\nflush %lu\nany %lu\n",
           counts[FP_READ], counts[FP_WRITE], counts[FP_FLUSH], count_any);
  fclose (fp);
}

static void
parse (void)
{
  const char *spec = getenv ("QBAK_FAILPOINT");
  count_file = getenv ("QBAK_FAILPOINT_COUNT");
  if (count_file && *count_file)
    atexit (write_counts);
  if (!spec || !*spec)
    return;

  char *copy = strdup (spec), *save = NULL;
  for (char *tok = strtok_r (copy, ",", &save);
       tok && npoints < MAX_POINTS; tok = strtok_r (NULL, ",", &save)) {
    char cls[16], eff[16];
    unsigned long n;
    if (sscanf (tok, "%15[a-z]:%lu:%15[a-z]", cls, &n, eff) != 3)
      continue;
    struct point p = { .n = n };
    if (strcmp (cls, "any") == 0) p.cls = -1;
    else if (strcmp (cls, "read") == 0) p.cls = FP_READ;
    else if (strcmp (cls, "write") == 0) p.cls = FP_WRITE;
    else if (strcmp (cls, "flush") == 0) p.cls = FP_FLUSH;
    else if (strcmp (cls, "lock") == 0) p.cls = FP_LOCK;
    else continue;
    if (strcmp (eff, "eio") == 0) p.effect = EIO;
    else if (strcmp (eff, "enospc") == 0) p.effect = ENOSPC;
    else if (strcmp (eff, "abort") == 0) p.effect = -1;
    else if (strcmp (eff, "stop") == 0) p.effect = -2;
    else continue;
    points[npoints++] = p;
  }
  free (copy);
}

static void
log_hit (const char *cls, unsigned long n, const char *path)
{
  const char *log = getenv ("QBAK_FAILPOINT_LOG");
  if (!log || !*log)
    return;
  int fd = open (log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return;
  dprintf (fd, "%s:%lu %s\n", cls, n, path ? path : "");
  close (fd);
}

int
qbak_failpoint (enum failpoint_class cls, const char *path)
{
  int ret = 0;
  pthread_once (&once, parse);
  if (npoints == 0 && !count_file)
    return 0;

  pthread_mutex_lock (&lock);
  /* Lock points are no I/O: "any" enumerates I/O calls only. */
  unsigned long n = ++counts[cls], nany = cls == FP_LOCK ? 0 : ++count_any;
  for (int i = 0; i < npoints; i++) {
    const struct point *p = &points[i];
    if ((p->cls == -1 && nany && p->n == nany) ||
        (p->cls == (int) cls && p->n == n)) {
      log_hit (p->cls == -1 ? "any" : class_names[cls],
               p->cls == -1 ? nany : n, path);
      if (p->effect == -1) {
        /* A crash: no buffered output, no atexit handlers. */
        signal (SIGABRT, SIG_DFL);
        abort ();
      }
      if (p->effect == -2) {
        pthread_mutex_unlock (&lock);
        raise (SIGSTOP);
        return 0;
      }
      ret = p->effect;
    }
  }
  pthread_mutex_unlock (&lock);
  return ret;
}

double
qbak_failpoint_checkpoint_seconds (double dflt)
{
  const char *v = getenv ("QBAK_CHECKPOINT_SECONDS");
  char *end;
  double d = v && *v ? strtod (v, &end) : -1;
  return v && *v && *end == '\0' && d >= 0 ? d : dflt;
}

int64_t
qbak_failpoint_now (void)
{
  const char *v = getenv ("QBAK_TEST_NOW");
  char *end;
  long long t = v && *v ? strtoll (v, &end, 10) : -1;
  return v && *v && *end == '\0' && t >= 0 ? (int64_t) t
                                             : (int64_t) time (NULL);
}
