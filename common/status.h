/* The class of an error, kept beside its message so that callers branch on
 * a value and never on the text.  The public API re-exports these classes
 * as enum status (lib/error-api.c checks that the two agree). */
#ifndef QBAK_COMMON_STATUS_H
#define QBAK_COMMON_STATUS_H

enum status {
  STATUS_OK = 0,
  STATUS_IO,          /* the operation failed: I/O error, no space */
  STATUS_USAGE,       /* a bad argument */
  STATUS_INVALID,     /* unusable input: corrupt, unsupported, in use */
  STATUS_BUSY,        /* locked by another process */
  STATUS_MISMATCH,    /* verification found a difference */
  STATUS_CANCELLED,   /* interrupted on request */
};

#endif
