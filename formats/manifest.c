/* The manifest of a backup file: writer, reader and a chain's view (the
 * format is in manifest.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>
#if defined(__x86_64__)
/* Debian's libxxhash picks the widest vector unit the CPU has at run time
 * (AVX2, AVX-512): hashing then never limits a backup. */
#include <xxh_x86dispatch.h>
#endif

#include "common/error.h"
#include "formats/manifest.h"

#define MAGIC "QBAKMANI"
#define VERSION 1
#define HEADER_BYTES 64
#define RUN_HEADER_BYTES 16
#define END_MARK UINT64_MAX
/* Writes and reads go through a buffer of this size. */
#define BUFFER_BYTES (1u << 20)

static void
put_le32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t) (v >> (8 * i));
}

static void
put_le64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t
get_le32 (const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t
clusters_of (uint64_t size, uint32_t cs)
{
  return size / cs + (size % cs != 0);
}

static bool
cluster_size_ok (uint32_t cs)
{
  return cs >= 512 && cs <= (2u << 20) && (cs & (cs - 1)) == 0;
}

uint64_t
manifest_hash (const void *buf, size_t len)
{
  return XXH3_64bits (buf, len);
}

void
manifest_hash_clusters (const void *buf, uint64_t len, uint32_t cluster_size,
                        uint64_t *hashes)
{
  const uint8_t *p = buf;
  for (uint64_t pos = 0, i = 0; pos < len; pos += cluster_size, i++)
    hashes[i] = XXH3_64bits (p + pos, len - pos < cluster_size
                                      ? (size_t) (len - pos) : cluster_size);
}

static void
digest_hex (XXH128_hash_t h, char *out)
{
  XXH128_canonical_t c;
  XXH128_canonicalFromHash (&c, h);
  for (size_t i = 0; i < sizeof c.digest; i++)
    snprintf (out + 2 * i, 3, "%02x", c.digest[i]);
}

/* ---- Writing ---------------------------------------------------------- */

struct manifest_writer {
  struct qbak_file *file;
  uint32_t cs;
  uint64_t size;
  uint64_t clusters;
  uint8_t *buf;                 /* output not yet written */
  size_t len;
  uint64_t file_off;            /* where BUF goes */
  XXH3_state_t *sum;            /* every byte before the end's checksum */
  XXH3_state_t *digest;         /* every byte */
  /* The run being collected. */
  uint64_t run_first;
  uint32_t run_count;           /* 0: none */
  enum manifest_kind run_kind;
  uint64_t *hashes;
  uint64_t next;                /* the first cluster a request may name */
  uint64_t n_data, n_zero;
  bool failed;
};

static int
out_flush (struct manifest_writer *w)
{
  if (w->len && qbak_file_pwrite (w->file, w->buf, w->len, w->file_off) < 0)
    return -1;
  w->file_off += w->len;
  w->len = 0;
  return 0;
}

/* Append N bytes of P (into both sums if SUMMED, the digest always). */
static int
out (struct manifest_writer *w, const void *p, size_t n, bool summed)
{
  if (summed)
    XXH3_64bits_update (w->sum, p, n);
  XXH3_128bits_update (w->digest, p, n);
  while (n) {
    size_t k = BUFFER_BYTES - w->len < n ? BUFFER_BYTES - w->len : n;
    memcpy (w->buf + w->len, p, k);
    w->len += k;
    p = (const uint8_t *) p + k;
    n -= k;
    if (w->len == BUFFER_BYTES && out_flush (w) < 0)
      return -1;
  }
  return 0;
}

static int
end_run (struct manifest_writer *w)
{
  if (!w->run_count)
    return 0;
  uint8_t h[RUN_HEADER_BYTES];
  put_le64 (h, w->run_first);
  put_le32 (h + 8, w->run_count);
  put_le32 (h + 12, w->run_kind);
  if (out (w, h, sizeof h, true) < 0)
    return -1;
  if (w->run_kind == MANIFEST_DATA) {
    uint8_t le[8];
    for (uint32_t i = 0; i < w->run_count; i++) {
      put_le64 (le, w->hashes[i]);
      if (out (w, le, sizeof le, true) < 0)
        return -1;
    }
    w->n_data += w->run_count;
  }
  else
    w->n_zero += w->run_count;
  w->run_count = 0;
  return 0;
}

/* Add cluster INDEX of KIND (and HASH) to the run, or start a new one. */
static int
add (struct manifest_writer *w, uint64_t index, enum manifest_kind kind,
     uint64_t hash)
{
  if (w->run_count && (w->run_kind != kind ||
                       w->run_first + w->run_count != index ||
                       w->run_count == MANIFEST_RUN_MAX) &&
      end_run (w) < 0)
    return -1;
  if (!w->run_count) {
    w->run_first = index;
    w->run_kind = kind;
  }
  w->hashes[w->run_count++] = hash;
  return 0;
}

static int
check_request (struct manifest_writer *w, uint64_t offset, uint64_t len)
{
  if (w->failed) {
    set_usage_error ("%s: the manifest failed earlier", w->file->path);
    return -1;
  }
  if (offset % w->cs || offset / w->cs < w->next || offset > w->size ||
      len > w->size - offset ||
      (len % w->cs && offset + len != w->size)) {
    set_usage_error ("%s: manifest request [%" PRIu64 ", +%" PRIu64 ") out "
                     "of order or not cluster aligned", w->file->path,
                     offset, len);
    return -1;
  }
  return 0;
}

struct manifest_writer *
manifest_writer_create (struct qbak_file *file, uint32_t cluster_size,
                        uint64_t virtual_size)
{
  struct manifest_writer *w = calloc (1, sizeof *w);
  if (!w) {
    qbak_file_close (file);
    set_nomem ();
    return NULL;
  }
  w->file = file;
  if (!cluster_size_ok (cluster_size)) {
    set_usage_error ("%s: manifest cluster size %" PRIu32 " is not a power "
                     "of two from 512 to 2 MiB", file->path, cluster_size);
    goto fail;
  }
  w->cs = cluster_size;
  w->size = virtual_size;
  w->clusters = clusters_of (virtual_size, cluster_size);
  w->buf = malloc (BUFFER_BYTES);
  w->hashes = malloc (MANIFEST_RUN_MAX * sizeof *w->hashes);
  w->sum = XXH3_createState ();
  w->digest = XXH3_createState ();
  if (!w->buf || !w->hashes || !w->sum || !w->digest) {
    set_nomem ();
    goto fail;
  }
  XXH3_64bits_reset (w->sum);
  XXH3_128bits_reset (w->digest);
  uint8_t h[HEADER_BYTES] = { 0 };
  memcpy (h, MAGIC, 8);
  put_le32 (h + 8, VERSION);
  put_le32 (h + 12, cluster_size);
  put_le64 (h + 16, virtual_size);
  if (out (w, h, sizeof h, true) < 0)
    goto fail;
  return w;
 fail:
  manifest_writer_free (w);
  return NULL;
}

int
manifest_writer_data (struct manifest_writer *w, uint64_t offset,
                      const void *buf, uint64_t len)
{
  if (check_request (w, offset, len) < 0)
    return -1;
  const uint8_t *p = buf;
  for (uint64_t pos = 0; pos < len; pos += w->cs) {
    size_t n = len - pos < w->cs ? (size_t) (len - pos) : w->cs;
    if (add (w, (offset + pos) / w->cs, MANIFEST_DATA,
             XXH3_64bits (p + pos, n)) < 0) {
      w->failed = true;
      return -1;
    }
  }
  w->next = clusters_of (offset + len, w->cs);
  return 0;
}

int
manifest_writer_hashes (struct manifest_writer *w, uint64_t first,
                        const uint64_t *hashes, uint64_t count)
{
  if (first > w->clusters || count > w->clusters - first) {
    set_usage_error ("%s: manifest clusters past the end of the disk",
                     w->file->path);
    return -1;
  }
  uint64_t offset = first * w->cs;
  uint64_t len = first + count == w->clusters ? w->size - offset
                                              : count * w->cs;
  if (check_request (w, offset, len) < 0)
    return -1;
  for (uint64_t i = 0; i < count; i++)
    if (add (w, first + i, MANIFEST_DATA, hashes[i]) < 0) {
      w->failed = true;
      return -1;
    }
  w->next = first + count;
  return 0;
}

int
manifest_writer_zero (struct manifest_writer *w, uint64_t offset,
                      uint64_t len)
{
  if (check_request (w, offset, len) < 0)
    return -1;
  for (uint64_t pos = 0; pos < len; pos += w->cs)
    if (add (w, (offset + pos) / w->cs, MANIFEST_ZERO, 0) < 0) {
      w->failed = true;
      return -1;
    }
  w->next = clusters_of (offset + len, w->cs);
  return 0;
}

int
manifest_writer_finish (struct manifest_writer *w, char *digest)
{
  uint8_t end[32];
  if (w->failed) {
    set_usage_error ("%s: the manifest failed earlier", w->file->path);
    return -1;
  }
  w->failed = true;             /* whatever happens, once */
  if (end_run (w) < 0)
    return -1;
  put_le64 (end, END_MARK);
  put_le64 (end + 8, w->n_data);
  put_le64 (end + 16, w->n_zero);
  if (out (w, end, 24, true) < 0)
    return -1;
  put_le64 (end + 24, XXH3_64bits_digest (w->sum));
  if (out (w, end + 24, 8, false) < 0 || out_flush (w) < 0 ||
      qbak_file_flush (w->file) < 0)
    return -1;
  digest_hex (XXH3_128bits_digest (w->digest), digest);
  return 0;
}

struct qbak_file *
manifest_writer_file (const struct manifest_writer *w)
{
  return w->file;
}

void
manifest_writer_free (struct manifest_writer *w)
{
  if (!w)
    return;
  qbak_file_close (w->file);
  free (w->buf);
  free (w->hashes);
  XXH3_freeState (w->sum);
  XXH3_freeState (w->digest);
  free (w);
}

/* ---- Reading ---------------------------------------------------------- */

struct manifest_reader {
  struct qbak_file *file;
  uint64_t file_size;
  uint32_t cs;
  uint64_t size;
  uint64_t clusters;
  uint8_t *buf;
  size_t buf_len, buf_pos;
  uint64_t pos;                 /* file offset of the next byte to use */
  XXH3_state_t *sum;
  uint64_t next;                /* the first cluster the next run may name */
  uint64_t n_data, n_zero;
  uint64_t *hashes;
  bool done;
};

static void *
damaged (struct manifest_reader *r, uint64_t at, const char *what)
{
  set_invalid ("%s: damaged manifest at byte %" PRIu64 ": %s",
               r->file->path, at, what);
  return NULL;
}

/* Take N bytes from the file into DST, adding them to the sum if
 * SUMMED. */
static int
take (struct manifest_reader *r, void *dst, size_t n, bool summed)
{
  uint8_t *d = dst;
  if (r->pos + n > r->file_size) {
    damaged (r, r->file_size, "the file ends early (truncated)");
    return -1;
  }
  while (n) {
    if (r->buf_pos == r->buf_len) {
      uint64_t left = r->file_size - r->pos;
      size_t k = left < BUFFER_BYTES ? (size_t) left : BUFFER_BYTES;
      if (qbak_file_pread (r->file, r->buf, k, r->pos) < 0)
        return -1;
      r->buf_len = k;
      r->buf_pos = 0;
    }
    size_t k = r->buf_len - r->buf_pos < n ? r->buf_len - r->buf_pos : n;
    memcpy (d, r->buf + r->buf_pos, k);
    if (summed)
      XXH3_64bits_update (r->sum, r->buf + r->buf_pos, k);
    r->buf_pos += k;
    r->pos += k;
    d += k;
    n -= k;
  }
  return 0;
}

/* PATH as a regular file, never through a symbolic link. */
static struct qbak_file *
open_regular (const char *path)
{
  int fd = open (path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  if (fd < 0) {
    qbak_internal_error (errno == ENOENT || errno == ELOOP
                         ? STATUS_INVALID : STATUS_IO, errno,
                         "%s: cannot open the manifest", path);
    return NULL;
  }
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode)) {
    close (fd);
    set_invalid ("%s: a manifest is a regular file", path);
    return NULL;
  }
  return qbak_file_from_fd (fd, path, false);
}

struct manifest_reader *
manifest_reader_open (const char *path)
{
  struct qbak_file *f = open_regular (path);
  return f ? manifest_reader_open_file (f) : NULL;
}

struct manifest_reader *
manifest_reader_open_file (struct qbak_file *file)
{
  struct manifest_reader *r = calloc (1, sizeof *r);
  uint8_t h[HEADER_BYTES];
  static const uint8_t zeros[HEADER_BYTES - 24];
  if (!r) {
    qbak_file_close (file);
    set_nomem ();
    return NULL;
  }
  r->file = file;
  int64_t size = qbak_file_size (r->file);
  r->buf = malloc (BUFFER_BYTES);
  r->hashes = malloc (MANIFEST_RUN_MAX * sizeof *r->hashes);
  r->sum = XXH3_createState ();
  if (size < 0 || !r->buf || !r->hashes || !r->sum) {
    if (size >= 0)
      set_nomem ();
    goto fail;
  }
  r->file_size = (uint64_t) size;
  XXH3_64bits_reset (r->sum);
  if (take (r, h, sizeof h, true) < 0)
    goto fail;
  r->cs = get_le32 (h + 12);
  r->size = get_le64 (h + 16);
  if (memcmp (h, MAGIC, 8) != 0)
    damaged (r, 0, "not a qbak manifest");
  else if (get_le32 (h + 8) != VERSION)
    damaged (r, 8, "unknown version");
  else if (!cluster_size_ok (r->cs))
    damaged (r, 12, "invalid cluster size");
  else if (memcmp (h + 24, zeros, sizeof zeros) != 0)
    damaged (r, 24, "reserved bytes are not zero");
  else {
    r->clusters = clusters_of (r->size, r->cs);
    return r;
  }
 fail:
  manifest_reader_free (r);
  return NULL;
}

uint32_t
manifest_reader_cluster_size (const struct manifest_reader *r)
{
  return r->cs;
}

uint64_t
manifest_reader_virtual_size (const struct manifest_reader *r)
{
  return r->size;
}

static int
read_end (struct manifest_reader *r, uint64_t at)
{
  uint8_t e[24];
  if (take (r, e, 16, true) < 0)
    return -1;
  uint64_t want = XXH3_64bits_digest (r->sum);
  if (take (r, e + 16, 8, false) < 0)
    return -1;
  if (get_le64 (e + 16) != want) {
    damaged (r, r->pos - 8, "checksum mismatch");
    return -1;
  }
  if (get_le64 (e) != r->n_data || get_le64 (e + 8) != r->n_zero) {
    damaged (r, at, "the cluster counts disagree with the runs");
    return -1;
  }
  if (r->pos != r->file_size) {
    damaged (r, r->pos, "bytes after the end");
    return -1;
  }
  r->done = true;
  return 0;
}

int
manifest_reader_next (struct manifest_reader *r, struct manifest_run *run)
{
  uint8_t h[RUN_HEADER_BYTES];
  uint64_t at = r->pos;
  if (r->done)
    return 0;
  if (take (r, h, 8, true) < 0)
    return -1;
  uint64_t first = get_le64 (h);
  if (first == END_MARK)
    return read_end (r, at);
  if (take (r, h + 8, 8, true) < 0)
    return -1;
  uint32_t count = get_le32 (h + 8), kind = get_le32 (h + 12);
  if (count == 0 || count > MANIFEST_RUN_MAX) {
    damaged (r, at + 8, "invalid run length");
    return -1;
  }
  if (kind != MANIFEST_DATA && kind != MANIFEST_ZERO) {
    damaged (r, at + 12, "unknown run kind");
    return -1;
  }
  if (first < r->next || first >= r->clusters ||
      count > r->clusters - first) {
    damaged (r, at, "a run out of order or past the end of the disk");
    return -1;
  }
  if (kind == MANIFEST_DATA) {
    uint8_t le[8];
    for (uint32_t i = 0; i < count; i++) {
      if (take (r, le, 8, true) < 0)
        return -1;
      r->hashes[i] = get_le64 (le);
    }
    r->n_data += count;
  }
  else
    r->n_zero += count;
  r->next = first + count;
  *run = (struct manifest_run) {
    .first = first, .count = count, .kind = (enum manifest_kind) kind,
    .hashes = kind == MANIFEST_DATA ? r->hashes : NULL,
  };
  return 1;
}

int
manifest_file_digest (const char *path, char *digest)
{
  struct qbak_file *f = open_regular (path);
  if (!f)
    return -1;
  int r = manifest_digest_of_file (f, digest);
  qbak_file_close (f);
  return r;
}

int
manifest_digest_of_file (struct qbak_file *f, char *digest)
{
  uint8_t *buf = malloc (BUFFER_BYTES);
  XXH3_state_t *st = XXH3_createState ();
  int ret = -1;
  int64_t size = f ? qbak_file_size (f) : -1;
  if (!f || size < 0 || !buf || !st) {
    if (f && size >= 0)
      set_nomem ();
    goto out;
  }
  XXH3_128bits_reset (st);
  for (uint64_t off = 0; off < (uint64_t) size;) {
    uint64_t left = (uint64_t) size - off;
    size_t k = left < BUFFER_BYTES ? (size_t) left : BUFFER_BYTES;
    if (qbak_file_pread (f, buf, k, off) < 0)
      goto out;
    XXH3_128bits_update (st, buf, k);
    off += k;
  }
  digest_hex (XXH3_128bits_digest (st), digest);
  ret = 0;
 out:
  free (buf);
  XXH3_freeState (st);
  return ret;
}

void
manifest_reader_free (struct manifest_reader *r)
{
  if (!r)
    return;
  qbak_file_close (r->file);
  free (r->buf);
  free (r->hashes);
  XXH3_freeState (r->sum);
  free (r);
}

/* ---- Merging two manifests -------------------------------------------- */

struct cursor {
  struct manifest_reader *r;
  struct manifest_run run;      /* the part of the current run left */
  bool have;
};

static int
advance (struct cursor *c)
{
  int rc = manifest_reader_next (c->r, &c->run);
  c->have = rc == 1;
  return rc < 0 ? -1 : 0;
}

/* Emit the first N clusters of C's run, then drop them from it. */
static int
emit_part (struct manifest_writer *w, struct cursor *c, uint64_t n)
{
  int r = c->run.kind == MANIFEST_DATA
    ? manifest_writer_hashes (w, c->run.first, c->run.hashes, n)
    : manifest_writer_zero (w, c->run.first * w->cs,
                            c->run.first + n >= w->clusters
                            ? w->size - c->run.first * w->cs : n * w->cs);
  if (r < 0)
    return -1;
  return 0;
}

/* Drop C's clusters below END. */
static int
skip_below (struct cursor *c, uint64_t end)
{
  while (c->have && c->run.first < end) {
    uint64_t run_end = c->run.first + c->run.count;
    if (run_end > end) {
      uint64_t d = end - c->run.first;
      c->run.first = end;
      c->run.count -= (uint32_t) d;
      if (c->run.hashes)
        c->run.hashes += d;
      return 0;
    }
    if (advance (c) < 0)
      return -1;
  }
  return 0;
}

static int
merge_and_finish (struct manifest_reader *top,
                  struct manifest_reader *bottom, struct manifest_writer *w,
                  char *digest)
{
  struct cursor a = { .r = top }, b = { .r = bottom };
  int ret = -1;
  if (top->cs != w->cs || bottom->cs != w->cs || top->size != w->size) {
    set_usage_error ("%s: manifests of other clusters or sizes cannot be "
                     "merged into it", w->file->path);
    goto out;
  }
  if (advance (&a) < 0 || advance (&b) < 0)
    goto out;
  while (a.have || b.have) {
    if (a.have && (!b.have || a.run.first <= b.run.first)) {
      uint64_t end = a.run.first + a.run.count;
      if (emit_part (w, &a, a.run.count) < 0 || skip_below (&b, end) < 0 ||
          advance (&a) < 0)
        goto out;
    }
    else {
      uint64_t end = b.run.first + b.run.count;
      if (a.have && a.run.first < end)
        end = a.run.first;
      if (end > w->clusters) {
        set_invalid ("%s: the lower manifest lists clusters past the end",
                     bottom->file->path);
        goto out;
      }
      if (emit_part (w, &b, end - b.run.first) < 0 || skip_below (&b, end) < 0)
        goto out;
    }
  }
  ret = manifest_writer_finish (w, digest);
 out:
  manifest_reader_free (top);
  manifest_reader_free (bottom);
  return ret;
}

int
manifest_merge (struct manifest_reader *top, struct manifest_reader *bottom,
                struct manifest_writer *w, char *digest)
{
  int ret = merge_and_finish (top, bottom, w, digest);
  manifest_writer_free (w);
  return ret;
}

int
manifest_merge_keep (struct manifest_reader *top,
                     struct manifest_reader *bottom,
                     struct manifest_writer *w, char *digest)
{
  return merge_and_finish (top, bottom, w, digest);
}

/* ---- A chain's view --------------------------------------------------- */

struct view_layer {
  struct manifest_reader *r;
  struct manifest_run run;
  bool have;                    /* RUN is the current run */
  bool end;                     /* no run left */
};

struct manifest_view {
  struct view_layer *layers;
  size_t n;
  uint64_t size;
  uint32_t cs;
  uint64_t last;                /* the last index asked for */
  bool asked;
};

struct manifest_view *
manifest_view_open (struct manifest_reader **layers, size_t n, uint64_t size)
{
  struct manifest_view *v = calloc (1, sizeof *v);
  if (!v || !(v->layers = calloc (n ? n : 1, sizeof *v->layers))) {
    free (v);
    for (size_t i = 0; i < n; i++)
      manifest_reader_free (layers[i]);
    set_nomem ();
    return NULL;
  }
  v->n = n;
  v->size = size;
  for (size_t i = 0; i < n; i++)
    v->layers[i].r = layers[i];
  v->cs = n ? layers[0]->cs : 65536;
  for (size_t i = 1; i < n; i++)
    if (layers[i]->cs != v->cs) {
      set_invalid ("%s: manifest of clusters of %" PRIu32 " bytes in a "
                   "chain of %" PRIu32, layers[i]->file->path,
                   layers[i]->cs, v->cs);
      manifest_view_free (v);
      return NULL;
    }
  return v;
}

int
manifest_view_get (struct manifest_view *v, uint64_t index,
                   enum manifest_state *state, uint64_t *hash)
{
  if (v->asked && index < v->last) {
    set_usage_error ("manifest view: cluster %" PRIu64 " after %" PRIu64,
                     index, v->last);
    return -1;
  }
  v->asked = true;
  v->last = index;
  *state = MANIFEST_CLUSTER_ZERO;
  *hash = 0;
  for (size_t i = 0; i < v->n; i++) {
    struct view_layer *l = &v->layers[i];
    /* A backing file shorter than the disk reads as zeroes past its end,
     * whatever lies beneath it. */
    if (i > 0 && index >= clusters_of (l->r->size, v->cs))
      return 0;
    while (!l->end && (!l->have || l->run.first + l->run.count <= index)) {
      int rc = manifest_reader_next (l->r, &l->run);
      if (rc < 0)
        return -1;
      l->have = rc == 1;
      l->end = rc == 0;
    }
    if (l->have && l->run.first <= index) {
      if (l->run.kind == MANIFEST_DATA) {
        *state = MANIFEST_CLUSTER_DATA;
        *hash = l->run.hashes[index - l->run.first];
      }
      return 0;
    }
  }
  return 0;
}

void
manifest_view_free (struct manifest_view *v)
{
  if (!v)
    return;
  for (size_t i = 0; i < v->n; i++)
    manifest_reader_free (v->layers[i].r);
  free (v->layers);
  free (v);
}
