/* Bitmap management as one all-or-none transaction over several images:
 * plan every operation in memory (all checks, nothing written), then
 * commit image by image, reverting the committed ones if a later one
 * fails, and only then free the old clusters. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "lib/api.h"
#include "lib/internal.h"

/* One bitmap of an image's planned state. */
struct planned {
  struct qcow2_bitmap_state st;
  struct dirty_bitmap *owned;     /* a modified copy, or NULL */
  const struct qcow2_bitmap *orig;
  bool in_use;
};

struct plan {
  struct qbak_image *h;
  struct planned *v;
  size_t n;
  struct qcow2_bitmap_pending *pending;
};

static void
plan_free (struct plan *p)
{
  for (size_t i = 0; i < p->n; i++)
    dirty_bitmap_free (p->v[i].owned);
  free (p->v);
  p->v = NULL;
  p->n = 0;
}

static struct planned *
find (struct plan *p, const char *name)
{
  for (size_t i = 0; i < p->n; i++)
    if (strcmp (p->v[i].st.name, name) == 0)
      return &p->v[i];
  return NULL;
}

static int
plan_init (struct plan *p, struct qbak_image *h)
{
  p->h = h;
  p->v = calloc (h->bitmaps.n + 1, sizeof *p->v);
  if (!p->v) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < h->bitmaps.n; i++) {
    const struct qcow2_bitmap *b = &h->bitmaps.v[i];
    struct planned *pl = &p->v[p->n++];
    pl->orig = b;
    pl->in_use = b->in_use;
    pl->st.name = b->name;
    pl->st.granularity_bits = b->granularity_bits;
    pl->st.flags = b->flags;
    pl->st.rewrite = false;
    pl->st.bm = NULL;               /* read when the plan needs it */
    pl->st.table_offset = b->table_offset;
    pl->st.table_size = b->table_size;
  }
  return 0;
}

/* The planned bitmap's current data, read from the image on first use. */
static const struct dirty_bitmap *
planned_data (struct plan *p, struct planned *pl)
{
  if (!pl->st.bm)
    pl->st.bm = qbak_internal_bitmap_data (p->h, pl->orig);
  return pl->st.bm;
}

/* The bitmap's data, made private so it can be changed. */
static struct dirty_bitmap *
writable_data (struct plan *p, struct planned *pl)
{
  if (!pl->owned) {
    const struct dirty_bitmap *data = planned_data (p, pl);
    if (!data)
      return NULL;
    pl->owned = dirty_bitmap_copy (data);
    if (!pl->owned)
      return NULL;
    pl->st.bm = pl->owned;
  }
  pl->st.rewrite = true;
  return pl->owned;
}

/* QEMU refuses to clear, merge, enable or disable an inconsistent
 * bitmap, so removing it is the only change that works; the chain it
 * tracked cannot be trusted and starts again from a full backup. */
void
qbak_internal_set_in_use_error (const char *file, const char *name)
{
  set_invalid ("%s: bitmap '%s' is in use: the program that wrote it did "
               "not close the image, so it may have missed writes", file,
               name);
  error_set_hint_about (HINT_BITMAP_IN_USE, file, name);
}

static struct planned *
existing (struct plan *p, const struct qbak_bitmap_op *op, bool allow_in_use)
{
  const char *fn = p->h->img->filename;
  struct planned *pl = find (p, op->name);
  if (!pl) {
    set_invalid ("%s: no bitmap named '%s'", fn, op->name);
    error_set_hint (HINT_LIST_BITMAPS);
    return NULL;
  }
  if (pl->in_use && !allow_in_use) {
    qbak_internal_set_in_use_error (fn, op->name);
    return NULL;
  }
  return pl;
}

static int
plan_op (struct plan *p, const struct qbak_bitmap_op *op)
{
  struct image *img = p->h->img;
  const char *fn = img->filename;
  struct planned *pl;

  switch (op->kind) {
  case QBAK_BITMAP_ADD: {
    uint64_t g = op->granularity ? op->granularity
                                 : qcow2_bitmap_default_granularity (img);
    if (find (p, op->name)) {
      set_exists_error ("%s: bitmap '%s' already exists", fn, op->name);
      return -1;
    }
    if (qcow2_bitmap_check_new (img, op->name, g) < 0)
      return -1;
    if (p->n >= QCOW2_MAX_BITMAPS) {
      set_usage_error ("%s: too many bitmaps (at most 65535)", fn);
      return -1;
    }
    struct planned *grown = realloc (p->v, (p->n + 1) * sizeof *grown);
    if (!grown) {
      set_nomem ();
      return -1;
    }
    p->v = grown;
    pl = &p->v[p->n];
    memset (pl, 0, sizeof *pl);
    pl->owned = dirty_bitmap_create (img->size, g);
    if (!pl->owned)
      return -1;
    p->n++;
    pl->st.name = op->name;
    pl->st.granularity_bits = (uint8_t) __builtin_ctzll (g);
    pl->st.flags = op->disabled ? 0 : BME_FLAG_AUTO;
    pl->st.rewrite = true;
    pl->st.bm = pl->owned;
    return 0;
  }
  case QBAK_BITMAP_REMOVE:
    if (!(pl = existing (p, op, true)))
      return -1;
    /* Unlink, keeping the order of the others (as QEMU's list does). */
    dirty_bitmap_free (pl->owned);
    memmove (pl, pl + 1, (size_t) (p->v + p->n - (pl + 1)) * sizeof *pl);
    p->n--;
    return 0;
  case QBAK_BITMAP_CLEAR: {
    if (!(pl = existing (p, op, false)))
      return -1;
    struct dirty_bitmap *bm = writable_data (p, pl);
    if (!bm)
      return -1;
    dirty_bitmap_clear_all (bm);
    return 0;
  }
  case QBAK_BITMAP_ENABLE:
  case QBAK_BITMAP_DISABLE:
    if (!(pl = existing (p, op, false)))
      return -1;
    /* Only the flag changes: the table is reused as it is. */
    pl->st.flags = op->kind == QBAK_BITMAP_ENABLE ? BME_FLAG_AUTO : 0;
    return 0;
  case QBAK_BITMAP_MERGE: {
    if (!(pl = existing (p, op, false)))
      return -1;
    if (op->n_sources == 0) {
      set_usage_error ("%s: merge into '%s' needs at least one source",
                       fn, op->name);
      return -1;
    }
    struct qbak_image *src = op->source_image ? op->source_image : p->h;
    for (size_t i = 0; i < op->n_sources; i++) {
      const struct dirty_bitmap *sbm;
      const char *sname = op->sources[i];
      if (src == p->h) {
        struct planned *sp = find (p, sname);
        if (!sp) {
          set_invalid ("%s: no bitmap named '%s'", fn, sname);
          error_set_hint (HINT_LIST_BITMAPS);
          return -1;
        }
        if (sp->in_use) {
          qbak_internal_set_in_use_error (fn, sname);
          return -1;
        }
        if (!(sbm = planned_data (p, sp)))
          return -1;
      }
      else {
        struct qcow2_bitmap *sb = qbak_internal_find_bitmap (src, sname);
        if (!sb) {
          set_invalid ("%s: no bitmap named '%s'", src->img->filename,
                       sname);
          error_set_hint (HINT_LIST_BITMAPS);
          return -1;
        }
        if (sb->in_use) {
          qbak_internal_set_in_use_error (src->img->filename, sname);
          return -1;
        }
        if (!(sbm = qbak_internal_bitmap_data (src, sb)))
          return -1;
      }
      if (dirty_bitmap_size (sbm) != img->size) {
        set_invalid ("%s: cannot merge bitmap '%s' (%" PRIu64 " bytes) into "
                     "'%s' (%" PRIu64 " bytes): the sizes differ", fn, sname,
                     dirty_bitmap_size (sbm), op->name, img->size);
        return -1;
      }
      struct dirty_bitmap *bm = writable_data (p, pl);
      if (!bm || dirty_bitmap_merge (bm, sbm) < 0)
        return -1;
    }
    return 0;
  }
  }
  set_usage_error ("%s: unknown bitmap operation", fn);
  return -1;
}

/* After a commit, the in-memory list follows the disk.  A failure to read
 * it back does not undo the commit: the handle is marked stale instead,
 * and the current error is kept. */
static void
reload (struct qbak_image *h)
{
  struct qbak_saved_error err;
  qbak_error_save (&err);
  qcow2_bitmaps_free (&h->bitmaps);
  if (qcow2_bitmaps_load (h->img, &h->bitmaps) < 0)
    h->bitmaps_stale = true;
  qbak_error_put_back (&err, "error");
}

static int
check_fresh (struct qbak_image *h)
{
  if (h->bitmaps_stale) {
    set_io_error (0, "%s: the bitmaps changed on disk but could not be read "
                  "back; reopen the image", h->img->filename);
    return -1;
  }
  return 0;
}

static int
commit_one (struct plan *p)
{
  struct qcow2_bitmap_state *st = calloc (p->n ? p->n : 1, sizeof *st);
  if (!st) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < p->n; i++)
    st[i] = p->v[i].st;
  int r = qcow2_bitmaps_commit (p->h->img, &p->h->bitmaps, st, p->n,
                                &p->pending);
  free (st);
  return r;
}

/* The caller's OPS, of the caller's size each (include/qbak.h: Growth),
 * as structures of the library's size, the fields the caller's lacks
 * zero.  Malloc'ed, or NULL with the error set. */
static struct qbak_bitmap_op *
ops_import (const struct qbak_bitmap_op *ops, size_t n_ops)
{
  size_t stride = n_ops ? ops[0].size : sizeof *ops;
  if (api_check_size (stride, sizeof *ops, "qbak_bitmap_op") < 0)
    return NULL;
  struct qbak_bitmap_op *v = calloc (n_ops ? n_ops : 1, sizeof *v);
  if (!v) {
    set_nomem ();
    return NULL;
  }
  for (size_t k = 0; k < n_ops; k++) {
    memcpy (&v[k], (const char *) ops + k * stride, stride);
    if (v[k].size != stride) {
      set_usage_error ("struct qbak_bitmap_op: operation %zu has size %zu, "
                       "the first %zu: every one must have the same", k,
                       v[k].size, stride);
      free (v);
      return NULL;
    }
  }
  return v;
}

int
qbak_bitmap_apply (struct qbak_image *const *images, size_t n_images,
                   const struct qbak_bitmap_op *caller_ops, size_t n_ops)
{
  api_enter (__func__);
  struct plan *plans = calloc (n_images ? n_images : 1, sizeof *plans);
  size_t committed = 0;
  int ret = -1;

  error_clear ();
  if (!plans) {
    set_nomem ();
    return -1;
  }
  struct qbak_bitmap_op *ops = ops_import (caller_ops, n_ops);
  if (!ops) {
    free (plans);
    return -1;
  }
  /* Early failure: every image checked before anything is written. */
  for (size_t i = 0; i < n_images; i++) {
    struct qbak_image *h = images[i];
    if (!(h->flags & QBAK_OPEN_WRITE)) {
      set_usage_error ("%s: image not opened for writing", h->img->filename);
      goto out;
    }
    if (!image_can_hold_bitmaps (h->img)) {
      set_invalid ("%s: %s images cannot hold persistent bitmaps; keep them "
                   "in a qcow2 image with data_file=%s", h->img->filename,
                   h->img->ops->name, h->img->filename);
      goto out;
    }
    if (check_fresh (h) < 0 ||
        image_check_writable (h->img) < 0 ||
        plan_init (&plans[i], h) < 0)
      goto out;
    for (size_t k = 0; k < n_ops; k++)
      if (plan_op (&plans[i], &ops[k]) < 0)
        goto out;     /* the message names the image and the bitmap */
  }
  for (; committed < n_images; committed++)
    if (commit_one (&plans[committed]) < 0)
      goto revert;
  for (size_t i = 0; i < n_images; i++) {
    qcow2_bitmaps_finish (images[i]->img, plans[i].pending);
    plans[i].pending = NULL;
  }
  ret = 0;
  goto reload;

revert:
  for (size_t i = committed; i-- > 0;) {
    struct qbak_saved_error err;
    qbak_error_save (&err);
    int r = qcow2_bitmaps_revert (images[i]->img, plans[i].pending);
    plans[i].pending = NULL;
    qbak_error_put_back (&err, "error");
    if (r < 0)
      qbak_internal_error_suffix ("; and %s could not be put back: it holds "
                                  "the new bitmaps", images[i]->img->filename);
  }

reload:
  for (size_t i = 0; i < n_images; i++) {
    plan_free (&plans[i]);
    if (ret == 0 || i < committed)
      reload (images[i]);
  }
out:
  for (size_t i = 0; i < n_images; i++)
    plan_free (&plans[i]);
  free (plans);
  free (ops);
  return ret;
}

int
qbak_internal_bitmap_update (struct qbak_image *h,
                             const struct qbak_internal_bitmap_change *c,
                             size_t n)
{
  struct plan p = { 0 };
  int ret = -1;
  if (check_fresh (h) < 0 || plan_init (&p, h) < 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    struct qbak_bitmap_op op = { .size = sizeof op, .name = c[i].name };
    struct planned *pl;
    switch (c[i].kind) {
    case QBAK_INTERNAL_BITMAP_CREATE:
      /* A disabled bitmap: it records what a job did, not guest writes. */
      op.kind = QBAK_BITMAP_ADD;
      op.granularity = dirty_bitmap_granularity (c[i].data);
      op.disabled = true;
      if (plan_op (&p, &op) < 0)
        goto out;
      /* The new bitmap takes DATA. */
      __attribute__ ((fallthrough));
    case QBAK_INTERNAL_BITMAP_SET:
      if (!(pl = find (&p, c[i].name))) {
        set_invalid ("%s: no bitmap named '%s'", h->img->filename,
                     c[i].name);
        error_set_hint (HINT_LIST_BITMAPS);
        goto out;
      }
      pl->st.bm = c[i].data;
      pl->st.rewrite = true;
      break;
    case QBAK_INTERNAL_BITMAP_REMOVE:
      op.kind = QBAK_BITMAP_REMOVE;
      if (plan_op (&p, &op) < 0)
        goto out;
      break;
    case QBAK_INTERNAL_BITMAP_ADD:
      /* An enabled, empty bitmap of the image's default granularity: it
       * records guest writes from now on. */
      op.kind = QBAK_BITMAP_ADD;
      if (plan_op (&p, &op) < 0)
        goto out;
      break;
    }
  }
  if (commit_one (&p) < 0)
    goto out;
  qcow2_bitmaps_finish (h->img, p.pending);
  p.pending = NULL;
  ret = 0;
  reload (h);
out:
  plan_free (&p);
  return ret;
}
