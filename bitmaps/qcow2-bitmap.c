/* Loading qcow2 persistent bitmaps: see qcow2-bitmap.h.  Every check is
 * one QEMU makes when it opens an image (qcow2-bitmap.c check_dir_entry,
 * bitmap_list_load and load_bitmap_data), so qbak accepts what QEMU
 * accepts and refuses what it refuses. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "formats/qcow2.h"
#include "formats/qcow2-refmap.h"

uint64_t
qcow2_bitmap_stream_bytes (uint64_t size, unsigned gran_bits)
{
  uint64_t bits = (size >> gran_bits) + ((size & ((1ULL << gran_bits) - 1)) != 0);
  return (bits + 7) / 8;
}

uint64_t
qcow2_bitmap_table_size (uint64_t size, unsigned gran_bits,
                         uint32_t cluster_size)
{
  uint64_t bytes = qcow2_bitmap_stream_bytes (size, gran_bits);
  return (bytes + cluster_size - 1) / cluster_size;
}

void
qcow2_bitmaps_free (struct qcow2_bitmap_list *list)
{
  if (!list)
    return;
  for (size_t i = 0; i < list->n; i++) {
    free (list->v[i].name);
    dirty_bitmap_free (list->v[i].bm);
  }
  free (list->v);
  list->v = NULL;
  list->n = 0;
}

/* check_dir_entry (rules 11-19). */
static int
check_entry (struct qcow2 *s, const struct qcow2_bitmap *b, uint8_t type)
{
  const char *fn = s->base.filename;
  uint64_t cs = s->cluster_size;

  if (b->table_size == 0) {
    set_invalid ("%s: bitmap '%s': bitmap table size is zero", fn, b->name);
    return -1;
  }
  if (b->table_offset == 0 || (b->table_offset & (cs - 1))) {
    set_invalid ("%s: bitmap '%s': bitmap table offset %#" PRIx64
                 " is zero or not cluster aligned", fn, b->name,
                 b->table_offset);
    return -1;
  }
  if (b->table_size > BME_MAX_TABLE_SIZE) {
    set_invalid ("%s: bitmap '%s': bitmap table size %" PRIu32
                 " exceeds the maximum", fn, b->name, b->table_size);
    return -1;
  }
  if (b->granularity_bits < BME_MIN_GRANULARITY_BITS ||
      b->granularity_bits > BME_MAX_GRANULARITY_BITS) {
    set_invalid ("%s: bitmap '%s': granularity bits %u outside 9..31",
                 fn, b->name, b->granularity_bits);
    return -1;
  }
  if (b->flags & BME_RESERVED_FLAGS) {
    set_invalid ("%s: bitmap '%s': reserved flag bits set (flags %#"
                 PRIx32 ")", fn, b->name, b->flags);
    return -1;
  }
  if (type != BME_TYPE_DIRTY) {
    set_invalid ("%s: bitmap '%s': unknown bitmap type %u", fn, b->name,
                 type);
    return -1;
  }
  if ((uint64_t) b->table_size * cs > BME_MAX_PHYS_SIZE) {
    set_invalid ("%s: bitmap '%s': bitmap table size %" PRIu32
                 " covers more than 512 MiB of bitmap data", fn, b->name,
                 b->table_size);
    return -1;
  }
  if (!b->in_use) {
    uint64_t need = qcow2_bitmap_table_size (s->base.size,
                                             b->granularity_bits, s->cluster_size);
    if (b->table_size < need) {
      set_invalid ("%s: bitmap '%s': bitmap table too small for the virtual "
                   "size (%" PRIu32 " entries, %" PRIu64 " needed)", fn,
                   b->name, b->table_size, need);
      return -1;
    }
  }
  return qcow2_check_metadata_range (s, b->table_offset,
                                     (uint64_t) b->table_size * 8,
                                     "bitmap table");
}

/* Read B's table into a new buffer of table_size raw entries. */
static uint8_t *
read_table (struct qcow2 *s, const struct qcow2_bitmap *b)
{
  size_t tbytes = (size_t) b->table_size * 8;
  uint8_t *table = malloc (tbytes);
  if (!table) {
    set_nomem ();
    return NULL;
  }
  if (qbak_file_pread (s->base.file, table, tbytes, b->table_offset) < 0) {
    free (table);
    return NULL;
  }
  return table;
}

/* Whether raw table entry E points to a data cluster that could be B's.
 * Tables of in_use bitmaps are not validated (QEMU does not read them),
 * so their entries that could not be valid are simply not B's: such a
 * cluster is never read and never freed. */
static bool
entry_cluster (struct qcow2 *s, uint64_t e, uint64_t *offset)
{
  uint64_t off = e & BME_TABLE_ENTRY_OFFSET_MASK;
  *offset = off;
  return off && !(e & BME_TABLE_ENTRY_RESERVED_MASK) &&
         !(e & BME_TABLE_ENTRY_FLAG_ALL_ONES) &&
         !(off & (s->cluster_size - 1)) && off < s->file_size;
}

/* Check the entries of B's TABLE (rules 20-21). */
static int
check_table (struct qcow2 *s, const struct qcow2_bitmap *b,
             const uint8_t *table)
{
  const char *fn = s->base.filename;
  for (uint32_t i = 0; i < b->table_size; i++) {
    uint64_t e = be64_at (table + (size_t) i * 8);
    uint64_t off = e & BME_TABLE_ENTRY_OFFSET_MASK;
    if (e & BME_TABLE_ENTRY_RESERVED_MASK) {
      set_invalid ("%s: bitmap '%s': table entry %" PRIu32 " has reserved "
                   "bits set (%#" PRIx64 ")", fn, b->name, i, e);
      return -1;
    }
    if (off == 0)
      continue;
    if (e & BME_TABLE_ENTRY_FLAG_ALL_ONES) {
      set_invalid ("%s: bitmap '%s': table entry %" PRIu32 " has both an "
                   "offset and the all-ones flag", fn, b->name, i);
      return -1;
    }
    char *what = NULL;
    if (asprintf (&what, "bitmap '%s': table entry %" PRIu32 ": bitmap data "
                  "cluster", b->name, i) < 0)
      what = NULL;
    int r = qcow2_check_metadata_range (s, off, s->cluster_size,
                                        what ? what : "bitmap data cluster");
    free (what);
    if (r < 0)
      return -1;
  }
  return 0;
}

/* The bitmaps' clusters belong to one bitmap each: the directory, then
 * every table (ranges only, so tables shared between entries are refused
 * before any is read: the reading then costs at most the file's size),
 * then every data cluster.  Tables are checked as they are read. */
struct register_ctx {
  const struct qcow2_bitmap_list *list;
  uint64_t dir_offset, dir_size;
  bool check;                  /* validate the tables of consistent bitmaps */
};

static int
register_bitmaps (struct qcow2_refmap *m, void *opaque)
{
  struct register_ctx *c = opaque;
  struct qcow2 *s = qcow2_refmap_image (m);
  struct qcow2_ref_owner o = { "the bitmap directory", NULL, NULL, 0, false,
                               -1 };
  if (c->dir_size &&
      qcow2_refmap_add (m, c->dir_offset, c->dir_size, QCOW2_REF_EXCLUSIVE,
                        &o) < 0)
    return -1;
  for (size_t i = 0; i < c->list->n; i++) {
    const struct qcow2_bitmap *b = &c->list->v[i];
    o.what = "the table of bitmap";
    o.name = b->name;
    if (qcow2_refmap_add (m, b->table_offset, (uint64_t) b->table_size * 8,
                          QCOW2_REF_EXCLUSIVE, &o) < 0)
      return -1;
  }
  for (size_t i = 0; i < c->list->n; i++) {
    const struct qcow2_bitmap *b = &c->list->v[i];
    uint8_t *table = read_table (s, b);
    if (!table)
      return -1;
    if (c->check && !b->in_use && check_table (s, b, table) < 0) {
      free (table);
      return -1;
    }
    o.what = "a data cluster of bitmap";
    o.name = b->name;
    o.label = "table entry";
    for (uint32_t k = 0; k < b->table_size; k++) {
      uint64_t off;
      o.value = k;
      if (entry_cluster (s, be64_at (table + (size_t) k * 8), &off) &&
          qcow2_refmap_add (m, off, s->cluster_size, QCOW2_REF_EXCLUSIVE,
                            &o) < 0) {
        free (table);
        return -1;
      }
    }
    free (table);
  }
  return 0;
}

struct qcow2_refmap *
qcow2_bitmaps_refmap (struct image *img, const struct qcow2_bitmap_list *list,
                      unsigned what)
{
  struct qcow2 *s = to_qcow2 (img);
  struct register_ctx c = { list, s->bitmap_directory_offset,
                            s->nb_bitmaps ? s->bitmap_directory_size : 0,
                            false };
  return qcow2_refmap_build (s, what, register_bitmaps, &c);
}

/* The table of B must have exactly the size its granularity needs, as
 * QEMU requires before it reads the data. */
static int
check_table_size (struct qcow2 *s, const struct qcow2_bitmap *b)
{
  uint64_t need = qcow2_bitmap_table_size (s->base.size, b->granularity_bits,
                                           s->cluster_size);
  if (b->table_size != need) {
    set_invalid ("%s: bitmap '%s': bitmap table size %" PRIu32 " does not "
                 "match the virtual size (%" PRIu64 " entries expected)",
                 s->base.filename, b->name, b->table_size, need);
    return -1;
  }
  return 0;
}

/* Stream bytes [START, +LEN) of B, bits past the disk excluded: the number
 * of set bits in BUF. */
static uint64_t
count_bits (const uint8_t *buf, size_t len, uint64_t start, uint64_t nbits)
{
  uint64_t first_bit = start * 8;
  if (first_bit >= nbits)
    return 0;
  uint64_t usable = nbits - first_bit;     /* bits of BUF inside the disk */
  size_t full = usable / 8 < len ? (size_t) (usable / 8) : len;
  uint64_t n = 0;
  size_t i = 0;
  for (; i + 8 <= full; i += 8) {
    uint64_t w;
    memcpy (&w, buf + i, 8);
    n += (uint64_t) __builtin_popcountll (w);
  }
  for (; i < full; i++)
    n += (uint64_t) __builtin_popcount (buf[i]);
  if (full < len && usable % 8)
    n += (uint64_t) __builtin_popcount (buf[full] &
                                        ((1u << (usable % 8)) - 1));
  return n;
}

int
qcow2_bitmap_dirty_bytes (struct image *img, const struct qcow2_bitmap *b,
                          uint64_t *out)
{
  *out = 0;
  if (b->bm) {
    *out = dirty_bitmap_dirty_bytes (b->bm);
    return 0;
  }
  struct qcow2 *s = to_qcow2 (img);
  uint64_t cs = s->cluster_size;
  uint64_t nbits = (s->base.size >> b->granularity_bits) +
                   ((s->base.size & ((1ULL << b->granularity_bits) - 1)) != 0);
  uint64_t stream = (nbits + 7) / 8;
  uint8_t *table = read_table (s, b);
  uint8_t *cluster = malloc (cs);
  uint64_t count = 0;
  int ret = -1;
  if (!table || !cluster) {
    if (table)
      set_nomem ();
    goto out;
  }
  for (uint32_t i = 0; i < b->table_size; i++) {
    uint64_t e = be64_at (table + (size_t) i * 8);
    uint64_t off = e & BME_TABLE_ENTRY_OFFSET_MASK;
    uint64_t start = (uint64_t) i * cs;
    if (start >= stream)
      break;
    size_t len = stream - start < cs ? (size_t) (stream - start) : cs;
    if (off == 0) {
      /* An all-ones entry: every bit of its bytes that is on the disk. */
      if (e & BME_TABLE_ENTRY_FLAG_ALL_ONES) {
        uint64_t end = (start + len) * 8 < nbits ? (start + len) * 8 : nbits;
        count += end - start * 8;
      }
      continue;
    }
    if (qbak_file_pread (s->base.file, cluster, len, off) < 0)
      goto out;
    count += count_bits (cluster, len, start, nbits);
  }
  /* Whole granules, as QEMU's dirty count. */
  *out = count << b->granularity_bits;
  ret = 0;
out:
  free (table);
  free (cluster);
  return ret;
}

int
qcow2_bitmap_load_data (struct image *img, struct qcow2_bitmap *b)
{
  struct qcow2 *s = to_qcow2 (img);
  const char *fn = s->base.filename;
  uint64_t cs = s->cluster_size;
  if (b->bm)
    return 0;
  if (b->in_use) {
    set_invalid ("%s: bitmap '%s' is in use: its data is unknown", fn,
                 b->name);
    return -1;
  }
  struct dirty_bitmap *bm = dirty_bitmap_create (s->base.size,
                                                 1ULL << b->granularity_bits);
  if (!bm)
    return -1;
  uint8_t *table = read_table (s, b);
  uint8_t *cluster = malloc (cs);
  int ret = -1;
  if (!table || !cluster) {
    if (table)
      set_nomem ();
    goto out;
  }
  /* The table was checked when the image was opened; it is checked again
   * in case the file changed under a shared (-U) open. */
  if (check_table (s, b, table) < 0)
    goto out;
  uint64_t stream = dirty_bitmap_stream_bytes (bm);
  for (uint32_t i = 0; i < b->table_size; i++) {
    uint64_t e = be64_at (table + (size_t) i * 8);
    uint64_t off = e & BME_TABLE_ENTRY_OFFSET_MASK;
    uint64_t start = (uint64_t) i * cs;
    if (start >= stream)
      break;
    size_t len = stream - start < cs ? (size_t) (stream - start) : cs;
    if (off == 0) {
      if (e & BME_TABLE_ENTRY_FLAG_ALL_ONES)
        dirty_bitmap_deserialize_ones (bm, start, len);
      continue;
    }
    if (qbak_file_pread (s->base.file, cluster, len, off) < 0)
      goto out;
    dirty_bitmap_deserialize (bm, start, len, cluster);
  }
  b->bm = bm;
  bm = NULL;
  ret = 0;
out:
  dirty_bitmap_free (bm);
  free (table);
  free (cluster);
  return ret;
}

/* The bitmaps extension's fields (the header codec only decodes them),
 * checked as QEMU's qcow2_read_extensions does.  The reader kept them
 * only for a consistent extension (autoclear bit set). */
static int
check_ext (struct qcow2 *s)
{
  const char *fn = s->base.filename;

  if (!s->has_bitmaps_ext ||
      !(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) || s->version < 3)
    return 0;
  if (s->bitmaps_reserved != 0) {
    set_invalid ("%s: bitmaps extension: reserved field is not zero", fn);
    return -1;
  }
  if (s->nb_bitmaps > QCOW2_MAX_BITMAPS) {
    set_invalid ("%s: bitmaps extension: %" PRIu32 " bitmaps exceed "
                 "the maximum of %d", fn, s->nb_bitmaps, QCOW2_MAX_BITMAPS);
    return -1;
  }
  if (s->nb_bitmaps == 0) {
    set_invalid ("%s: bitmaps extension with zero bitmaps", fn);
    return -1;
  }
  if (s->bitmap_directory_offset & (s->cluster_size - 1)) {
    set_invalid ("%s: bitmaps extension: bitmap directory offset %#"
                 PRIx64 " is not cluster aligned", fn,
                 s->bitmap_directory_offset);
    return -1;
  }
  if (s->bitmap_directory_size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) {
    set_invalid ("%s: bitmaps extension: bitmap directory size %" PRIu64
                 " exceeds the maximum of %u", fn,
                 s->bitmap_directory_size, QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
    return -1;
  }
  return 0;
}

int
qcow2_bitmaps_check_extension (struct image *img)
{
  return img->format == IMAGE_QCOW2 ? check_ext (to_qcow2 (img)) : 0;
}

int
qcow2_bitmaps_load (struct image *img, struct qcow2_bitmap_list *out)
{
  memset (out, 0, sizeof *out);
  if (img->format != IMAGE_QCOW2)
    return 0;
  struct qcow2 *s = to_qcow2 (img);
  if (check_ext (s) < 0)
    return -1;
  if (s->nb_bitmaps == 0)
    return 0;

  const char *fn = img->filename;
  uint64_t size = s->bitmap_directory_size;
  if (size == 0) {                    /* QEMU refuses an empty directory */
    set_invalid ("%s: bitmap directory size is zero", fn);
    return -1;
  }
  if (qcow2_check_metadata_range (s, s->bitmap_directory_offset, size,
                                  "bitmap directory") < 0)
    return -1;
  uint8_t *dir = malloc (size);
  out->v = calloc (s->nb_bitmaps, sizeof *out->v);
  if (!dir || !out->v) {
    free (dir);
    set_nomem ();
    return -1;
  }
  if (qbak_file_pread (img->file, dir, size, s->bitmap_directory_offset) < 0)
    goto fail;

  uint64_t pos = 0;
  while (pos < size) {                /* entries fill the directory exactly */
    if (size - pos < 24) {
      set_invalid ("%s: broken bitmap directory: entry at %" PRIu64
                   " is truncated", fn, pos);
      goto fail;
    }
    if (out->n >= s->nb_bitmaps) {
      set_invalid ("%s: bitmap directory holds more bitmaps than the %"
                   PRIu32 " the bitmaps extension declares", fn,
                   s->nb_bitmaps);
      goto fail;
    }
    const uint8_t *e = dir + pos;
    uint32_t extra = be32_at (e + 20);
    uint16_t name_size = be16_at (e + 18);
    uint64_t esize = (24 + (uint64_t) extra + name_size + 7) & ~7ULL;
    if (esize > size - pos) {
      set_invalid ("%s: broken bitmap directory: entry at %" PRIu64
                   " runs past the directory size", fn, pos);
      goto fail;
    }
    if (extra != 0) {
      set_invalid ("%s: bitmap directory entry %zu: bitmap extra data is "
                   "not supported (extra_data_size %" PRIu32 ")", fn,
                   out->n, extra);
      goto fail;
    }
    if (name_size == 0) {
      set_invalid ("%s: bitmap directory entry %zu: bitmap name is empty",
                   fn, out->n);
      goto fail;
    }
    if (name_size > BME_MAX_NAME_SIZE) {
      set_invalid ("%s: bitmap directory entry %zu: bitmap name too long "
                   "(%u bytes, at most %d)", fn, out->n, name_size,
                   BME_MAX_NAME_SIZE);
      goto fail;
    }
    struct qcow2_bitmap *b = &out->v[out->n];
    b->name = malloc ((size_t) name_size + 1);
    if (!b->name) {
      set_nomem ();
      goto fail;
    }
    memcpy (b->name, e + 24 + extra, name_size);
    b->name[name_size] = '\0';
    out->n++;
    b->table_offset = be64_at (e);
    b->table_size = be32_at (e + 8);
    b->flags = be32_at (e + 12);
    b->granularity_bits = e[17];
    b->in_use = b->flags & BME_FLAG_IN_USE;
    b->enabled = b->flags & BME_FLAG_AUTO;
    if (strlen (b->name) != name_size) {
      set_invalid ("%s: bitmap directory entry %zu: bitmap name contains a "
                   "NUL byte", fn, out->n - 1);
      goto fail;
    }
    if (check_entry (s, b, e[16]) < 0)
      goto fail;
    for (size_t j = 0; j + 1 < out->n; j++) {        /* unique names */
      if (strcmp (out->v[j].name, b->name) == 0) {
        set_invalid ("%s: duplicate bitmap name '%s' in the bitmap "
                     "directory", fn, b->name);
        goto fail;
      }
    }
    pos += esize;
  }
  if (out->n != s->nb_bitmaps) {            /* as many as declared */
    set_invalid ("%s: bitmap directory holds %zu bitmaps, the bitmaps "
                 "extension declares %" PRIu32, fn, out->n, s->nb_bitmaps);
    goto fail;
  }
  for (size_t i = 0; i < out->n; i++)
    if (!out->v[i].in_use && check_table_size (s, &out->v[i]) < 0)
      goto fail;
  /* Each bitmap's clusters are its own and lie outside the image's own
   * tables; the data itself is read only when an operation needs it. */
  struct register_ctx c = { out, s->bitmap_directory_offset, size, true };
  struct qcow2_refmap *m = qcow2_refmap_build (s, QCOW2_REFMAP_TOP_TABLES,
                                               register_bitmaps, &c);
  if (!m)
    goto fail;
  qcow2_refmap_free (m);
  free (dir);
  return 0;

fail:
  free (dir);
  qcow2_bitmaps_free (out);
  return -1;
}
