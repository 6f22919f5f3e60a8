/* A repository: its config, lock, point records and leftovers (repo.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "formats/qcow2-header.h"
#include "lib/prune-policy.h"
#include "lib/repo.h"

#define CONFIG_KEY "config"
#define LOCK_KEY "lock"
#define POINTS_PREFIX "points/"
#define DISKS_PREFIX "disks/"

static int
count_entry (const struct storage_entry *e, void *opaque)
{
  (void) e;
  ++*(size_t *) opaque;
  return 0;
}

/* ZONE NULL: the local zone now, so periods of retention follow the
 * calendar of the place the repository was made in, whatever zone later
 * runs have. */
static int
new_config (struct repo *r, const char *zone)
{
  char local[256];
  if (!zone) {
    prune_local_zone_name (local);
    zone = local;
  }
  if (!(r->config.timezone = strdup (zone))) {
    set_nomem ();
    return -1;
  }
  unsigned char raw[REPO_ID_HEX / 2];
  if (getrandom (raw, sizeof raw, 0) != (ssize_t) sizeof raw) {
    set_io_error (errno, "%s: making the repository's id",
                  r->st->location);
    return -1;
  }
  for (size_t i = 0; i < sizeof raw; i++)
    snprintf (r->config.id + 2 * i, 3, "%02x", raw[i]);
  char now[32];
  repo_rfc3339 ((int64_t) time (NULL), now);
  if (!(r->config.created = strdup (now))) {
    set_nomem ();
    return -1;
  }
  char *text = repo_config_encode (&r->config);
  if (!text)
    return -1;
  int rc = storage_put_once (r->st, CONFIG_KEY, text, strlen (text));
  free (text);
  return rc;
}

static int
read_config (struct repo *r)
{
  void *buf;
  size_t len;
  if (storage_get (r->st, CONFIG_KEY, &buf, &len) < 0)
    return -1;
  char where[4200];
  snprintf (where, sizeof where, "%s/%s", r->st->location, CONFIG_KEY);
  int rc = repo_config_decode (where, buf, len, &r->config);
  free (buf);
  return rc;
}

/* R's config read, and checked against the ZONE asked for (or NULL). */
static int
existing (struct repo *r, const char *location, const char *zone)
{
  if (read_config (r) < 0)
    return -1;
  if (zone && strcmp (zone, r->config.timezone) != 0) {
    set_usage_error ("%s: the repository's time zone is %s, not %s (it "
                     "is fixed when the repository is made)", location,
                     r->config.timezone, zone);
    return -1;
  }
  return 0;
}

struct repo *
repo_open (const char *location, bool create, bool *created)
{
  return repo_open_in_zone (location, create, NULL, created);
}

struct repo *
repo_open_in_zone (const char *location, bool create, const char *zone,
                   bool *created)
{
  if (zone) {
    struct prune_zone *z = prune_zone_load (zone);
    if (!z)
      return NULL;
    prune_zone_free (z);
  }
  if (created)
    *created = false;
  struct repo *r = calloc (1, sizeof *r);
  if (!r) {
    set_nomem ();
    return NULL;
  }
  r->st = storage_open (location, create, NULL);
  if (!r->st)
    goto fail;
  uint64_t size;
  int has = storage_size (r->st, CONFIG_KEY, &size);
  if (has < 0)
    goto fail;
  if (has)
    goto existing_one;
  /* No config: a new repository only in a folder with nothing in it, so
   * a mistyped path never turns someone's folder into a repository. */
  size_t n = 0;
  if (storage_list (r->st, "", count_entry, &n) < 0) {
    error_clear ();
    n = 1;
  }
  /* Another run may have made it since the config was looked for: two
   * first backups at once (from two hosts into one bucket prefix) share
   * the repository that either of them makes. */
  if (n > 0 && (has = storage_size (r->st, CONFIG_KEY, &size)) != 0) {
    if (has < 0)
      goto fail;
    goto existing_one;
  }
  if (!create || n > 0) {
    qbak_internal_error_errno_only (create ? STATUS_USAGE : STATUS_INVALID,
                                    0, "%s: not a qbak repository%s",
                                    location, n > 0
                                    ? " (no config, and the folder is not "
                                      "empty)" : "");
    goto fail;
  }
  if (new_config (r, zone) < 0) {
    if (error_get_errno () != EEXIST)
      goto fail;
    error_clear ();
    repo_config_free (&r->config);
    memset (&r->config, 0, sizeof r->config);
    goto existing_one;
  }
  if (created)
    *created = true;
  return r;
 existing_one:
  if (existing (r, location, zone) < 0)
    goto fail;
  return r;
 fail:
  repo_close (r);
  return NULL;
}

void
repo_close (struct repo *r)
{
  if (!r)
    return;
  for (size_t i = 0; i < r->n_points; i++)
    repo_point_free (&r->points[i]);
  free (r->points);
  storage_unlock (r->lock);
  repo_config_free (&r->config);
  storage_close (r->st);
  free (r);
}

int
repo_lock (struct repo *r)
{
  char host[256] = "?";
  gethostname (host, sizeof host - 1);
  char now[32];
  repo_rfc3339 ((int64_t) time (NULL), now);
  char holder[512];
  snprintf (holder, sizeof holder, "host %s, pid %ld, since %s", host,
            (long) getpid (), now);
  r->lock = storage_lock (r->st, LOCK_KEY, holder);
  return r->lock ? 0 : -1;
}

struct load_ctx {
  struct repo *r;
  size_t cap;
};

static int
load_point (const struct storage_entry *e, void *opaque)
{
  struct load_ctx *c = opaque;
  struct repo *r = c->r;
  const char *name = e->key + strlen (POINTS_PREFIX);
  size_t nlen = strlen (name);
  char id[REPO_POINT_ID_MAX + 1];
  if (strchr (name, '/') || nlen <= 5 || nlen - 5 > REPO_POINT_ID_MAX ||
      strcmp (name + nlen - 5, ".json") != 0) {
    set_invalid ("%s/%s: not a point record; a repository holds only files "
                 "qbak made", r->st->location, e->key);
    return -1;
  }
  memcpy (id, name, nlen - 5);
  id[nlen - 5] = '\0';
  if (c->cap == r->n_points) {
    size_t cap = c->cap ? 2 * c->cap : 16;
    struct repo_point *v = realloc (r->points, cap * sizeof *v);
    if (!v) {
      set_nomem ();
      return -1;
    }
    r->points = v;
    c->cap = cap;
  }
  void *buf;
  size_t len;
  if (storage_get (r->st, e->key, &buf, &len) < 0)
    return -1;
  char where[4200];
  snprintf (where, sizeof where, "%s/%s", r->st->location, e->key);
  struct repo_point *p = &r->points[r->n_points];
  int rc = repo_point_decode (where, buf, len, p);
  free (buf);
  if (rc < 0)
    return -1;
  if (strcmp (p->id, id) != 0) {
    set_invalid ("%s: holds point %s under another name; a repository holds "
                 "only files qbak made", where, p->id);
    repo_point_free (p);
    return -1;
  }
  r->n_points++;
  return 0;
}

static int
compare_points (const void *a, const void *b)
{
  return repo_point_id_compare (((const struct repo_point *) a)->id,
                                ((const struct repo_point *) b)->id);
}

int
repo_load_points (struct repo *r)
{
  for (size_t i = 0; i < r->n_points; i++)
    repo_point_free (&r->points[i]);
  r->n_points = 0;
  struct load_ctx c = { .r = r };
  free (r->points);
  r->points = NULL;
  if (storage_list (r->st, POINTS_PREFIX, load_point, &c) < 0)
    return -1;
  /* Oldest first: byte order of the keys is not the order of the ids
   * ("...Z-2.json" sorts before "...Z.json"). */
  if (r->n_points)
    qsort (r->points, r->n_points, sizeof *r->points, compare_points);
  /* Every parent a record names must be an older point of the same disk:
   * a restore follows these links. */
  for (size_t i = 0; i < r->n_points; i++) {
    const struct repo_point *p = &r->points[i];
    for (size_t d = 0; d < p->n_disks; d++) {
      const char *parent = p->disks[d].parent;
      if (!parent)
        continue;
      const struct repo_point *pp = repo_find_point (r, parent);
      if (!pp || repo_point_id_compare (pp->id, p->id) >= 0 ||
          !repo_point_disk (pp, p->disks[d].name)) {
        set_invalid ("%s/points/%s.json: disk %s: its parent point %s is "
                     "missing or does not hold that disk", r->st->location,
                     p->id, p->disks[d].name, parent);
        return -1;
      }
    }
  }
  return 0;
}

const struct repo_point *
repo_find_point (const struct repo *r, const char *id)
{
  for (size_t i = 0; i < r->n_points; i++)
    if (strcmp (r->points[i].id, id) == 0)
      return &r->points[i];
  return NULL;
}

const struct repo_point *
repo_latest_of_disk (const struct repo *r, const char *name)
{
  for (size_t i = r->n_points; i-- > 0;)
    if (repo_point_disk (&r->points[i], name))
      return &r->points[i];
  return NULL;
}

static bool
named_by_a_record (const struct repo *r, const char *key)
{
  for (size_t i = 0; i < r->n_points; i++)
    for (size_t d = 0; d < r->points[i].n_disks; d++)
      if (strcmp (r->points[i].disks[d].file, key) == 0 ||
          (r->points[i].disks[d].manifest &&
           strcmp (r->points[i].disks[d].manifest, key) == 0))
        return true;
  return false;
}

struct leftover_ctx {
  struct repo *r;
  char **keys;
  size_t n;
};

static int
collect_leftover (const struct storage_entry *e, void *opaque)
{
  struct leftover_ctx *c = opaque;
  if (named_by_a_record (c->r, e->key))
    return 0;
  char **v = realloc (c->keys, (c->n + 1) * sizeof *v);
  if (!v || !(v[c->n] = strdup (e->key))) {
    if (v)
      c->keys = v;
    set_nomem ();
    return -1;
  }
  c->keys = v;
  c->n++;
  return 0;
}

/* The point id of KEY if it is a disk's file "disks/NAME/ID.qcow2",
 * into ID; false otherwise. */
static bool
file_point_id (const char *key, char *id)
{
  const char *base = strrchr (key, '/');
  const char *ext = base ? strstr (base, ".qcow2") : NULL;
  if (!ext || strcmp (ext, ".qcow2") != 0 ||
      (size_t) (ext - base - 1) > REPO_POINT_ID_MAX)
    return false;
  memcpy (id, base + 1, (size_t) (ext - base - 1));
  id[ext - base - 1] = '\0';
  return repo_point_id_valid (id);
}

int
repo_remove_leftovers (struct repo *r, char *interrupted)
{
  struct leftover_ctx c = { .r = r };
  const char *newest = r->n_points ? r->points[r->n_points - 1].id : NULL;
  char id[REPO_POINT_ID_MAX + 1];
  /* Uploads that died with their writer first: they are no objects, and
   * no listing shows them. */
  int rc = storage_drop_unfinished (r->st);
  if (rc == 0)
    rc = storage_list (r->st, DISKS_PREFIX, collect_leftover, &c);

  /* The interrupted run: the newest point id of a file no record names,
   * if it is newer than every point. */
  interrupted[0] = '\0';
  for (size_t i = 0; rc == 0 && i < c.n; i++)
    if (file_point_id (c.keys[i], id) &&
        (!newest || repo_point_id_compare (id, newest) > 0) &&
        (!interrupted[0] || repo_point_id_compare (id, interrupted) > 0))
      strcpy (interrupted, id);
  for (size_t i = 0; i < c.n; i++) {
    bool keep = interrupted[0] && file_point_id (c.keys[i], id) &&
                strcmp (id, interrupted) == 0;
    if (rc == 0 && !keep && storage_delete (r->st, c.keys[i]) < 0)
      rc = -1;
    free (c.keys[i]);
  }
  free (c.keys);
  return rc;
}

void
repo_bitmap_prefix (const struct repo *r, char *out)
{
  snprintf (out, 64, "qbak-%s-", r->config.id);
}

_Static_assert (REPO_ID_HEX / 2 == QCOW2_PARTIAL_ID_BYTES,
                "a repository's id is the mark of its unfinished files");

void
repo_partial_mark (const struct repo *r, uint8_t *mark)
{
  /* The id is REPO_ID_HEX hex digits, checked when the config was read. */
  for (size_t i = 0; i < REPO_ID_HEX / 2; i++) {
    unsigned v = 0;
    sscanf (r->config.id + 2 * i, "%2x", &v);
    mark[i] = (uint8_t) v;
  }
}
