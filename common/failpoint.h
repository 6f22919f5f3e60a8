/* Fail points: deterministic fault injection in qbak's own file I/O.
 *
 * Compiled only into test builds (the CMake option QBAK_FAILPOINTS, which
 * `make check` and CI turn on); elsewhere every point is a constant 0 and
 * the installed library and program hold no trace of them.  In a test
 * build they are inert unless QBAK_FAILPOINT is set.  The
 * developer documentation is tests/FAILPOINTS.md.  Format:
 *
 *   QBAK_FAILPOINT=CLASS:N:EFFECT[,CLASS:N:EFFECT...]
 *     CLASS  read | write | flush | any | lock
 *     N      the N-th call of that class in this process (1-based)
 *     EFFECT eio | enospc | abort | stop
 *
 * "abort" kills the process at that call (a crash: nothing after it
 * happens, not even the I/O itself); "stop" raises SIGSTOP before the call
 * so a test can inspect locks and then SIGCONT.  QBAK_FAILPOINT_LOG=FILE
 * appends one line per triggered point, and QBAK_FAILPOINT_COUNT=FILE
 * writes the number of calls per class at exit, so tests can enumerate
 * every N.
 */
#ifndef QBAK_COMMON_FAILPOINT_H
#define QBAK_COMMON_FAILPOINT_H

#include <stdint.h>
#include <time.h>

/* FP_LOCK is the point between taking an image's lock bytes and checking
 * them for other holders (lib/lock.c), where a race of two writers would
 * be decided; it is not an I/O call, so "any" does not count it. */
enum failpoint_class { FP_READ, FP_WRITE, FP_FLUSH, FP_LOCK };

/* Returns 0 to go on, or an errno (EIO, ENOSPC) the caller must fail
 * with.  May not return (abort). */
/* How many seconds of copying a checkpointing job lets pass between
 * checkpoints: DFLT, or in a test build QBAK_CHECKPOINT_SECONDS if set
 * (0: after every request), so tests can crash a run between checkpoints
 * without copying for seconds. */
/* The time a repository backup takes for its point: now, or in a test
 * build QBAK_TEST_NOW (seconds since the epoch) if set, so tests can make
 * points at times of their choosing (retention over two years). */
#ifdef QBAK_FAILPOINTS
int qbak_failpoint (enum failpoint_class cls, const char *path);
double qbak_failpoint_checkpoint_seconds (double dflt);
int64_t qbak_failpoint_now (void);
#else
/* Macros, so that no symbol of them is left in the library. */
#define qbak_failpoint(cls, path) ((void) (cls), (void) (path), 0)
#define qbak_failpoint_checkpoint_seconds(dflt) (dflt)
#define qbak_failpoint_now() ((int64_t) time (NULL))
#endif

#endif
