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

/* What the caller can do about an error, named for the situation, never
 * for how a user of one program would type it: the library's messages
 * say what is wrong in its own terms, and a program (the qbak tool in
 * cli/errors.c) turns the hint into its flags and commands.  The public
 * API re-exports these as enum qbak_hint.  Add values at the end. */
enum hint {
  HINT_NONE = 0,
  /* no bitmap of that name: list the image's bitmaps */
  HINT_LIST_BITMAPS,
  /* the sync or bitmap mode needs a bitmap named */
  HINT_NEED_BITMAP,
  /* a bitmap was named without a bitmap mode */
  HINT_NEED_BITMAP_MODE,
  /* a backing file was both given and refused */
  HINT_BACKING_CONFLICT,
  /* a backing format was given without a backing file */
  HINT_BACKING_FORMAT_ALONE,
  /* an incremental needs a backing file, or no_backing */
  HINT_NEED_BACKING,
  /* an interrupted job's partial target is there: resume it */
  HINT_PARTIAL_EXISTS,
  /* the backing file was read as qcow2: give its format */
  HINT_BACKING_FORMAT_GUESSED,
  /* the partial is not this job's: remove it, do not resume */
  HINT_NOT_OUR_PARTIAL,
  /* the partial was made for other options: do not resume */
  HINT_PARTIAL_OF_OTHER_JOB,
  /* the failed job kept its partial: resume the job to finish */
  HINT_RESUME_TO_FINISH,
  /* the failed job changed nothing: run the same job again */
  HINT_RUN_AGAIN,
  /* the failed resumed job changed nothing: resume it again */
  HINT_RESUME_AGAIN,
  /* a companion bitmap is in use: remove it, back up in full */
  HINT_REMOVE_IN_USE_COMPANION,
  /* Image locks (lib/lock.c): another process uses the image; stop it,
   * or read without taking QEMU's locks (QBAK_OPEN_FORCE_SHARE).  Two
   * values only because the tool words the two refusals differently:
   * LOCKED, a lock byte is held exclusively (the errno is recorded, not
   * in the message); PERMISSION_HELD, another process holds or does not
   * share a permission this open needs. */
  HINT_IMAGE_LOCKED,
  HINT_IMAGE_PERMISSION_HELD,
  /* A bitmap is in use (its writer did not close the image): start a new
   * chain with it.  Subjects: the image, the bitmap. */
  HINT_BITMAP_IN_USE,
};

#endif
