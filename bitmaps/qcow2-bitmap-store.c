/* Storing qcow2 persistent bitmaps crash-safely: see qcow2-bitmap.h.
 * Never write what QEMU would refuse to open: no extra data, only the
 * in_use and auto flags, exact table sizes, QEMU's limits. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "formats/qcow2.h"
#include "formats/qcow2-refmap.h"

struct old_table {
  uint64_t offset;
  uint32_t size;
};

struct qcow2_bitmap_pending {
  /* Header state before the commit. */
  uint32_t old_nb;
  uint64_t old_dir_offset, old_dir_size;
  /* Garbage after the commit: the old directory and replaced tables. */
  struct old_table *garbage;
  size_t n_garbage;
  /* Clusters allocated for the new state (freed by revert). */
  uint64_t *allocated;
  size_t n_allocated;
  uint64_t new_dir_offset, new_dir_size;
  uint32_t new_nb;
};

uint64_t
qcow2_bitmap_default_granularity (struct image *img)
{
  uint64_t g = img->cluster_size ? img->cluster_size : 65536;
  if (g < 4096)
    g = 4096;
  if (g > 65536)
    g = 65536;
  return g;
}

int
qcow2_bitmap_check_new (struct image *img, const char *name,
                        uint64_t granularity)
{
  const char *fn = img->filename;
  size_t len = strlen (name);
  if (len == 0) {
    set_usage_error ("%s: bitmap name must not be empty", fn);
    return -1;
  }
  if (len > BME_MAX_NAME_SIZE) {
    set_usage_error ("%s: bitmap name too long (%zu bytes, at most %d)",
                     fn, len, BME_MAX_NAME_SIZE);
    return -1;
  }
  if (granularity < 512 || (granularity & (granularity - 1)) ||
      granularity > (1ULL << BME_MAX_GRANULARITY_BITS)) {
    set_usage_error ("%s: bitmap '%s': granularity %" PRIu64 " must be a "
                     "power of two from 512 to 2 GiB", fn, name, granularity);
    return -1;
  }
  unsigned gb = (unsigned) __builtin_ctzll (granularity);
  uint64_t bytes = qcow2_bitmap_stream_bytes (img->size, gb);
  if (bytes > BME_MAX_PHYS_SIZE ||
      qcow2_bitmap_table_size (img->size, gb, img->cluster_size) >
      BME_MAX_TABLE_SIZE) {
    set_usage_error ("%s: bitmap '%s': too large for the image (granularity "
                     "%" PRIu64 " needs %" PRIu64 " bytes of bitmap data, at "
                     "most 512 MiB)", fn, name, granularity, bytes);
    return -1;
  }
  return 0;
}

static void
pending_free (struct qcow2_bitmap_pending *p)
{
  if (!p)
    return;
  free (p->garbage);
  free (p->allocated);
  free (p);
}

static int
add_garbage (struct qcow2_bitmap_pending *p, uint64_t offset, uint32_t size)
{
  struct old_table *n = realloc (p->garbage, (p->n_garbage + 1) * sizeof *n);
  if (!n) {
    set_nomem ();
    return -1;
  }
  p->garbage = n;
  n[p->n_garbage].offset = offset;
  n[p->n_garbage].size = size;
  p->n_garbage++;
  return 0;
}

/* Write one bitmap's data clusters (only those holding a set bit) and its
 * table; return the table's offset. */
static int
write_bitmap (struct qcow2 *s, const struct qcow2_bitmap_state *b,
              uint64_t *table_offset, uint32_t *table_size)
{
  uint64_t cs = s->cluster_size;
  uint64_t tsize = qcow2_bitmap_table_size (s->base.size, b->granularity_bits,
                                            s->cluster_size);
  uint64_t stream = dirty_bitmap_stream_bytes (b->bm);
  uint64_t *table = calloc (tsize, 8);
  uint8_t *buf = malloc (cs > tsize * 8 ? cs : tsize * 8);
  int ret = -1;
  if (!table || !buf) {
    set_nomem ();
    goto out;
  }
  /* One data cluster covers cs * 8 bits: visit only those with a dirty
   * bit (O(dirty), not O(size)). */
  uint64_t span = cs * 8 << b->granularity_bits;   /* guest bytes */
  int64_t off = dirty_bitmap_next_dirty (b->bm, 0);
  while (off >= 0) {
    uint64_t i = (uint64_t) off / span;
    uint64_t start = i * cs;
    size_t len = stream - start < cs ? (size_t) (stream - start) : cs;
    memset (buf, 0, cs);
    dirty_bitmap_serialize (b->bm, start, len, buf);
    int64_t c = qcow2_alloc_clusters (s, cs);
    if (c < 0 || qbak_file_pwrite (s->base.file, buf, cs, (uint64_t) c) < 0)
      goto out;
    table[i] = (uint64_t) c;
    if ((i + 1) * span >= s->base.size)
      break;
    off = dirty_bitmap_next_dirty (b->bm, (i + 1) * span);
  }
  for (uint64_t i = 0; i < tsize; i++)
    put_be64 (buf + i * 8, table[i]);
  int64_t t = qcow2_alloc_clusters (s, tsize * 8);
  if (t < 0 || qbak_file_pwrite (s->base.file, buf, tsize * 8,
                                 (uint64_t) t) < 0)
    goto out;
  *table_offset = (uint64_t) t;
  *table_size = (uint32_t) tsize;
  ret = 0;
out:
  free (table);
  free (buf);
  return ret;
}

static int
validate_state (struct qcow2 *s, const struct qcow2_bitmap_state *state,
                size_t n, uint64_t *dir_size)
{
  const char *fn = s->base.filename;
  uint64_t total = 0;
  if (n > QCOW2_MAX_BITMAPS) {
    set_usage_error ("%s: too many bitmaps (%zu, at most %d)", fn, n,
                     QCOW2_MAX_BITMAPS);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const struct qcow2_bitmap_state *b = &state[i];
    size_t len = strlen (b->name);
    if (len == 0 || len > BME_MAX_NAME_SIZE ||
        b->granularity_bits < BME_MIN_GRANULARITY_BITS ||
        b->granularity_bits > BME_MAX_GRANULARITY_BITS ||
        (b->flags & BME_RESERVED_FLAGS)) {
      set_invalid ("%s: bitmap '%s' breaks QEMU's limits", fn, b->name);
      return -1;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp (state[j].name, b->name) == 0) {
        set_exists_error ("%s: bitmap '%s' already exists", fn, b->name);
        return -1;
      }
    total += (24 + len + 7) & ~7ULL;
  }
  if (total > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) {
    set_usage_error ("%s: bitmap directory would exceed %u bytes", fn,
                     QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
    return -1;
  }
  *dir_size = total;
  return 0;
}

int
qcow2_bitmaps_commit (struct image *img, const struct qcow2_bitmap_list *old,
                      const struct qcow2_bitmap_state *state, size_t n,
                      struct qcow2_bitmap_pending **pendingp)
{
  struct qcow2 *s = to_qcow2 (img);
  uint64_t dir_size;
  uint64_t *offsets = NULL;
  uint32_t *sizes = NULL;
  uint8_t *dir = NULL;
  struct qcow2_bitmap_pending *p = NULL;

  *pendingp = NULL;
  if (img->format != IMAGE_QCOW2) {
    set_invalid ("%s: only qcow2 images can hold persistent bitmaps "
                 "(for a raw image, use a qcow2 with data_file)",
                 img->filename);
    return -1;
  }
  if (qcow2_check_writable (s) < 0 ||
      validate_state (s, state, n, &dir_size) < 0)
    return -1;
  /* Before the first write: every cluster the image uses, with its owner,
   * so that metadata pointing into other metadata or into guest data is
   * refused now (nothing written), and the allocator never hands out a
   * cluster that something still uses. */
  qcow2_refmap_free (s->refmap);
  s->refmap = qcow2_bitmaps_refmap (img, old, QCOW2_REFMAP_ALL);
  if (!s->refmap)
    return -1;

  p = calloc (1, sizeof *p);
  offsets = calloc (n ? n : 1, sizeof *offsets);
  sizes = calloc (n ? n : 1, sizeof *sizes);
  if (!p || !offsets || !sizes) {
    set_nomem ();
    goto fail_early;
  }
  p->old_nb = s->nb_bitmaps;
  p->old_dir_offset = s->bitmap_directory_offset;
  p->old_dir_size = s->bitmap_directory_size;

  /* Garbage after the commit: the old directory, and the tables of old
   * bitmaps that the new state does not reuse. */
  if (s->nb_bitmaps && add_garbage (p, 0, 0) < 0)   /* slot 0: directory */
    goto fail_early;
  for (size_t i = 0; i < old->n; i++) {
    bool reused = false;
    for (size_t j = 0; j < n; j++)
      if (!state[j].rewrite && state[j].table_offset == old->v[i].table_offset)
        reused = true;
    if (!reused &&
        add_garbage (p, old->v[i].table_offset, old->v[i].table_size) < 0)
      goto fail_early;
  }

  qcow2_refcount_forget (s);
  for (size_t i = 0; i < n; i++) {
    if (state[i].rewrite) {
      if (write_bitmap (s, &state[i], &offsets[i], &sizes[i]) < 0)
        goto fail;
    }
    else {
      offsets[i] = state[i].table_offset;
      sizes[i] = state[i].table_size;
    }
  }

  int64_t dir_offset = 0;
  if (n) {
    dir = calloc (1, dir_size);
    if (!dir) {
      set_nomem ();
      goto fail;
    }
    uint64_t pos = 0;
    for (size_t i = 0; i < n; i++) {
      size_t len = strlen (state[i].name);
      put_be64 (dir + pos, offsets[i]);
      put_be32 (dir + pos + 8, sizes[i]);
      put_be32 (dir + pos + 12, state[i].flags);
      dir[pos + 16] = BME_TYPE_DIRTY;
      dir[pos + 17] = state[i].granularity_bits;
      put_be16 (dir + pos + 18, (uint16_t) len);
      put_be32 (dir + pos + 20, 0);
      memcpy (dir + pos + 24, state[i].name, len);
      pos += (24 + len + 7) & ~7ULL;
    }
    dir_offset = qcow2_alloc_clusters (s, dir_size);
    if (dir_offset < 0 ||
        qbak_file_pwrite (img->file, dir, dir_size, (uint64_t) dir_offset) < 0)
      goto fail;
  }

  /* Everything new, and its refcounts, durable before the commit. */
  if (qcow2_refcount_flush (s) < 0)
    goto fail;

  p->n_allocated = s->n_alloc_log;
  p->allocated = malloc ((p->n_allocated ? p->n_allocated : 1) * 8);
  if (!p->allocated) {
    set_nomem ();
    goto fail;
  }
  /* alloc_log is NULL when nothing was allocated (removing the last
   * bitmap), and memcpy from NULL is undefined even for 0 bytes. */
  if (p->n_allocated)
    memcpy (p->allocated, s->alloc_log, p->n_allocated * 8);
  p->new_dir_offset = (uint64_t) dir_offset;
  p->new_dir_size = n ? dir_size : 0;
  p->new_nb = (uint32_t) n;

  /* The commit point: one header write, then flush. */
  s->nb_bitmaps = (uint32_t) n;
  s->bitmap_directory_offset = (uint64_t) dir_offset;
  s->bitmap_directory_size = n ? dir_size : 0;
  s->has_bitmaps_ext = n > 0;
  if (qcow2_update_header (s) < 0) {
    /* The write may or may not have reached the disk.  Put the old header
     * back; only if that succeeds is it safe to free the new clusters. */
    struct qbak_saved_error err;
    qbak_error_save (&err);
    s->nb_bitmaps = p->old_nb;
    s->bitmap_directory_offset = p->old_dir_offset;
    s->bitmap_directory_size = p->old_dir_size;
    s->has_bitmaps_ext = p->old_nb > 0;
    if (qcow2_update_header (s) == 0)
      qcow2_refcount_rollback (s);
    else
      qcow2_refcount_forget (s);     /* keep them: leaks, never holes */
    err.status = STATUS_IO;
    qbak_error_put_back (&err, "header write failed");
    goto fail_early;
  }
  qcow2_refcount_forget (s);
  free (offsets);
  free (sizes);
  free (dir);
  qcow2_refmap_free (s->refmap);
  s->refmap = NULL;
  *pendingp = p;
  return 0;

fail:
  qcow2_refcount_rollback (s);
fail_early:
  qcow2_refmap_free (s->refmap);
  s->refmap = NULL;
  free (offsets);
  free (sizes);
  free (dir);
  pending_free (p);
  return -1;
}

/* Free a table and the data clusters it points to.  -1 if the table could
 * not be read (nothing was freed then, so a retry frees it once). */
static int
free_table (struct qcow2 *s, uint64_t offset, uint32_t size)
{
  size_t bytes = (size_t) size * 8;
  uint8_t *t = malloc (bytes ? bytes : 1);
  if (!t) {
    set_nomem ();
    return -1;
  }
  if (qbak_file_pread (s->base.file, t, bytes, offset) < 0) {
    free (t);
    return -1;
  }
  for (uint32_t i = 0; i < size; i++) {
    /* Tables of in_use bitmaps were never validated: free only what a
     * valid entry points to, so a bad entry leaks instead of freeing
     * somebody else's cluster. */
    uint64_t raw = be64_at (t + (size_t) i * 8);
    uint64_t e = raw & BME_TABLE_ENTRY_OFFSET_MASK;
    if (e && !(raw & BME_TABLE_ENTRY_RESERVED_MASK) &&
        !(raw & BME_TABLE_ENTRY_FLAG_ALL_ONES) &&
        !(e & (s->cluster_size - 1)) && e < s->file_size)
      qcow2_free_clusters (s, e, s->cluster_size);
  }
  qcow2_free_clusters (s, offset, bytes);
  free (t);
  return 0;
}

/* Past the commit point nothing can fail the operation; what is not freed
 * leaks.  Each step is tried twice, so a transient error does not leak. */
void
qcow2_bitmaps_finish (struct image *img, struct qcow2_bitmap_pending *p)
{
  struct qcow2 *s = to_qcow2 (img);
  if (!p)
    return;
  for (size_t i = 0; i < p->n_garbage; i++) {
    if (p->garbage[i].offset == 0 && p->garbage[i].size == 0) {
      if (p->old_dir_size)
        qcow2_free_clusters (s, p->old_dir_offset, p->old_dir_size);
    }
    else if (free_table (s, p->garbage[i].offset, p->garbage[i].size) < 0)
      free_table (s, p->garbage[i].offset, p->garbage[i].size);
  }
  if (qcow2_refcount_flush (s) < 0)
    qcow2_refcount_flush (s);
  error_clear ();
  pending_free (p);
}

int
qcow2_bitmaps_revert (struct image *img, struct qcow2_bitmap_pending *p)
{
  struct qcow2 *s = to_qcow2 (img);
  if (!p)
    return 0;
  s->nb_bitmaps = p->old_nb;
  s->bitmap_directory_offset = p->old_dir_offset;
  s->bitmap_directory_size = p->old_dir_size;
  s->has_bitmaps_ext = p->old_nb > 0;
  if (qcow2_update_header (s) < 0) {
    /* The image keeps the new state, which is consistent; its clusters
     * must stay allocated. */
    s->nb_bitmaps = p->new_nb;
    s->bitmap_directory_offset = p->new_dir_offset;
    s->bitmap_directory_size = p->new_dir_size;
    pending_free (p);
    return -1;
  }
  for (size_t i = 0; i < p->n_allocated; i++)
    qcow2_free_clusters (s, p->allocated[i] << s->cluster_bits,
                         s->cluster_size);
  if (qcow2_refcount_flush (s) < 0)
    qcow2_refcount_flush (s);
  pending_free (p);
  return 0;
}
