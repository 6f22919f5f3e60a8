/* Background write-back thread: see writeback.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/writeback.h"

/* Written pages this far behind the newest range started are waited for
 * and dropped from the page cache.  A copy that leaves its output cached
 * needs a fresh page for every page it writes, and fresh memory can cost
 * far more than the copy into it (on a VM whose host takes free guest
 * memory back, each first touch faults in the host: 3-4x the whole copy
 * time here).  Dropping what is on disk already hands the same pages back
 * to the next writes.  Far enough behind that the wait almost never
 * blocks; a page cache the size of this window is all the output keeps. */
#define DROP_BEHIND (64u << 20)

struct writeback {
  int fd;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint64_t start, end;          /* queued range; empty if start == end */
  uint64_t dropped;             /* below this, written pages were dropped
                                   (thread's own) */
  bool stopping;
  int error;                    /* first write-back I/O error, or 0 */
};

static void *
run (void *opaque)
{
  struct writeback *wb = opaque;

  pthread_mutex_lock (&wb->lock);
  for (;;) {
    while (wb->start == wb->end && !wb->stopping)
      pthread_cond_wait (&wb->cond, &wb->lock);
    if (wb->start == wb->end)
      break;
    uint64_t start = wb->start, end = wb->end;
    wb->start = wb->end = 0;
    pthread_mutex_unlock (&wb->lock);
    int r = sync_file_range (wb->fd, (off_t) start, (off_t) (end - start),
                             SYNC_FILE_RANGE_WRITE);
    int e = r < 0 ? errno : 0;
    if (end > DROP_BEHIND && end - DROP_BEHIND > wb->dropped) {
      uint64_t upto = end - DROP_BEHIND;
      /* Only pages that are clean when they are dropped go: a page
       * written again since is kept (it is dirty), and the wait reports
       * a lost write-back as the start does. */
      r = sync_file_range (wb->fd, (off_t) wb->dropped,
                           (off_t) (upto - wb->dropped),
                           SYNC_FILE_RANGE_WAIT_BEFORE |
                           SYNC_FILE_RANGE_WRITE |
                           SYNC_FILE_RANGE_WAIT_AFTER);
      if (r < 0 && !e)
        e = errno;
      if (r == 0)
        posix_fadvise (wb->fd, (off_t) wb->dropped,
                       (off_t) (upto - wb->dropped), POSIX_FADV_DONTNEED);
      wb->dropped = upto;
    }
    pthread_mutex_lock (&wb->lock);
    if (!wb->error && writeback_lost_data (e))
      wb->error = e;
  }
  pthread_mutex_unlock (&wb->lock);
  return NULL;
}

struct writeback *
writeback_start (int fd)
{
  struct writeback *wb = calloc (1, sizeof *wb);
  sigset_t all, old;
  int r;

  if (!wb)
    return NULL;
  wb->fd = fd;
  if (pthread_mutex_init (&wb->lock, NULL) != 0) {
    free (wb);
    return NULL;
  }
  if (pthread_cond_init (&wb->cond, NULL) != 0) {
    pthread_mutex_destroy (&wb->lock);
    free (wb);
    return NULL;
  }
  /* Signals (SIGINT for cancel) go to the caller's threads, never here. */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  r = pthread_create (&wb->thread, NULL, run, wb);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (r != 0) {
    pthread_cond_destroy (&wb->cond);
    pthread_mutex_destroy (&wb->lock);
    free (wb);
    return NULL;
  }
  return wb;
}

void
writeback_queue (struct writeback *wb, uint64_t offset, uint64_t len)
{
  uint64_t end = offset + len;

  pthread_mutex_lock (&wb->lock);
  if (wb->start == wb->end) {
    wb->start = offset;
    wb->end = end;
  }
  else {
    if (offset < wb->start)
      wb->start = offset;
    if (end > wb->end)
      wb->end = end;
  }
  pthread_cond_signal (&wb->cond);
  pthread_mutex_unlock (&wb->lock);
}

bool
writeback_lost_data (int err)
{
  /* Only these say written data may be lost; others (EINVAL, ENOMEM) say
   * write-back could not be started here, which the flush does anyway. */
  return err == EIO || err == ENOSPC || err == EDQUOT;
}

int
writeback_take_error (struct writeback *wb)
{
  pthread_mutex_lock (&wb->lock);
  int e = wb->error;
  wb->error = 0;
  pthread_mutex_unlock (&wb->lock);
  return e;
}

void
writeback_stop (struct writeback *wb)
{
  if (!wb)
    return;
  pthread_mutex_lock (&wb->lock);
  wb->stopping = true;
  pthread_cond_signal (&wb->cond);
  pthread_mutex_unlock (&wb->lock);
  pthread_join (wb->thread, NULL);
  pthread_cond_destroy (&wb->cond);
  pthread_mutex_destroy (&wb->lock);
  free (wb);
}
