/* Per-thread error storage: see error.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

static _Thread_local char *last_msg;
static _Thread_local enum qbak_status last_status;
static _Thread_local int last_errno;

static void
store (char *msg, enum qbak_status status, int errnum)
{
  free (last_msg);
  last_msg = msg;
  last_status = status;
  last_errno = errnum;
}

void
qbak_internal_error (enum qbak_status status, int errnum, const char *fmt, ...)
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
qbak_internal_error_errno_only (enum qbak_status status, int errnum,
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
qbak_internal_error_restore (enum qbak_status status, int errnum,
                             const char *msg)
{
  int saved = errno;
  store (strdup (msg ? msg : "error"), status, errnum);
  errno = saved;
}

void
qbak_error_save (struct qbak_saved_error *s)
{
  s->msg = strdup (qbak_get_error ());
  s->status = qbak_get_status ();
  s->errnum = qbak_get_errno ();
}

void
qbak_error_put_back (struct qbak_saved_error *s, const char *fallback)
{
  qbak_internal_error_restore (s->status, s->errnum,
                               s->msg ? s->msg : fallback);
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
      asprintf (&msg, "%s: %s", prefix, last_msg ? last_msg : "error") >= 0) {
    free (last_msg);
    last_msg = msg;
  }
  free (prefix);
  errno = saved;
}

const char *
qbak_get_error (void)
{
  return last_msg ? last_msg : "unknown error";
}

enum qbak_status
qbak_get_status (void)
{
  return last_status == QBAK_STATUS_OK ? QBAK_STATUS_IO : last_status;
}

int
qbak_get_errno (void)
{
  return last_errno;
}

void
qbak_clear_error (void)
{
  store (NULL, QBAK_STATUS_OK, 0);
}
