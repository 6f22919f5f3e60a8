/* qbak_verify: the files a repository's points need, each read once.
 *
 * Every (point, disk) of the repository names one file; an incremental's
 * chain is its file, its parent point's file of that disk, and so on to a
 * full.  The points asked for (all, or the one --at names; not those
 * verified recently enough) mark their chains' files as needed; the
 * needed files are verified oldest first; then every point whose chain
 * holds a bad file fails, whether it was asked for or not, and each
 * point's state is written.  A run that checked only a share of the data
 * or only some disks (or stopped) never turns a failed point good.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/repo-state.h"
#include "lib/repo-verify.h"
#include "lib/repo.h"
#include "lib/verify-file.h"
#include "qbak.h"

#define NONE SIZE_MAX

struct vfile {
  const struct repo_point *p;
  const struct repo_disk_record *d;
  size_t parent;                /* index of the parent's file, or NONE */
  uint64_t bytes;               /* size of the file, for progress */
  bool needed, done, failed, data_checked;
  struct qbak_verify_error *errors;
  size_t n_errors;
};

struct run {
  struct repo *r;
  const struct qbak_verify_opts *o;
  struct vfile *files;
  size_t *base;                 /* first file of each point */
  bool *selected, *skipped;
  struct repo_verify_state *states;
  uint64_t done_bytes, total_bytes, file_reported;
  struct vfile *current;
};

void
qbak_verify_opts_init (struct qbak_verify_opts *o)
{
  *o = (struct qbak_verify_opts) { .size = sizeof *o };
}

void
qbak_verify_result_init (struct qbak_verify_result *r)
{
  *r = (struct qbak_verify_result) { .size = sizeof *r };
}

static int
compare_point (const void *key, const void *elem)
{
  return repo_point_id_compare (key, ((const struct repo_point *) elem)->id);
}

/* The index of the point with id ID (points are sorted). */
static size_t
point_index (const struct repo *r, const char *id)
{
  if (r->n_points == 0)
    return NONE;              /* no array to search (a null pointer) */
  const struct repo_point *p = bsearch (id, r->points, r->n_points,
                                        sizeof *r->points, compare_point);
  return p ? (size_t) (p - r->points) : NONE;
}

static int
build_files (struct run *v)
{
  struct repo *r = v->r;
  size_t n = 0;
  if (!(v->base = calloc (r->n_points + 1, sizeof *v->base)))
    goto nomem;
  for (size_t i = 0; i < r->n_points; i++) {
    v->base[i] = n;
    n += r->points[i].n_disks;
  }
  v->base[r->n_points] = n;
  if (!(v->files = calloc (n ? n : 1, sizeof *v->files)))
    goto nomem;
  for (size_t i = 0; i < r->n_points; i++)
    for (size_t j = 0; j < r->points[i].n_disks; j++) {
      struct vfile *f = &v->files[v->base[i] + j];
      f->p = &r->points[i];
      f->d = &r->points[i].disks[j];
      f->parent = NONE;
      if (!f->d->parent)
        continue;
      /* repo_load_points checked that the parent is an older point
       * holding the disk. */
      size_t pi = point_index (r, f->d->parent);
      for (size_t k = 0; pi != NONE && k < r->points[pi].n_disks; k++)
        if (strcmp (r->points[pi].disks[k].name, f->d->name) == 0)
          f->parent = v->base[pi] + k;
    }
  return 0;
 nomem:
  set_nomem ();
  return -1;
}

/* ---- what a file's verification tells -------------------------------- */

static void
on_problem (void *opaque, bool has_offset, uint64_t offset, const char *what)
{
  struct run *v = opaque;
  struct vfile *f = v->current;
  struct qbak_verify_error *e = realloc (f->errors,
                                         (f->n_errors + 1) * sizeof *e);
  char *copy = strdup (what);
  if (e)
    f->errors = e;
  if (e && copy) {
    f->errors[f->n_errors++] = (struct qbak_verify_error) {
      .size = sizeof *e, .file = f->d->file, .has_offset = has_offset,
      .offset = offset, .what = copy,
    };
  }
  else
    free (copy);
  if (v->o->problem) {
    struct qbak_verify_problem p = {
      .size = sizeof p, .point = f->p->id, .disk = f->d->name,
      .file = f->d->file, .mismatch = true, .has_offset = has_offset,
      .offset = offset, .what = what,
    };
    v->o->problem (&p, v->o->opaque);
  }
}

static void
on_note (void *opaque, const char *what)
{
  struct run *v = opaque;
  struct vfile *f = v->current;
  if (v->o->problem) {
    struct qbak_verify_problem p = {
      .size = sizeof p, .point = f->p->id, .disk = f->d->name,
      .file = f->d->file, .what = what,
    };
    v->o->problem (&p, v->o->opaque);
  }
}

static void
report_progress (struct run *v)
{
  if (v->o->progress)
    v->o->progress (v->done_bytes, v->total_bytes, v->o->progress_opaque);
}

static void
on_progress (void *opaque, uint64_t bytes)
{
  struct run *v = opaque;
  /* A file reads at most its size in data; metadata is not counted. */
  if (v->file_reported + bytes > v->current->bytes)
    bytes = v->current->bytes - v->file_reported;
  v->file_reported += bytes;
  v->done_bytes += bytes;
  report_progress (v);
}

/* ---- what was verified ------------------------------------------------ */

/* What point I reads now, to tell a state kept for other files (a prune
 * merged them since) from this point's. */
static void
chain_fingerprint (const struct run *v, size_t i, char *out)
{
  repo_chain_fingerprint (v->r, &v->r->points[i], out);
}

/* ---- choosing ---------------------------------------------------------- */

static void
mark_chain (struct run *v, size_t f)
{
  for (; f != NONE && !v->files[f].needed; f = v->files[f].parent)
    v->files[f].needed = true;
}

static bool
disk_wanted (const struct run *v, const struct repo_disk_record *d)
{
  return !v->o->disk || strcmp (v->o->disk, d->name) == 0;
}

static int
choose (struct run *v)
{
  struct repo *r = v->r;
  int64_t now = (int64_t) time (NULL);
  if (v->o->at) {
    const struct repo_point *p = repo_choose_point (r, v->o->at,
                                                      v->o->disk);
    if (!p)
      return -1;
    v->selected[p - r->points] = true;
  }
  else {
    bool any = false;
    for (size_t i = 0; i < r->n_points; i++)
      if (!v->o->disk || repo_point_disk (&r->points[i], v->o->disk))
        any = v->selected[i] = true;
    if (v->o->disk && !any) {
      set_usage_error ("%s: no point holds a disk '%s'", r->st->location,
                       v->o->disk);
      return -1;
    }
  }
  for (size_t i = 0; i < r->n_points; i++) {
    struct repo_verify_state *s = &v->states[i];
    char now_chain[17];
    chain_fingerprint (v, i, now_chain);
    /* Verified as other files: nothing of it stands for these. */
    if (s->known && strcmp (s->chain, now_chain) != 0)
      s->last_complete_ok = 0;
    if (!v->selected[i])
      continue;
    if (v->o->outdated_after > 0 && s->last_complete_ok &&
        now - s->last_complete_ok < v->o->outdated_after) {
      v->skipped[i] = true;
      continue;
    }
    for (size_t j = 0; j < r->points[i].n_disks; j++)
      if (disk_wanted (v, &r->points[i].disks[j]))
        mark_chain (v, v->base[i] + j);
  }
  for (size_t f = 0; f < v->base[r->n_points]; f++)
    if (v->files[f].needed) {
      uint64_t size = 0;
      if (storage_size (r->st, v->files[f].d->file, &size) < 0)
        error_clear ();         /* verify_file says what is wrong */
      v->files[f].bytes = size;
      v->total_bytes += size;
    }
  return 0;
}

/* ---- verifying --------------------------------------------------------- */

static int
verify_needed (struct run *v, struct qbak_verify_result *res)
{
  struct verify_sink sink = {
    .problem = on_problem, .note = on_note, .progress = on_progress,
    .opaque = v, .cancel = v->o->cancel,
  };
  for (size_t i = 0; i < v->base[v->r->n_points]; i++) {
    struct vfile *f = &v->files[i];
    if (!f->needed)
      continue;
    struct verify_file_expect e = {
      .key = f->d->file, .parent = f->d->parent,
      .virtual_size = f->d->virtual_size, .cluster_size = f->d->cluster_size,
      .manifest = f->d->manifest, .manifest_digest = f->d->manifest_digest,
      .sample_percent = v->o->sample_percent,
    };
    struct verify_file_result fr;
    v->current = f;
    v->file_reported = 0;
    if (verify_file (v->r->st, &e, &sink, &fr) < 0)
      return -1;
    v->done_bytes += f->bytes - v->file_reported;
    report_progress (v);
    f->done = true;
    f->failed = fr.failed;
    f->data_checked = fr.data_checked;
    res->files_verified++;
    res->files_failed += fr.failed;
    res->files_without_manifest += !f->d->manifest;
    res->bytes_read += f->bytes;
  }
  return 0;
}

/* ---- what each point is now ------------------------------------------ */

static enum qbak_verify_state
disk_state (const struct run *v, size_t f, bool skipped, bool *data)
{
  bool failed = false, pending = false;
  *data = true;
  for (; f != NONE; f = v->files[f].parent) {
    failed |= v->files[f].failed;
    pending |= !v->files[f].done;
    *data &= v->files[f].data_checked;
  }
  if (failed)
    return QBAK_VERIFY_FAILED;
  if (skipped)
    return QBAK_VERIFY_SKIPPED;
  return pending ? QBAK_VERIFY_NOT_VERIFIED : QBAK_VERIFY_OK;
}

/* The errors of every bad file of the chain from F, into D. */
static int
collect_errors (const struct run *v, size_t f, struct qbak_verify_disk *d,
                struct repo_verify_state *st)
{
  size_t n = 0;
  for (size_t g = f; g != NONE; g = v->files[g].parent)
    n += v->files[g].n_errors;
  struct qbak_verify_error *all = calloc (n ? n : 1, sizeof *all);
  struct repo_state_error *se = realloc (st->errors, (st->n_errors + n + 1) *
                                         sizeof *se);
  if (se)
    st->errors = se;
  if (!all || !se) {
    free (all);
    set_nomem ();
    return -1;
  }
  n = 0;
  for (size_t g = f; g != NONE; g = v->files[g].parent)
    for (size_t k = 0; k < v->files[g].n_errors; k++) {
      const struct qbak_verify_error *e = &v->files[g].errors[k];
      all[n++] = *e;
      st->errors[st->n_errors++] = (struct repo_state_error) {
        .disk = strdup (d->name), .file = strdup (e->file),
        .has_offset = e->has_offset, .offset = e->offset,
        .what = strdup (e->what),
      };
    }
  d->errors = all;
  d->n_errors = n;
  return 0;
}

/* The new state of point I after a run found STATE for it, or false if
 * the run changes nothing (a partial pass never clears a failure). */
static bool
new_state (const struct run *v, size_t i, enum qbak_verify_state state,
           bool complete, int64_t now, struct repo_verify_state *out)
{
  const struct repo_verify_state *old = &v->states[i];
  if (state != QBAK_VERIFY_OK && state != QBAK_VERIFY_FAILED)
    return false;
  if (state == QBAK_VERIFY_OK && !complete && old->known && old->failed)
    return false;
  out->known = true;
  out->failed = state == QBAK_VERIFY_FAILED;
  out->unix_time = now;
  out->sampled = v->o->sample_percent;
  out->partial = !complete && !v->o->sample_percent;  /* disks, or stopped */
  out->last_complete_ok = state == QBAK_VERIFY_OK && complete
                          ? now : old->last_complete_ok;
  chain_fingerprint (v, i, out->chain);
  return true;
}

static int
conclude_point (struct run *v, size_t i, int64_t now, bool stopped,
                struct qbak_verify_result *res)
{
  const struct repo_point *p = &v->r->points[i];
  struct qbak_verify_disk *disks = calloc (p->n_disks, sizeof *disks);
  struct repo_verify_state st = { 0 };
  size_t n = 0;
  /* A run that stopped is partial even for the points it finished: only
   * a pass that ran to its end clears a failure. */
  bool complete = !v->o->sample_percent && !stopped, any_failed = false;
  enum qbak_verify_state ps = QBAK_VERIFY_OK;
  int rc = 0;
  if (!disks) {
    set_nomem ();
    return -1;
  }
  for (size_t j = 0; j < p->n_disks; j++) {
    size_t f = v->base[i] + j;
    bool data;
    enum qbak_verify_state s = disk_state (v, f, v->skipped[i], &data);
    bool wanted = v->selected[i] && disk_wanted (v, &p->disks[j]);
    if (s != QBAK_VERIFY_FAILED && !wanted) {
      complete = false;
      continue;
    }
    struct qbak_verify_disk *d = &disks[n++];
    *d = (struct qbak_verify_disk) {
      .size = sizeof *d, .name = p->disks[j].name, .state = s,
      .data_checked = data,
    };
    if (s == QBAK_VERIFY_FAILED) {
      any_failed = true;
      if (collect_errors (v, f, d, &st) < 0) {
        rc = -1;
        goto out;
      }
    }
    else if (s != QBAK_VERIFY_OK && ps == QBAK_VERIFY_OK)
      ps = s;
  }
  if (any_failed)
    ps = QBAK_VERIFY_FAILED;
  if (n == 0)
    goto out;                   /* neither asked for nor hit */
  if (v->o->point) {
    struct qbak_verify_point vp = {
      .size = sizeof vp, .id = p->id, .state = ps, .disks = disks,
      .n_disks = n,
    };
    v->o->point (&vp, v->o->opaque);
  }
  res->points_ok += ps == QBAK_VERIFY_OK;
  res->points_failed += ps == QBAK_VERIFY_FAILED;
  res->points_skipped += ps == QBAK_VERIFY_SKIPPED;
  res->points_not_verified += ps == QBAK_VERIFY_NOT_VERIFIED;
  if (new_state (v, i, ps, complete, now, &st))
    rc = repo_state_write (v->r->st, p->id, &st);
 out:
  for (size_t k = 0; k < n; k++)
    free ((void *) disks[k].errors);
  free (disks);
  repo_state_free (&st);
  return rc;
}

struct stale_ctx {
  struct repo *r;
  char **keys;
  size_t n;
};

static int
collect_stale (const struct storage_entry *e, void *opaque)
{
  struct stale_ctx *c = opaque;
  const char *name = e->key + strlen ("state/");
  size_t len = strlen (name);
  char id[REPO_POINT_ID_MAX + 1];
  if (len <= 5 || len - 5 > REPO_POINT_ID_MAX ||
      strcmp (name + len - 5, ".json") != 0)
    return 0;                   /* not a state qbak writes: left alone */
  memcpy (id, name, len - 5);
  id[len - 5] = '\0';
  if (!repo_point_id_valid (id) || point_index (c->r, id) != NONE)
    return 0;
  char **k = realloc (c->keys, (c->n + 1) * sizeof *k);
  if (!k || !(k[c->n] = strdup (e->key))) {
    if (k)
      c->keys = k;
    set_nomem ();
    return -1;
  }
  c->keys = k;
  c->n++;
  return 0;
}

/* The states of points that are gone (a prune removed them): nothing
 * reads them any more. */
static int
remove_stale_states (struct repo *r)
{
  struct stale_ctx c = { .r = r };
  int rc = storage_list (r->st, "state/", collect_stale, &c);
  for (size_t i = 0; i < c.n; i++) {
    if (rc == 0 && storage_delete (r->st, c.keys[i]) < 0)
      rc = -1;
    free (c.keys[i]);
  }
  free (c.keys);
  return rc;
}

static void
free_run (struct run *v)
{
  size_t n = v->base && v->r ? v->base[v->r->n_points] : 0;
  for (size_t f = 0; v->files && f < n; f++) {
    for (size_t k = 0; k < v->files[f].n_errors; k++)
      free ((void *) v->files[f].errors[k].what);
    free (v->files[f].errors);
  }
  for (size_t i = 0; v->states && i < v->r->n_points; i++)
    repo_state_free (&v->states[i]);
  free (v->states);
  free (v->files);
  free (v->base);
  free (v->selected);
  free (v->skipped);
}

int
qbak_verify (const struct qbak_verify_opts *caller_o,
             struct qbak_verify_result *caller_res)
{
  api_enter (__func__);
  error_clear ();
  struct qbak_verify_opts o;
  struct qbak_verify_result res;
  qbak_verify_result_init (&res);
  if (api_check_size (caller_o->size, sizeof o, "qbak_verify_opts") < 0 ||
      (caller_res && api_check_size (caller_res->size, sizeof res,
                                     "qbak_verify_result") < 0))
    return -1;
  memset (&o, 0, sizeof o);
  memcpy (&o, caller_o, caller_o->size);
  if (!o.repository) {
    set_usage_error ("verify: a repository is needed");
    return -1;
  }
  if (o.sample_percent >= 100)
    o.sample_percent = 0;
  struct timespec t0;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  struct run v = { .o = &o };
  int ret = -1;
  bool mismatch = false;
  /* The lock keeps state writes of two runs (and a backup's leftover
   * removal) from interleaving with this one. */
  v.r = repo_open (o.repository, false, NULL);
  if (!v.r || repo_lock (v.r) < 0 || repo_load_points (v.r) < 0)
    goto out;
  size_t np = v.r->n_points;
  v.selected = calloc (np + 1, sizeof *v.selected);
  v.skipped = calloc (np + 1, sizeof *v.skipped);
  v.states = calloc (np + 1, sizeof *v.states);
  if (!v.selected || !v.skipped || !v.states) {
    set_nomem ();
    goto out;
  }
  if (np == 0 && !o.n_sources) {
    set_invalid ("%s: the repository holds no point", o.repository);
    goto out;
  }
  for (size_t i = 0; i < np; i++)
    if (repo_state_read (v.r->st, v.r->points[i].id, &v.states[i]) < 0)
      error_clear ();           /* a damaged state is written anew */
  if (build_files (&v) < 0 || choose (&v) < 0)
    goto out;
  report_progress (&v);
  int rc = verify_needed (&v, &res);
  struct qbak_saved_error stopped;
  if (rc < 0)
    qbak_error_save (&stopped);
  /* What was found stands even when the run stopped. */
  int64_t now = (int64_t) time (NULL);
  int wrc = 0;
  for (size_t i = 0; i < np; i++)
    if (conclude_point (&v, i, now, rc < 0, &res) < 0 && wrc == 0) {
      wrc = -1;
      if (rc == 0)
        qbak_error_save (&stopped);
    }
  if (rc < 0 || wrc < 0) {
    qbak_error_put_back (&stopped, "verification failed");
    goto out;
  }
  if (remove_stale_states (v.r) < 0)
    goto out;
  if (o.n_sources && verify_sources (v.r, &o, &mismatch) < 0)
    goto out;
  if (res.points_failed || mismatch) {
    qbak_internal_error (STATUS_MISMATCH, 0, "%s: %zu point%s failed "
                         "verification%s", o.repository, res.points_failed,
                         res.points_failed == 1 ? "" : "s",
                         mismatch ? "; a source differs from its latest point"
                                  : "");
    goto out;
  }
  ret = 0;
 out:
  {
    struct timespec t1;
    clock_gettime (CLOCK_MONOTONIC, &t1);
    res.seconds = (double) (t1.tv_sec - t0.tv_sec) +
                  (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (caller_res) {
      size_t keep = caller_res->size;
      memcpy (caller_res, &res, keep);
      caller_res->size = keep;
    }
    struct qbak_saved_error err;
    bool failed = ret < 0;
    if (failed)
      qbak_error_save (&err);
    free_run (&v);
    repo_close (v.r);
    if (failed)
      qbak_error_put_back (&err, "verification failed");
  }
  return ret;
}
