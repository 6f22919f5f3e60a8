/* The copy loop of a backup job: walk the copy set with find-next-set,
 * coalesce contiguous clusters into large requests, skip what the chain
 * already says is zero, detect zero clusters in what is read, and stream
 * the rest to the target.  Each cluster leaves the copy set once the
 * target has accepted it, so a failed job knows what it did not copy. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "common/iszero.h"
#include "lib/job-internal.h"

/* Write with retries for transient target errors (the writer's state is
 * unchanged by a failed call). */
static int
write_retrying (struct copy_job *j, bool zero, uint64_t off, const void *buf,
                uint64_t len)
{
  for (unsigned attempt = 0;; attempt++) {
    int r = zero ? target_zero (&j->tgt, off, len)
                 : target_write (&j->tgt, off, buf, (size_t) len);
    if (r == 0 || attempt >= j->o->retries ||
        error_get_status () != STATUS_IO)
      return r;
    unsigned ms = 100u << (attempt < 6 ? attempt : 6);
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    nanosleep (&ts, NULL);
  }
}

/* A request's data is written and hashed a slice at a time: each slice is
 * hashed right after its write has read it, while it is in the CPU's
 * cache.  Hashing the whole 8 MiB request after its write read it back
 * from memory and made a full backup 13% slower than without hashing;
 * in slices it costs about what the hash alone does (within 2% in wall
 * time).  A hashing thread was tried too: 4% slower than none, its reads
 * of another CPU's data costing more than the hash. */
#define HASH_SLICE_BYTES (256u << 10)

/* Put BUF's [POS, +LEN) (LEN <= COPY_REQUEST_BYTES) into the target, and
 * its hashes into the manifest once every slice is written, so that a
 * failed request leaves the manifest as it was. */
static int
put_data_hashed (struct copy_job *j, uint64_t pos, const uint8_t *buf,
                 uint64_t len)
{
  uint64_t slice = HASH_SLICE_BYTES > j->cs ? HASH_SLICE_BYTES : j->cs;
  for (uint64_t off = 0; off < len; off += slice) {
    uint64_t n = len - off < slice ? len - off : slice;
    if (write_retrying (j, false, pos + off, buf + off, n) < 0)
      return -1;
    manifest_hash_clusters (buf + off, n, j->cs,
                            j->put_hashes + off / j->cs);
  }
  return manifest_writer_hashes (j->manifest, pos / j->cs, j->put_hashes,
                                 (len + j->cs - 1) / j->cs);
}

int
job_put (struct copy_job *j, uint64_t pos, const uint8_t *buf, uint64_t len,
         const uint64_t *hashes)
{
  if (j->manifest && buf && !hashes && len <= COPY_REQUEST_BYTES)
    return put_data_hashed (j, pos, buf, len);
  if (write_retrying (j, buf == NULL, pos, buf, len) < 0)
    return -1;
  if (!j->manifest)
    return 0;
  if (!buf)
    return manifest_writer_zero (j->manifest, pos, len);
  if (hashes)
    return manifest_writer_hashes (j->manifest, pos / j->cs, hashes,
                                   (len + j->cs - 1) / j->cs);
  /* Hashed here, while the data is in memory: never a second read. */
  return manifest_writer_data (j->manifest, pos, buf, len);
}

/* Emit BUF, holding guest [POS, +N), as runs of data and zero clusters. */
static int
emit (struct copy_job *j, uint64_t pos, const uint8_t *buf, uint64_t n)
{
  uint64_t cs = j->cs, i = 0;
  while (i < n) {
    uint64_t c = n - i < cs ? n - i : cs;
    bool z = is_zero (buf + i, c);
    uint64_t k = i + c;
    while (k < n) {
      uint64_t c2 = n - k < cs ? n - k : cs;
      if (is_zero (buf + k, c2) != z)
        break;
      k += c2;
    }
    if (job_put (j, pos + i, z ? NULL : buf + i, k - i, NULL) < 0)
      return -1;
    if (z)
      j->res->zero_clusters += (k - i + cs - 1) / cs;
    else {
      j->res->bytes_copied += k - i;
      j->res->clusters_copied += (k - i + cs - 1) / cs;
    }
    dirty_bitmap_clear (j->copy_set, pos + i, k - i);
    i = k;
  }
  return 0;
}

/* Copy [OFF, +LEN) (cluster aligned, inside one copy-set run).  -1 on
 * error; IMAGE_ERR_BUG (image_read's) when the source broke its own
 * rules, which no skip or retry can get past. */
static int
copy_range (struct copy_job *j, uint64_t off, uint64_t len)
{
  uint64_t cs = j->cs, end = off + len, pos = off;

  if ((j->place && j->place->reference) || j->ref)
    return job_copy_range_checksums (j, off, len);
  while (pos < end) {
    struct chain_extent e;
    if (image_chain_status (j->img, pos, end - pos, &e) < 0)
      return -1;
    uint64_t n = e.length;
    if (e.zero && !e.data) {
      /* Known zero: no read.  Whole clusters only; a partial one is read
       * below. */
      uint64_t last = (pos + n) / cs * cs;
      if (pos + n == j->img->size)
        last = pos + n;
      if (last > pos) {
        if (job_put (j, pos, NULL, last - pos, NULL) < 0)
          return -1;
        j->res->zero_clusters += (last - pos + cs - 1) / cs;
        dirty_bitmap_clear (j->copy_set, pos, last - pos);
        pos = last;
        continue;
      }
    }
    /* Data from several layers in a row is read and written as one run:
     * one target write, not one per layer the chain switches to. */
    while (pos + n < end) {
      struct chain_extent next;
      if (image_chain_status (j->img, pos + n, end - pos - n, &next) < 0)
        return -1;
      if (next.zero && !next.data)
        break;
      n += next.length;
    }
    /* Read up to the next cluster boundary past this extent. */
    uint64_t rend = (pos + n + cs - 1) / cs * cs;
    if (rend > end)
      rend = end;
    n = rend - pos;
    int r = image_read (j->img, j->buf, n, pos);
    if (r < 0)
      return r;
    if (emit (j, pos, j->buf, n) < 0)
      return -1;
    pos += n;
  }
  return 0;
}

/* On-error ignore: redo a failed range cluster by cluster, skipping the
 * clusters that fail (they stay in the copy set); a bug stops the job. */
static int
copy_range_ignoring (struct copy_job *j, uint64_t off, uint64_t len,
                     char **first_error)
{
  for (uint64_t pos = off; pos < off + len; pos += j->cs) {
    uint64_t n = off + len - pos < j->cs ? off + len - pos : j->cs;
    if (!dirty_bitmap_test (j->copy_set, pos))
      continue;
    int r = copy_range (j, pos, n);
    if (r == IMAGE_ERR_BUG)
      return -1;
    if (r < 0) {
      if (!*first_error)
        *first_error = strdup (error_get_message ());
      j->res->clusters_failed++;
    }
  }
  return 0;
}

int
job_copy (struct copy_job *j, volatile int *cancel, qbak_progress_cb progress,
          void *opaque)
{
  uint64_t size = j->img->size, done = 0, total = j->res->bytes_planned;
  char *first_error = NULL;
  int64_t off = dirty_bitmap_next_dirty (j->copy_set, 0);

  while (off >= 0) {
    int64_t next = dirty_bitmap_next_clean (j->copy_set, (uint64_t) off);
    uint64_t run_end = next < 0 ? size : (uint64_t) next;
    for (uint64_t pos = (uint64_t) off; pos < run_end;) {
      if (cancel && *cancel) {
        free (first_error);
        qbak_internal_error (STATUS_CANCELLED, 0, "%s: backup "
                             "cancelled", j->o->target);
        return -1;
      }
      uint64_t n = run_end - pos < COPY_REQUEST_BYTES ? run_end - pos
                                                      : COPY_REQUEST_BYTES;
      if (copy_range (j, pos, n) < 0) {
        if (j->o->on_error != QBAK_ON_ERROR_IGNORE ||
            copy_range_ignoring (j, pos, n, &first_error) < 0) {
          free (first_error);
          return -1;
        }
      }
      pos += n;
      done += n;
      if (progress)
        progress (done < total ? done : total, total, opaque);
      if (job_maybe_checkpoint (j) < 0) {
        free (first_error);
        return -1;
      }
    }
    if (next < 0)
      break;
    off = dirty_bitmap_next_dirty (j->copy_set, run_end);
  }
  if (j->res->clusters_failed) {
    qbak_internal_error (STATUS_IO, 0, "%s: %" PRIu64 " clusters could "
                         "not be copied (first error: %s)", j->o->target,
                         j->res->clusters_failed,
                         first_error ? first_error : "?");
    free (first_error);
    return -1;
  }
  free (first_error);
  return 0;
}
