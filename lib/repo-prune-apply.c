/* Removing points from a repository: the chain-aware merges of prune,
 * crash-safe and rolled forward after a crash.
 *
 * Before the first change an intent (prune/intent.json) lists the points
 * to remove; it goes only when everything is done.  Each disk's chain is
 * then worked from its newest removed point down:
 *
 *   a removed point with no child left: its file goes;
 *   a removed incremental X (parent W) with a kept child Y: X's clusters
 *     that Y does not hold move into Y, and Y's backing file becomes W's,
 *     in one commit of Y's header (layer_merge); then X's file goes;
 *   a removed full X with a kept child Y: the smaller file's clusters
 *     move into the other and the smaller file goes.  Y the smaller: Y's
 *     clusters go into X over its own (X is no point any more, and Y
 *     reads them from itself anyway), and X then takes Y's name (rename):
 *     the files backed by Y's name read the same.  X the smaller: X's
 *     clusters that Y does not hold move into Y, which drops its backing
 *     file in the same header commit, and X's file goes.  Freeing a file
 *     costs the file system a discard per extent, and an incremental's
 *     file is the sparse one (its tables' unused pages are holes): a
 *     1 TiB incremental of 1000 clusters took 2 s to unlink here, the
 *     64 MiB full below it 0.1 s.
 *
 * So at every instant every kept point reads exactly as it did.  The
 * manifests follow (merged, streamed, put in place by rename) and the
 * kept child's record is rewritten with its new parent; a removed point's
 * record goes last, once no record names it, newest first, so the
 * records always form whole chains.  Every step can be taken again after
 * a crash: each one checks what the files say before it acts.
 *
 * On an object store nothing is rewritten in place: a removed
 * incremental's or full's merge with its kept child Y is written whole as
 * a new object at a temporary key next to Y's (layer_merge_object: Y's
 * clusters, else X's; backed by W's file, or by none), and renamed over
 * Y's key, which is a copy that replaces Y in one step and then a delete
 * of the temporary key; the manifests the same way.  Y's backing name
 * says whether the merge is done, as on a folder; a temporary key that a
 * crash left is deleted before the next write of it and when its step
 * is found done, so none outlives a successful run.  A merge killed
 * before its commit leaves no object, only an unfinished upload, which
 * the next prune drops (storage_drop_unfinished) before it finishes the
 * interrupted one, and so does a backup.  A lock on an object store is a
 * lease that a stalled process can lose: it is checked before each
 * removed point is worked on. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/manifest.h"
#include "formats/qcow2-header.h"
#include "formats/qcow2-writer.h"
#include "lib/job.h"
#include "lib/repo.h"
#include "lib/repo-prune.h"

#define INTENT_KEY "prune/intent.json"
#define INTENT_FORMAT "qbak-prune-intent"

struct prune {
  struct repo *r;
  char **remove;
  size_t n;
};

static bool
removing (const struct prune *p, const char *id)
{
  for (size_t i = 0; i < p->n; i++)
    if (strcmp (p->remove[i], id) == 0)
      return true;
  return false;
}

/* Whether the repository's files can be rewritten in place (a folder):
 * then a merge appends to the receiving file and commits with one header
 * write (layer_merge over the writer's reopen), and a manifest is written
 * by path.  Where they cannot (an object store), every merged file and
 * manifest is written whole as a new version of the object it replaces,
 * which takes its place when the upload completes. */
static bool
in_place (struct repo *r)
{
  return storage_can_continue_in_place (r->st);
}

/* The backing name stored in the qbak file at KEY ("" for none); NULL
 * if it is missing (errno ENOENT recorded) or unreadable. */
static char *
backing_of (struct repo *r, const char *key)
{
  if (!in_place (r)) {
    struct qcow2_header h;
    char *b = NULL;
    if (layer_object_header (r->st, key, &h) < 0)
      return NULL;
    if (!(b = strdup (h.backing_name ? h.backing_name : "")))
      set_nomem ();
    qcow2_header_free (&h);
    return b;
  }
  char *path = storage_local_path (r->st, key), *b = NULL;
  struct qcow2_writer *w = path ? qcow2_writer_reopen (path) : NULL;
  if (w) {
    struct qcow2_writer_opts o;
    qcow2_writer_get_opts (w, &o);
    if (!(b = strdup (o.backing_name ? o.backing_name : "")))
      set_nomem ();
    qcow2_writer_free (w);
  }
  free (path);
  return b;
}

/* The key of the file FILE_KEY's sibling with another extension. */
static char *
sibling (const char *key, const char *ext)
{
  const char *dot = strrchr (key, '.');
  char *s = NULL;
  if (!dot || asprintf (&s, "%.*s%s", (int) (dot - key), key, ext) < 0) {
    set_nomem ();
    return NULL;
  }
  return s;
}

/* On an object store: TOP's file (a kept child) becomes the merge of
 * itself over BOTTOM's, backed by BACKING (NULL: none), written whole
 * as a new version of TOP's object that replaces it when committed: TOP's
 * point reads the same before and after, and so do the files backed by
 * TOP's name.  No copy on the service, and so no limit of one (AWS
 * copies at most 5 GiB in one request). */
static int
merge_as_object (struct repo *r, const char *bottom, const char *top,
                 const char *backing)
{
  return layer_merge_object (r->st, bottom, top, NULL, backing,
                             backing ? "qcow2" : NULL);
}

/* The manifest KEY, read through the storage. */
static struct manifest_reader *
manifest_object (struct repo *r, const char *key)
{
  struct qbak_file *f = storage_open_object (r->st, key);
  return f ? manifest_reader_open_file (f) : NULL;
}

/* The manifest of Y's file merged with X's, written as a new version of
 * Y's manifest object (an object store) that replaces it when committed,
 * its digest into DIGEST.  Merging again after a crash gives the same
 * manifest: Y's entries win, and X's fill only what Y lacks. */
static int
merge_manifest_object (struct repo *r, const struct repo_disk_record *y,
                       const struct repo_disk_record *x, char *digest)
{
  struct manifest_reader *top = manifest_object (r, y->manifest);
  struct manifest_reader *bottom = top ? manifest_object (r, x->manifest)
                                       : NULL;
  struct qbak_file *f = bottom ? storage_replace_object (r->st, y->manifest)
                               : NULL;
  struct manifest_writer *w = f ? manifest_writer_create (
    f, (uint32_t) y->cluster_size, y->virtual_size) : NULL;
  int ret = -1;
  if (!w) {
    manifest_reader_free (top);
    manifest_reader_free (bottom);
    return -1;
  }
  if (manifest_merge_keep (top, bottom, w, digest) == 0 &&
      storage_commit_object (r->st, manifest_writer_file (w)) == 0)
    ret = 0;
  else {
    struct qbak_saved_error err;
    qbak_error_save (&err);
    storage_abort_object (r->st, manifest_writer_file (w));
    qbak_error_put_back (&err, "manifest merge failed");
  }
  manifest_writer_free (w);
  return ret;
}

/* Rewrite the record of point P with disk D changed as given: the record
 * a restore follows, replaced whole (the old one or the new one). */
static int
rewrite_record (struct repo *r, struct repo_point *p)
{
  char *text = repo_point_encode (p);
  char key[REPO_POINT_ID_MAX + 16];
  if (!text)
    return -1;
  snprintf (key, sizeof key, "points/%s.json", p->id);
  int rc = storage_replace (r->st, key, text, strlen (text));
  free (text);
  return rc;
}

/* The manifest of Y's file, merged with X's below it, put in place of
 * Y's, and its digest into Y's record.  No manifests: nothing to do. */
static int
merge_manifests (struct repo *r, struct repo_disk_record *y,
                 const struct repo_disk_record *x)
{
  char *yp = NULL, *xp = NULL, *newkey = NULL, *np = NULL, *d = NULL;
  char digest[MANIFEST_DIGEST_HEX + 1];
  uint32_t cs = (uint32_t) y->cluster_size;
  int ret = -1;
  if (!y->manifest || !x->manifest)
    return 0;
  if (!in_place (r)) {
    if (merge_manifest_object (r, y, x, digest) < 0)
      goto out;
  }
  else if (!(yp = storage_local_path (r->st, y->manifest)) ||
      !(xp = storage_local_path (r->st, x->manifest)) ||
      !(newkey = sibling (y->manifest, ".manifest-new")) ||
      storage_delete (r->st, newkey) < 0 ||
      !(np = storage_local_path (r->st, newkey)))
    goto out;
  else {
    struct manifest_reader *top = manifest_reader_open (yp);
    struct manifest_reader *bottom = top ? manifest_reader_open (xp) : NULL;
    struct qbak_file *f = bottom ? qbak_file_create (np) : NULL;
    struct manifest_writer *w = f ? manifest_writer_create (f, cs,
                                                           y->virtual_size)
                                  : NULL;
    if (!w) {
      manifest_reader_free (top);
      manifest_reader_free (bottom);
      goto out;
    }
    if (manifest_merge (top, bottom, w, digest) < 0 ||
        storage_rename (r->st, newkey, y->manifest) < 0)
      goto out;
  }
  if (!(d = strdup (digest))) {
    set_nomem ();
    goto out;
  }
  free (y->manifest_digest);
  y->manifest_digest = d;
  ret = 0;
 out:
  free (yp);
  free (xp);
  free (newkey);
  free (np);
  return ret;
}

/* Removed incremental X of disk NAME, with parent W and kept child Y. */
static int
fold_down (struct prune *p, struct repo_point *xp, struct repo_point *yp,
           const char *name)
{
  struct repo *r = p->r;
  struct repo_disk_record *x = (struct repo_disk_record *)
    repo_point_disk (xp, name);
  struct repo_disk_record *y = (struct repo_disk_record *)
    repo_point_disk (yp, name);
  char want[REPO_POINT_ID_MAX + 8];
  char *have = NULL, *xpath = NULL, *ypath = NULL, *parent = NULL;
  int ret = -1;
  snprintf (want, sizeof want, "%s.qcow2", x->parent);
  if (!(have = backing_of (r, y->file)))
    goto out;
  if (strcmp (have, want) != 0) {
    if (!in_place (r)) {
      if (merge_as_object (r, x->file, y->file, want) < 0)
        goto out;
    }
    else if (!(xpath = storage_local_path (r->st, x->file)) ||
             !(ypath = storage_local_path (r->st, y->file)) ||
             layer_merge (xpath, ypath, true, want, "qcow2") < 0)
      goto out;
  }
  if (merge_manifests (r, y, x) < 0 || !(parent = strdup (x->parent)))
    goto out;
  free (y->parent);
  y->parent = parent;
  if (rewrite_record (r, yp) < 0 || storage_delete (r->st, x->file) < 0 ||
      (x->manifest && storage_delete (r->st, x->manifest) < 0))
    goto out;
  ret = 0;
 out:
  free (have);
  free (xpath);
  free (ypath);
  return ret;
}

/* Removed full X of disk NAME with kept child Y. */
static int
fold_up (struct prune *p, struct repo_point *xp, struct repo_point *yp,
         const char *name)
{
  struct repo *r = p->r;
  struct repo_disk_record *x = (struct repo_disk_record *)
    repo_point_disk (xp, name);
  struct repo_disk_record *y = (struct repo_disk_record *)
    repo_point_disk (yp, name);
  char *xpath = NULL, *ypath = NULL, *have = NULL, *reason = NULL;
  uint64_t size;
  int ret = -1;
  int x_there = storage_size (r->st, x->file, &size);
  if (x_there < 0)
    goto out;
  if (x_there) {
    uint64_t ysize;
    if ((in_place (r) &&
         (!(xpath = storage_local_path (r->st, x->file)) ||
          !(ypath = storage_local_path (r->st, y->file)))) ||
        !(have = backing_of (r, y->file)) ||
        storage_size (r->st, y->file, &ysize) < 0)
      goto out;
    char want[REPO_POINT_ID_MAX + 8];
    snprintf (want, sizeof want, "%s.qcow2", xp->id);
    if (!*have) {
      /* X's clusters are in Y already (moved below before a crash). */
    }
    else if (strcmp (have, want) != 0) {
      set_invalid ("%s: %s reads through '%s', not through %s",
                   r->st->location, y->file, have, want);
      goto out;
    }
    else if (!in_place (r)) {
      /* Y over X as a new object, with no backing file, in Y's place;
       * then X goes. */
      if (merge_as_object (r, x->file, y->file, NULL) < 0)
        goto out;
    }
    else if (ysize <= size) {
      /* Y still reads through X: merge Y into X, then X takes Y's
       * place. */
      if (layer_merge (ypath, xpath, false, NULL, NULL) < 0 ||
          storage_rename (r->st, x->file, y->file) < 0)
        goto out;
      x_there = 0;
    }
    else if (layer_merge (xpath, ypath, true, NULL, NULL) < 0)
      goto out;
    if (x_there && storage_delete (r->st, x->file) < 0)
      goto out;
  }
  else if (!(have = backing_of (r, y->file)) || *have) {
    if (have && *have)
      set_invalid ("%s: %s is gone but %s still reads through '%s'",
                   r->st->location, x->file, y->file, have);
    goto out;
  }
  if (merge_manifests (r, y, x) < 0)
    goto out;
  if (asprintf (&reason, "%s; now a full: point %s below it was pruned",
                y->reason, xp->id) < 0) {
    reason = NULL;
    set_nomem ();
    goto out;
  }
  free (y->parent);
  y->parent = NULL;
  y->level = REPO_LEVEL_FULL;
  free (y->reason);
  y->reason = reason;
  if (rewrite_record (r, yp) < 0 ||
      (x->manifest && storage_delete (r->st, x->manifest) < 0))
    goto out;
  ret = 0;
 out:
  free (xpath);
  free (ypath);
  free (have);
  return ret;
}

/* The point whose disk NAME names ID as its parent, or NULL. */
static struct repo_point *
child_of (struct repo *r, const char *id, const char *name)
{
  for (size_t i = 0; i < r->n_points; i++) {
    const struct repo_disk_record *d = repo_point_disk (&r->points[i], name);
    if (d && d->parent && strcmp (d->parent, id) == 0)
      return &r->points[i];
  }
  return NULL;
}

static int
prune_disk (struct prune *p, const char *name)
{
  struct repo *r = p->r;
  for (size_t i = r->n_points; i-- > 0;) {
    struct repo_point *xp = &r->points[i];
    const struct repo_disk_record *x = repo_point_disk (xp, name);
    if (!x || !removing (p, xp->id))
      continue;
    struct repo_point *yp = child_of (r, xp->id, name);
    int rc;
    if (r->lock && storage_lock_held (r->lock) < 0)
      return -1;
    if (yp && removing (p, yp->id)) {
      set_invalid ("%s: point %s is removed before its child %s",
                   r->st->location, xp->id, yp->id);
      return -1;
    }
    if (!yp)
      rc = storage_delete (r->st, x->file) < 0 ||
           (x->manifest && storage_delete (r->st, x->manifest) < 0) ? -1 : 0;
    else if (x->parent)
      rc = fold_down (p, xp, yp, name);
    else
      rc = fold_up (p, xp, yp, name);
    if (rc < 0)
      return -1;
    /* X's disk is out of the chain now: it is nobody's child. */
    struct repo_disk_record *xw = (struct repo_disk_record *) x;
    free (xw->parent);
    xw->parent = NULL;
  }
  return 0;
}

/* Every disk name of the repository, once. */
static int
each_disk (struct prune *p)
{
  struct repo *r = p->r;
  for (size_t i = 0; i < r->n_points; i++)
    for (size_t d = 0; d < r->points[i].n_disks; d++) {
      const char *name = r->points[i].disks[d].name;
      bool seen = false;
      for (size_t k = 0; k < i && !seen; k++)
        seen = repo_point_disk (&r->points[k], name) != NULL;
      if (!seen && prune_disk (p, name) < 0)
        return -1;
    }
  return 0;
}

static int
apply (struct prune *p)
{
  struct repo *r = p->r;
  if (each_disk (p) < 0)
    return -1;
  /* Records last, newest first: no record ever names a missing parent. */
  for (size_t i = r->n_points; i-- > 0;) {
    if (!removing (p, r->points[i].id))
      continue;
    char key[REPO_POINT_ID_MAX + 16];
    snprintf (key, sizeof key, "points/%s.json", r->points[i].id);
    if (storage_delete (r->st, key) < 0)
      return -1;
    /* What was known about the point goes with it (the record first: a
     * state without a record is ignored). */
    snprintf (key, sizeof key, "state/%s.json", r->points[i].id);
    if (storage_delete (r->st, key) < 0)
      return -1;
    snprintf (key, sizeof key, "%s%s", REPO_PROTECT_PREFIX, r->points[i].id);
    if (storage_delete (r->st, key) < 0)
      return -1;
  }
  return storage_delete (r->st, INTENT_KEY);
}

static char *
intent_encode (char **ids, size_t n)
{
  json_object *o = json_object_new_object ();
  json_object *a = json_object_new_array ();
  char *text = NULL;
  if (!o || !a)
    goto out;
  json_object_object_add (o, "format", json_object_new_string (INTENT_FORMAT));
  for (size_t i = 0; i < n; i++)
    json_object_array_add (a, json_object_new_string (ids[i]));
  json_object_object_add (o, "remove", a);
  a = NULL;
  const char *s = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY);
  if (s && asprintf (&text, "%s\n", s) < 0)
    text = NULL;
 out:
  json_object_put (a);
  json_object_put (o);
  if (!text)
    set_nomem ();
  return text;
}

/* The ids of the intent at INTENT_KEY; 0 with *N 0 if there is none. */
static int
intent_read (struct repo *r, char ***ids, size_t *n)
{
  uint64_t size;
  void *buf;
  size_t len;
  *ids = NULL;
  *n = 0;
  int has = storage_size (r->st, INTENT_KEY, &size);
  if (has <= 0)
    return has;
  if (storage_get (r->st, INTENT_KEY, &buf, &len) < 0)
    return -1;
  json_object *o = json_tokener_parse (buf), *f, *a;
  free (buf);
  int ret = -1;
  if (!o || !json_object_object_get_ex (o, "format", &f) ||
      strcmp (json_object_get_string (f), INTENT_FORMAT) != 0 ||
      !json_object_object_get_ex (o, "remove", &a) ||
      !json_object_is_type (a, json_type_array)) {
    set_invalid ("%s/%s: not a prune intent qbak wrote", r->st->location,
                 INTENT_KEY);
    goto out;
  }
  size_t k = json_object_array_length (a);
  *ids = calloc (k ? k : 1, sizeof **ids);
  if (!*ids) {
    set_nomem ();
    goto out;
  }
  for (size_t i = 0; i < k; i++) {
    const char *id = json_object_get_string (json_object_array_get_idx (a, i));
    if (!id || !repo_point_id_valid (id)) {
      set_invalid ("%s/%s: a point id is not valid", r->st->location,
                   INTENT_KEY);
      goto out;
    }
    if (!((*ids)[(*n)++] = strdup (id))) {
      set_nomem ();
      goto out;
    }
  }
  ret = 1;
 out:
  json_object_put (o);
  return ret;
}

static void
free_ids (char **ids, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (ids[i]);
  free (ids);
}

int
repo_prune_finish_interrupted (struct repo *r, bool *finished)
{
  struct prune p = { .r = r };
  *finished = false;
  int has = intent_read (r, &p.remove, &p.n);
  if (has <= 0)
    return has;
  /* What the interrupted run was uploading when it died is no object:
   * only its upload is left. */
  int rc = storage_drop_unfinished (r->st) < 0 ? -1 : apply (&p);
  free_ids (p.remove, p.n);
  if (rc < 0) {
    qbak_internal_error_prefix ("%s: finishing an interrupted prune",
                                r->st->location);
    return -1;
  }
  *finished = true;
  return repo_load_points (r);
}

int
repo_prune_remove (struct repo *r, char **ids, size_t n)
{
  struct prune p = { .r = r, .remove = ids, .n = n };
  if (n == 0)
    return 0;
  char *text = intent_encode (ids, n);
  if (!text)
    return -1;
  if (storage_prepare (r->st, INTENT_KEY) < 0 ||
      storage_put_once (r->st, INTENT_KEY, text, strlen (text)) < 0) {
    free (text);
    return -1;
  }
  free (text);
  if (apply (&p) < 0)
    return -1;
  return repo_load_points (r);
}

int
repo_prune_pending (struct repo *r, const char *id)
{
  char **ids;
  size_t n;
  int has = intent_read (r, &ids, &n);
  if (has <= 0)
    return has;
  bool found = false;
  for (size_t i = 0; i < n; i++)
    found |= strcmp (ids[i], id) == 0;
  free_ids (ids, n);
  return found;
}
