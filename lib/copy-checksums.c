/* The copy loop of a checksum-based incremental: when no bitmap says what
 * changed (a raw disk, a lost or in_use bitmap), every cluster of the
 * copy set is read and hashed, and only those that differ from what the
 * previous point reads as (the view of its chain's manifests in a
 * repository; for `copy --sync checksums`, the backing file's chain read
 * alongside and compared byte for byte) are written.
 * A cluster that now reads as zeroes is written as a zero cluster where
 * the previous point had data.  The hashes computed for the comparison
 * go into the new target's manifest as they are: each cluster is read
 * and hashed once. */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/iszero.h"
#include "lib/job-internal.h"

/* What to do with one cluster. */
enum action { KEEP, PUT_DATA, PUT_ZERO };

static int
reference (struct copy_job *j, uint64_t index, enum manifest_state *state,
           uint64_t *hash)
{
  if (manifest_view_get (j->place->reference, index, state, hash) < 0) {
    qbak_internal_error_prefix ("%s: the previous point's manifests",
                                j->o->target);
    return -1;
  }
  return 0;
}

/* Put the run [FROM, TO) of clusters that share ACTION (BUF holds the
 * data of the request starting at BASE). */
static int
put_run (struct copy_job *j, enum action action, uint64_t from, uint64_t to,
         uint64_t base, const uint8_t *buf)
{
  uint64_t cs = j->cs, size = j->img->size;
  uint64_t off = from * cs, end = to * cs < size ? to * cs : size;
  if (action == KEEP)
    return 0;
  if (action == PUT_ZERO) {
    if (job_put (j, off, NULL, end - off, NULL) < 0)
      return -1;
    j->res->zero_clusters += to - from;
    return 0;
  }
  if (job_put (j, off, buf + (off - base), end - off,
               j->hashes + (off - base) / cs) < 0)
    return -1;
  j->res->bytes_copied += end - off;
  j->res->clusters_copied += to - from;
  return 0;
}

/* The backing chain's [POS, +N) into the reference buffer; zeroes past
 * its end (a disk that grew since). */
static int
read_reference (struct copy_job *j, uint64_t pos, uint64_t n)
{
  uint64_t rsize = j->ref->img->size;
  uint64_t have = pos >= rsize ? 0 : rsize - pos < n ? rsize - pos : n;
  if (have) {
    int r = image_read (j->ref->img, j->ref_buf, have, pos);
    if (r < 0) {
      qbak_internal_error_prefix ("%s: reading the backing file",
                                  j->o->target);
      return -1;
    }
  }
  memset (j->ref_buf + have, 0, n - have);
  return 0;
}

int
job_copy_range_checksums (struct copy_job *j, uint64_t off, uint64_t len)
{
  uint64_t cs = j->cs, end = off + len, pos = off, size = j->img->size;

  while (pos < end) {
    struct chain_extent e;
    if (image_chain_status (j->img, pos, end - pos, &e) < 0)
      return -1;
    /* Whole clusters: an extent that ends inside one is read. */
    uint64_t n = e.length;
    uint64_t rend = (pos + n) / cs * cs;
    if (pos + n == size || rend <= pos)
      rend = (pos + n + cs - 1) / cs * cs;
    if (rend > end)
      rend = end;
    bool known_zero = e.zero && !e.data && (pos + n >= rend);
    n = rend - pos;
    if (!known_zero) {
      int r = image_read (j->img, j->buf, n, pos);
      if (r < 0)
        return r;
    }
    if (j->ref && read_reference (j, pos, n) < 0)
      return -1;
    uint64_t first = pos / cs, count = (n + cs - 1) / cs;
    uint64_t run_from = first;
    enum action run = KEEP;
    for (uint64_t i = 0; i < count; i++) {
      uint64_t c = first + i, coff = i * cs;
      size_t clen = n - coff < cs ? (size_t) (n - coff) : cs;
      enum manifest_state st;
      uint64_t ref;
      enum action a;
      bool zero = known_zero || is_zero (j->buf + coff, clen);
      if (j->ref) {
        /* The previous backup's bytes are at hand: no hash needed to
         * compare, only for the manifest (none outside a repository). */
        bool same = zero ? is_zero (j->ref_buf + coff, clen)
                         : memcmp (j->buf + coff, j->ref_buf + coff, clen) == 0;
        a = same ? KEEP : zero ? PUT_ZERO : PUT_DATA;
        if (a == PUT_DATA)
          j->hashes[i] = manifest_hash (j->buf + coff, clen);
      }
      else if (reference (j, c, &st, &ref) < 0)
        return -1;
      else if (zero)
        a = st == MANIFEST_CLUSTER_ZERO ? KEEP : PUT_ZERO;
      else {
        j->hashes[i] = manifest_hash (j->buf + coff, clen);
        a = st == MANIFEST_CLUSTER_DATA && ref == j->hashes[i] ? KEEP
                                                               : PUT_DATA;
      }
      if (a != run) {
        if (put_run (j, run, run_from, c, pos, j->buf) < 0)
          return -1;
        run = a;
        run_from = c;
      }
    }
    if (put_run (j, run, run_from, first + count, pos, j->buf) < 0)
      return -1;
    dirty_bitmap_clear (j->copy_set, pos, n);
    pos += n;
  }
  return 0;
}
