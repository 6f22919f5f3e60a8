/* File I/O for every layer: full-transfer loops, EINTR retries, errors
 * with the file name, and the fail-point hooks (failpoint.h) on every call,
 * so tests can fail or crash qbak at any single I/O.
 *
 * A failed flush is never retried.  Once an fsync of a file fails, or
 * starting its write-back reports an I/O error, the file is poisoned:
 * every later qbak_file_flush of it fails with the same errno, without
 * calling fsync, as in QEMU's file driver.  After a failed write-back
 * Linux may drop the dirty pages and report the error once, so a second
 * fsync that succeeds proves nothing about what was written before; what
 * cannot be proven durable is leaked by the callers, never freed.
 *
 * The one way back is to write again every byte written since the last
 * flush that succeeded (the pages a failed write-back may have lost), as
 * putting back a header after its flush failed does: a flush after that
 * makes new writes durable and vouches for nothing older.  The file keeps
 * the ranges written since the last good flush for this; when they are
 * too many to keep, or after a truncate or a deallocation, a failure
 * poisons the file for good.  Folders stay poisoned for good
 * (outfile_sync_folder). */
#ifndef QBAK_COMMON_FILEIO_H
#define QBAK_COMMON_FILEIO_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

struct writeback;

/* Byte ranges of a file, merged, up to a bound (fileio.c). */
#define QBAK_FILE_MAX_RANGES 32
struct qbak_file_ranges {
  unsigned n;
  bool overflow;                /* more than the bound: unknown */
  struct { uint64_t start, end; } v[QBAK_FILE_MAX_RANGES];
};

struct qbak_file;

/* Where a file's bytes live: a backend.  The default is a file
 * descriptor (fileio.c); an object store plugs in its own table, and
 * nothing above common/ changes.  The generic layer (qbak_file_*) keeps
 * every rule that holds for all files: the fail points on every call,
 * the full-transfer loops and EINTR retries, range checks, the failed-flush
 * poisoning and the ranges behind it, and the messages.  A backend only
 * moves bytes:
 *
 *   - pread and pwrite transfer up to COUNT bytes and return how many
 *     (a read at the end returns 0); the others return 0 (sizes: the
 *     size) on success;
 *   - on failure they return -1 with errno set, and the generic layer
 *     writes the message ("FILE: read at offset N: ..."), or
 *     QBAK_FILE_ERROR_SET with the error already set (common/error.h),
 *     for a backend with more to say than an errno (an HTTP status);
 *   - flush makes everything written so far durable; a failure is final
 *     (the generic layer never calls it again on a poisoned file);
 *   - extent is asked only for OFFSET below the size;
 *   - writeback is a hint: it returns 0, or an errno that says written
 *     data may be lost (the file is poisoned); writeback_error returns
 *     (once) such an errno met in the background since, or 0;
 *   - close releases the backend's state (the generic layer frees the
 *     path and the file).
 *
 * A backend may leave operations out (NULL).  writeback and
 * writeback_error are hints and do nothing then; extent reports
 * everything as data, as a file system without SEEK_DATA does.  Every
 * other missing operation fails with STATUS_USAGE ("not supported on
 * object storage"): never silently. */
#define QBAK_FILE_ERROR_SET (-2)
struct qbak_file_ops {
  const char *name;             /* "fd", "s3": for messages */
  ssize_t (*pread) (struct qbak_file *f, void *buf, size_t count,
                    uint64_t offset);
  ssize_t (*pwrite) (struct qbak_file *f, const void *buf, size_t count,
                     uint64_t offset);
  int (*flush) (struct qbak_file *f);
  int64_t (*size) (struct qbak_file *f);
  int (*truncate) (struct qbak_file *f, uint64_t size);
  int (*punch_hole) (struct qbak_file *f, uint64_t offset, uint64_t len);
  int (*extent) (struct qbak_file *f, uint64_t offset, uint64_t length,
                 bool *is_data, uint64_t *pnum);
  int64_t (*allocated) (struct qbak_file *f);
  int (*writeback) (struct qbak_file *f, uint64_t offset, uint64_t len);
  int (*writeback_error) (struct qbak_file *f);
  void (*close) (struct qbak_file *f);
};

struct qbak_file {
  const struct qbak_file_ops *ops;
  void *impl;                   /* the backend's own state */
  int fd;                       /* the fd backend's descriptor; -1 for
                                   any other backend */
  char *path;                   /* for messages (an object: LOCATION/KEY) */
  bool writable;
  struct writeback *wb;         /* fd backend: started by the first
                                   writeback hint */
  bool wb_tried;
  int flush_failed;             /* errno of the failed flush that poisoned
                                   the file, or 0 */
  struct qbak_file_ranges written;  /* since the last good flush */
  struct qbak_file_ranges unproven; /* poisoned: what of WRITTEN was not
                                       written again since */
};

/* A file on backend OPS with state IMPL, named PATH in messages.  On
 * failure (no memory) OPS->close is called, and NULL returned with the
 * error set. */
struct qbak_file *qbak_file_new (const struct qbak_file_ops *ops, void *impl,
                                 const char *path, bool writable);
/* Whether A and B are the same file (a chain loop): the same inode for
 * descriptors, the same backend and name otherwise. */
bool qbak_file_same (struct qbak_file *a, struct qbak_file *b);

/* Open PATH read-only, or read-write if WRITABLE: a regular file or a
 * block device, never anything else (a FIFO would block).  Returns NULL
 * on error, STATUS_INVALID for any file that cannot be opened. */
struct qbak_file *qbak_file_open (const char *path, bool writable);
/* Create PATH exclusively (O_EXCL); fails if it exists. */
struct qbak_file *qbak_file_create (const char *path);
/* Wrap FD, already open, as a file named PATH in messages (takes
 * ownership of FD, closed on error too). */
struct qbak_file *qbak_file_from_fd (int fd, const char *path,
                                     bool writable);
/* Open PATH read-write only if it is a regular file and not a symbolic
 * link (a file qbak made itself and now continues); STATUS_INVALID
 * otherwise. */
struct qbak_file *qbak_file_open_own (const char *path);
/* Close; accepts NULL. */
void qbak_file_close (struct qbak_file *f);

/* Read exactly COUNT bytes at OFFSET.  A read past the end of the file is
 * an error ("unexpected end of file"), STATUS_INVALID. */
int qbak_file_pread (struct qbak_file *f, void *buf, size_t count,
                     uint64_t offset);
/* Read up to COUNT bytes; bytes past the end of the file read as zeroes
 * (as QEMU's file driver does for a cluster whose tail was never written). */
int qbak_file_pread_zerofill (struct qbak_file *f, void *buf, size_t count,
                              uint64_t offset);
int qbak_file_pwrite (struct qbak_file *f, const void *buf, size_t count,
                      uint64_t offset);
/* Make what was written durable (fsync).  Fails for good once it failed
 * (see the top of this file). */
int qbak_file_flush (struct qbak_file *f);
/* Start writing back [OFFSET, +LEN) now (sync_file_range WRITE, on a
 * background thread: common/writeback.h), so the final flush has little
 * left to do.  Only a hint: never fails, but an I/O error it meets
 * poisons the file, and the next flush reports it. */
void qbak_file_writeback (struct qbak_file *f, uint64_t offset, uint64_t len);
int qbak_file_truncate (struct qbak_file *f, uint64_t size);
/* Deallocate [OFFSET, +LEN), keeping the size: it reads as zeroes again. */
int qbak_file_punch_hole (struct qbak_file *f, uint64_t offset,
                          uint64_t len);
/* Bytes the file occupies on disk (st_blocks * 512), or -1. */
int64_t qbak_file_allocated (struct qbak_file *f);
/* Current size of the file, or -1. */
int64_t qbak_file_size (struct qbak_file *f);


/* Allocation of the host file itself (SEEK_DATA/SEEK_HOLE): set *IS_DATA
 * and *PNUM (bytes from OFFSET, at most LENGTH, with the same state).
 * Offsets at or past the end of the file are holes.  Filesystems without
 * SEEK_DATA report everything as data. */
int qbak_file_extent (struct qbak_file *f, uint64_t offset, uint64_t length,
                      bool *is_data, uint64_t *pnum);
#endif
