/* Big objects on S3 (storage.h, "Big objects"): backup files read with
 * ranged GETs and written as multipart uploads, as struct qbak_file
 * backends (common/fileio.h), so formats/ reads and writes them as any
 * file.
 *
 * Reading.  An object is immutable once made, so its size is taken once
 * (HEAD, at open).  Reads go through a cache of S3_READ_BLOCKS blocks of
 * S3_READ_BLOCK bytes, least recently used first out, so a qcow2 reader's
 * small reads (header, tables, clusters) cost one GET per block rather
 * than one per read; a miss on the block after the one missed last (a
 * sequential reader) fetches the next block too, in the same GET.  A read
 * larger than a block is one GET of its own, not cached.  Memory stays
 * under (S3_READ_BLOCKS + 2) blocks whatever the object's size.  Each
 * file has its own client (its own connection): clients are used by one
 * thread at a time, and two files may be read by two threads.
 *
 * Writing.  storage.h's write pattern streams: the first
 * STORAGE_OBJECT_HEAD bytes (the head, where the qcow2 header is written
 * last) stay in memory until the commit, where they become part 1;
 * everything past the head fills parts 2, 3, ... in order, each handed to
 * a parallel multipart upload (s3-upload.h) once a write goes past its
 * end, so a retried append or a shrink of failed appends still lands in
 * the part being filled.  Bytes never written in a part are zeroes.  A
 * write before the part being filled, past the head, would need a part
 * that was sent already: it is refused (STATUS_USAGE), never silently
 * lost.  Parts are 8 MiB, doubling every 1000 parts so that S3's 10000
 * parts reach past its 5 TiB object limit; memory is the head, the part
 * being filled and the upload's parts in flight (UPLOAD_PARALLEL copies),
 * so it grows only for very large objects (128 MiB parts from 248 GB).
 *
 * Nothing is durable, or visible, before the commit: flush only reports
 * a part that failed to upload (an upload's failure is final), and the
 * commit sends what is left and completes the upload.  An object that
 * never grew past the head is one PUT with "If-None-Match: *" instead
 * (storage_put_once), so small objects (manifests) need no upload.
 *
 * Create-once.  storage.h promises that creating an existing key fails.
 * The single PUT is conditional, so that holds for small objects even
 * between two writers racing.  Completing an upload is sent without a
 * condition: If-None-Match on CompleteMultipartUpload is recent on AWS,
 * and Ceph RGW 16 (pacific) answers it on an existing key with a 500
 * UnknownError after replacing the object all the same, which would be
 * retried and end as a lost upload.  So a big object's key is checked
 * (HEAD) when it is created and again just before the completion: a
 * key that appeared in between is refused, but two writers completing
 * at the same moment could both succeed, the last one's object winning.  The guarantee that a backup
 * file is never replaced comes from the repository's record, written
 * put-once after the file, and from the lock that keeps a second writer
 * out, not from the object.
 *
 * There is no continuation in place (in_place is false): an interrupted
 * upload is aborted, and an upload of a process that died is found by
 * s3_mpu_list (or dropped by the bucket's expiry rule). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/s3-client.h"
#include "common/s3-upload.h"
#include "common/storage-s3-objects.h"
#include "common/storage-s3.h"
#include "common/storage.h"

#define HEAD STORAGE_OBJECT_HEAD
#define PART_BASE ((uint64_t) 8 << 20)
#define PARTS_PER_DOUBLING 1000
#define UPLOAD_PARALLEL 4

/* "LOCATION/KEY" for the file's name (storage_object_key reads it). */
static char *
object_path (struct storage *st, const char *key)
{
  char *p;
  if (asprintf (&p, "%s/%s", st->location, key) < 0) {
    set_nomem ();
    return NULL;
  }
  return p;
}

/* ---- reading ----------------------------------------------------------- */

struct cached_block {
  uint64_t index;               /* block number in the object */
  uint64_t used;                /* LRU clock of the last use; 0: empty */
  size_t len;                   /* bytes held (short at the object's end) */
  unsigned char *data;          /* S3_READ_BLOCK bytes, allocated on use */
};

struct s3_reader {
  struct s3_client *c;
  char *okey;                   /* the bucket key */
  uint64_t size;
  struct cached_block blocks[S3_READ_BLOCKS];
  uint64_t clock;
  uint64_t last_miss;           /* block number of the last miss + 1; 0:
                                   none yet */
  unsigned char *ahead;         /* two blocks: one GET with read-ahead */
};

static struct cached_block *
find_block (struct s3_reader *r, uint64_t index)
{
  for (unsigned i = 0; i < S3_READ_BLOCKS; i++)
    if (r->blocks[i].used && r->blocks[i].index == index)
      return &r->blocks[i];
  return NULL;
}

/* The slot to fill: an empty one, or the least recently used. */
static struct cached_block *
victim (struct s3_reader *r)
{
  struct cached_block *v = &r->blocks[0];
  for (unsigned i = 0; i < S3_READ_BLOCKS; i++) {
    if (!r->blocks[i].used)
      return &r->blocks[i];
    if (r->blocks[i].used < v->used)
      v = &r->blocks[i];
  }
  return v;
}

static int
keep_block (struct s3_reader *r, uint64_t index, const unsigned char *src,
            size_t len, struct cached_block **out)
{
  struct cached_block *b = victim (r);
  if (!b->data && !(b->data = malloc (S3_READ_BLOCK))) {
    set_nomem ();
    return -1;
  }
  memcpy (b->data, src, len);
  b->index = index;
  b->len = len;
  b->used = ++r->clock;
  if (out)
    *out = b;
  return 0;
}

/* Block INDEX, from the cache or the service. */
static struct cached_block *
get_block (struct s3_reader *r, uint64_t index)
{
  struct cached_block *b = find_block (r, index);
  if (b) {
    b->used = ++r->clock;
    return b;
  }
  uint64_t start = index * S3_READ_BLOCK;
  uint64_t blocks_left = (r->size - start + S3_READ_BLOCK - 1)
    / S3_READ_BLOCK;
  bool sequential = r->last_miss == index && index > 0;
  unsigned n = sequential && blocks_left > 1 ? 2 : 1;
  uint64_t want = (uint64_t) n * S3_READ_BLOCK;
  if (want > r->size - start)
    want = r->size - start;
  if (!r->ahead && !(r->ahead = malloc (2 * S3_READ_BLOCK))) {
    set_nomem ();
    return NULL;
  }
  ssize_t got = s3_get_range (r->c, r->okey, start, want, r->ahead);
  if (got < 0)
    return NULL;
  if ((uint64_t) got < want) {
    set_invalid ("s3 object %s: ends at %" PRIu64 " bytes, but was %"
                 PRIu64 " bytes when opened (replaced while read?)",
                 r->okey, start + (uint64_t) got, r->size);
    return NULL;
  }
  r->last_miss = index + n;
  /* The read-ahead block first, so the one asked for is the newest. */
  if (n == 2 && keep_block (r, index + 1, r->ahead + S3_READ_BLOCK,
                            (size_t) want - S3_READ_BLOCK, NULL) < 0)
    return NULL;
  size_t first = want < S3_READ_BLOCK ? (size_t) want : S3_READ_BLOCK;
  if (keep_block (r, index, r->ahead, first, &b) < 0)
    return NULL;
  return b;
}

static ssize_t
reader_pread (struct qbak_file *f, void *buf, size_t count, uint64_t offset)
{
  struct s3_reader *r = f->impl;
  if (offset >= r->size || count == 0)
    return 0;
  if (count > r->size - offset)
    count = (size_t) (r->size - offset);
  if (count > S3_READ_BLOCK) {
    ssize_t got = s3_get_range (r->c, r->okey, offset, count, buf);
    return got < 0 ? QBAK_FILE_ERROR_SET : got;
  }
  size_t done = 0;
  while (done < count) {
    uint64_t pos = offset + done;
    struct cached_block *b = get_block (r, pos / S3_READ_BLOCK);
    if (!b)
      return QBAK_FILE_ERROR_SET;
    size_t in = (size_t) (pos % S3_READ_BLOCK);
    if (in >= b->len)
      break;
    size_t n = b->len - in;
    if (n > count - done)
      n = count - done;
    memcpy ((unsigned char *) buf + done, b->data + in, n);
    done += n;
  }
  return (ssize_t) done;
}

static int64_t
reader_size (struct qbak_file *f)
{
  return (int64_t) ((struct s3_reader *) f->impl)->size;
}

static void
reader_close (struct qbak_file *f)
{
  struct s3_reader *r = f->impl;
  if (!r)
    return;
  for (unsigned i = 0; i < S3_READ_BLOCKS; i++)
    free (r->blocks[i].data);
  free (r->ahead);
  free (r->okey);
  s3_client_free (r->c);
  free (r);
}

/* Writes, truncates and holes are left out: the generic layer refuses
 * them (STATUS_USAGE).  Extents are left out too: every byte is data. */
static const struct qbak_file_ops reader_ops = {
  .name = "s3",
  .pread = reader_pread,
  .size = reader_size,
  .close = reader_close,
};

static struct qbak_file *
s3obj_open (struct storage *st, const char *key)
{
  struct s3_reader *r = calloc (1, sizeof *r);
  if (!r) {
    set_nomem ();
    return NULL;
  }
  char *path = NULL;
  struct s3_object_info info;
  int found;
  if (!(r->okey = storage_s3_object_key (st, key)) ||
      !(path = object_path (st, key)) ||
      !(r->c = s3_client_new (storage_s3_config (st))) ||
      (found = s3_head (r->c, r->okey, &info)) < 0) {
    if (!r->c && r->okey && path)
      set_nomem ();
    struct qbak_file tmp = { .impl = r };
    reader_close (&tmp);
    free (path);
    return NULL;
  }
  if (found == 0) {
    qbak_internal_error_errno_only (STATUS_INVALID, ENOENT,
                                    "%s: no such object", path);
    struct qbak_file tmp = { .impl = r };
    reader_close (&tmp);
    free (path);
    return NULL;
  }
  r->size = info.size;
  struct qbak_file *f = qbak_file_new (&reader_ops, r, path, false);
  free (path);
  return f;
}

/* ---- writing ----------------------------------------------------------- */

struct s3_writer {
  struct storage *st;
  struct s3_client *c;          /* HEAD checks and the single PUT */
  char *key;                    /* the repository key */
  char *okey;                   /* the bucket key */
  unsigned char *head;          /* the first HEAD bytes: part 1 */
  uint64_t size;                /* highest byte written, or truncated to */
  uint64_t sent;                /* bytes before this are handed over */
  unsigned number;              /* the part being filled (2, 3, ...) */
  unsigned char *part;          /* its bytes, from SENT; zero past SIZE */
  size_t part_cap;
  struct s3_upload *u;          /* started with the first part handed */
  bool failed;                  /* a part failed: the upload is lost */
  bool finished;                /* committed or aborted */
  struct qbak_saved_error failure;
};

static uint64_t
part_len (unsigned number)
{
  unsigned doublings = (number - 2) / PARTS_PER_DOUBLING;
  return PART_BASE << doublings;
}

/* The part being filled spans [SENT, part_end). */
static uint64_t
part_end (struct s3_writer *w)
{
  return w->sent + part_len (w->number);
}

/* Report the failure that lost the upload again: it is final. */
static void
report_failure (struct s3_writer *w, struct qbak_file *f)
{
  if (w->failure.msg)
    qbak_internal_error_errno_only (w->failure.status, w->failure.errnum,
                                    "%s", w->failure.msg);
  else
    set_io_error (EIO, "%s: uploading failed", f->path);
}

static void
record_failure (struct s3_writer *w)
{
  if (w->failed)
    return;
  w->failed = true;
  qbak_error_save (&w->failure);
}

/* Hand the part being filled over (LEN bytes of it) and start the next. */
static int
send_part (struct s3_writer *w, size_t len)
{
  if (!w->u && !(w->u = s3_upload_start (storage_s3_config (w->st),
                                         w->okey, UPLOAD_PARALLEL))) {
    record_failure (w);
    return -1;
  }
  if (s3_upload_part (w->u, w->number, w->part, len) < 0) {
    record_failure (w);
    return -1;
  }
  w->sent += len;
  w->number++;
  memset (w->part, 0, len);
  return 0;
}

/* Make the part buffer fit the part being filled. */
static int
part_buffer (struct s3_writer *w)
{
  if (w->number > S3_MAX_PARTS) {
    set_usage_error ("s3 object %s: more than %d parts: larger than an "
                     "object can be", w->okey, S3_MAX_PARTS);
    return -1;
  }
  size_t want = (size_t) part_len (w->number);
  if (w->part_cap >= want)
    return 0;
  free (w->part);
  w->part_cap = 0;
  if (!(w->part = calloc (1, want))) {
    set_nomem ();
    return -1;
  }
  w->part_cap = want;
  return 0;
}

static ssize_t
writer_pwrite (struct qbak_file *f, const void *buf, size_t count,
               uint64_t offset)
{
  struct s3_writer *w = f->impl;
  if (w->finished) {
    set_usage_error ("%s: writing after the object was committed or "
                     "aborted", f->path);
    return QBAK_FILE_ERROR_SET;
  }
  if (w->failed) {
    report_failure (w, f);
    return QBAK_FILE_ERROR_SET;
  }
  const unsigned char *src = buf;
  uint64_t end = offset + count;
  uint64_t tail = offset > HEAD ? offset : HEAD;
  if (end > HEAD && tail < w->sent) {
    set_usage_error ("%s: writing at offset %" PRIu64 ", before the %"
                     PRIu64 " bytes already uploaded: rewriting data "
                     "past the first %u bytes of a file is not supported "
                     "on object storage", f->path, tail, w->sent, HEAD);
    return QBAK_FILE_ERROR_SET;
  }
  if (offset < HEAD) {
    size_t n = (size_t) ((end < HEAD ? end : HEAD) - offset);
    memcpy (w->head + offset, src, n);
  }
  uint64_t pos = tail;
  while (pos < end) {
    if (part_buffer (w) < 0)
      return QBAK_FILE_ERROR_SET;
    uint64_t pend = part_end (w);
    if (pos >= pend) {
      /* Written past this part: it is complete (gaps are zeroes). */
      if (send_part (w, (size_t) (pend - w->sent)) < 0)
        return QBAK_FILE_ERROR_SET;
      continue;
    }
    size_t n = (size_t) ((end < pend ? end : pend) - pos);
    memcpy (w->part + (pos - w->sent), src + (pos - offset), n);
    pos += n;
  }
  if (end > w->size)
    w->size = end;
  return (ssize_t) count;
}

/* Nothing is durable before the commit: an upload's failure is final,
 * so a flush reports one met so far, and succeeds otherwise. */
static int
writer_flush (struct qbak_file *f)
{
  struct s3_writer *w = f->impl;
  if (w->failed) {
    report_failure (w, f);
    return QBAK_FILE_ERROR_SET;
  }
  return 0;
}

static int64_t
writer_size (struct qbak_file *f)
{
  return (int64_t) ((struct s3_writer *) f->impl)->size;
}

/* Growing reserves zeroes; shrinking cuts only what was not sent. */
static int
writer_truncate (struct qbak_file *f, uint64_t size)
{
  struct s3_writer *w = f->impl;
  if (w->finished) {
    set_usage_error ("%s: resizing after the object was committed or "
                     "aborted", f->path);
    return QBAK_FILE_ERROR_SET;
  }
  if (size < w->size) {
    if (size < w->sent) {
      set_usage_error ("%s: shrinking to %" PRIu64 " bytes, below the %"
                       PRIu64 " bytes already uploaded, is not supported "
                       "on object storage", f->path, size, w->sent);
      return QBAK_FILE_ERROR_SET;
    }
    /* Keep everything past the size zero, as a grown file reads. */
    if (size < HEAD)
      memset (w->head + size, 0,
              (size_t) ((w->size < HEAD ? w->size : HEAD) - size));
    if (w->part && w->size > w->sent) {
      uint64_t from = size > w->sent ? size : w->sent;
      uint64_t to = w->size < part_end (w) ? w->size : part_end (w);
      if (to > from)
        memset (w->part + (from - w->sent), 0, (size_t) (to - from));
    }
  }
  w->size = size;
  return 0;
}

static void
writer_close (struct qbak_file *f)
{
  struct s3_writer *w = f->impl;
  if (!w)
    return;
  /* Closed uncommitted: nothing may appear, and no upload linger. */
  s3_upload_cancel (w->u);
  s3_client_free (w->c);
  free (w->key);
  free (w->okey);
  free (w->head);
  free (w->part);
  free (w->failure.msg);
  free (w);
}

/* No pread (nothing written is read back), no holes, no extents. */
static const struct qbak_file_ops writer_ops = {
  .name = "s3",
  .pwrite = writer_pwrite,
  .flush = writer_flush,
  .size = writer_size,
  .truncate = writer_truncate,
  .close = writer_close,
};

static struct qbak_file *
s3obj_create (struct storage *st, const char *key)
{
  struct s3_writer *w = calloc (1, sizeof *w);
  if (!w) {
    set_nomem ();
    return NULL;
  }
  w->st = st;
  w->sent = HEAD;
  w->number = 2;
  char *path = NULL;
  struct s3_object_info info;
  int found = -1;
  bool ok = (w->key = strdup (key)) && (w->head = calloc (1, HEAD)) &&
    (path = object_path (st, key));
  if (!ok)
    set_nomem ();
  else if (!(w->okey = storage_s3_object_key (st, key)))
    ok = false;
  else if (!(w->c = s3_client_new (storage_s3_config (st)))) {
    set_nomem ();
    ok = false;
  }
  else if ((found = s3_head (w->c, w->okey, &info)) != 0) {
    if (found == 1)
      set_exists_error ("%s: exists already and is never replaced", path);
    ok = false;
  }
  if (!ok) {
    struct qbak_file tmp = { .impl = w };
    writer_close (&tmp);
    free (path);
    return NULL;
  }
  struct qbak_file *f = qbak_file_new (&writer_ops, w, path, true);
  free (path);
  return f;
}

static struct s3_writer *
own_writer (struct qbak_file *f)
{
  if (f->ops != &writer_ops) {
    set_usage_error ("%s: not an object being written on S3", f->path);
    return NULL;
  }
  struct s3_writer *w = f->impl;
  if (w->finished) {
    set_usage_error ("%s: committed or aborted already", f->path);
    return NULL;
  }
  return w;
}

static int
commit_upload (struct storage *st, struct s3_writer *w)
{
  if (!w->u && w->size <= HEAD)
    return storage_put_once (st, w->key, w->head, (size_t) w->size);
  /* Everything past the head that is still here, then the head. */
  while (w->sent < w->size) {
    uint64_t left = w->size - w->sent;
    uint64_t plen = part_len (w->number);
    if (part_buffer (w) < 0 ||
        send_part (w, (size_t) (left < plen ? left : plen)) < 0)
      return -1;
  }
  struct s3_object_info info;
  int found = s3_head (w->c, w->okey, &info);
  if (found == 1)
    set_exists_error ("%s/%s: was created by someone else while this was "
                      "written; it is never replaced", st->location, w->key);
  if (found != 0 || s3_upload_part (w->u, 1, w->head, HEAD) < 0)
    return -1;
  struct s3_upload *u = w->u;
  w->u = NULL;
  return s3_upload_finish (u);
}

static int
s3obj_commit (struct storage *st, struct qbak_file *f)
{
  struct s3_writer *w = own_writer (f);
  if (!w)
    return -1;
  if (w->failed || f->flush_failed) {
    report_failure (w, f);
    return -1;
  }
  int r = commit_upload (st, w);
  if (r == 0)
    w->finished = true;
  else {
    /* Not retried: the caller aborts. */
    record_failure (w);
    s3_upload_cancel (w->u);
    w->u = NULL;
  }
  return r;
}

static int
s3obj_abort (struct storage *st, struct qbak_file *f)
{
  (void) st;
  struct s3_writer *w = own_writer (f);
  if (!w)
    return -1;
  w->finished = true;
  s3_upload_cancel (w->u);
  w->u = NULL;
  return 0;
}

/* An upload of a repository's disk file: "disks/NAME/FILE" under the
 * repository's prefix, and nothing deeper (a prefix may hold another
 * repository further down, whose uploads are not this one's). */
struct unfinished_ctx {
  struct storage *st;
  struct s3_client *c;
  size_t base_len;
  int failed;
};

static int
drop_one (const char *okey, const char *upload_id, void *opaque)
{
  struct unfinished_ctx *u = opaque;
  const char *key = okey + u->base_len;
  const char *name = key + strlen ("disks/");
  const char *slash = strchr (name, '/');
  if (strlen (okey) <= u->base_len || strncmp (key, "disks/", 6) != 0 ||
      !slash || strchr (slash + 1, '/') || !storage_key_valid (key))
    return 0;
  if (s3_mpu_abort (u->c, okey, upload_id) < 0) {
    u->failed = -1;
    return 1;
  }
  return 0;
}

static int
s3obj_drop_unfinished (struct storage *st)
{
  char *key = storage_s3_object_key (st, "disks"), *prefix = NULL;
  int r = -1;
  if (key && asprintf (&prefix, "%s/", key) < 0) {
    prefix = NULL;
    set_nomem ();
  }
  if (prefix) {
    struct unfinished_ctx u = {
      st, storage_s3_client (st), strlen (prefix) - strlen ("disks/"), 0
    };
    r = s3_mpu_list (u.c, prefix, drop_one, &u);
    if (u.failed)
      r = -1;
    if (r < 0)
      qbak_internal_error_prefix ("%s: removing the unfinished uploads of "
                                  "interrupted backups", st->location);
  }
  free (key);
  free (prefix);
  return r < 0 ? -1 : 0;
}

const struct storage_object_ops s3_object_ops = {
  .in_place = false,
  .open = s3obj_open,
  .create = s3obj_create,
  .commit = s3obj_commit,
  .abort = s3obj_abort,
  .drop_unfinished = s3obj_drop_unfinished,
};
