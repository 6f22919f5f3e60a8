/* File I/O with full-transfer loops and fail points: see fileio.h. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/failpoint.h"
#include "common/fileio.h"
#include "common/writeback.h"

/* ---- The fd backend, the default (fileio.h) ---------------------------
 * Each operation is the system call and nothing else: the generic layer
 * below does the rest, so a descriptor costs one indirect call per
 * system call. */

static ssize_t
fd_pread (struct qbak_file *f, void *buf, size_t count, uint64_t offset)
{
  return pread (f->fd, buf, count, (off_t) offset);
}

static ssize_t
fd_pwrite (struct qbak_file *f, const void *buf, size_t count,
           uint64_t offset)
{
  return pwrite (f->fd, buf, count, (off_t) offset);
}

static int
fd_flush (struct qbak_file *f)
{
  return fsync (f->fd);
}

static int64_t
fd_size (struct qbak_file *f)
{
  struct stat st;
  if (fstat (f->fd, &st) < 0)
    return -1;
  if (S_ISBLK (st.st_mode))
    /* st_size is 0 for a block device; its end is its size. */
    return lseek (f->fd, 0, SEEK_END);
  return st.st_size;
}

static int
fd_truncate (struct qbak_file *f, uint64_t size)
{
  return ftruncate (f->fd, (off_t) size);
}

static int
fd_punch_hole (struct qbak_file *f, uint64_t offset, uint64_t len)
{
  return fallocate (f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    (off_t) offset, (off_t) len);
}

static int
fd_extent (struct qbak_file *f, uint64_t offset, uint64_t length,
           bool *is_data, uint64_t *pnum)
{
  off_t data = lseek (f->fd, (off_t) offset, SEEK_DATA);
  if (data < 0) {
    /* ENXIO: a hole up to EOF; any other error: no SEEK_DATA here,
     * assume data. */
    *is_data = errno != ENXIO;
    *pnum = length;
    return 0;
  }
  if ((uint64_t) data > offset) {
    *is_data = false;
    *pnum = (uint64_t) data - offset;
  }
  else {
    off_t hole = lseek (f->fd, (off_t) offset, SEEK_HOLE);
    *is_data = true;
    *pnum = hole < 0 ? length : (uint64_t) hole - offset;
  }
  return 0;
}

static int64_t
fd_allocated (struct qbak_file *f)
{
  struct stat st;
  if (fstat (f->fd, &st) < 0)
    return -1;
  return (int64_t) st.st_blocks * 512;
}

static int
fd_writeback (struct qbak_file *f, uint64_t offset, uint64_t len)
{
  if (!f->wb_tried) {
    f->wb_tried = true;
    f->wb = writeback_start (f->fd);
  }
  if (f->wb) {
    writeback_queue (f->wb, offset, len);
    return 0;
  }
  if (sync_file_range (f->fd, (off_t) offset, (off_t) len,
                       SYNC_FILE_RANGE_WRITE) < 0 &&
      writeback_lost_data (errno))
    return errno;
  return 0;
}

static int
fd_writeback_error (struct qbak_file *f)
{
  return f->wb ? writeback_take_error (f->wb) : 0;
}

static void
fd_close (struct qbak_file *f)
{
  writeback_stop (f->wb);
  close (f->fd);
}

static const struct qbak_file_ops fd_ops = {
  .name = "fd",
  .pread = fd_pread,
  .pwrite = fd_pwrite,
  .flush = fd_flush,
  .size = fd_size,
  .truncate = fd_truncate,
  .punch_hole = fd_punch_hole,
  .extent = fd_extent,
  .allocated = fd_allocated,
  .writeback = fd_writeback,
  .writeback_error = fd_writeback_error,
  .close = fd_close,
};

/* ---- The generic layer ------------------------------------------------ */

struct qbak_file *
qbak_file_new (const struct qbak_file_ops *ops, void *impl, const char *path,
               bool writable)
{
  struct qbak_file *f = calloc (1, sizeof *f);
  if (!f || !(f->path = strdup (path))) {
    struct qbak_file tmp = { .ops = ops, .impl = impl, .fd = -1 };
    free (f);
    ops->close (&tmp);
    set_nomem ();
    return NULL;
  }
  f->ops = ops;
  f->impl = impl;
  f->fd = -1;
  f->writable = writable;
  return f;
}

static struct qbak_file *
wrap (int fd, const char *path, bool writable)
{
  struct qbak_file *f = calloc (1, sizeof *f);
  if (!f || !(f->path = strdup (path))) {
    free (f);
    close (fd);
    set_nomem ();
    return NULL;
  }
  f->ops = &fd_ops;
  f->fd = fd;
  f->writable = writable;
  return f;
}

bool
qbak_file_same (struct qbak_file *a, struct qbak_file *b)
{
  if (a->ops != b->ops)
    return false;
  if (a->ops == &fd_ops) {
    struct stat sa, sb;
    return fstat (a->fd, &sa) == 0 && fstat (b->fd, &sb) == 0 &&
      sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  }
  return strcmp (a->path, b->path) == 0;
}

/* An operation the backend lacks: refused, never skipped. */
static void
set_unsupported (struct qbak_file *f, const char *what)
{
  set_usage_error ("%s: %s is not supported on object storage (%s)",
                   f->path, what, f->ops->name);
}

/* A backend's failure R (-1 with errno E, or QBAK_FILE_ERROR_SET with the
 * error set already) as the error. */
#define SET_BACKEND_ERROR(r, e, ...)                    \
  do {                                                  \
    if ((r) != QBAK_FILE_ERROR_SET)                     \
      set_io_error ((e), __VA_ARGS__);                  \
  } while (0)

/* What a non-image file type is called in messages, or NULL for the two
 * types that can hold an image: regular files and block devices. */
static const char *
unusable_type (mode_t mode)
{
  if (S_ISREG (mode) || S_ISBLK (mode))
    return NULL;
  return S_ISDIR (mode) ? "a directory" : S_ISFIFO (mode) ? "a FIFO"
         : S_ISSOCK (mode) ? "a socket" : S_ISCHR (mode)
         ? "a character device" : "not a regular file";
}

static void
set_unusable_type (const char *path, const char *what)
{
  set_invalid ("%s: is %s, not an image: name a regular file or a block "
               "device", path, what);
}

/* Names of files to open come from the command line and from image
 * headers, which a guest may have written.  A FIFO would block the read
 * forever with the image locks held, and opening a device can have side
 * effects, so the type is checked before opening (stat) and again on what
 * was opened (fstat, in case the name changed in between); O_NONBLOCK
 * keeps the open itself from waiting for a FIFO writer.  Any failure to
 * open is unusable input (exit 3), whatever its errno. */
struct qbak_file *
qbak_file_open (const char *path, bool writable)
{
  struct stat st;
  const char *what;
  if (stat (path, &st) == 0 && (what = unusable_type (st.st_mode))) {
    set_unusable_type (path, what);
    return NULL;
  }
  int fd = open (path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC |
                 O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    qbak_internal_error (STATUS_INVALID, errno, "%s: cannot open",
                         path);
    return NULL;
  }
  if (fstat (fd, &st) < 0) {
    int e = errno;
    close (fd);
    qbak_internal_error (STATUS_INVALID, e, "%s: cannot open", path);
    return NULL;
  }
  if ((what = unusable_type (st.st_mode))) {
    close (fd);
    set_unusable_type (path, what);
    return NULL;
  }
  int fl = fcntl (fd, F_GETFL);
  if (fl < 0 || fcntl (fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
    int e = errno;
    close (fd);
    set_io_error (e, "%s: cannot open", path);
    return NULL;
  }
  return wrap (fd, path, writable);
}

struct qbak_file *
qbak_file_create (const char *path)
{
  int fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                 0644);
  if (fd < 0) {
    int e = errno;
    qbak_internal_error (e == EEXIST ? STATUS_USAGE : STATUS_IO,
                         e, "%s: cannot create", path);
    return NULL;
  }
  return wrap (fd, path, true);
}

void
qbak_file_close (struct qbak_file *f)
{
  if (!f)
    return;
  f->ops->close (f);
  free (f->path);
  free (f);
}

static int
do_pread (struct qbak_file *f, void *buf, size_t count, uint64_t offset,
          bool zerofill)
{
  char *p = buf;
  int e = qbak_failpoint (FP_READ, f->path);
  if (e) {
    set_io_error (e, "%s: read at offset %" PRIu64, f->path, offset);
    return -1;
  }
  if (offset > INT64_MAX || count > INT64_MAX - offset) {
    set_invalid ("%s: read at offset %" PRIu64 " is out of range",
                 f->path, offset);
    return -1;
  }
  if (!f->ops->pread) {
    set_unsupported (f, "reading");
    return -1;
  }
  while (count > 0) {
    ssize_t r = f->ops->pread (f, p, count, offset);
    if (r < 0) {
      if (r == -1 && errno == EINTR)
        continue;
      SET_BACKEND_ERROR (r, errno, "%s: read at offset %" PRIu64, f->path,
                         offset);
      return -1;
    }
    if (r == 0) {
      if (zerofill) {
        memset (p, 0, count);
        return 0;
      }
      set_invalid ("%s: unexpected end of file reading offset %" PRIu64
                   ": the image is truncated", f->path, offset);
      return -1;
    }
    p += r;
    count -= (size_t) r;
    offset += (uint64_t) r;
  }
  return 0;
}

int
qbak_file_pread (struct qbak_file *f, void *buf, size_t count, uint64_t offset)
{
  return do_pread (f, buf, count, offset, false);
}

int
qbak_file_pread_zerofill (struct qbak_file *f, void *buf, size_t count,
                          uint64_t offset)
{
  return do_pread (f, buf, count, offset, true);
}

/* ---- The ranges behind the flush rule (fileio.h) -------------------- */

static void
ranges_add (struct qbak_file_ranges *r, uint64_t start, uint64_t end)
{
  if (r->overflow || start >= end)
    return;
  /* Absorb every range that touches [START, END), then keep the union. */
  for (unsigned i = 0; i < r->n;) {
    if (r->v[i].end < start || r->v[i].start > end) {
      i++;
      continue;
    }
    if (r->v[i].start < start)
      start = r->v[i].start;
    if (r->v[i].end > end)
      end = r->v[i].end;
    r->v[i] = r->v[--r->n];
  }
  if (r->n == QBAK_FILE_MAX_RANGES) {
    r->overflow = true;
    return;
  }
  r->v[r->n].start = start;
  r->v[r->n].end = end;
  r->n++;
}

static void
ranges_remove (struct qbak_file_ranges *r, uint64_t start, uint64_t end)
{
  if (r->overflow || start >= end)
    return;
  for (unsigned i = 0; i < r->n;) {
    uint64_t s = r->v[i].start, e = r->v[i].end;
    if (e <= start || s >= end) {
      i++;
      continue;
    }
    if (s < start && e > end) {         /* a hole in the middle: split */
      r->v[i].end = start;
      if (r->n == QBAK_FILE_MAX_RANGES) {
        r->overflow = true;             /* unknown: never proven */
        return;
      }
      r->v[r->n].start = end;
      r->v[r->n].end = e;
      r->n++;
      return;
    }
    if (s < start)
      r->v[i++].end = start;
    else if (e > end)
      r->v[i++].start = end;
    else
      r->v[i] = r->v[--r->n];
  }
}

static void
ranges_clear (struct qbak_file_ranges *r)
{
  r->n = 0;
  r->overflow = false;
}

/* A flush of F failed with E, or its write-back did: what was written
 * since the last good flush may be lost. */
static void
poison (struct qbak_file *f, int e)
{
  f->flush_failed = e;
  f->unproven = f->written;
}

/* [OFFSET, +COUNT) is about to be written (it may be, in part, even if
 * the write fails). */
static void
note_write (struct qbak_file *f, uint64_t offset, size_t count)
{
  ranges_add (&f->written, offset, offset + count);
}

/* [OFFSET, +COUNT) was written whole: no longer unproven. */
static void
note_written (struct qbak_file *f, uint64_t offset, size_t count)
{
  if (f->flush_failed)
    ranges_remove (&f->unproven, offset, offset + count);
}

/* A change that is not a plain write (size, deallocation): what was lost
 * can no longer be told. */
static void
note_untracked (struct qbak_file *f)
{
  f->written.overflow = true;
}

int
qbak_file_pwrite (struct qbak_file *f, const void *buf, size_t count,
                  uint64_t offset)
{
  const char *p = buf;
  uint64_t offset0 = offset;
  size_t count0 = count;
  int e = qbak_failpoint (FP_WRITE, f->path);
  if (e) {
    set_io_error (e, "%s: write at offset %" PRIu64, f->path, offset);
    return -1;
  }
  if (!f->ops->pwrite) {
    set_unsupported (f, "writing");
    return -1;
  }
  note_write (f, offset, count);
  while (count > 0) {
    ssize_t r = f->ops->pwrite (f, p, count, offset);
    if (r < 0) {
      if (r == -1 && errno == EINTR)
        continue;
      SET_BACKEND_ERROR (r, errno, "%s: write at offset %" PRIu64, f->path,
                         offset);
      return -1;
    }
    if (r == 0) {               /* never for a file: a backend's bug */
      set_io_error (EIO, "%s: write at offset %" PRIu64 " made no progress",
                    f->path, offset);
      return -1;
    }
    p += r;
    count -= (size_t) r;
    offset += (uint64_t) r;
  }
  note_written (f, offset0, count0);
  return 0;
}

int
qbak_file_flush (struct qbak_file *f)
{
  /* Never retried (fileio.h): poisoned, it fails until everything that
   * may have been lost was written again. */
  int e = f->ops->writeback_error ? f->ops->writeback_error (f) : 0;
  int r = -1;
  if (e)
    poison (f, e);
  else if (f->flush_failed &&
           (f->unproven.overflow || f->unproven.n > 0))
    e = f->flush_failed;
  else if (!f->ops->flush) {
    set_unsupported (f, "flushing");
    return -1;
  }
  else {
    e = qbak_failpoint (FP_FLUSH, f->path);
    if (!e && (r = f->ops->flush (f)) < 0) {
      e = r != QBAK_FILE_ERROR_SET ? errno
          : error_get_errno () ? error_get_errno () : EIO;
    }
    else
      r = -1;
    if (e)
      poison (f, e);
    else {
      f->flush_failed = 0;
      ranges_clear (&f->written);
      ranges_clear (&f->unproven);
    }
  }
  if (e) {
    SET_BACKEND_ERROR (r, e, "%s: flush", f->path);
    return -1;
  }
  return 0;
}

int
qbak_file_truncate (struct qbak_file *f, uint64_t size)
{
  int e = qbak_failpoint (FP_WRITE, f->path);
  if (e) {
    set_io_error (e, "%s: truncate to %" PRIu64, f->path, size);
    return -1;
  }
  if (!f->ops->truncate) {
    set_unsupported (f, "changing the size of a file");
    return -1;
  }
  note_untracked (f);
  int r = f->ops->truncate (f, size);
  if (r < 0) {
    SET_BACKEND_ERROR (r, errno, "%s: truncate to %" PRIu64, f->path, size);
    return -1;
  }
  return 0;
}

int
qbak_file_punch_hole (struct qbak_file *f, uint64_t offset, uint64_t len)
{
  int e = qbak_failpoint (FP_WRITE, f->path);
  if (e) {
    set_io_error (e, "%s: deallocate at offset %" PRIu64, f->path, offset);
    return -1;
  }
  if (!f->ops->punch_hole) {
    set_unsupported (f, "deallocating");
    return -1;
  }
  note_untracked (f);
  int r = f->ops->punch_hole (f, offset, len);
  if (r < 0) {
    SET_BACKEND_ERROR (r, errno, "%s: deallocate at offset %" PRIu64,
                       f->path, offset);
    return -1;
  }
  return 0;
}

int64_t
qbak_file_size (struct qbak_file *f)
{
  if (!f->ops->size) {
    set_unsupported (f, "the size of a file");
    return -1;
  }
  int64_t size = f->ops->size (f);
  if (size < 0) {
    SET_BACKEND_ERROR (size, errno, "%s: size", f->path);
    return -1;
  }
  return size;
}

int
qbak_file_extent (struct qbak_file *f, uint64_t offset, uint64_t length,
                  bool *is_data, uint64_t *pnum)
{
  int64_t size = qbak_file_size (f);
  if (size < 0)
    return -1;
  if (offset >= (uint64_t) size) {
    *is_data = false;
    *pnum = length;
    return 0;
  }
  if (!f->ops->extent) {
    *is_data = true;            /* as without SEEK_DATA: all data */
    *pnum = length;
    return 0;
  }
  int r = f->ops->extent (f, offset, length, is_data, pnum);
  if (r < 0) {
    SET_BACKEND_ERROR (r, errno, "%s: allocation at offset %" PRIu64,
                       f->path, offset);
    return -1;
  }
  if (*pnum > length)
    *pnum = length;
  if (*pnum == 0)
    *pnum = length;
  return 0;
}

int64_t
qbak_file_allocated (struct qbak_file *f)
{
  if (!f->ops->allocated) {
    set_unsupported (f, "the space a file occupies");
    return -1;
  }
  int64_t n = f->ops->allocated (f);
  if (n < 0) {
    SET_BACKEND_ERROR (n, errno, "%s: stat", f->path);
    return -1;
  }
  return n;
}

void
qbak_file_writeback (struct qbak_file *f, uint64_t offset, uint64_t len)
{
  /* A hint: errors surface at the flush that makes the data durable. */
  int e = f->ops->writeback ? f->ops->writeback (f, offset, len) : 0;
  if (e)
    poison (f, e);
}

struct qbak_file *
qbak_file_from_fd (int fd, const char *path, bool writable)
{
  return wrap (fd, path, writable);
}

struct qbak_file *
qbak_file_open_own (const char *path)
{
  int fd = open (path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ELOOP)
      set_invalid ("%s: is a symbolic link; qbak continues only a file it "
                   "made itself, never one a link points to", path);
    else
      qbak_internal_error (e == ENOENT ? STATUS_INVALID
                                       : STATUS_IO, e,
                           "%s: cannot open", path);
    return NULL;
  }
  struct stat st;
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode)) {
    close (fd);
    set_invalid ("%s: is not a regular file; qbak continues only a file it "
                 "made itself", path);
    return NULL;
  }
  /* Regular files never block; the flag only kept a FIFO from doing so. */
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK);
  return wrap (fd, path, true);
}
