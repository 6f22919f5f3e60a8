/* Planning a prune: what a retention policy keeps of a repository's
 * points (qbak_prune_plan_make), without changing the repository. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "common/failpoint.h"
#include "lib/api.h"
#include "lib/prune-policy.h"
#include "lib/repo-prune.h"
#include "lib/repo.h"
#include "qbak.h"

_Static_assert ((unsigned) QBAK_PRUNE_KEEP_LAST == PRUNE_KEEP_LAST &&
                (unsigned) QBAK_PRUNE_KEEP_HOURLY == PRUNE_KEEP_HOURLY &&
                (unsigned) QBAK_PRUNE_KEEP_DAILY == PRUNE_KEEP_DAILY &&
                (unsigned) QBAK_PRUNE_KEEP_WEEKLY == PRUNE_KEEP_WEEKLY &&
                (unsigned) QBAK_PRUNE_KEEP_MONTHLY == PRUNE_KEEP_MONTHLY &&
                (unsigned) QBAK_PRUNE_KEEP_YEARLY == PRUNE_KEEP_YEARLY &&
                (unsigned) QBAK_PRUNE_KEEP_WITHIN == PRUNE_KEEP_WITHIN &&
                (unsigned) QBAK_PRUNE_PROTECTED == PRUNE_KEEP_PROTECTED,
                "the public reasons are the engine's");

struct qbak_prune_plan {
  struct repo *r;
  char within[64];              /* keep-within as restic writes it, or "" */
  unsigned *reasons;
  int32_t *offsets;
};

void
qbak_prune_opts_init (struct qbak_prune_opts *o)
{
  *o = (struct qbak_prune_opts) { .size = sizeof *o };
}

const char *
qbak_prune_reason_name (unsigned reason)
{
  static const char *const names[] = {
    "last", "hourly", "daily", "weekly", "monthly", "yearly", "within",
    "protected",
  };
  for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
    if (reason == 1u << i)
      return names[i];
  return NULL;
}

struct protected_ctx {
  struct repo *r;
  bool *flags;
};

static int
mark_protected (const struct storage_entry *e, void *opaque)
{
  struct protected_ctx *c = opaque;
  const char *id = e->key + strlen (REPO_PROTECT_PREFIX);
  /* A pin of a point that is gone pins nothing. */
  for (size_t i = 0; i < c->r->n_points; i++)
    if (strcmp (c->r->points[i].id, id) == 0)
      c->flags[i] = true;
  return 0;
}

int
repo_protected_points (struct repo *r, bool *flags)
{
  struct protected_ctx c = { .r = r, .flags = flags };
  memset (flags, 0, r->n_points * sizeof *flags);
  return storage_list (r->st, REPO_PROTECT_PREFIX, mark_protected, &c);
}

int
repo_prune_policy (const struct qbak_prune_opts *o, struct prune_policy *pol)
{
  *pol = (struct prune_policy) {
    .last = o->keep_last, .hourly = o->keep_hourly, .daily = o->keep_daily,
    .weekly = o->keep_weekly, .monthly = o->keep_monthly,
    .yearly = o->keep_yearly, .has_within = o->keep_within != NULL,
  };
  if (o->keep_within && prune_duration_parse (o->keep_within,
                                              &pol->within) < 0)
    return -1;
  if (prune_policy_empty (pol)) {
    set_usage_error ("an empty retention policy would keep every point: "
                     "give at least one rule");
    return -1;
  }
  return 0;
}

int
repo_prune_decide (struct repo *r, const struct prune_policy *pol,
                   unsigned *reasons, int32_t *offsets)
{
  size_t n = r->n_points;
  struct prune_zone *z = prune_zone_load (r->config.timezone);
  struct prune_point *in = calloc (n + 1, sizeof *in);
  bool *prot = calloc (n + 1, sizeof *prot);
  int rc = -1;
  if (!z)
    goto out;
  if (!in || !prot) {
    set_nomem ();
    goto out;
  }
  if (repo_protected_points (r, prot) < 0)
    goto out;
  for (size_t i = 0; i < n; i++) {
    in[i].unix_time = r->points[i].unix_time;
    in[i].protected = prot[i];
    if (offsets)
      offsets[i] = prune_zone_offset (z, in[i].unix_time);
  }
  rc = prune_policy_apply (pol, z, in, n, qbak_failpoint_now (), reasons);
 out:
  free (in);
  free (prot);
  prune_zone_free (z);
  return rc;
}

struct qbak_prune_plan *
qbak_prune_plan_make (const struct qbak_prune_opts *caller_o)
{
  api_enter (__func__);
  error_clear ();
  struct qbak_prune_opts o;
  if (api_check_size (caller_o->size, sizeof o, "qbak_prune_opts") < 0)
    return NULL;
  memset (&o, 0, sizeof o);
  memcpy (&o, caller_o, caller_o->size);
  if (!o.repository) {
    set_usage_error ("prune: a repository is needed");
    return NULL;
  }
  struct prune_policy pol;
  if (repo_prune_policy (&o, &pol) < 0)
    return NULL;
  struct qbak_prune_plan *p = calloc (1, sizeof *p);
  if (!p) {
    set_nomem ();
    return NULL;
  }
  if (pol.has_within)
    prune_duration_format (&pol.within, p->within);
  /* Reading takes no lock, as qbak_repo_open: a plan is advice; a
   * removal takes the lock and decides again on what it then finds. */
  p->r = repo_open (o.repository, false, NULL);
  if (!p->r || repo_load_points (p->r) < 0)
    goto fail;
  size_t n = p->r->n_points;
  p->reasons = calloc (n + 1, sizeof *p->reasons);
  p->offsets = calloc (n + 1, sizeof *p->offsets);
  if (!p->reasons || !p->offsets) {
    set_nomem ();
    goto fail;
  }
  if (repo_prune_decide (p->r, &pol, p->reasons, p->offsets) < 0)
    goto fail;
  return p;
 fail:
  qbak_prune_plan_free (p);
  return NULL;
}

void
qbak_prune_plan_free (struct qbak_prune_plan *p)
{
  if (!p)
    return;
  repo_close (p->r);
  free (p->reasons);
  free (p->offsets);
  free (p);
}

size_t
qbak_prune_plan_count (const struct qbak_prune_plan *p)
{
  return p->r->n_points;
}

const char *
qbak_prune_plan_timezone (const struct qbak_prune_plan *p)
{
  return p->r->config.timezone;
}

const char *
qbak_prune_plan_within (const struct qbak_prune_plan *p)
{
  return p->within;
}

int
qbak_prune_plan_get (const struct qbak_prune_plan *p, size_t i,
                     struct qbak_prune_decision *d)
{
  api_enter (__func__);
  struct qbak_prune_decision all;
  size_t size = d->size;
  if (api_check_size (size, sizeof all, "qbak_prune_decision") < 0)
    return -1;
  if (i >= p->r->n_points) {
    set_usage_error ("%s: no point %zu (%zu points)", p->r->st->location, i,
                     p->r->n_points);
    return -1;
  }
  const struct repo_point *pt = &p->r->points[i];
  all = (struct qbak_prune_decision) {
    .size = size, .id = pt->id, .time = pt->time,
    .unix_time = pt->unix_time, .utc_offset = p->offsets[i],
    .keep = p->reasons[i] != 0, .reasons = p->reasons[i],
  };
  memcpy (d, &all, size);
  return 0;
}

int
qbak_repo_init (const char *location, const char *timezone, bool *created)
{
  api_enter (__func__);
  error_clear ();
  if (created)
    *created = false;
  struct repo *r = repo_open_in_zone (location, true, timezone, created);
  if (!r)
    return -1;
  repo_close (r);
  return 0;
}
