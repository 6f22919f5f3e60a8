/* qbak_restore: a point of a repository as standalone images (flattened
 * through the copy job, thin, durable), or as a small overlay whose
 * backing file is the point's file in the repository. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/outfile.h"
#include "formats/qcow2-writer.h"
#include "lib/api.h"
#include "lib/job.h"
#include "lib/repo.h"
#include "qbak.h"

void
qbak_restore_opts_init (struct qbak_restore_opts *o)
{
  *o = (struct qbak_restore_opts) {
    .size = sizeof *o, .format = QBAK_TARGET_QCOW2,
  };
}

/* An overlay at OUT: an empty qcow2 whose backing file is the point's
 * file (by absolute name, so the overlay may live anywhere). */
static int
write_overlay (struct repo *r, const struct repo_disk_record *d,
               const char *out)
{
  char *rel = storage_local_path (r->st, d->file), *abs = NULL;
  int ret = -1;
  if (!rel) {
    /* QEMU opens a backing file by name: an object has none. */
    set_usage_error ("%s: an overlay needs the repository in a local "
                     "folder, where its backing file can be opened by name; "
                     "restore the point without an overlay", r->st->location);
    return -1;
  }
  if (!(abs = realpath (rel, NULL))) {
    set_io_error (errno, "%s", rel);
    goto out;
  }
  bool anonymous;
  struct qbak_file *f = outfile_create (out, out, &anonymous);
  if (!f)
    goto out;
  int fd = dup (f->fd);
  struct qcow2_writer_opts wo = {
    .size = d->virtual_size, .cluster_size = 65536,
    .backing_name = abs, .backing_format = "qcow2",
  };
  struct qcow2_writer *w = qcow2_writer_create_file (f, &wo);
  if (!w || qcow2_writer_finish (w) < 0 ||
      (anonymous && outfile_link (fd, out) < 0) ||
      outfile_sync_folder (out) < 0) {
    qcow2_writer_free (w);
    if (!anonymous && fd >= 0)
      outfile_unlink_own (fd, out);
    if (fd >= 0)
      close (fd);
    goto out;
  }
  qcow2_writer_free (w);
  if (fd >= 0)
    close (fd);
  ret = 0;
 out:
  free (rel);
  free (abs);
  return ret;
}

int
qbak_restore (const struct qbak_restore_opts *caller_o, char *point_id)
{
  api_enter (__func__);
  error_clear ();
  struct qbak_restore_opts o;
  if (api_check_size (caller_o->size, sizeof o, "qbak_restore_opts") < 0)
    return -1;
  memset (&o, 0, sizeof o);
  memcpy (&o, caller_o, caller_o->size);
  if (!o.repository || !o.out) {
    set_usage_error ("restore: a repository and an output are needed");
    return -1;
  }
  if (o.overlay && (!o.disk || o.format != QBAK_TARGET_QCOW2)) {
    set_usage_error ("%s: an overlay is a qcow2 image of one disk",
                     o.out);
    return -1;
  }
  struct repo *r = repo_open (o.repository, false, NULL);
  struct qbak_copy_opts *jobs = NULL;
  struct job_source *sources = NULL;
  struct qbak_copy_result *results = NULL;
  char **paths = NULL;
  size_t n = 0;
  int ret = -1;
  if (!r || repo_load_points (r) < 0)
    goto out;
  const struct repo_point *p = repo_choose_point (r, o.at, o.disk);
  if (!p)
    goto out;
  int pending = repo_prune_pending (r, p->id);
  if (pending != 0) {
    if (pending > 0)
      set_invalid ("%s: point %s is being removed by a prune that was "
                   "interrupted; the next prune or backup finishes it",
                   o.repository, p->id);
    goto out;
  }
  if (point_id)
    snprintf (point_id, 40, "%s", p->id);
  if (o.overlay) {
    ret = write_overlay (r, repo_point_disk (p, o.disk), o.out);
    goto out;
  }
  n = o.disk ? 1 : p->n_disks;
  jobs = calloc (n, sizeof *jobs);
  sources = calloc (n, sizeof *sources);
  results = calloc (n, sizeof *results);
  paths = calloc (2 * n, sizeof *paths);
  if (!jobs || !sources || !results || !paths) {
    set_nomem ();
    goto out;
  }
  if (!o.disk) {
    struct stat sb;
    if (stat (o.out, &sb) < 0 && errno == ENOENT && mkdir (o.out, 0700) < 0) {
      qbak_internal_error_errno_only (STATUS_USAGE, errno, "%s: cannot make "
                                      "the folder: %s", o.out,
                                      strerror (errno));
      goto out;
    }
  }
  for (size_t i = 0; i < n; i++) {
    const struct repo_disk_record *d = o.disk ? repo_point_disk (p, o.disk)
                                              : &p->disks[i];
    /* Read through the storage (its objects, never a path); the
     * source's name is for messages only. */
    if (asprintf (&paths[2 * i], "%s/%s", r->st->location, d->file) < 0) {
      paths[2 * i] = NULL;
      set_nomem ();
      goto out;
    }
    sources[i] = (struct job_source) { .st = r->st, .key = d->file };
    if (o.disk)
      paths[2 * i + 1] = strdup (o.out);
    else if (asprintf (&paths[2 * i + 1], "%s/%s.%s", o.out, d->name,
                       o.format == QBAK_TARGET_RAW ? "raw" : "qcow2") < 0)
      paths[2 * i + 1] = NULL;
    if (!paths[2 * i + 1]) {
      set_nomem ();
      goto out;
    }
    qbak_copy_opts_init (&jobs[i]);
    jobs[i].source = paths[2 * i];
    jobs[i].source_format = "qcow2";
    jobs[i].target = paths[2 * i + 1];
    jobs[i].sync = QBAK_SYNC_FULL;
    jobs[i].format = o.format;
    qbak_copy_result_init (&results[i]);
  }
  struct qbak_group_opts g;
  qbak_group_opts_init (&g);
  g.jobs = jobs;
  g.n_jobs = n;
  g.completion = QBAK_COMPLETION_GROUPED;
  g.cancel = o.cancel;
  g.progress = o.progress;
  g.progress_opaque = o.progress_opaque;
  ret = qbak_internal_copy_group (&g, results, NULL, sources);
 out:
  {
    struct qbak_saved_error err;
    bool failed = ret < 0;
    if (failed)
      qbak_error_save (&err);
    repo_close (r);
    if (failed)
      qbak_error_put_back (&err, "restore failed");
  }
  if (paths)
    for (size_t i = 0; i < 2 * n; i++)
      free (paths[i]);
  free (paths);
  free (jobs);
  free (sources);
  free (results);
  return ret;
}
