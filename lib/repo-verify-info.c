/* A point's last verification, for listings (qbak_repo_get_point_verify),
 * and the names of verification states. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
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

int
qbak_repo_get_point_verify (const char *repository, const char *point,
                            struct qbak_point_verify_info *info)
{
  api_enter (__func__);
  struct qbak_point_verify_info all;
  size_t size = info->size;
  if (api_check_size (size, sizeof all, "qbak_point_verify_info") < 0)
    return -1;
  if (!repo_point_id_valid (point)) {
    set_usage_error ("%s: '%s' is not a point id", repository, point);
    return -1;
  }
  /* Reading takes no lock: a state is replaced whole. */
  struct storage *st = storage_open (repository, false, NULL);
  if (!st)
    return -1;
  struct repo_verify_state s;
  int rc = repo_state_read (st, point, &s);
  storage_close (st);
  if (rc < 0)
    return -1;
  memset (&all, 0, sizeof all);
  all.size = size;
  if (s.known) {
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
