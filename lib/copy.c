/* The single-job entry point and the helpers of the job structures that
 * grow between releases (see qbak.h): their _init functions, the names of
 * their enums, and the copy of a caller's structure into a full-size one. */
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/job.h"

bool
struct_size_ok (size_t given, size_t known)
{
  return given >= sizeof (size_t) && given <= known;
}

int
copy_struct_in (void *dst, size_t dst_size, const void *src)
{
  size_t given;
  memcpy (&given, src, sizeof given);
  if (!struct_size_ok (given, dst_size)) {
    set_usage_error ("copy: unknown structure size");
    return -1;
  }
  memset (dst, 0, dst_size);
  memcpy (dst, src, given);
  memcpy (dst, &dst_size, sizeof dst_size);
  return 0;
}

void
qbak_copy_opts_init (struct qbak_copy_opts *o)
{
  *o = (struct qbak_copy_opts) {
    .size = sizeof *o,
    .sync = QBAK_SYNC_FULL,
    .bitmap_mode = QBAK_BITMAP_MODE_UNSET,
    .format = QBAK_TARGET_QCOW2,
    .on_error = QBAK_ON_ERROR_REPORT,
  };
}

void
qbak_copy_result_init (struct qbak_copy_result *r)
{
  *r = (struct qbak_copy_result) { .size = sizeof *r };
}

void
qbak_group_opts_init (struct qbak_group_opts *g)
{
  *g = (struct qbak_group_opts) {
    .size = sizeof *g,
    .completion = QBAK_COMPLETION_GROUPED,
  };
}

const char *
qbak_outcome_name (enum qbak_outcome outcome)
{
  switch (outcome) {
  case QBAK_OUTCOME_OK: return "ok";
  case QBAK_OUTCOME_FAILED: return "failed";
  case QBAK_OUTCOME_CANCELLED: return "cancelled";
  case QBAK_OUTCOME_NOT_STARTED: return "not-started";
  }
  return NULL;
}

const char *
qbak_bitmap_state_name (enum qbak_bitmap_state state)
{
  switch (state) {
  case QBAK_BITMAP_STATE_NONE: return NULL;
  case QBAK_BITMAP_STATE_CLEARED: return "cleared";
  case QBAK_BITMAP_STATE_UNCHANGED: return "unchanged";
  case QBAK_BITMAP_STATE_NOT_COPIED: return "not-copied";
  }
  return NULL;
}

/* One job is a group of one that stands alone. */
int
qbak_copy (const struct qbak_copy_opts *caller_o,
           struct qbak_copy_result *res)
{
  api_enter (__func__);
  struct qbak_copy_opts o;
  error_clear ();
  if (copy_struct_in (&o, sizeof o, caller_o) < 0)
    return -1;
  struct qbak_group_opts g;
  qbak_group_opts_init (&g);
  g.jobs = &o;
  g.n_jobs = 1;
  g.completion = QBAK_COMPLETION_INDIVIDUAL;
  g.cancel = o.cancel;
  g.progress = o.progress;
  g.progress_opaque = o.progress_opaque;
  return qbak_copy_group (&g, res);
}
