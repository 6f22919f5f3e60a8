/* A source disk against its latest point (qbak_verify's sources): both
 * read through their chains, as a guest sees them, in large requests.
 *
 * The repository's bitmap of that point in the disk ("qbak-<repository
 * id>-<point id>", lib/repo-backup.c) holds every write since the point
 * was taken, so where it is clean the two must be equal: a difference
 * there is a mismatch.  Where it is dirty a difference is a change.  The
 * point's ".end" bitmap must still hold its bit, else the disk was shrunk
 * since (the cut-off part reads as zeroes under clean bits) and the
 * bitmap tells nothing.  Without a usable bitmap (a raw disk) nothing
 * tells a change from damage: every difference is a mismatch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "lib/internal.h"
#include "lib/repo-objects.h"
#include "lib/repo-verify.h"
#include "lib/verify-file.h"

#define CHUNK_BYTES (8u << 20)
#define NAME_BYTES 160

/* The default name of a disk, as a backup gives it: its file name without
 * the last extension. */
static void
default_name (const char *path, char *out)
{
  const char *base = strrchr (path, '/');
  base = base ? base + 1 : path;
  size_t n = strlen (base);
  const char *dot = strrchr (base, '.');
  if (dot && dot != base)
    n = (size_t) (dot - base);
  if (n >= NAME_BYTES)
    n = NAME_BYTES - 1;
  memcpy (out, base, n);
  out[n] = '\0';
}

/* The point's bitmap of H, if it tells what changed since the point. */
static const struct dirty_bitmap *
point_bitmap (const struct repo *r, struct qbak_image *h, const char *id,
              uint64_t point_size)
{
  char prefix[64], name[NAME_BYTES], end_name[NAME_BYTES];
  repo_bitmap_prefix (r, prefix);
  snprintf (name, sizeof name, "%s%s", prefix, id);
  snprintf (end_name, sizeof end_name, "%s%s.end", prefix, id);
  const struct qcow2_bitmap *b = qbak_internal_find_bitmap (h, name);
  const struct qcow2_bitmap *e = qbak_internal_find_bitmap (h, end_name);
  if (!b || b->in_use || !e || e->in_use)
    return NULL;
  const struct dirty_bitmap *bm = qbak_internal_bitmap_data (h, b);
  const struct dirty_bitmap *em = qbak_internal_bitmap_data (h, e);
  if (!bm || !em) {
    error_clear ();
    return NULL;
  }
  uint64_t g = dirty_bitmap_granularity (em);
  uint64_t last = point_size ? (point_size - 1) / g * g : 0;
  if (last >= dirty_bitmap_size (em) || !dirty_bitmap_test (em, last))
    return NULL;
  return bm;
}

struct compare {
  const struct qbak_verify_opts *o;
  struct qbak_verify_source s;
  const struct dirty_bitmap *bm;
  unsigned told;
};

static void
tell (struct compare *c, uint64_t offset, const char *what)
{
  if (!c->o->problem || c->told++ >= VERIFY_PROBLEMS_MAX)
    return;
  struct qbak_verify_problem p = {
    .size = sizeof p, .point = c->s.point, .disk = c->s.disk,
    .file = c->s.path, .mismatch = true, .has_offset = true,
    .offset = offset, .what = what,
  };
  c->o->problem (&p, c->o->opaque);
}

static int
compare_images (struct compare *c, struct qbak_image *src,
                struct qbak_image *bk, uint64_t size)
{
  uint8_t *a = malloc (CHUNK_BYTES), *b = malloc (CHUNK_BYTES);
  int ret = -1;
  if (!a || !b) {
    set_nomem ();
    goto out;
  }
  uint64_t unit = c->s.unit;
  for (uint64_t off = 0; off < size; off += CHUNK_BYTES) {
    if (c->o->cancel && *c->o->cancel) {
      qbak_internal_error (STATUS_CANCELLED, 0, "%s: verification cancelled",
                           c->s.path);
      goto out;
    }
    uint64_t len = size - off < CHUNK_BYTES ? size - off : CHUNK_BYTES;
    if (image_read (src->img, a, len, off) < 0 ||
        image_read (bk->img, b, len, off) < 0)
      goto out;
    for (uint64_t u = 0; u < len; u += unit) {
      uint64_t n = len - u < unit ? len - u : unit;
      c->s.units_compared++;
      if (memcmp (a + u, b + u, n) == 0)
        continue;
      if (c->bm && off + u < dirty_bitmap_size (c->bm) &&
          dirty_bitmap_test (c->bm, off + u)) {
        c->s.units_changed++;
        continue;
      }
      c->s.units_mismatch++;
      tell (c, off + u, c->bm
            ? "the disk differs from its latest point where it was not "
              "written since"
            : "the disk differs from its latest point, and no bitmap tells "
              "whether it was written since");
    }
  }
  ret = 0;
 out:
  free (a);
  free (b);
  return ret;
}

static int
verify_source (struct repo *r, const struct qbak_verify_opts *o,
               const struct qbak_backup_disk *disk, bool *mismatch)
{
  char name[NAME_BYTES];
  if (disk->name)
    snprintf (name, sizeof name, "%s", disk->name);
  else
    default_name (disk->path, name);
  const struct repo_point *p = repo_latest_of_disk (r, name);
  if (!p) {
    set_usage_error ("%s: the repository holds no point of disk '%s'",
                     r->st->location, name);
    return -1;
  }
  const struct repo_disk_record *d = repo_point_disk (p, name);
  struct qbak_image *bk = repo_image_open (r->st, d->file, QBAK_OPEN_READ);
  struct qbak_image *src = bk ? qbak_image_open_format (disk->path, d->format,
                                                        QBAK_OPEN_READ)
                              : NULL;
  int ret = -1;
  if (!src)
    goto out;
  struct compare c = { .o = o };
  c.s = (struct qbak_verify_source) {
    .size = sizeof c.s, .path = disk->path, .disk = name, .point = p->id,
  };
  c.bm = image_can_hold_bitmaps (src->img)
         ? point_bitmap (r, src, p->id, d->virtual_size) : NULL;
  c.s.bitmap = c.bm != NULL;
  c.s.unit = c.bm ? dirty_bitmap_granularity (c.bm) : d->cluster_size;
  if (c.s.unit == 0 || c.s.unit > CHUNK_BYTES || CHUNK_BYTES % c.s.unit)
    c.s.unit = 65536;
  uint64_t size = src->img->size < d->virtual_size ? src->img->size
                                                   : d->virtual_size;
  c.s.size_changed = src->img->size != d->virtual_size;
  if (compare_images (&c, src, bk, size) < 0)
    goto out;
  if (c.told > VERIFY_PROBLEMS_MAX && o->problem) {
    char what[128];
    snprintf (what, sizeof what, "and %u more units differ",
              c.told - VERIFY_PROBLEMS_MAX);
    struct qbak_verify_problem pr = {
      .size = sizeof pr, .point = p->id, .disk = name, .file = disk->path,
      .mismatch = true, .what = what,
    };
    o->problem (&pr, o->opaque);
  }
  if (c.s.units_mismatch)
    *mismatch = true;
  if (o->source)
    o->source (&c.s, o->opaque);
  ret = 0;
 out:
  qbak_image_close (src);
  qbak_image_close (bk);
  return ret;
}

int
verify_sources (struct repo *r, const struct qbak_verify_opts *o,
                bool *mismatch)
{
  for (size_t i = 0; i < o->n_sources; i++)
    if (verify_source (r, o, &o->sources[i], mismatch) < 0)
      return -1;
  return 0;
}
