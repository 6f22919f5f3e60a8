/* A backup file's data against its manifest (verify-file.h).
 *
 * The file is read as its own layer, never through its backing file, in
 * the manifest's order, which is the guest order: each data cluster the
 * manifest lists must be in the file and hash as listed, each zero
 * cluster must read as zeroes in the file, and nothing else may be
 * allocated in it (an incremental's cluster that the manifest does not
 * list would hide its backing file's).  Contiguous data is read in
 * requests of 256 KiB, each hashed as soon as it is read, so a
 * verification costs about one sequential read of the file plus the hash.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/error.h"
#include "common/iszero.h"
#include "formats/manifest.h"
#include "lib/verify-file.h"

/* One request.  Its data is hashed right after the copy from the page
 * cache, while it is still in the CPU's cache: with requests of 8 MiB the
 * hash read it back from memory, which cost 15-25% more CPU.  Larger
 * than 128 KiB (what cat reads) so that the calls cost no more than
 * cat's. */
#define READ_BYTES (256u << 10)
#define SAMPLE_BYTES (1u << 20)         /* one sampled group */

struct data_check {
  struct image *img;
  const struct verify_file_expect *e;
  const struct verify_sink *sink;
  struct verify_file_result *res;
  uint64_t cs;                  /* cluster size */
  uint64_t size;                /* virtual size */
  uint8_t *buf;
  unsigned problems;            /* told so far */
  uint64_t more;                /* clusters past the cap */
  uint64_t rng;
};

/* A problem at guest offset OFFSET, told while under the cap. */
static void
bad_cluster (struct data_check *c, uint64_t offset, const char *what)
{
  c->res->failed = true;
  if (c->problems >= VERIFY_PROBLEMS_MAX) {
    c->more++;
    return;
  }
  c->problems++;
  verify_problem (c->sink, c->res, true, offset, "%s", what);
}

static bool
sampled_out (struct data_check *c)
{
  unsigned pct = c->e->sample_percent;
  if (pct == 0 || pct >= 100)
    return false;
  /* xorshift64: a share, not a secret. */
  c->rng ^= c->rng << 13;
  c->rng ^= c->rng >> 7;
  c->rng ^= c->rng << 17;
  return c->rng % 100 >= pct;
}

/* Bytes of cluster INDEX inside the disk. */
static uint64_t
cluster_bytes (const struct data_check *c, uint64_t index)
{
  uint64_t off = index * c->cs;
  return c->size - off < c->cs ? c->size - off : c->cs;
}

/* Read [FIRST, +N) clusters of the layer (all LAYER_DATA or LAYER_ZERO;
 * a zero extent reads as zeroes) and hand each to CHECK. */
static int
read_clusters (struct data_check *c, uint64_t first, uint64_t n,
               void (*check) (struct data_check *c, uint64_t index,
                              const uint8_t *p, uint64_t len, void *arg),
               void *arg)
{
  uint64_t group = (c->e->sample_percent ? SAMPLE_BYTES : READ_BYTES) / c->cs;
  uint64_t per = READ_BYTES / c->cs;
  if (group == 0)
    group = 1;
  if (per == 0)
    per = 1;
  while (n > 0) {
    uint64_t g = n < group ? n : group;
    if (verify_cancelled (c->sink, c->e->key))
      return -1;
    if (!sampled_out (c)) {
      for (uint64_t at = first; at < first + g;) {
        uint64_t k = first + g - at < per ? first + g - at : per;
        uint64_t off = at * c->cs;
        uint64_t len = (at + k) * c->cs > c->size ? c->size - off
                                                  : k * c->cs;
        if (c->img->ops->read_layer (c->img, c->buf, len, off) < 0) {
          bad_cluster (c, off, error_get_message ());
          error_clear ();
          return 0;
        }
        if (c->sink->progress)
          c->sink->progress (c->sink->opaque, len);
        for (uint64_t i = 0; i < k; i++)
          check (c, at + i, c->buf + i * c->cs, cluster_bytes (c, at + i),
                 arg);
        c->res->clusters_checked += k;
        at += k;
      }
    }
    first += g;
    n -= g;
  }
  return 0;
}

static void
check_hash (struct data_check *c, uint64_t index, const uint8_t *p,
            uint64_t len, void *arg)
{
  const struct manifest_run *run = arg;
  uint64_t want = run->hashes[index - run->first];
  if (manifest_hash (p, len) != want)
    bad_cluster (c, index * c->cs, "data differs from its manifest "
                 "(bit rot, or another file's data)");
}

static void
check_zero (struct data_check *c, uint64_t index, const uint8_t *p,
            uint64_t len, void *arg)
{
  (void) arg;
  if (!is_zero (p, len))
    bad_cluster (c, index * c->cs, "holds data where its manifest says "
                 "zeroes");
}

/* The layer over [FIRST, +N) clusters, one extent at a time: STATE and
 * the extent's clusters into *K.  -1 with the problem told (a layer that
 * cannot be described is the file's problem) and *K the rest. */
static int
layer_extent (struct data_check *c, uint64_t first, uint64_t n,
              enum layer_state *state, uint64_t *k)
{
  struct layer_extent ext;
  uint64_t off = first * c->cs;
  uint64_t len = (first + n) * c->cs > c->size ? c->size - off : n * c->cs;
  if (c->img->ops->block_status (c->img, off, len, &ext) < 0) {
    bad_cluster (c, off, error_get_message ());
    error_clear ();
    *k = n;
    return -1;
  }
  *k = (ext.length + c->cs - 1) / c->cs;
  if (*k == 0 || *k > n)
    *k = n;
  *state = ext.state;
  return 0;
}

/* Clusters [FIRST, +N) that the manifest does not list: nothing there, or
 * (a full's) zeroes, which read the same as nothing. */
static int
check_gap (struct data_check *c, uint64_t first, uint64_t n)
{
  while (n > 0) {
    enum layer_state st;
    uint64_t k;
    if (layer_extent (c, first, n, &st, &k) == 0) {
      if (st == LAYER_DATA)
        bad_cluster (c, first * c->cs, "data in the file that its manifest "
                     "does not list");
      else if (st == LAYER_ZERO && c->e->parent)
        bad_cluster (c, first * c->cs, "zeroes in the file that its "
                     "manifest does not list (they hide its backing file)");
    }
    first += k;
    n -= k;
  }
  return 0;
}

static int
check_run (struct data_check *c, const struct manifest_run *run)
{
  uint64_t first = run->first, n = run->count;
  while (n > 0) {
    enum layer_state st;
    uint64_t k;
    if (layer_extent (c, first, n, &st, &k) < 0) {
      first += k;
      n -= k;
      continue;
    }
    if (st == LAYER_UNALLOCATED && (run->kind == MANIFEST_DATA ||
                                    c->e->parent))
      bad_cluster (c, first * c->cs, "not in the file, but its manifest "
                   "lists it");
    else if (run->kind == MANIFEST_DATA) {
      /* Zero clusters are hashed as read (zeroes). */
      if (read_clusters (c, first, k, check_hash, (void *) run) < 0)
        return -1;
    }
    else if (st == LAYER_DATA &&
             read_clusters (c, first, k, check_zero, NULL) < 0)
      return -1;
    first += k;
    n -= k;
  }
  return 0;
}

static int
compare (struct data_check *c, struct manifest_reader *mr)
{
  uint64_t n_clusters = (c->size + c->cs - 1) / c->cs, pos = 0;
  struct manifest_run run;
  int r;
  while ((r = manifest_reader_next (mr, &run)) == 1) {
    if (run.first < pos || run.count > n_clusters ||
        run.first > n_clusters - run.count) {
      verify_problem (c->sink, c->res, false, 0, "its manifest lists "
                      "clusters out of order or past the end of the disk");
      return 0;
    }
    if (check_gap (c, pos, run.first - pos) < 0 || check_run (c, &run) < 0)
      return -1;
    pos = run.first + run.count;
  }
  if (r < 0) {
    if (error_get_status () == STATUS_IO && error_get_errno () == ENOMEM)
      return -1;
    verify_problem (c->sink, c->res, false, 0, "%s", error_get_message ());
    error_clear ();
    return 0;
  }
  return check_gap (c, pos, n_clusters - pos);
}

int
verify_file_data (struct image *img, const struct verify_file_expect *e,
                  struct qbak_file *manifest, const struct verify_sink *sink,
                  struct verify_file_result *res)
{
  char digest[MANIFEST_DIGEST_HEX + 1];
  if (manifest_digest_of_file (manifest, digest) < 0) {
    qbak_file_close (manifest);
    verify_problem (sink, res, false, 0, "%s", error_get_message ());
    error_clear ();
    return 0;
  }
  if (strcmp (digest, e->manifest_digest) != 0) {
    qbak_file_close (manifest);
    verify_problem (sink, res, false, 0, "its manifest %s has digest %s, "
                    "its record says %s", e->manifest, digest,
                    e->manifest_digest);
    return 0;
  }
  /* The file just hashed is the one read: no name is looked up twice. */
  struct manifest_reader *mr = manifest_reader_open_file (manifest);
  if (!mr) {
    verify_problem (sink, res, false, 0, "%s", error_get_message ());
    error_clear ();
    return 0;
  }
  int ret = 0;
  if (manifest_reader_cluster_size (mr) != img->cluster_size ||
      manifest_reader_virtual_size (mr) != img->size) {
    verify_problem (sink, res, false, 0, "its manifest is for clusters of %"
                    PRIu32 " bytes and %" PRIu64 " bytes of disk, the file "
                    "has %" PRIu32 " and %" PRIu64,
                    manifest_reader_cluster_size (mr),
                    manifest_reader_virtual_size (mr), img->cluster_size,
                    img->size);
    goto out;
  }
  struct data_check c = {
    .img = img, .e = e, .sink = sink, .res = res, .cs = img->cluster_size,
    .size = img->size,
  };
  if (getrandom (&c.rng, sizeof c.rng, 0) != (ssize_t) sizeof c.rng)
    c.rng = (uint64_t) time (NULL);
  c.rng |= 1;
  uint64_t bytes = c.cs > READ_BYTES ? c.cs : READ_BYTES;
  if (!(c.buf = malloc (bytes))) {
    set_nomem ();
    ret = -1;
    goto out;
  }
  ret = compare (&c, mr);
  if (ret == 0 && c.more)
    verify_problem (sink, res, false, 0, "and %" PRIu64 " more cluster%s "
                    "differ", c.more, c.more == 1 ? "" : "s");
  free (c.buf);
 out:
  manifest_reader_free (mr);
  return ret;
}
