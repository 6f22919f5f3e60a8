/* A point's last verification, for listings (qbak_repo_get_point_verify),
 * the fingerprint that tells whether it still stands for the point's
 * files, and the names of verification states. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/repo.h"
#include "lib/repo-record.h"
#include "lib/repo-state.h"
#include "qbak.h"

const char *
qbak_verify_state_name (enum qbak_verify_state s)
{
  switch (s) {
  case QBAK_VERIFY_NONE: return "none";
  case QBAK_VERIFY_OK: return "ok";
  case QBAK_VERIFY_FAILED: return "failed";
  case QBAK_VERIFY_SKIPPED: return "skipped";
  case QBAK_VERIFY_NOT_VERIFIED: return "not-verified";
  }
  return NULL;
}

static void
fnv (uint64_t *h, const char *s)
{
  for (; s && *s; s++) {
    *h ^= (unsigned char) *s;
    *h *= 0x100000001b3ULL;
  }
  *h ^= 0xff;
  *h *= 0x100000001b3ULL;
}

void
repo_chain_fingerprint (const struct repo *r, const struct repo_point *p,
                        char *out)
{
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t j = 0; j < p->n_disks; j++) {
    const struct repo_disk_record *d = &p->disks[j];
    for (size_t n = 0; d && n < REPO_CHAIN_MAX; n++) {
      fnv (&h, d->file);
      fnv (&h, d->manifest_digest);
      const struct repo_point *parent = d->parent
        ? repo_find_point (r, d->parent) : NULL;
      d = parent ? repo_point_disk (parent, p->disks[j].name) : NULL;
    }
  }
  snprintf (out, 17, "%016" PRIx64, h);
}

int
repo_point_verify_info (struct repo *r, size_t i,
                        struct qbak_point_verify_info *info)
{
  struct qbak_point_verify_info all;
  size_t size = info->size;
  if (api_check_size (size, sizeof all, "qbak_point_verify_info") < 0)
    return -1;
  if (i >= r->n_points) {
    set_usage_error ("%s: no point %zu (%zu points)", r->st->location, i,
                     r->n_points);
    return -1;
  }
  const struct repo_point *p = &r->points[i];
  struct repo_verify_state s;
  if (repo_state_read (r->st, p->id, &s) < 0)
    return -1;
  memset (&all, 0, sizeof all);
  all.size = size;
  char now[17];
  repo_chain_fingerprint (r, p, now);
  /* A pass found for files a prune has merged since says nothing of
   * these; a failure stays (the bad clusters moved with the merge). */
  if (s.known && (s.failed || strcmp (s.chain, now) == 0)) {
    all.state = s.failed ? QBAK_VERIFY_FAILED : QBAK_VERIFY_OK;
    repo_rfc3339 (s.unix_time, all.time);
    all.unix_time = s.unix_time;
    all.sampled = s.sampled;
    all.partial = s.partial;
    all.last_complete_ok = s.last_complete_ok;
  }
  repo_state_free (&s);
  memcpy (info, &all, size);
  return 0;
}

int
qbak_repo_get_point_verify (const char *repository, const char *point,
                            struct qbak_point_verify_info *info)
{
  api_enter (__func__);
  if (api_check_size (info->size, sizeof *info,
                      "qbak_point_verify_info") < 0)
    return -1;
  if (!repo_point_id_valid (point)) {
    set_usage_error ("%s: '%s' is not a point id", repository, point);
    return -1;
  }
  /* Reading takes no lock: records are immutable and a state is
   * replaced whole. */
  struct repo *r = repo_open (repository, false, NULL);
  int rc = -1;
  if (r && repo_load_points (r) == 0) {
    const struct repo_point *p = repo_find_point (r, point);
    if (p)
      rc = repo_point_verify_info (r, (size_t) (p - r->points), info);
    else
      set_usage_error ("%s: no point %s", repository, point);
  }
  repo_close (r);
  return rc;
}
