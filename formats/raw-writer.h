/* formats/: streaming writer for new sparse raw target images.
 *
 * The file is created exclusively and sized with ftruncate, so every range
 * starts as a hole that reads as zeroes.  Requests come in increasing offset
 * order and never overlap (as for qcow2_writer), which is what makes
 * raw_writer_zero() free: a range it is given was never written.
 *
 * Every function returns -1 (or NULL) on error with the error set
 * (common/error.h).  A failed write leaves the writer as it was (its range
 * is deallocated again), so the call can be repeated or the range skipped;
 * after a failed flush, or a failed write that could not be undone, the
 * writer refuses further calls.
 */
#ifndef QBAK_FORMATS_RAW_WRITER_H
#define QBAK_FORMATS_RAW_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "common/fileio.h"

struct raw_writer;

/* Create PATH exclusively (O_EXCL: an existing file is refused with
 * STATUS_USAGE and errno EEXIST) with SIZE bytes, all a hole.
 * Returns NULL on error. */
struct raw_writer *raw_writer_create (const char *path, uint64_t size);

/* The same on FILE, a new empty file the caller created; W owns it from
 * now on (closed on error too). */
struct raw_writer *raw_writer_create_file (struct qbak_file *file,
                                           uint64_t size);
/* The descriptor of W's file (for linking it into place). */
int raw_writer_fd (const struct raw_writer *w);

/* Write BUF to [OFFSET, +LEN), inside the size, after every earlier
 * request.  LEN 0 is a no-op. */
int raw_writer_write (struct raw_writer *w, uint64_t offset,
                      const void *buf, size_t len);

/* [OFFSET, +LEN) reads as zeroes: checks the range and order, writes
 * nothing (the range is still a hole). */
int raw_writer_zero (struct raw_writer *w, uint64_t offset, uint64_t len);

/* Flush the file (fsync).  Call once. */
int raw_writer_finish (struct raw_writer *w);

/* Free W and close the file, finished or not.  Accepts NULL. */
void raw_writer_free (struct raw_writer *w);

#endif
