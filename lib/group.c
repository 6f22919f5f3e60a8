/* Several backup jobs, one point in time, as in a QEMU transaction of
 * backup jobs with completion-mode grouped or individual.
 *
 * Early failure: every job is prepared (source opened, locked, validated;
 * target created) before any byte is copied; one refusal stops the group
 * with nothing written.  Then freeze, the point in time (every copy set
 * planned), thaw, and the copies, one job after the other.
 *
 * grouped: if a job fails or is cancelled, the jobs not yet run are
 * cancelled, no target of the group is promoted, and every bitmap ends as
 * its mode says for a failure, including the disks that finished copying.
 * individual: each job stands alone.  A signal cancels the whole run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/outfile.h"
#include "lib/api.h"
#include "lib/job.h"
#include "lib/quiesce.h"

/* The first error of the run, kept across later calls (MSG NULL: none
 * yet). */
struct first_error {
  struct qbak_saved_error err;
};

static void
remember (struct first_error *fe, struct qbak_copy_result *res)
{
  if (res) {
    snprintf (res->error, sizeof res->error, "%s", error_get_message ());
    res->error_hint = (enum qbak_hint) error_get_hint ();
    res->error_errno = error_get_errno ();
  }
  if (fe->err.msg)
    return;
  qbak_error_save (&fe->err);
}

/* TARGET with its folder resolved (the file itself does not exist yet),
 * or NULL if the folder cannot be resolved (preparing the job then says
 * why). */
static char *
canonical_target (const char *target)
{
  char *dir = outfile_folder (target), *real = NULL, *r = NULL;
  const char *base = strrchr (target, '/');
  base = base ? base + 1 : target;
  if (dir && (real = realpath (dir, NULL)) &&
      asprintf (&r, "%s/%s", real, base) < 0)
    r = NULL;
  free (dir);
  free (real);
  return r;
}

/* Two jobs of one group writing one target would each make it and the
 * second would fail after the first was complete: refuse that early. */
static int
check_distinct_targets (const struct qbak_group_opts *g,
                        const struct qbak_copy_opts *jobs)
{
  int ret = 0;
  char **t = calloc (g->n_jobs ? g->n_jobs : 1, sizeof *t);
  if (!t) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < g->n_jobs && ret == 0; i++) {
    t[i] = canonical_target (jobs[i].target);
    for (size_t k = 0; t[i] && k < i && ret == 0; k++)
      if (t[k] && strcmp (t[i], t[k]) == 0) {
        set_usage_error ("%s: two jobs of the group write this target ('%s' "
                         "and '%s')", jobs[i].target, jobs[k].target,
                         jobs[i].target);
        ret = -1;
      }
  }
  for (size_t i = 0; i < g->n_jobs; i++)
    free (t[i]);
  free (t);
  return ret;
}

/* The group on OPTS and RESULTS, full-size copies of the caller's. */
static int
run_group (const struct qbak_group_opts *g, const struct qbak_copy_opts *opts,
           struct qbak_copy_result *results, struct job_in_place *places,
           const struct job_source *sources)
{
  size_t n = g->n_jobs;
  struct copy_job **jobs = calloc (n ? n : 1, sizeof *jobs);
  struct first_error fe = { 0 };
  bool freeze_started = false, thaw_failed = false, any_failed = false;
  bool cancelled = false;
  int ret = -1;

  if (!jobs) {
    set_nomem ();
    return -1;
  }
  /* A job never reached reports a failure; preparing one makes it
   * not-started. */
  for (size_t i = 0; i < n; i++) {
    qbak_copy_result_init (&results[i]);
    results[i].outcome = QBAK_OUTCOME_FAILED;
  }

  /* 1. Prepare all: nothing is written if any refuses. */
  if (check_distinct_targets (g, opts) < 0) {
    remember (&fe, &results[0]);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    jobs[i] = job_prepare (&opts[i], &results[i],
                           places ? &places[i] : NULL,
                           sources ? &sources[i] : NULL);
    if (!jobs[i]) {
      remember (&fe, &results[i]);
      for (size_t k = 0; k < i; k++) {
        job_discard (jobs[k]);
        jobs[k] = NULL;
      }
      goto out;
    }
  }

  /* 2. Freeze, point in time, thaw.  The thaw runs if the freeze was
   * started, whatever happens. */
  if (g->freeze_cmd) {
    freeze_started = true;
    if (qbak_internal_run_hook ("freeze", g->freeze_cmd,
                                g->freeze_timeout ? g->freeze_timeout
                                                  : 60) < 0) {
      remember (&fe, NULL);
      if (g->thaw_cmd && qbak_internal_run_hook ("thaw", g->thaw_cmd, 0) < 0)
        thaw_failed = true;
      for (size_t i = 0; i < n; i++) {
        job_discard (jobs[i]);
        jobs[i] = NULL;
      }
      goto out;
    }
  }
  bool plan_failed = false;
  for (size_t i = 0; i < n && !plan_failed; i++)
    if (job_plan (jobs[i]) < 0) {
      remember (&fe, NULL);
      plan_failed = true;
    }
  if (freeze_started && g->thaw_cmd &&
      qbak_internal_run_hook ("thaw", g->thaw_cmd, 0) < 0) {
    remember (&fe, NULL);
    thaw_failed = true;
  }
  if (plan_failed) {
    for (size_t i = 0; i < n; i++) {
      job_discard (jobs[i]);
      jobs[i] = NULL;
    }
    goto out;
  }

  /* 3. Copy. */
  bool *failed = calloc (n, sizeof *failed);
  if (!failed) {
    set_nomem ();
    remember (&fe, NULL);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    bool stop = cancelled ||
                (any_failed && g->completion == QBAK_COMPLETION_GROUPED);
    if (stop || (g->cancel && *g->cancel)) {
      if (!stop)
        cancelled = true;
      qbak_internal_error (STATUS_CANCELLED, 0, "%s: cancelled: %s",
                           job_name (jobs[i]), cancelled
                           ? "interrupted" : "another job of the group failed");
      job_fail (jobs[i], STATUS_CANCELLED);
      results[i].outcome = QBAK_OUTCOME_CANCELLED;
      remember (&fe, &results[i]);
      failed[i] = true;
      continue;
    }
    volatile int *cancel = g->cancel ? g->cancel : opts[i].cancel;
    if (job_copy (jobs[i], cancel, g->progress, g->progress_opaque) < 0 ||
        (g->completion == QBAK_COMPLETION_INDIVIDUAL &&
         job_finish_target (jobs[i]) < 0)) {
      enum status st = error_get_status ();
      if (st == STATUS_CANCELLED)
        cancelled = true;
      job_fail (jobs[i], st);
      remember (&fe, &results[i]);
      failed[i] = true;
      any_failed = true;
      continue;
    }
    if (g->completion == QBAK_COMPLETION_INDIVIDUAL &&
        job_promote (jobs[i]) < 0) {
      remember (&fe, &results[i]);
      results[i].outcome = QBAK_OUTCOME_FAILED;
      any_failed = true;
    }
  }

  /* 4. Grouped completion: all targets durable, then all renamed, then
   * all bitmaps; or, if anything failed, every job fails. */
  if (g->completion == QBAK_COMPLETION_GROUPED) {
    if (!any_failed && !cancelled) {
      for (size_t i = 0; i < n && !any_failed; i++)
        if (job_finish_target (jobs[i]) < 0) {
          job_fail (jobs[i], error_get_status ());
          remember (&fe, &results[i]);
          failed[i] = true;
          any_failed = true;
        }
    }
    if (any_failed || cancelled) {
      for (size_t i = 0; i < n; i++) {
        if (failed[i])
          continue;
        qbak_internal_error (cancelled ? STATUS_CANCELLED
                                       : STATUS_IO, 0,
                             "%s: not completed: another job of the group "
                             "failed", job_name (jobs[i]));
        job_fail (jobs[i], error_get_status ());
        remember (&fe, &results[i]);
      }
    }
    else {
      for (size_t i = 0; i < n; i++)
        if (job_promote (jobs[i]) < 0) {
          remember (&fe, &results[i]);
          results[i].outcome = QBAK_OUTCOME_FAILED;
          any_failed = true;
        }
    }
  }
  free (failed);
  if (!fe.err.msg && !thaw_failed)
    ret = 0;

out:
  for (size_t i = 0; i < n; i++)
    job_free (jobs[i]);
  free (jobs);
  if (ret < 0 && fe.err.msg) {
    if (cancelled)
      fe.err.status = STATUS_CANCELLED;
    qbak_error_put_back (&fe.err, "backup failed");
  }
  free (fe.err.msg);
  return ret;
}

/* The caller's structures are of the caller's size: the group runs on
 * full-size copies, and hands back the part of each result the caller
 * knows. */
int
qbak_copy_group (const struct qbak_group_opts *caller_g,
                 struct qbak_copy_result *caller_results)
{
  api_enter (__func__);
  return qbak_internal_copy_group (caller_g, caller_results, NULL, NULL);
}

int
qbak_internal_copy_group (const struct qbak_group_opts *caller_g,
                          struct qbak_copy_result *caller_results,
                          struct job_in_place *places,
                          const struct job_source *sources)
{
  struct qbak_group_opts g;
  struct qbak_copy_opts *opts = NULL;
  struct qbak_copy_result *results = NULL;
  int ret = -1;

  error_clear ();
  if (copy_struct_in (&g, sizeof g, caller_g) < 0)
    return -1;
  size_t n = g.n_jobs;
  if (n == 0) {
    set_usage_error ("copy: no job given");
    return -1;
  }
  size_t jstride = g.jobs[0].size, rstride = caller_results[0].size;
  if (!struct_size_ok (jstride, sizeof *opts) ||
      !struct_size_ok (rstride, sizeof *results)) {
    set_usage_error ("copy: unknown structure size");
    return -1;
  }
  opts = calloc (n, sizeof *opts);
  results = calloc (n, sizeof *results);
  if (!opts || !results) {
    set_nomem ();
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    if (copy_struct_in (&opts[i], sizeof opts[i],
                        (const char *) g.jobs + i * jstride) < 0)
      goto out;
  ret = run_group (&g, opts, results, places, sources);
  for (size_t i = 0; i < n; i++) {
    struct qbak_copy_result *r = (struct qbak_copy_result *)
                                 ((char *) caller_results + i * rstride);
    memcpy (r, &results[i], rstride);
    r->size = rstride;
  }
out:
  free (opts);
  free (results);
  return ret;
}
