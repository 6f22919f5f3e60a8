/* lib/ internal: one function at a time run on a second thread while the
 * caller goes on.
 *
 * A backup hashes every request it copies for the manifest, and verify
 * reads and hashes every cluster of a repository: done on one thread, the
 * hash adds its time to every request.  Where a second CPU is free, the
 * copy loop has the hash done here while it writes the same buffer to the
 * target (lib/copy-loop.c), and verify has every other request read and
 * checked here (lib/verify-data.c).  Without a free CPU it costs two
 * wake-ups a request. */
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
