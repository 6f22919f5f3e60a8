/* The reference map of a qcow2 file: see qcow2-refmap.h.
 *
 * One byte per host cluster: the sharing class of its owners in the top
 * two bits, how many references it has in the low six (saturating).  The
 * owners themselves are not stored: when a conflict is found, the same
 * registrations run again in "find" mode, which only notes the first two
 * owners of the offending cluster.  Messages therefore cost nothing on
 * the normal path.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/iszero.h"
#include "formats/qcow2-refmap.h"

#define USE_CLASS_SHIFT 6
#define USE_COUNT_MAX   63u

enum conflict_kind { NO_CONFLICT, OVERLAP, LOW_REFCOUNT };

struct qcow2_refmap {
  struct qcow2 *s;
  uint8_t *use;                 /* per host cluster */
  uint64_t n_clusters;
  uint64_t file_size;
  bool check_refcounts;         /* shared references checked as they come */

  /* The first problem found; the error is set by the builder. */
  enum conflict_kind conflict;
  uint64_t conflict_index;
  uint64_t conflict_refs, conflict_refcount;
  bool error_set;               /* an error of its own (outside the file) */

  /* Find mode: note the first owners of TARGET, check nothing. */
  bool finding;
  uint64_t target;
  char *owners[2];
  unsigned n_owners;
};

struct qcow2 *
qcow2_refmap_image (const struct qcow2_refmap *m)
{
  return m->s;
}

static char *
describe (const struct qcow2_ref_owner *o)
{
  char name[1100] = "", value[64] = "", snap[48] = "";
  if (o->name)
    snprintf (name, sizeof name, " '%s'", o->name);
  if (o->label)
    snprintf (value, sizeof value, o->value_hex ? " (%s %#" PRIx64 ")"
                                                : " (%s %" PRIu64 ")",
              o->label, o->value);
  if (o->snapshot >= 0)
    snprintf (snap, sizeof snap, " of internal snapshot %" PRId64,
              o->snapshot + 1);
  char *r = NULL;
  if (asprintf (&r, "%s%s%s%s", o->what, name, value, snap) < 0)
    return NULL;
  return r;
}

static uint8_t
class_code (enum qcow2_ref_class cls)
{
  return (uint8_t) (cls + 1);
}

static int
refcount_of (struct qcow2_refmap *m, uint64_t index, uint64_t *rc)
{
  return qcow2_get_refcount (m->s, index, rc);
}

int
qcow2_refmap_add (struct qcow2_refmap *m, uint64_t offset, uint64_t len,
                  enum qcow2_ref_class cls,
                  const struct qcow2_ref_owner *owner)
{
  struct qcow2 *s = m->s;
  if (len == 0)
    len = 1;

  if (m->finding) {
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (offset + len - 1) >> s->cluster_bits;
    if (offset + len < offset || m->target < first || m->target > last)
      return 0;
    if (m->n_owners < 2)
      m->owners[m->n_owners++] = describe (owner);
    return m->n_owners == 2 ? -1 : 0;     /* enough: stop the walk */
  }

  if (offset + len < offset || offset + len > m->file_size) {
    char *d = describe (owner);
    set_invalid ("%s: %s at offset %#" PRIx64 " (%" PRIu64 " bytes) lies "
                 "past the end of the file; qbak will not change this image",
                 s->base.filename, d ? d : owner->what, offset, len);
    free (d);
    m->error_set = true;
    return -1;
  }
  uint64_t first = offset >> s->cluster_bits;
  uint64_t last = (offset + len - 1) >> s->cluster_bits;
  uint8_t code = class_code (cls);
  for (uint64_t c = first; c <= last; c++) {
    uint8_t u = m->use[c];
    if (u == 0) {
      m->use[c] = (uint8_t) (code << USE_CLASS_SHIFT | 1);
      continue;
    }
    if ((u >> USE_CLASS_SHIFT) != code || cls == QCOW2_REF_EXCLUSIVE) {
      m->conflict = OVERLAP;
      m->conflict_index = c;
      return -1;
    }
    unsigned count = u & USE_COUNT_MAX;
    if (count == USE_COUNT_MAX)
      continue;                     /* saturated: no longer checked */
    count++;
    m->use[c] = (uint8_t) (code << USE_CLASS_SHIFT | count);
    /* A shared cluster is checked at once, so a hostile image cannot
     * make us walk the same L2 table many more times than its refcount
     * allows. */
    if (m->check_refcounts) {
      uint64_t rc;
      if (refcount_of (m, c, &rc) < 0)
        return -1;
      if (rc < count) {
        m->conflict = LOW_REFCOUNT;
        m->conflict_index = c;
        m->conflict_refs = count;
        m->conflict_refcount = rc;
        return -1;
      }
    }
  }
  return 0;
}

bool
qcow2_refmap_referenced (const struct qcow2_refmap *m, uint64_t index)
{
  return index < m->n_clusters && m->use[index] != 0;
}

void
qcow2_refmap_forget (struct qcow2_refmap *m, uint64_t offset, uint64_t len)
{
  uint64_t first = offset >> m->s->cluster_bits;
  uint64_t end = (offset + len + m->s->cluster_size - 1) >> m->s->cluster_bits;
  for (uint64_t c = first; c < end && c < m->n_clusters; c++)
    m->use[c] = 0;
}

int
qcow2_refmap_leaks (struct qcow2_refmap *m, uint64_t *n, uint64_t *first)
{
  struct qcow2 *s = m->s;
  *n = 0;
  *first = 0;
  /* Only the ranges that have a refcount block can hold a refcount. */
  for (uint64_t r = 0; s->reftable && r < s->reftable_entries; r++) {
    if (!(s->reftable[r] & REFT_OFFSET_MASK))
      continue;
    for (uint64_t i = 0; i < s->refblock_entries; i++) {
      uint64_t c = r * s->refblock_entries + i, rc;
      if (qcow2_get_refcount (s, c, &rc) < 0)
        return -1;
      unsigned refs = c < m->n_clusters ? m->use[c] & USE_COUNT_MAX : 0;
      if (refs == USE_COUNT_MAX || rc <= refs)
        continue;
      if ((*n)++ == 0)
        *first = c << s->cluster_bits;
    }
  }
  return 0;
}

void
qcow2_refmap_free (struct qcow2_refmap *m)
{
  if (!m)
    return;
  free (m->use);
  free (m->owners[0]);
  free (m->owners[1]);
  free (m);
}

/* ---- The image's own structures ---------------------------------------- */

static int
bad_offset (struct qcow2_refmap *m, const struct qcow2_ref_owner *o,
            uint64_t offset)
{
  if (m->finding)
    return 0;                      /* pass 1 stopped earlier: ignore */
  char *d = describe (o);
  set_invalid ("%s: %s at offset %#" PRIx64 " is not cluster aligned; qbak "
               "will not change this image", m->s->base.filename,
               d ? d : o->what, offset);
  free (d);
  m->error_set = true;
  return -1;
}

/* Entries checked at once for emptiness (a power of two: tables hold a
 * power of two of entries). */
#define L2_SKIP_ENTRIES 64

/* One L2 table: the data clusters its entries point to. */
static int
walk_l2 (struct qcow2_refmap *m, uint8_t *buf, uint64_t l2_offset,
         uint64_t l1_index, int64_t snapshot)
{
  struct qcow2 *s = m->s;
  uint64_t cs = s->cluster_size;
  bool external = s->base.data_file != s->base.file;

  if (qbak_file_pread (s->base.file, buf, cs, l2_offset) < 0)
    return -1;
  for (uint64_t i = 0; i < s->l2_entries; i++) {
    /* Most tables of a big sparse disk are mostly empty: skip a run of
     * empty entries at memcmp speed rather than entry by entry, which
     * made this walk most of a bitmap commit's time on a 1 TiB disk. */
    if (i % L2_SKIP_ENTRIES == 0 && i + L2_SKIP_ENTRIES <= s->l2_entries &&
        is_zero (buf + i * s->l2_entry_bytes,
                 L2_SKIP_ENTRIES * s->l2_entry_bytes)) {
      i += L2_SKIP_ENTRIES - 1;
      continue;
    }
    uint64_t e = be64_at (buf + i * s->l2_entry_bytes);
    if (!e)
      continue;
    uint64_t guest = ((l1_index * s->l2_entries) + i) << s->cluster_bits;
    struct qcow2_ref_owner o = { "guest data cluster", NULL, "guest offset",
                                 guest, true, snapshot };
    if (e & QCOW_OFLAG_COMPRESSED) {
      if (external)
        continue;                 /* refused when read; nothing in the file */
      unsigned x = 62 - (s->cluster_bits - 8);
      uint64_t coff = e & ((1ULL << x) - 1);
      uint64_t sectors = ((e >> x) & ((1ULL << (s->cluster_bits - 8)) - 1))
                         + 1;
      uint64_t csize = sectors * 512 - (coff & 511);
      /* The last compressed cluster may end in the padding of the file's
       * last sector. */
      if (coff < m->file_size && csize > m->file_size - coff)
        csize = m->file_size - coff;
      o.what = "compressed guest cluster";
      if (qcow2_refmap_add (m, coff, csize, QCOW2_REF_DATA, &o) < 0)
        return -1;
      continue;
    }
    uint64_t host = e & L2E_OFFSET_MASK;
    if (!host || external)
      continue;
    if (host & (cs - 1))
      return bad_offset (m, &o, host);
    if (qcow2_refmap_add (m, host, cs, QCOW2_REF_DATA, &o) < 0)
      return -1;
  }
  return 0;
}

/* An L1 table (in CPU order) and every L2 table it points to. */
static int
walk_l1 (struct qcow2_refmap *m, const uint64_t *l1, uint32_t l1_size,
         int64_t snapshot)
{
  struct qcow2 *s = m->s;
  uint8_t *buf = malloc (s->cluster_size);
  int ret = -1;
  if (!buf) {
    set_nomem ();
    return -1;
  }
  for (uint32_t i = 0; i < l1_size; i++) {
    uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
    struct qcow2_ref_owner o = { "L2 table", NULL, "L1 entry", i, false,
                                 snapshot };
    if (!l2)
      continue;
    if (l2 & (s->cluster_size - 1)) {
      if (bad_offset (m, &o, l2) < 0)
        goto out;
      continue;
    }
    if (qcow2_refmap_add (m, l2, s->cluster_size, QCOW2_REF_L2, &o) < 0 ||
        walk_l2 (m, buf, l2, i, snapshot) < 0)
      goto out;
  }
  ret = 0;
out:
  free (buf);
  return ret;
}

static int
walk_snapshot_l1 (struct qcow2_refmap *m, uint64_t offset, uint32_t size,
                  int64_t snapshot)
{
  struct qcow2 *s = m->s;
  struct qcow2_ref_owner o = { "L1 table", NULL, NULL, 0, false, snapshot };
  if (size == 0)
    return 0;
  if ((uint64_t) size * 8 > QCOW2_MAX_L1_BYTES) {
    if (m->finding)
      return 0;
    set_invalid ("%s: L1 table of internal snapshot %" PRId64 " is too "
                 "large (%" PRIu32 " entries); qbak will not change this "
                 "image", s->base.filename, snapshot + 1, size);
    m->error_set = true;
    return -1;
  }
  if (offset & (s->cluster_size - 1))
    return bad_offset (m, &o, offset);
  if (qcow2_refmap_add (m, offset, (uint64_t) size * 8,
                        QCOW2_REF_EXCLUSIVE, &o) < 0)
    return -1;
  uint8_t *raw = malloc ((size_t) size * 8);
  uint64_t *l1 = malloc ((size_t) size * 8);
  int ret = -1;
  if (!raw || !l1) {
    set_nomem ();
    goto out;
  }
  if (qbak_file_pread (s->base.file, raw, (size_t) size * 8, offset) < 0)
    goto out;
  for (uint32_t i = 0; i < size; i++)
    l1[i] = be64_at (raw + (size_t) i * 8);
  ret = walk_l1 (m, l1, size, snapshot);
out:
  free (raw);
  free (l1);
  return ret;
}

/* The snapshot table (entries of 40 bytes plus extra data, id and name,
 * each padded to 8) and every snapshot's tables. */
static int
walk_snapshots (struct qcow2_refmap *m)
{
  struct qcow2 *s = m->s;
  uint64_t pos = s->snapshots_offset;
  struct qcow2_ref_owner table = { "the snapshot table", NULL, NULL, 0,
                                   false, -1 };
  if (s->nb_snapshots == 0)
    return 0;
  for (uint32_t k = 0; k < s->nb_snapshots; k++) {
    uint8_t h[40];
    if (pos + sizeof h > m->file_size) {
      if (m->finding)
        return 0;
      set_invalid ("%s: snapshot table entry %" PRIu32 " lies past the end "
                   "of the file; qbak will not change this image",
                   s->base.filename, k);
      m->error_set = true;
      return -1;
    }
    if (qbak_file_pread (s->base.file, h, sizeof h, pos) < 0)
      return -1;
    uint64_t l1_offset = be64_at (h);
    uint32_t l1_size = be32_at (h + 8);
    uint64_t len = 40 + (uint64_t) be32_at (h + 36) + be16_at (h + 12) +
                   be16_at (h + 14);
    if (walk_snapshot_l1 (m, l1_offset, l1_size, k) < 0)
      return -1;
    pos += (len + 7) & ~7ULL;
  }
  return qcow2_refmap_add (m, s->snapshots_offset, pos - s->snapshots_offset,
                           QCOW2_REF_EXCLUSIVE, &table);
}

static int
add_top_tables (struct qcow2_refmap *m, bool whole_snapshot_table)
{
  struct qcow2 *s = m->s;
  struct qcow2_ref_owner o = { "the image header", NULL, NULL, 0, false, -1 };
  if (qcow2_refmap_add (m, 0, s->cluster_size, QCOW2_REF_EXCLUSIVE, &o) < 0)
    return -1;
  o.what = "the L1 table";
  if (s->l1_size &&
      qcow2_refmap_add (m, s->l1_table_offset, (uint64_t) s->l1_size * 8,
                        QCOW2_REF_EXCLUSIVE, &o) < 0)
    return -1;
  o.what = "the refcount table";
  if (qcow2_refmap_add (m, s->refcount_table_offset,
                        (uint64_t) s->refcount_table_clusters *
                        s->cluster_size, QCOW2_REF_EXCLUSIVE, &o) < 0)
    return -1;
  o.what = "the snapshot table";
  if (!whole_snapshot_table && s->nb_snapshots &&
      qcow2_refmap_add (m, s->snapshots_offset, 1, QCOW2_REF_EXCLUSIVE,
                        &o) < 0)
    return -1;
  return 0;
}

static int
add_refblocks (struct qcow2_refmap *m)
{
  struct qcow2 *s = m->s;
  for (uint64_t r = 0; r < s->reftable_entries; r++) {
    uint64_t b = s->reftable[r] & REFT_OFFSET_MASK;
    struct qcow2_ref_owner o = { "refcount block", NULL,
                                 "refcount table entry", r, false, -1 };
    if (b && qcow2_refmap_add (m, b, s->cluster_size, QCOW2_REF_EXCLUSIVE,
                               &o) < 0)
      return -1;
  }
  return 0;
}

/* Every referenced cluster needs a refcount of at least its number of
 * references: a lower one would let the cluster be freed (and reused)
 * while something still points to it. */
static int
check_refcounts (struct qcow2_refmap *m)
{
  for (uint64_t c = 0; c < m->n_clusters; c++) {
    if ((c & 7) == 0 && c + 8 <= m->n_clusters) {
      uint64_t w;
      memcpy (&w, m->use + c, 8);
      if (w == 0) {
        c += 7;
        continue;
      }
    }
    unsigned refs = m->use[c] & USE_COUNT_MAX;
    if (!refs)
      continue;
    uint64_t rc;
    if (refcount_of (m, c, &rc) < 0)
      return -1;
    if (rc < refs) {
      m->conflict = LOW_REFCOUNT;
      m->conflict_index = c;
      m->conflict_refs = refs;
      m->conflict_refcount = rc;
      return -1;
    }
  }
  return 0;
}

static int
run_pass (struct qcow2_refmap *m, unsigned what, qcow2_refmap_extra_fn extra,
          void *opaque)
{
  struct qcow2 *s = m->s;
  bool all = what & QCOW2_REFMAP_ALL;
  if ((what & (QCOW2_REFMAP_TOP_TABLES | QCOW2_REFMAP_ALL)) &&
      add_top_tables (m, all) < 0)
    return -1;
  if (all) {
    if (walk_l1 (m, s->l1, s->l1_size, -1) < 0 ||
        (s->reftable && add_refblocks (m) < 0) ||
        walk_snapshots (m) < 0)
      return -1;
  }
  if (extra && extra (m, opaque) < 0)
    return -1;
  if (all && s->reftable && !m->finding && check_refcounts (m) < 0)
    return -1;
  return 0;
}

static struct qcow2_refmap *
new_map (struct qcow2 *s)
{
  struct qcow2_refmap *m = calloc (1, sizeof *m);
  if (!m) {
    set_nomem ();
    return NULL;
  }
  m->s = s;
  int64_t size = qbak_file_size (s->base.file);
  if (size < 0) {
    free (m);
    return NULL;
  }
  m->file_size = (uint64_t) size;
  m->n_clusters = (m->file_size + s->cluster_size - 1) >> s->cluster_bits;
  m->use = calloc (m->n_clusters ? m->n_clusters : 1, 1);
  if (!m->use) {
    free (m);
    set_nomem ();
    return NULL;
  }
  return m;
}

/* Name the owners of the conflicting cluster of M and set the error. */
static void
report_conflict (struct qcow2_refmap *m, unsigned what,
                 qcow2_refmap_extra_fn extra, void *opaque)
{
  struct qcow2 *s = m->s;
  uint64_t off = m->conflict_index << s->cluster_bits;
  struct qcow2_refmap f = { 0 };
  f.s = s;
  f.file_size = m->file_size;
  f.finding = true;
  f.target = m->conflict_index;
  run_pass (&f, what, extra, opaque);
  error_clear ();
  const char *a = f.n_owners > 0 && f.owners[0] ? f.owners[0] : "something";
  const char *b = f.n_owners > 1 && f.owners[1] ? f.owners[1] : "something";

  if (m->conflict == OVERLAP)
    set_invalid ("%s: host cluster at offset %#" PRIx64 " is used twice, as "
                 "%s and as %s; the metadata overlaps, so qbak will not "
                 "change this image (see 'qemu-img check')",
                 s->base.filename, off, a, b);
  else if (f.n_owners > 1)
    set_invalid ("%s: host cluster at offset %#" PRIx64 " is referenced %"
                 PRIu64 " times (as %s, and as %s) but its refcount is %"
                 PRIu64 "; qbak will not change this image: repair it with "
                 "'qemu-img check -r all'", s->base.filename, off,
                 m->conflict_refs, a, b, m->conflict_refcount);
  else
    set_invalid ("%s: host cluster at offset %#" PRIx64 " is in use as %s "
                 "but its refcount is %" PRIu64 "; qbak will not change this "
                 "image: repair it with 'qemu-img check -r all'",
                 s->base.filename, off, a, m->conflict_refcount);
  free (f.owners[0]);
  free (f.owners[1]);
}

struct qcow2_refmap *
qcow2_refmap_build (struct qcow2 *s, unsigned what,
                    qcow2_refmap_extra_fn extra, void *opaque)
{
  struct qcow2_refmap *m = new_map (s);
  if (!m)
    return NULL;
  m->check_refcounts = (what & QCOW2_REFMAP_ALL) && s->reftable;
  if (run_pass (m, what, extra, opaque) == 0)
    return m;
  if (m->conflict != NO_CONFLICT && !m->error_set)
    report_conflict (m, what, extra, opaque);
  qcow2_refmap_free (m);
  return NULL;
}
