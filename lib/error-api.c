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
_Static_assert ((int) QBAK_HINT_IMAGE_LOCKED == (int) HINT_IMAGE_LOCKED,
                "hint IMAGE_LOCKED");
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
