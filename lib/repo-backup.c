/* qbak_backup: one point in time of several disks into a repository.
 *
 * Bitmaps.  For each disk the repository keeps the bitmap
 * "qbak-<repository id>-<point id>": enabled, it holds every write since
 * that point was taken, and a disabled companion "...-<point id>.end"
 * with only the bit of the disk's last byte set.  A run creates the
 * pair for its new point before it copies anything, copies the previous
 * point's bitmap (never changing it), writes the point's record, and only
 * then removes the previous pair.  So whenever a run stops, the pair
 * named by the newest record of the disk is there and complete, and
 * leftovers of an interrupted run are recognised by name and removed.
 *
 * The .end bitmap answers what a size alone cannot: QEMU clears bits
 * beyond a new end when a disk shrinks and adds clean bits when it grows,
 * so a disk shrunk and grown back has a clean bitmap over data that
 * changed (the cut-off part reads as zeroes now).  Shrinking clears the
 * .end bit too, which growing never sets again: a missing bit means a
 * full backup.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/qcow2-bitmap.h"
#include "common/error.h"
#include "common/failpoint.h"
#include "formats/qcow2-header.h"
#include "formats/qcow2-writer.h"
#include "lib/api.h"
#include "lib/internal.h"
#include "lib/job.h"
#include "lib/repo.h"

#define NAME_MAX_BYTES 128
#define BITMAP_NAME_BYTES 160

struct disk_plan {
  const char *path;
  char name[NAME_MAX_BYTES];
  const char *format;           /* to open the disk with (NULL: probe) */
  char *format_found;           /* what it is */
  const struct repo_point *prev;
  const struct repo_disk_record *prevd;
  enum repo_level level;
  char reason[512];
  bool bitmaps;                 /* the disk can hold bitmaps */
  uint64_t size;
  char cur[BITMAP_NAME_BYTES], cur_end[BITMAP_NAME_BYTES];
  char next[BITMAP_NAME_BYTES], next_end[BITMAP_NAME_BYTES];
  char redo[BITMAP_NAME_BYTES]; /* what a continued file must copy again */
  char *key;                    /* the new file's key */
  char *target;                 /* and its path */
  char backing[REPO_POINT_ID_MAX + 8];
  bool resume;                  /* continue the interrupted run's file */
  bool checksums;               /* an incremental by checksums */
  char *manifest_key;           /* the new file's manifest */
  char *manifest_path;
};

void
qbak_backup_opts_init (struct qbak_backup_opts *o)
{
  *o = (struct qbak_backup_opts) { .size = sizeof *o };
}

void
qbak_backup_result_init (struct qbak_backup_result *r)
{
  *r = (struct qbak_backup_result) { .size = sizeof *r };
}

/* The default name of a disk: its file name without the last extension. */
static void
default_name (const char *path, char *out)
{
  const char *base = strrchr (path, '/');
  base = base ? base + 1 : path;
  size_t n = strlen (base);
  const char *dot = strrchr (base, '.');
  if (dot && dot != base)
    n = (size_t) (dot - base);
  if (n >= NAME_MAX_BYTES)
    n = NAME_MAX_BYTES - 1;
  memcpy (out, base, n);
  out[n] = '\0';
}

static int
check_names (const struct qbak_backup_opts *o, struct disk_plan *d)
{
  for (size_t i = 0; i < o->n_disks; i++) {
    const struct qbak_backup_disk *disk = &o->disks[i];
    if (!disk->path || !*disk->path) {
      set_usage_error ("%s: disk %zu has no file", o->repository, i + 1);
      return -1;
    }
    d[i].path = disk->path;
    if (disk->name) {
      if (strlen (disk->name) >= NAME_MAX_BYTES) {
        set_usage_error ("%s: disk name '%s' is too long (at most %d bytes)",
                         disk->path, disk->name, NAME_MAX_BYTES - 1);
        return -1;
      }
      strcpy (d[i].name, disk->name);
    }
    else
      default_name (disk->path, d[i].name);
    if (!storage_key_valid (d[i].name) || strchr (d[i].name, '/')) {
      set_usage_error ("%s: '%s' cannot name a disk in a repository (letters, "
                       "digits, '.', '_' and '-', not first '.')",
                       disk->path, d[i].name);
      return -1;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp (d[i].name, d[j].name) == 0) {
        set_usage_error ("%s and %s: both are named '%s' in the repository",
                         d[j].path, d[i].path, d[i].name);
        return -1;
      }
  }
  return 0;
}

/* A new point's id: now, or just after the newest point if the clock
 * stands behind it (ids must sort as the points were taken). */
static void
new_point_id (const struct repo *r, char *id, int64_t *when)
{
  int64_t now = qbak_failpoint_now ();
  const struct repo_point *last = r->n_points ? &r->points[r->n_points - 1]
                                              : NULL;
  if (last && now < last->unix_time)
    now = last->unix_time;
  for (unsigned n = 1;; n++) {
    repo_point_id (now, n, id);
    if (!last || repo_point_id_compare (id, last->id) > 0)
      break;
  }
  *when = now;
}

/* Bytes to the granule holding the last byte of a disk of SIZE. */
static uint64_t
last_granule (uint64_t size, uint64_t granularity)
{
  return size ? (size - 1) / granularity * granularity : 0;
}

static int
count_incrementals (const struct repo *r, const char *name)
{
  int n = 0;
  for (size_t i = r->n_points; i-- > 0;) {
    const struct repo_disk_record *d = repo_point_disk (&r->points[i], name);
    if (!d)
      continue;
    if (d->level == REPO_LEVEL_FULL)
      break;
    n++;
  }
  return n;
}

/* Why the previous point's chain of disk D cannot tell what changed by
 * checksums (a file without a manifest, another cluster size than CS), or
 * NULL if it can. */
static const char *
checksums_unavailable (const struct repo *r, const struct disk_plan *d,
                       uint32_t cs)
{
  const struct repo_point *p = d->prev;
  const struct repo_disk_record *rec = d->prevd;
  while (rec) {
    if (!rec->manifest)
      return "its previous points have no manifests to compare with";
    if (rec->cluster_size != cs)
      return "its previous points have another cluster size";
    if (!rec->parent)
      return NULL;
    p = repo_find_point (r, rec->parent);
    rec = p ? repo_point_disk (p, d->name) : NULL;
  }
  return "the chain of its previous point is incomplete";
}

/* The view of disk D's previous point, from its chain's manifests (top
 * first), for a checksum-based incremental. */
static struct manifest_view *
previous_view (struct repo *r, const struct disk_plan *d)
{
  struct manifest_reader *layers[REPO_CHAIN_MAX];
  size_t n = 0;
  const struct repo_disk_record *rec = d->prevd;
  while (rec && n < REPO_CHAIN_MAX) {
    struct qbak_file *f = storage_open_object (r->st, rec->manifest);
    layers[n] = f ? manifest_reader_open_file (f) : NULL;
    if (!layers[n])
      goto fail;
    n++;
    const struct repo_point *p = rec->parent
      ? repo_find_point (r, rec->parent) : NULL;
    rec = p ? repo_point_disk (p, d->name) : NULL;
  }
  if (rec) {
    set_invalid ("%s: the chain of disk '%s' is longer than %d points",
                 r->st->location, d->name, REPO_CHAIN_MAX);
    goto fail;
  }
  return manifest_view_open (layers, n, d->size);
 fail:
  while (n)
    manifest_reader_free (layers[--n]);
  return NULL;
}

#define FULL(...) \
  (d->level = REPO_LEVEL_FULL, \
   snprintf (d->reason, sizeof d->reason, __VA_ARGS__))

/* Open disk D, check its format, choose its level, and find the bitmap
 * changes to make before the copy (in CHANGES, at most 4 + the stale
 * ones).  H stays open for the changes. */
static int
plan_disk (const struct repo *r, const struct qbak_backup_opts *o,
           struct disk_plan *d, const char *point_id, struct qbak_image **hp)
{
  d->prev = repo_latest_of_disk (r, d->name);
  d->prevd = d->prev ? repo_point_disk (d->prev, d->name) : NULL;
  const char *recorded = d->prevd ? d->prevd->format : NULL;
  if (recorded && o->source_format && strcmp (recorded, o->source_format)) {
    set_usage_error ("%s: disk '%s' was %s at its first backup in %s, not "
                     "%s", d->path, d->name, recorded, o->repository,
                     o->source_format);
    return -1;
  }
  /* Probe only where nothing says the format: a format recorded at the
   * first backup is checked against what the disk looks like now, so a
   * raw disk whose guest wrote an image header into it is refused, not
   * read as that image. */
  d->format = o->source_format;
  struct qbak_image *h = qbak_image_open_format (d->path, d->format,
                                                 QBAK_OPEN_WRITE);
  if (!h)
    return -1;
  *hp = h;
  if (!(d->format_found = strdup (h->img->ops->name))) {
    set_nomem ();
    return -1;
  }
  if (recorded && strcmp (recorded, d->format_found) != 0) {
    set_invalid ("%s: disk '%s' was %s at its first backup in %s and now "
                 "reads as %s; its guest may have written an image header "
                 "into it, so it is not backed up as %s", d->path, d->name,
                 recorded, o->repository, d->format_found, d->format_found);
    return -1;
  }
  d->size = h->img->size;
  d->bitmaps = image_can_hold_bitmaps (h->img);

  char prefix[64];
  repo_bitmap_prefix (r, prefix);
  snprintf (d->next, sizeof d->next, "%s%s", prefix, point_id);
  snprintf (d->next_end, sizeof d->next_end, "%s%s.end", prefix, point_id);
  snprintf (d->redo, sizeof d->redo, "%s%s.redo", prefix, point_id);
  if (d->prev) {
    snprintf (d->cur, sizeof d->cur, "%s%s", prefix, d->prev->id);
    snprintf (d->cur_end, sizeof d->cur_end, "%s%s.end", prefix, d->prev->id);
    /* Relative: the repository can be moved or copied whole. */
    snprintf (d->backing, sizeof d->backing, "%s.qcow2", d->prev->id);
  }

  const struct qcow2_bitmap *cur = d->prev && d->bitmaps
    ? qbak_internal_find_bitmap (h, d->cur) : NULL;
  const struct qcow2_bitmap *end = d->prev && d->bitmaps
    ? qbak_internal_find_bitmap (h, d->cur_end) : NULL;
  int incrementals = d->prev ? count_incrementals (r, d->name) : 0;

  /* No bitmap to trust: a checksum-based incremental if the previous
   * point's chain has manifests, else a full.  WHY says what is wrong
   * with the bitmap. */
  char why[320] = "";
  d->level = REPO_LEVEL_INCREMENTAL;
  if (!d->prev)
    FULL ("first backup of this disk in this repository");
  else if (o->full)
    FULL ("a full backup was asked for");
  else if (o->full_every && incrementals >= (int) o->full_every)
    FULL ("%d incrementals since the last full", incrementals);
  else if (d->size < d->prevd->virtual_size)
    FULL ("the disk shrank from %" PRIu64 " to %" PRIu64 " bytes",
          d->prevd->virtual_size, d->size);
  else if (!d->bitmaps)
    snprintf (why, sizeof why, "a %s disk holds no bitmap", d->format_found);
  else if (!cur)
    snprintf (why, sizeof why, "its bitmap %s is missing", d->cur);
  else if (cur->in_use)
    snprintf (why, sizeof why, "its bitmap %s is in use: the program that "
              "wrote the disk did not close it", d->cur);
  else if (!end || end->in_use)
    snprintf (why, sizeof why, "its bitmap %s is missing, so a shrink "
              "cannot be ruled out", d->cur_end);
  else {
    const struct dirty_bitmap *bm = qbak_internal_bitmap_data (h, end);
    if (!bm)
      return -1;
    uint64_t g = dirty_bitmap_granularity (bm);
    if (!dirty_bitmap_test (bm, last_granule (d->prevd->virtual_size, g)))
      FULL ("the disk was shrunk since point %s (and grown again)",
            d->prev->id);
    else if (d->size > d->prevd->virtual_size)
      snprintf (d->reason, sizeof d->reason, "changes since point %s; the "
                "disk grew from %" PRIu64 " to %" PRIu64 " bytes",
                d->prev->id, d->prevd->virtual_size, d->size);
    else
      snprintf (d->reason, sizeof d->reason, "changes since point %s",
                d->prev->id);
  }
  if (*why) {
    const char *no = checksums_unavailable (r, d, image_target_cluster_size
                                                  (h->img));
    if (no)
      FULL ("%s, and %s", why, no);
    else {
      d->checksums = true;
      snprintf (d->reason, sizeof d->reason, "checksums (%s): changes since "
                "point %s", why, d->prev->id);
    }
  }
  return 0;
}

/* The file the interrupted run left for disk D at this point, if it can
 * be continued: a qbak image of this repository (its mark, or none when
 * it was complete) for the disk's size and the planned backing file, and
 * the run's bitmap pair still there and sound, so that what changed since
 * it began is known.  Anything else is removed: no record names it, and
 * the point is taken anew. */
static int
check_interrupted (struct repo *r, struct disk_plan *d,
                   struct qbak_image *h, const uint8_t *mark)
{
  uint64_t bytes;
  int has = storage_size (r->st, d->key, &bytes);
  if (has <= 0)
    return has;
  const struct qcow2_bitmap *next = d->bitmaps
    ? qbak_internal_find_bitmap (h, d->next) : NULL;
  const struct qcow2_bitmap *next_end = d->bitmaps
    ? qbak_internal_find_bitmap (h, d->next_end) : NULL;
  const struct qcow2_bitmap *redo = d->bitmaps
    ? qbak_internal_find_bitmap (h, d->redo) : NULL;
  /* Continuing rewrites the file in place, which only some storage
   * offers (storage.h); elsewhere an interrupted run is taken anew. */
  bool ok = storage_can_continue_in_place (r->st) &&
            next && !next->in_use && next_end && !next_end->in_use &&
            (!redo || !redo->in_use);
  if (ok) {
    struct qcow2_writer *w = qcow2_writer_reopen (d->target);
    if (w) {
      struct qcow2_writer_opts wo;
      uint8_t id[QCOW2_PARTIAL_ID_BYTES];
      qcow2_writer_get_opts (w, &wo);
      const char *want = d->level == REPO_LEVEL_INCREMENTAL ? d->backing : "";
      ok = wo.size == d->size &&
           strcmp (wo.backing_name ? wo.backing_name : "", want) == 0 &&
           (!qcow2_writer_get_partial_id (w, id) ||
            memcmp (id, mark, sizeof id) == 0);
      qcow2_writer_free (w);
    }
    else
      ok = false;
    error_clear ();
  }
  if (!ok)
    return storage_delete (r->st, d->key);
  d->resume = true;
  size_t len = strlen (d->reason);
  snprintf (d->reason + len, sizeof d->reason - len,
            "; continues the interrupted run of this point");
  return 0;
}

/* Before the copy: drop this repository's bitmaps that no record needs
 * (an interrupted run's), and add the new point's pair, in one commit. */
static int
bitmaps_before (const struct repo *r, struct disk_plan *d,
                struct qbak_image *h)
{
  if (!d->bitmaps)
    return 0;
  char prefix[64];
  repo_bitmap_prefix (r, prefix);
  size_t max = h->bitmaps.n + 3;
  struct qbak_internal_bitmap_change *c = calloc (max, sizeof *c);
  struct dirty_bitmap *end = NULL;
  int ret = -1;
  if (!c) {
    set_nomem ();
    goto out;
  }
  size_t n = 0;
  for (size_t i = 0; i < h->bitmaps.n; i++) {
    const char *name = h->bitmaps.v[i].name;
    if (strncmp (name, prefix, strlen (prefix)) != 0)
      continue;
    /* The previous pair stays until the new point's record is written
     * (an incremental copies it, and a run interrupted before the record
     * must plan the same level again); an interrupted run's pair, whose
     * file is continued, holds what changed since that run began. */
    if ((d->prev && (strcmp (name, d->cur) == 0 ||
                     strcmp (name, d->cur_end) == 0)) ||
        (d->resume && (strcmp (name, d->next) == 0 ||
                       strcmp (name, d->next_end) == 0 ||
                       strcmp (name, d->redo) == 0)))
      continue;
    c[n++] = (struct qbak_internal_bitmap_change) {
      QBAK_INTERNAL_BITMAP_REMOVE, name, NULL };
  }
  if (d->resume) {
    /* What changed since the interrupted run began moves into the
     * disabled .redo bitmap (what the continued file must copy again),
     * and the point's own bitmap starts empty: this run takes the data as
     * of now. */
    const struct qcow2_bitmap *b = qbak_internal_find_bitmap (h, d->next);
    const struct qcow2_bitmap *old = qbak_internal_find_bitmap (h, d->redo);
    const struct dirty_bitmap *since = b ? qbak_internal_bitmap_data (h, b)
                                         : NULL;
    const struct dirty_bitmap *before = old
      ? qbak_internal_bitmap_data (h, old) : NULL;
    if (!since || (old && !before) ||
        !(end = dirty_bitmap_copy (since)) ||
        (before && dirty_bitmap_merge (end, before) < 0))
      goto out;
    c[n++] = (struct qbak_internal_bitmap_change) {
      QBAK_INTERNAL_BITMAP_REMOVE, d->next, NULL };
    c[n++] = (struct qbak_internal_bitmap_change) {
      QBAK_INTERNAL_BITMAP_ADD, d->next, NULL };
    c[n++] = (struct qbak_internal_bitmap_change) {
      old ? QBAK_INTERNAL_BITMAP_SET : QBAK_INTERNAL_BITMAP_CREATE,
      d->redo, end };
    ret = qbak_internal_bitmap_update (h, c, n);
    goto out;
  }
  uint64_t g = qcow2_bitmap_default_granularity (h->img);
  end = dirty_bitmap_create (d->size, g);
  if (!end)
    goto out;
  if (d->size)
    dirty_bitmap_set (end, last_granule (d->size, g), 1);
  c[n++] = (struct qbak_internal_bitmap_change) {
    QBAK_INTERNAL_BITMAP_ADD, d->next, NULL };
  c[n++] = (struct qbak_internal_bitmap_change) {
    QBAK_INTERNAL_BITMAP_CREATE, d->next_end, end };
  ret = qbak_internal_bitmap_update (h, c, n);
 out:
  dirty_bitmap_free (end);
  free (c);
  return ret;
}

/* After the record: the previous pair (and a continued run's .redo) is
 * no longer needed.  A failure here loses nothing (the next run removes
 * them by name), so it is not the run's failure. */
static void
bitmaps_after (struct disk_plan *d)
{
  if (!d->bitmaps || (!d->prev && !d->resume))
    return;
  struct qbak_image *h = qbak_image_open_format (d->path, d->format_found,
                                                 QBAK_OPEN_WRITE);
  if (h) {
    struct qbak_internal_bitmap_change c[3];
    size_t n = 0;
    if (d->resume && qbak_internal_find_bitmap (h, d->redo))
      c[n++] = (struct qbak_internal_bitmap_change) {
        QBAK_INTERNAL_BITMAP_REMOVE, d->redo, NULL };
    if (d->prev && qbak_internal_find_bitmap (h, d->cur))
      c[n++] = (struct qbak_internal_bitmap_change) {
        QBAK_INTERNAL_BITMAP_REMOVE, d->cur, NULL };
    if (d->prev && qbak_internal_find_bitmap (h, d->cur_end))
      c[n++] = (struct qbak_internal_bitmap_change) {
        QBAK_INTERNAL_BITMAP_REMOVE, d->cur_end, NULL };
    if (n)
      qbak_internal_bitmap_update (h, c, n);
    qbak_image_close (h);
  }
  error_clear ();
}

static int
write_record (struct repo *r, const char *id, int64_t when,
              struct disk_plan *d, size_t n,
              const struct qbak_copy_result *res,
              const struct job_in_place *places)
{
  struct repo_point p = { 0 };
  char time_text[32];
  repo_rfc3339 (when, time_text);
  strcpy (p.id, id);
  p.time = time_text;
  p.unix_time = when;
  p.qbak_version = (char *) qbak_version ();
  struct repo_disk_record *disks = calloc (n, sizeof *disks);
  if (!disks) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    disks[i] = (struct repo_disk_record) {
      .name = d[i].name,
      .level = d[i].level,
      .reason = d[i].reason,
      .file = d[i].key,
      .parent = d[i].level == REPO_LEVEL_INCREMENTAL
                ? (char *) d[i].prev->id : NULL,
      .format = d[i].format_found,
      .virtual_size = d[i].size,
      .cluster_size = res[i].cluster_size,
      /* The data of the whole file: also what an interrupted run of
       * this point had copied. */
      .bytes_copied = res[i].bytes_copied + places[i].bytes_kept,
      .manifest = d[i].manifest_key,
      .manifest_digest = (char *) places[i].manifest_digest,
      .seconds = res[i].seconds,
    };
  p.disks = disks;
  p.n_disks = n;
  char *text = repo_point_encode (&p);
  free (disks);
  if (!text)
    return -1;
  char key[REPO_POINT_ID_MAX + 16];
  snprintf (key, sizeof key, "points/%s.json", id);
  int rc = storage_put_once (r->st, key, text, strlen (text));
  free (text);
  return rc;
}

/* "LOCATION/KEY", how messages name an object (malloc'ed). */
static char *
object_name (const struct repo *r, const char *key)
{
  char *name;
  if (asprintf (&name, "%s/%s", r->st->location, key) < 0) {
    set_nomem ();
    return NULL;
  }
  return name;
}

int
qbak_backup (const struct qbak_backup_opts *caller_o,
             struct qbak_backup_result *caller_res,
             struct qbak_copy_result *copies)
{
  api_enter (__func__);
  error_clear ();
  struct qbak_backup_opts o;
  struct qbak_backup_result res;
  qbak_backup_result_init (&res);
  if (api_check_size (caller_o->size, sizeof o, "qbak_backup_opts") < 0 ||
      (caller_res && api_check_size (caller_res->size, sizeof res,
                                     "qbak_backup_result") < 0))
    return -1;
  memset (&o, 0, sizeof o);
  memcpy (&o, caller_o, caller_o->size);
  if (!o.repository || o.n_disks == 0 || !o.disks) {
    set_usage_error ("backup: a repository and at least one disk are needed");
    return -1;
  }

  struct disk_plan *d = calloc (o.n_disks, sizeof *d);
  struct qbak_copy_opts *jobs = calloc (o.n_disks, sizeof *jobs);
  struct qbak_copy_result *results = calloc (o.n_disks, sizeof *results);
  struct job_in_place *places = calloc (o.n_disks, sizeof *places);
  struct repo *r = NULL;
  int ret = -1;
  if (!d || !jobs || !results || !places) {
    set_nomem ();
    goto out;
  }
  if (check_names (&o, d) < 0)
    goto out;
  r = repo_open (o.repository, true, &res.created);
  char id[REPO_POINT_ID_MAX + 1];
  bool pruned;
  if (!r || repo_lock (r) < 0 || repo_load_points (r) < 0 ||
      repo_prune_finish_interrupted (r, &pruned) < 0 ||
      repo_remove_leftovers (r, id) < 0)
    goto out;

  /* A run that was interrupted is continued: its point id is taken again,
   * and each of its files that can be continued copies only what it
   * lacks.  The point's time is this run's: its data is as of now. */
  int64_t when;
  if (id[0]) {
    int64_t last = r->points ? r->points[r->n_points - 1].unix_time : 0;
    when = qbak_failpoint_now ();
    if (when < last)
      when = last;
  }
  else
    new_point_id (r, id, &when);
  uint8_t mark[QCOW2_PARTIAL_ID_BYTES];
  repo_partial_mark (r, mark);

  for (size_t i = 0; i < o.n_disks; i++) {
    struct qbak_image *h = NULL;
    if (asprintf (&d[i].key, "disks/%s/%s.qcow2", d[i].name, id) < 0) {
      d[i].key = NULL;
      set_nomem ();
      goto out;
    }
    if (asprintf (&d[i].manifest_key, "disks/%s/%s.manifest", d[i].name,
                  id) < 0) {
      d[i].manifest_key = NULL;
      set_nomem ();
      goto out;
    }
    /* A folder's target and manifest are files written by path, so that
     * a checkpointed target can be reopened and continued in place; an
     * object store's are objects streamed in one pass (job.h), named
     * LOCATION/KEY in messages. */
    bool by_path = storage_can_continue_in_place (r->st);
    if (by_path
        ? (storage_prepare (r->st, d[i].key) < 0 ||
           !(d[i].target = storage_local_path (r->st, d[i].key)) ||
           !(d[i].manifest_path = storage_local_path (r->st,
                                                      d[i].manifest_key)))
        : (!(d[i].target = object_name (r, d[i].key)) ||
           !(d[i].manifest_path = object_name (r, d[i].manifest_key))))
      goto out;
    int rc = plan_disk (r, &o, &d[i], id, &h);
    if (rc == 0)
      rc = check_interrupted (r, &d[i], h, mark);
    if (rc == 0)
      rc = bitmaps_before (r, &d[i], h);
    qbak_image_close (h);
    if (rc < 0)
      goto out;
    places[i] = (struct job_in_place) {
      .mark = mark,
      .resume = d[i].resume,
      .redo_bitmap = d[i].resume ? d[i].redo : NULL,
      .manifest_path = d[i].manifest_path,
      .st = by_path ? NULL : r->st,
      .key = d[i].key,
      .manifest_key = d[i].manifest_key,
    };
    if (d[i].checksums && !(places[i].reference = previous_view (r, &d[i])))
      goto out;
    struct qbak_copy_opts *j = &jobs[i];
    qbak_copy_opts_init (j);
    j->source = d[i].path;
    j->source_format = d[i].format_found;
    j->target = d[i].target;
    if (d[i].level == REPO_LEVEL_FULL) {
      j->sync = QBAK_SYNC_FULL;
    }
    else if (d[i].checksums) {
      /* Every cluster, compared with the previous point: only what
       * differs is written over the backing file. */
      j->sync = QBAK_SYNC_FULL;
      j->backing = d[i].backing;
      j->backing_format = "qcow2";
    }
    else {
      j->sync = QBAK_SYNC_BITMAP;
      j->bitmap = d[i].cur;
      j->bitmap_mode = QBAK_BITMAP_MODE_NEVER;
      j->backing = d[i].backing;
      j->backing_format = "qcow2";
    }
    qbak_copy_result_init (&results[i]);
  }

  struct qbak_group_opts g;
  qbak_group_opts_init (&g);
  g.jobs = jobs;
  g.n_jobs = o.n_disks;
  g.completion = QBAK_COMPLETION_GROUPED;
  g.freeze_cmd = o.freeze_cmd;
  g.thaw_cmd = o.thaw_cmd;
  g.freeze_timeout = o.freeze_timeout;
  g.cancel = o.cancel;
  g.progress = o.progress;
  g.progress_opaque = o.progress_opaque;
  if (qbak_internal_copy_group (&g, results, places, NULL) < 0)
    goto out;

  /* Every file of the point is durable and named: the record makes the
   * point exist, written only while the lock is still this run's (a
   * lease on an object store: a run that stalled past the stale rule has
   * lost it to one that may remove these files as leftovers). */
  if (storage_lock_held (r->lock) < 0 ||
      write_record (r, id, when, d, o.n_disks, results, places) < 0)
    goto out;
  snprintf (res.point, sizeof res.point, "%s", id);
  for (size_t i = 0; i < o.n_disks; i++)
    bitmaps_after (&d[i]);
  ret = 0;

 out:
  if (copies && d) {
    size_t stride = copies[0].size;
    for (size_t i = 0; i < o.n_disks && results; i++) {
      struct qbak_copy_result *dst =
        (struct qbak_copy_result *) ((char *) copies + i * stride);
      size_t keep = dst->size;
      memcpy (dst, &results[i], keep < sizeof results[i] ? keep
                                                         : sizeof results[i]);
      dst->size = keep;
    }
  }
  if (caller_res) {
    size_t keep = caller_res->size;
    memcpy (caller_res, &res, keep);
    caller_res->size = keep;
  }
  {
    /* Cleanup sets no error of its own that would hide the run's. */
    struct qbak_saved_error err;
    bool failed = ret < 0;
    if (failed)
      qbak_error_save (&err);
    repo_close (r);
    if (failed)
      qbak_error_put_back (&err, "backup failed");
  }
  if (d)
    for (size_t i = 0; i < o.n_disks; i++) {
      free (d[i].format_found);
      free (d[i].key);
      free (d[i].target);
      free (d[i].manifest_key);
      free (d[i].manifest_path);
    }
  free (d);
  free (jobs);
  free (results);
  if (places)
    for (size_t i = 0; i < o.n_disks; i++)
      manifest_view_free (places[i].reference);
  free (places);
  return ret;
}
