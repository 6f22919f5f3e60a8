/* Per-thread error storage: see error.h. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

/* One error per thread.  The message is malloc'ed; a thread-specific key
 * with a destructor frees it when a thread that set an error exits (a
 * _Thread_local pointer alone would leak one message per thread, and
 * group jobs run on threads). */
static _Thread_local char *last_msg;
static _Thread_local enum status last_status;
static _Thread_local int last_errno;
static _Thread_local enum hint last_hint;

static pthread_key_t msg_key;
static pthread_once_t msg_key_once = PTHREAD_ONCE_INIT;

static void
free_thread_msg (void *msg)
{
  free (msg);
}

static void
make_msg_key (void)
{
  if (pthread_key_create (&msg_key, free_thread_msg) != 0)
    abort ();
}

static void
store (char *msg, enum status status, int errnum)
{
  pthread_once (&msg_key_once, make_msg_key);
  free (last_msg);
  last_msg = msg;
  last_status = status;
  last_errno = errnum;
  last_hint = HINT_NONE;
  /* The key holds the same pointer only so that thread exit frees it. */
  pthread_setspecific (msg_key, msg);
}

void
qbak_internal_error (enum status status, int errnum, const char *fmt, ...)
{
  int saved = errno;
  char *body = NULL, *msg = NULL;
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&body, fmt, ap) < 0)
    body = NULL;
  va_end (ap);
  if (body && errnum != 0) {
    if (asprintf (&msg, "%s: %s", body, strerror (errnum)) < 0)
      msg = NULL;
    free (body);
  }
  else
    msg = body;
  store (msg, status, errnum);
  errno = saved;
}

void
qbak_internal_error_errno_only (enum status status, int errnum,
                                const char *fmt, ...)
{
  int saved = errno;
  char *msg = NULL;
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&msg, fmt, ap) < 0)
    msg = NULL;
  va_end (ap);
  store (msg, status, errnum);
  errno = saved;
}

void
qbak_internal_error_restore (enum status status, int errnum,
                             const char *msg)
{
  int saved = errno;
  store (strdup (msg ? msg : "error"), status, errnum);
  errno = saved;
}

void
qbak_error_save (struct qbak_saved_error *s)
{
  s->msg = strdup (error_get_message ());
  s->status = error_get_status ();
  s->errnum = error_get_errno ();
  s->hint = error_get_hint ();
}

void
qbak_error_put_back (struct qbak_saved_error *s, const char *fallback)
{
  qbak_internal_error_restore (s->status, s->errnum,
                               s->msg ? s->msg : fallback);
  last_hint = s->hint;
  free (s->msg);
  s->msg = NULL;
}

void
qbak_internal_error_prefix (const char *fmt, ...)
{
  int saved = errno;
  char *prefix = NULL, *msg = NULL;
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&prefix, fmt, ap) < 0)
    prefix = NULL;
  va_end (ap);
  if (prefix &&
      asprintf (&msg, "%s: %s", prefix, last_msg ? last_msg : "error") >= 0)
  {
    enum hint hint = last_hint;
    store (msg, last_status, last_errno);
    last_hint = hint;
  }
  free (prefix);
  errno = saved;
}

const char *
error_get_message (void)
{
  return last_msg ? last_msg : "unknown error";
}

enum status
error_get_status (void)
{
  /* A caller asks after a failure; a failure without a recorded class is
   * an I/O failure, never success. */
  return last_status == STATUS_OK ? STATUS_IO : last_status;
}

int
error_get_errno (void)
{
  return last_errno;
}

void
error_clear (void)
{
  store (NULL, STATUS_OK, 0);
}

void
error_set_hint (enum hint hint)
{
  last_hint = hint;
}

enum hint
error_get_hint (void)
{
  return last_hint;
}
