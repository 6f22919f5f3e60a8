/* qbak_prune: the retention policy's plan, made under the repository's
 * lock, and the removal of what it does not keep (repo-prune-apply.c). */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/repo.h"
#include "qbak.h"

int
qbak_prune (const struct qbak_prune_opts *o, struct qbak_prune_plan **plan)
{
  api_enter (__func__);
  error_clear ();
  if (plan)
    *plan = NULL;
  if (!o || !o->repository) {
    set_usage_error ("prune: a repository is needed");
    return -1;
  }
  struct repo *r = repo_open (o->repository, false, NULL);
  struct qbak_prune_plan *p = NULL;
  char **ids = NULL;
  size_t n = 0;
  bool finished;
  int ret = -1;
  /* The lock first: the plan is made on points nobody changes until the
   * removal is done; an interrupted prune is finished before. */
  if (!r || repo_lock (r) < 0 || repo_load_points (r) < 0 ||
      repo_prune_finish_interrupted (r, &finished) < 0 ||
      !(p = qbak_prune_plan_make (o)))
    goto out;
  size_t count = qbak_prune_plan_count (p);
  if (!(ids = calloc (count ? count : 1, sizeof *ids))) {
    set_nomem ();
    goto out;
  }
  for (size_t i = 0; i < count; i++) {
    struct qbak_prune_decision d = { .size = sizeof d };
    if (qbak_prune_plan_get (p, i, &d) < 0)
      goto out;
    if (d.keep)
      continue;
    if (!repo_find_point (r, d.id)) {
      set_invalid ("%s: point %s of the plan is not in the repository",
                   o->repository, d.id);
      goto out;
    }
    ids[n++] = (char *) d.id;
  }
  if (repo_prune_remove (r, ids, n) < 0)
    goto out;
  ret = 0;
 out:
  free (ids);
  {
    struct qbak_saved_error err;
    bool failed = ret < 0;
    if (failed)
      qbak_error_save (&err);
    repo_close (r);
    if (failed)
      qbak_error_put_back (&err, "prune failed");
  }
  if (plan && ret == 0)
    *plan = p;
  else
    qbak_prune_plan_free (p);
  return ret;
}
