/* A backup file's data against its manifest (verify-file.h).
 *
 * The file is read as its own layer, never through its backing file, in
 * the manifest's order, which is the guest order: each data cluster the
 * manifest lists must be in the file and hash as listed, each zero
 * cluster must read as zeroes in the file, and nothing else may be
 * allocated in it (an incremental's cluster that the manifest does not
 * list would hide its backing file's).  Data is read in requests of up
 * to 256 KiB of the file, each hashed as soon as it is read; clusters
 * that lie one after the other in the file (an incremental's, scattered
 * on the disk) share a request.  So a verification costs about one
 * sequential read of the file plus the hash.  For a file on the local
 * file system every other request is read and checked on a second thread
 * (lib/side-thread.h) while this one reads and checks the next: each
 * thread hashes what it read itself, while it is in its CPU's cache
 * (handing a request read on one CPU to another to hash cost more than
 * the hash).  Problems are told in guest order, on this thread.
 *
 * The file is read, never mapped: a page that cannot be read (the damage
 * verify is for) or a file truncated meanwhile by another program would
 * kill the process with SIGBUS, where a failed read is one more problem
 * to report.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/iszero.h"
#include "formats/manifest.h"
#include "lib/side-thread.h"
#include "lib/verify-file.h"

/* One request.  Its data is hashed right after the copy from the page
 * cache, while it is still in the CPU's cache: with requests of 8 MiB the
 * hash read it back from memory, which cost 15-25% more CPU.  Larger
 * than 128 KiB (what cat reads) so that the calls cost no more than
 * cat's. */
#define READ_BYTES (256u << 10)
#define SAMPLE_BYTES (1u << 20)         /* one sampled group */
/* Requests handed to a thread at once: waking a thread costs tens of
 * microseconds in a virtual machine (the other CPU may have to be woken
 * by the host), more than the hash of a 256 KiB request. */
#define BATCH_BYTES (4u << 20)
#define BATCH_READS 64
#define NO_HOST UINT64_MAX              /* read through the format */

/* A cluster gathered for a shared request, with what its check needs. */
struct pending {
  uint64_t index;
  uint64_t want;                /* its hash, unless zero */
  bool zero;
};

/* One request: clusters that follow each other in the file. */
struct request {
  uint64_t host, bytes;         /* where in the file, how much */
  uint64_t first, n;            /* its clusters in the batch's PEND */
  bool failed;
  char *error;                  /* why it failed (NULL: no memory to say) */
};

/* A batch of requests, read and checked (READ_AND_CHECK, on either
 * thread) one request at a time into BUF, then told (on this one). */
struct slot {
  struct qbak_file *file;
  uint64_t cs, size;
  uint8_t *buf;                 /* one request */
  struct pending *pend;
  bool *bad;                    /* per cluster: not as its manifest says */
  uint64_t n, cap;              /* clusters in PEND, room for */
  struct request reqs[BATCH_READS];
  unsigned nreqs;
  uint64_t bytes;               /* of all its requests */
};

struct data_check {
  struct image *img;
  const struct verify_file_expect *e;
  const struct verify_sink *sink;
  struct verify_file_result *res;
  uint64_t cs;                  /* cluster size */
  uint64_t size;                /* virtual size */
  uint8_t *buf;                 /* SLOTS[CUR]'s */
  uint64_t buf_bytes;
  /* Clusters that follow each other in the file, to be read at once:
   * from file offset PEND_HOST, PEND_BYTES of disk; the next request of
   * SLOTS[CUR], its clusters at PEND (in the slot's PEND). */
  struct pending *pend;
  uint64_t pend_n, pend_host, pend_bytes;
  /* A second thread, or NULL; with it, SLOTS[0] may be in its hands
   * (IN_FLIGHT), and SLOTS[1] is gathered meanwhile. */
  struct side_thread *side;
  struct slot slots[2];
  unsigned cur;
  bool in_flight;
  unsigned problems;            /* told so far */
  uint64_t more;                /* clusters past the cap */
  uint64_t rng;
};

#define DIFFERS "data differs from its manifest (bit rot, or another file's " \
  "data)"
#define NOT_ZERO "holds data where its manifest says zeroes"

/* A problem at guest offset OFFSET, told while under the cap. */
static void
tell_bad_cluster (struct data_check *c, uint64_t offset, const char *what)
{
  c->res->failed = true;
  if (c->problems >= VERIFY_PROBLEMS_MAX) {
    c->more++;
    return;
  }
  c->problems++;
  verify_problem (c->sink, c->res, true, offset, "%s", what);
}

/* Bytes of cluster INDEX inside the disk. */
static uint64_t
cluster_bytes (const struct data_check *c, uint64_t index)
{
  uint64_t off = index * c->cs;
  return c->size - off < c->cs ? c->size - off : c->cs;
}

/* Whether the LEN bytes of a cluster at P are not what its manifest says
 * (zeroes, or data of hash WANT).  Pure: either thread may call it. */
static bool
cluster_differs (const uint8_t *p, uint64_t len, bool zero, uint64_t want)
{
  return zero ? !is_zero (p, len) : manifest_hash (p, len) != want;
}

static void
check_one (struct data_check *c, uint64_t index, const uint8_t *p,
           bool zero, uint64_t want)
{
  if (cluster_differs (p, cluster_bytes (c, index), zero, want))
    tell_bad_cluster (c, index * c->cs, zero ? NOT_ZERO : DIFFERS);
}

/* Read a batch's requests and find which clusters are not as their
 * manifest says, each request hashed right after it is read, while it is
 * in this CPU's cache.  Runs on either thread: it touches nothing but the
 * slot, and leaves the error state as it found it (a read error is kept
 * in its request). */
static void
read_and_check (void *opaque)
{
  struct slot *s = opaque;
  for (unsigned r = 0; r < s->nreqs; r++) {
    struct request *q = &s->reqs[r];
    q->failed =
      qbak_file_pread_zerofill (s->file, s->buf, q->bytes, q->host) < 0;
    if (q->failed) {
      q->error = strdup (error_get_message ());
      error_clear ();
      continue;
    }
    for (uint64_t i = 0; i < q->n; i++) {
      const struct pending *p = &s->pend[q->first + i];
      uint64_t off = p->index * s->cs;
      uint64_t len = s->size - off < s->cs ? s->size - off : s->cs;
      const uint8_t *data = s->buf + i * s->cs;
      s->bad[q->first + i] = cluster_differs (data, len, p->zero, p->want);
    }
  }
}

/* Tell what READ_AND_CHECK found in S, and empty it. */
static void
tell_slot (struct data_check *c, struct slot *s)
{
  for (unsigned r = 0; r < s->nreqs; r++) {
    struct request *q = &s->reqs[r];
    if (q->failed) {
      tell_bad_cluster (c, s->pend[q->first].index * c->cs,
                        q->error ? q->error
                                 : "a read failed (no memory to say why)");
      free (q->error);
      q->error = NULL;
      continue;
    }
    if (c->sink->progress)
      c->sink->progress (c->sink->opaque, q->bytes);
    for (uint64_t i = q->first; i < q->first + q->n; i++)
      if (s->bad[i])
        tell_bad_cluster (c, s->pend[i].index * c->cs,
                          s->pend[i].zero ? NOT_ZERO : DIFFERS);
    c->res->clusters_checked += q->n;
  }
  s->nreqs = 0;
  s->n = 0;
  s->bytes = 0;
}

/* Make slot K the one gathered into. */
static void
use_slot (struct data_check *c, unsigned k)
{
  c->cur = k;
  c->buf = c->slots[k].buf;
  c->pend = c->slots[k].pend + c->slots[k].n;
}

/* Read, check and tell the batch gathered.  With a second thread, the
 * first of two batches goes to it and the second is done here meanwhile;
 * both are told in order.  Each thread keeps its own slot (the second
 * thread slot 0, this one slot 1): a buffer that moved from CPU to CPU
 * would have its cache lines moved with it on every read into it. */
static void
run_batch (struct data_check *c)
{
  struct slot *s = &c->slots[c->cur];
  if (s->nreqs == 0)
    return;
  if (c->side && !c->in_flight) {
    side_thread_run (c->side, read_and_check, s);
    c->in_flight = true;
    use_slot (c, 1);
    return;
  }
  read_and_check (s);
  if (c->in_flight) {
    side_thread_wait (c->side);
    c->in_flight = false;
    tell_slot (c, &c->slots[0]);
  }
  tell_slot (c, s);
  use_slot (c, 0);
}

/* The clusters gathered become a request of the batch; a full batch is
 * run. */
static void
check_pending (struct data_check *c)
{
  if (c->pend_n == 0)
    return;
  struct slot *s = &c->slots[c->cur];
  s->reqs[s->nreqs++] = (struct request) {
    .host = c->pend_host, .bytes = c->pend_bytes, .first = s->n,
    .n = c->pend_n,
  };
  s->n += c->pend_n;
  s->bytes += c->pend_bytes;
  c->pend_n = 0;
  c->pend = s->pend + s->n;
  if (s->nreqs == BATCH_READS || s->bytes >= BATCH_BYTES ||
      s->cap - s->n < c->buf_bytes / c->cs + 1)
    run_batch (c);
}

/* Everything gathered or on the second thread checked and told. */
static void
check_all (struct data_check *c)
{
  check_pending (c);
  run_batch (c);
  if (c->in_flight) {
    side_thread_wait (c->side);
    c->in_flight = false;
    tell_slot (c, &c->slots[0]);
    use_slot (c, 0);
  }
}

/* A problem found some other way: what was read ahead is checked first,
 * so that problems come in guest order. */
static void
bad_cluster (struct data_check *c, uint64_t offset, const char *what)
{
  check_all (c);
  tell_bad_cluster (c, offset, what);
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

/* Read [FIRST, +N) clusters of the layer (all LAYER_DATA or LAYER_ZERO;
 * a zero extent reads as zeroes) and check each: zeroes if RUN is NULL,
 * else the hash RUN lists.  HOST: where the clusters lie in the file, one
 * after the other, or NO_HOST to read them through the format. */
static int
read_clusters (struct data_check *c, uint64_t first, uint64_t n,
               uint64_t host, const struct manifest_run *run)
{
  uint64_t group = (c->e->sample_percent ? SAMPLE_BYTES : READ_BYTES) / c->cs;
  uint64_t per = READ_BYTES / c->cs, base = first;
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
        if (host != NO_HOST) {
          uint64_t h = host + (at - base) * c->cs;
          if (c->pend_n && (c->pend_host + c->pend_n * c->cs != h ||
                            c->pend_bytes + len > c->buf_bytes))
            check_pending (c);
          if (c->pend_n == 0) {
            c->pend_host = h;
            c->pend_bytes = 0;
          }
          for (uint64_t i = at; i < at + k; i++)
            c->pend[c->pend_n++] = (struct pending) {
              .index = i, .zero = !run,
              .want = run ? run->hashes[i - run->first] : 0,
            };
          c->pend_bytes += len;
          at += k;
          continue;
        }
        check_all (c);
        if (c->img->ops->read_layer (c->img, c->buf, len, off) < 0) {
          bad_cluster (c, off, error_get_message ());
          error_clear ();
          return 0;
        }
        if (c->sink->progress)
          c->sink->progress (c->sink->opaque, len);
        for (uint64_t i = 0; i < k; i++)
          check_one (c, at + i, c->buf + i * c->cs, !run,
                     run ? run->hashes[at + i - run->first] : 0);
        c->res->clusters_checked += k;
        at += k;
      }
    }
    first += g;
    n -= g;
  }
  return 0;
}

/* The layer over [FIRST, +N) clusters, one extent at a time: STATE, the
 * extent's clusters into *K, and where its data lies in the file into
 * *HOST (NO_HOST: not in one piece).  -1 with the problem told (a layer
 * that cannot be described is the file's problem) and *K the rest. */
static int
layer_extent (struct data_check *c, uint64_t first, uint64_t n,
              enum layer_state *state, uint64_t *k, uint64_t *host)
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
  *host = ext.state == LAYER_DATA && ext.offset_valid && !ext.compressed
    ? ext.offset : NO_HOST;
  return 0;
}

/* Clusters [FIRST, +N) that the manifest does not list: nothing there, or
 * (a full's) zeroes, which read the same as nothing. */
static int
check_gap (struct data_check *c, uint64_t first, uint64_t n)
{
  while (n > 0) {
    enum layer_state st;
    uint64_t k, host;
    if (layer_extent (c, first, n, &st, &k, &host) == 0) {
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
    uint64_t k, host;
    if (layer_extent (c, first, n, &st, &k, &host) < 0) {
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
      if (read_clusters (c, first, k, host, run) < 0)
        return -1;
    }
    else if (st == LAYER_DATA &&
             read_clusters (c, first, k, host, NULL) < 0)
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
      check_all (c);
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
    check_all (c);
    verify_problem (c->sink, c->res, false, 0, "%s", error_get_message ());
    error_clear ();
    return 0;
  }
  check_gap (c, pos, n_clusters - pos);
  check_all (c);
  return 0;
}

static void
free_slots (struct data_check *c)
{
  side_thread_stop (c->side);
  for (unsigned i = 0; i < 2; i++) {
    struct slot *s = &c->slots[i];
    for (unsigned r = 0; r < s->nreqs; r++)
      free (s->reqs[r].error);
    free (s->buf);
    free (s->pend);
    free (s->bad);
  }
}

/* The two slots, and the second thread for a file on the local file
 * system (another backend, an object store's, reads through one
 * connection that is not shared between threads). */
static int
alloc_slots (struct data_check *c)
{
  /* A batch's clusters, and room for one more request. */
  uint64_t cap = BATCH_BYTES / c->cs + 2 * (c->buf_bytes / c->cs + 1);
  for (unsigned i = 0; i < 2; i++) {
    struct slot *s = &c->slots[i];
    s->file = c->img->data_file;
    s->cs = c->cs;
    s->size = c->size;
    s->cap = cap;
    s->buf = malloc (c->buf_bytes);
    s->pend = malloc (cap * sizeof *s->pend);
    s->bad = malloc (cap * sizeof *s->bad);
    if (!s->buf || !s->pend || !s->bad) {
      set_nomem ();
      return -1;
    }
  }
  if (c->img->data_file && c->img->data_file->fd >= 0)
    c->side = side_thread_start ();
  use_slot (c, 0);
  return 0;
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
  c.buf_bytes = c.cs > READ_BYTES ? c.cs : READ_BYTES;
  if (alloc_slots (&c) < 0) {
    free_slots (&c);
    ret = -1;
    goto out;
  }
  ret = compare (&c, mr);
  /* A cancelled run may leave a request on the second thread: its slot
   * is freed below, after the thread stops. */
  if (ret == 0 && c.more)
    verify_problem (sink, res, false, 0, "and %" PRIu64 " more cluster%s "
                    "differ", c.more, c.more == 1 ? "" : "s");
  free_slots (&c);
 out:
  manifest_reader_free (mr);
  return ret;
}
