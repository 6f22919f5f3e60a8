/* The public face of the per-thread error (common/error.c): the internal
 * status classes and hints re-exported as enum qbak_status and enum
 * qbak_hint, and the error's context (lib/api.h). */
#include "qbak.h"
#include "common/error.h"

/* The public enum re-exports the internal classes one for one; a class
 * added on one side only fails the build here. */
_Static_assert ((int) QBAK_STATUS_OK == (int) STATUS_OK, "status OK");
_Static_assert ((int) QBAK_STATUS_IO == (int) STATUS_IO, "status IO");
_Static_assert ((int) QBAK_STATUS_USAGE == (int) STATUS_USAGE, "status USAGE");
_Static_assert ((int) QBAK_STATUS_INVALID == (int) STATUS_INVALID,
                "status INVALID");
_Static_assert ((int) QBAK_STATUS_BUSY == (int) STATUS_BUSY, "status BUSY");
_Static_assert ((int) QBAK_STATUS_MISMATCH == (int) STATUS_MISMATCH,
                "status MISMATCH");
_Static_assert ((int) QBAK_STATUS_CANCELLED == (int) STATUS_CANCELLED,
                "status CANCELLED");

_Static_assert ((int) QBAK_HINT_NONE == (int) HINT_NONE, "hint NONE");
_Static_assert ((int) QBAK_HINT_LIST_BITMAPS == (int) HINT_LIST_BITMAPS,
                "hint LIST_BITMAPS");
_Static_assert ((int) QBAK_HINT_NEED_BITMAP == (int) HINT_NEED_BITMAP,
                "hint NEED_BITMAP");
_Static_assert ((int) QBAK_HINT_NEED_BITMAP_MODE == (int) HINT_NEED_BITMAP_MODE,
                "hint NEED_BITMAP_MODE");
_Static_assert ((int) QBAK_HINT_BACKING_CONFLICT == (int) HINT_BACKING_CONFLICT,
                "hint BACKING_CONFLICT");
_Static_assert ((int) QBAK_HINT_BACKING_FORMAT_ALONE == (int) HINT_BACKING_FORMAT_ALONE,
                "hint BACKING_FORMAT_ALONE");
_Static_assert ((int) QBAK_HINT_NEED_BACKING == (int) HINT_NEED_BACKING,
                "hint NEED_BACKING");
_Static_assert ((int) QBAK_HINT_PARTIAL_EXISTS == (int) HINT_PARTIAL_EXISTS,
                "hint PARTIAL_EXISTS");
_Static_assert ((int) QBAK_HINT_BACKING_FORMAT_GUESSED == (int) HINT_BACKING_FORMAT_GUESSED,
                "hint BACKING_FORMAT_GUESSED");
_Static_assert ((int) QBAK_HINT_NOT_OUR_PARTIAL == (int) HINT_NOT_OUR_PARTIAL,
                "hint NOT_OUR_PARTIAL");
_Static_assert ((int) QBAK_HINT_PARTIAL_OF_OTHER_JOB == (int) HINT_PARTIAL_OF_OTHER_JOB,
                "hint PARTIAL_OF_OTHER_JOB");
_Static_assert ((int) QBAK_HINT_RESUME_TO_FINISH == (int) HINT_RESUME_TO_FINISH,
                "hint RESUME_TO_FINISH");
_Static_assert ((int) QBAK_HINT_RUN_AGAIN == (int) HINT_RUN_AGAIN,
                "hint RUN_AGAIN");
_Static_assert ((int) QBAK_HINT_RESUME_AGAIN == (int) HINT_RESUME_AGAIN,
                "hint RESUME_AGAIN");
_Static_assert ((int) QBAK_HINT_REMOVE_IN_USE_COMPANION == (int) HINT_REMOVE_IN_USE_COMPANION,
                "hint REMOVE_IN_USE_COMPANION");
_Static_assert ((int) QBAK_HINT_IMAGE_LOCKED == (int) HINT_IMAGE_LOCKED,
                "hint IMAGE_LOCKED");
_Static_assert ((int) QBAK_HINT_BITMAP_IN_USE == (int) HINT_BITMAP_IN_USE,
                "hint BITMAP_IN_USE");
_Static_assert ((int) QBAK_HINT_IMAGE_PERMISSION_HELD ==
                (int) HINT_IMAGE_PERMISSION_HELD, "hint IMAGE_PERMISSION_HELD");

const char *
qbak_get_error (void)
{
  return error_get_message ();
}

enum qbak_status
qbak_get_status (void)
{
  return (enum qbak_status) error_get_status ();
}

int
qbak_get_errno (void)
{
  return error_get_errno ();
}

void
qbak_clear_error (void)
{
  error_clear ();
}

const char *
qbak_get_error_hint_subject (unsigned i)
{
  return error_get_hint_subject (i);
}

enum qbak_hint
qbak_get_error_hint (void)
{
  return (enum qbak_hint) error_get_hint ();
}

const char *
qbak_get_error_context (void)
{
  return error_get_context ();
}
