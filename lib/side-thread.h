/* lib/ internal: one function at a time run on a second thread while the
 * caller goes on.
 *
 * verify reads and hashes every cluster of a repository: on one thread it
 * costs a read of the files plus the hash.  Where a second CPU is free,
 * verify has every other batch of requests read and checked here
 * (lib/verify-data.c), which halves that.  Without a free CPU it costs
 * two wake-ups a batch. */
#ifndef QBAK_LIB_SIDE_THREAD_H
#define QBAK_LIB_SIDE_THREAD_H

#include <stdint.h>

struct side_thread;

/* A started thread, or NULL if none could be started (the caller then
 * does the work itself; nothing is lost but the overlap). */
struct side_thread *side_thread_start (void);

/* Run FN (ARG) on the thread.  One call at a time: the previous one must
 * have been waited for.  What FN reads and writes must stay as it is
 * until side_thread_wait returns; FN must not touch the error state that
 * the caller's thread reads (common/error.h: it is per thread). */
void side_thread_run (struct side_thread *t, void (*fn) (void *), void *arg);

/* Wait until the call in hand has returned (at once if there is none). */
void side_thread_wait (struct side_thread *t);

/* Stop the thread, after the call in hand, and free T.  Accepts NULL. */
void side_thread_stop (struct side_thread *t);

#endif
