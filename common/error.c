/* Per-thread error storage: see error.h. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
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
static _Thread_local char last_subject[2][ERROR_SUBJECT_MAX];
/* The public call running on this thread (error_enter), and the one that
 * was running when the current error was set: both static strings. */
static _Thread_local const char *current_entry;
static _Thread_local const char *last_context;

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
  last_subject[0][0] = last_subject[1][0] = '\0';
  last_context = status == STATUS_OK ? NULL : current_entry;
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

/* Store MSG verbatim (no strerror appended) with STATUS and ERRNUM. */
static void
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
  s->hint = last_hint;
  s->context = last_context;
  memcpy (s->subject, last_subject, sizeof last_subject);
}

void
qbak_error_put_back (struct qbak_saved_error *s, const char *fallback)
{
  qbak_internal_error_restore (s->status, s->errnum,
                               s->msg ? s->msg : fallback);
  last_hint = s->hint;
  last_context = s->context;
  memcpy (last_subject, s->subject, sizeof last_subject);
  free (s->msg);
  s->msg = NULL;
}

/* Replace the message with MSG (malloc'ed, or NULL if it could not be
 * made: the message is then kept), keeping everything else. */
static void
replace_message (char *msg)
{
  if (!msg)
    return;
  enum hint hint = last_hint;
  const char *context = last_context;
  char subject[2][ERROR_SUBJECT_MAX];
  memcpy (subject, last_subject, sizeof subject);
  store (msg, last_status, last_errno);
  last_hint = hint;
  last_context = context;
  memcpy (last_subject, subject, sizeof subject);
}

/* Put the text made from FMT before the message ("TEXT: message") or
 * after it ("messageTEXT"), keeping everything else, and errno. */
static void
add_text (bool before, const char *fmt, va_list ap)
{
  int saved = errno;
  char *text = NULL, *msg = NULL;
  const char *cur = last_msg ? last_msg : "error";

  if (vasprintf (&text, fmt, ap) < 0)
    text = NULL;
  if (text && (before ? asprintf (&msg, "%s: %s", text, cur)
                      : asprintf (&msg, "%s%s", cur, text)) < 0)
    msg = NULL;
  replace_message (msg);
  free (text);
  errno = saved;
}

void
qbak_internal_error_prefix (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  add_text (true, fmt, ap);
  va_end (ap);
}

void
qbak_internal_error_suffix (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  add_text (false, fmt, ap);
  va_end (ap);
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

const char *
error_get_context (void)
{
  return last_context;
}

const char *
error_enter (const char *entry)
{
  const char *outer = current_entry;
  if (!outer)
    current_entry = entry;
  return outer;
}

void
error_leave (const char *outer)
{
  current_entry = outer;
}

static void
set_subject (unsigned i, const char *subject)
{
  size_t n = subject ? strlen (subject) : 0;
  if (n >= ERROR_SUBJECT_MAX)
    n = 0;
  memcpy (last_subject[i], subject ? subject : "", n);
  last_subject[i][n] = '\0';
}

void
error_set_hint_about (enum hint hint, const char *subject0,
                      const char *subject1)
{
  last_hint = hint;
  set_subject (0, subject0);
  set_subject (1, subject1);
}

const char *
error_get_hint_subject (unsigned i)
{
  return i < 2 && last_subject[i][0] ? last_subject[i] : NULL;
}
