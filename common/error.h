/* Library-wide error reporting.
 *
 * Internal code returns -1 after qbak_internal_error(), which stores one
 * complete message "file: what is wrong[: strerror]" and a status class per
 * thread, with the public call that was running (error_enter) as its
 * context.  The public API (lib/error-api.c) hands them to callers as
 * qbak_get_error()/_status()/_errno()/_context().  The library itself
 * never prints.
 */
#ifndef QBAK_COMMON_ERROR_H
#define QBAK_COMMON_ERROR_H

#include <errno.h>
#include <stdarg.h>
#include "common/status.h"

/* Record an error.  STATUS is one of enum status (pinned values that
 * the CLI maps to exit codes); ERRNUM is 0 or an errno whose strerror is
 * appended.  errno is preserved across the call. */
void qbak_internal_error(enum status status, int errnum,
                         const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* Like qbak_internal_error, but ERRNUM is only recorded, not appended. */
void qbak_internal_error_errno_only (enum status status, int errnum,
                                     const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* The current error, kept across cleanup that may set errors of its own:
 * qbak_error_save() copies it, qbak_error_put_back() makes it current
 * again (FALLBACK if the copy could not be made) and frees the copy. */
#define ERROR_SUBJECT_MAX 1024
struct qbak_saved_error {
  char *msg;
  enum status status;
  int errnum;
  enum hint hint;
  const char *context;
  char subject[2][ERROR_SUBJECT_MAX];
};
void qbak_error_save (struct qbak_saved_error *s);
void qbak_error_put_back (struct qbak_saved_error *s, const char *fallback);

/* Prefix the stored message with "PREFIX: " (to add context on the way up,
 * e.g. the file name).  Keeps status and errno. */
void qbak_internal_error_prefix(const char *fmt, ...)
  __attribute__((format(printf, 1, 2)));

/* Append the formatted text verbatim to the stored message (what cleanup
 * could not undo: "; and X could not be put back").  Keeps status, errno,
 * hint and context. */
void qbak_internal_error_suffix (const char *fmt, ...)
  __attribute__((format(printf, 1, 2)));

/* The current thread's error: its message ("unknown error" if none), its
 * class (never STATUS_OK: a failure without a class is STATUS_IO) and the
 * errno recorded with it (0 if none).  The message stays valid until the
 * next error is set on this thread. */
const char *error_get_message (void);
enum status error_get_status (void);
int error_get_errno (void);
void error_clear (void);

/* Attach HINT to the current error (every new error starts with
 * HINT_NONE; a prefix keeps it). */
void error_set_hint (enum hint hint);
/* The same, naming what the hint is about (SUBJECT0: a file; SUBJECT1: a
 * bitmap; either may be NULL), so that a program can spell out the
 * commands to type.  Longer names than ERROR_SUBJECT_MAX - 1 bytes are
 * not recorded (a program then words its advice without them). */
void error_set_hint_about (enum hint hint, const char *subject0,
                           const char *subject1);
/* Subject I (0 or 1) of the current error's hint, or NULL. */
const char *error_get_hint_subject (unsigned i);
enum hint error_get_hint (void);

/* The public call running on this thread when the current error was set
 * (its name, a static string), or NULL: the error's context.  Entry points
 * call error_enter on entry, through lib/api.h, and error_leave with what
 * it returned on every return; an inner entry point (a public call made by
 * another) leaves the outer one current, so the context names the call
 * the caller made. */
const char *error_get_context (void);
const char *error_enter (const char *entry);
void error_leave (const char *outer);

/* Short forms. */
#define set_io_error(errnum, ...) \
  qbak_internal_error(STATUS_IO, (errnum), __VA_ARGS__)
#define set_invalid(...) \
  qbak_internal_error(STATUS_INVALID, 0, __VA_ARGS__)
#define set_usage_error(...) \
  qbak_internal_error(STATUS_USAGE, 0, __VA_ARGS__)
/* A usage error about an existing object (errno EEXIST, not appended to
 * the message): the CLI prints no usage text for it. */
#define set_exists_error(...) \
  qbak_internal_error_errno_only(STATUS_USAGE, EEXIST, __VA_ARGS__)
#define set_busy(errnum, ...) \
  qbak_internal_error(STATUS_BUSY, (errnum), __VA_ARGS__)
#define set_nomem() \
  qbak_internal_error(STATUS_IO, ENOMEM, "out of memory")

#endif
