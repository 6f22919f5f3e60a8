/* One backup file of a repository, verified by itself (verify-file.h):
 * opened as the qcow2 file qbak wrote (never probed), read-only, without
 * its backing file; its metadata walked as qemu-img check walks it; its
 * header checked against the record; then its data against its manifest.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "formats/qcow2-refmap.h"
#include "formats/qcow2.h"
#include "lib/internal.h"
#include "lib/repo-objects.h"
#include "lib/verify-file.h"

void
verify_problem (const struct verify_sink *sink,
                struct verify_file_result *res, bool has_offset,
                uint64_t offset, const char *fmt, ...)
{
  char what[2048];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (what, sizeof what, fmt, ap);
  va_end (ap);
  res->failed = true;
  if (sink->problem)
    sink->problem (sink->opaque, has_offset, offset, what);
}

bool
verify_cancelled (const struct verify_sink *sink, const char *what)
{
  if (!sink->cancel || !*sink->cancel)
    return false;
  qbak_internal_error (STATUS_CANCELLED, 0, "%s: verification cancelled",
                       what);
  return true;
}

/* An error the library set while reading the file is the file's problem,
 * unless it stops the verification itself. */
static int
error_is_problem (const struct verify_sink *sink,
                  struct verify_file_result *res, const char *prefix)
{
  if (error_get_status () == STATUS_IO && error_get_errno () == ENOMEM)
    return -1;
  verify_problem (sink, res, false, 0, "%s%s", prefix, error_get_message ());
  error_clear ();
  return 0;
}

/* What qemu-img check checks: every reference inside the file, refcounts
 * at least the references, no cluster used twice, no cluster with a
 * refcount that nothing references. */
static int
check_structure (struct qbak_image *h, const struct verify_sink *sink,
                 struct verify_file_result *res)
{
  struct image *img = h->img;
  struct qcow2 *s = to_qcow2 (img);
  if (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT)
    verify_problem (sink, res, false, 0, "marked corrupt");
  if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY)
    verify_problem (sink, res, false, 0, "marked dirty (its writer did not "
                    "finish it); qbak's files never are");
  if (s->data_file_name)
    verify_problem (sink, res, false, 0, "names an external data file; "
                    "qbak's files never do");
  if (s->nb_snapshots)
    verify_problem (sink, res, false, 0, "holds internal snapshots; qbak's "
                    "files never do");
  if (res->failed)
    return 0;
  if (!s->reftable && qcow2_refcount_init (s) < 0)
    return error_is_problem (sink, res, "");
  struct qcow2_refmap *m = qcow2_bitmaps_refmap (img, &h->bitmaps,
                                                 QCOW2_REFMAP_ALL);
  if (!m)
    return error_is_problem (sink, res, "");
  uint64_t n, first;
  int rc = qcow2_refmap_leaks (m, &n, &first);
  qcow2_refmap_free (m);
  if (rc < 0)
    return error_is_problem (sink, res, "");
  if (n)
    verify_problem (sink, res, false, 0, "%" PRIu64 " cluster%s leaked (a "
                    "refcount without a reference), the first at host offset "
                    "%#" PRIx64 "; a finished qbak file has none", n,
                    n == 1 ? "" : "s", first);
  return 0;
}

/* The header against the record: the chain a restore follows is the one
 * the records describe. */
static void
check_link (struct image *img, const struct verify_file_expect *e,
            const struct verify_sink *sink, struct verify_file_result *res)
{
  char want[64] = "";
  if (e->parent)
    snprintf (want, sizeof want, "%s.qcow2", e->parent);
  const char *have = img->backing_name ? img->backing_name : "";
  if (strcmp (have, want) != 0) {
    if (!e->parent)
      verify_problem (sink, res, false, 0, "a full, yet its backing file is "
                      "'%s'", have);
    else if (!*have)
      verify_problem (sink, res, false, 0, "has no backing file; its record "
                      "says its parent is point %s (%s)", e->parent, want);
    else
      verify_problem (sink, res, false, 0, "backing file '%s', but its record "
                      "says its parent is point %s (%s)", have, e->parent,
                      want);
  }
  else if (e->parent && (!img->backing_format ||
                         strcmp (img->backing_format, "qcow2") != 0))
    verify_problem (sink, res, false, 0, "its backing file's format is %s, "
                    "not qcow2", img->backing_format ? img->backing_format
                                                     : "not recorded");
  if (img->size != e->virtual_size)
    verify_problem (sink, res, false, 0, "virtual size %" PRIu64 ", its "
                    "record says %" PRIu64, img->size, e->virtual_size);
  if (img->cluster_size != e->cluster_size)
    verify_problem (sink, res, false, 0, "cluster size %" PRIu32 ", its "
                    "record says %" PRIu64, img->cluster_size,
                    e->cluster_size);
}

/* The manifest, if the record names one: it must be there and be the one
 * the record's digest names before its hashes say anything. */
static int
check_data (struct storage *st, struct image *img,
            const struct verify_file_expect *e,
            const struct verify_sink *sink, struct verify_file_result *res)
{
  if (!e->manifest) {
    if (sink->note)
      sink->note (sink->opaque, "no manifest: its data was not checked (only "
                  "its structure and its place in the chain)");
    return 0;
  }
  uint64_t size;
  int has = storage_size (st, e->manifest, &size);
  if (has < 0)
    return error_is_problem (sink, res, "");
  if (has == 0) {
    verify_problem (sink, res, false, 0, "its manifest %s is missing",
                    e->manifest);
    return 0;
  }
  struct qbak_file *mf = storage_open_object (st, e->manifest);
  if (!mf)
    return error_is_problem (sink, res, "");
  int rc = verify_file_data (img, e, mf, sink, res);
  if (rc == 0 && !res->failed)
    res->data_checked = true;
  return rc;
}

int
verify_file (struct storage *st, const struct verify_file_expect *e,
             const struct verify_sink *sink, struct verify_file_result *res)
{
  memset (res, 0, sizeof *res);
  uint64_t size;
  int has = storage_size (st, e->key, &size);
  if (has < 0)
    return error_is_problem (sink, res, "");
  if (has == 0) {
    verify_problem (sink, res, false, 0, "missing");
    return 0;
  }
  /* The format is the one qbak wrote, never probed; no file the image
   * names is opened; an image marked corrupt is opened to say so. */
  struct qbak_image *h = repo_image_open (st, e->key, QBAK_OPEN_NO_BACKING |
                                                      QBAK_OPEN_INSPECT);
  if (!h)
    return error_is_problem (sink, res, "");
  int rc = check_structure (h, sink, res);
  if (rc == 0)
    check_link (h->img, e, sink, res);
  /* Data is compared only in a file whose metadata can be trusted: a
   * broken one has said what is wrong already. */
  if (rc == 0 && verify_cancelled (sink, e->key))
    rc = -1;
  else if (rc == 0 && !res->failed)
    rc = check_data (st, h->img, e, sink, res);
  qbak_image_close (h);
  return rc;
}
