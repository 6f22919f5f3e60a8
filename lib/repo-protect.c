/* Pinning points against retention: qbak_protect, qbak_unprotect. */
#include <stdio.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/repo-prune.h"
#include "lib/repo.h"
#include "qbak.h"

static int
set_pin (const char *location, const char *id, bool on)
{
  struct repo *r = repo_open (location, false, NULL);
  int rc = -1;
  /* Under the lock, so that a prune never removes a point between our
   * check that it exists and the pin. */
  if (!r || repo_lock (r) < 0 || repo_load_points (r) < 0)
    goto out;
  if (!repo_point_id_valid (id) || !repo_find_point (r, id)) {
    set_usage_error ("%s: no point %s", location, id);
    goto out;
  }
  char key[64];
  snprintf (key, sizeof key, "%s%s", REPO_PROTECT_PREFIX, id);
  if (!on)
    rc = storage_delete (r->st, key);
  else {
    uint64_t size;
    int has = storage_size (r->st, key, &size);
    if (has < 0)
      goto out;
    rc = has ? 0 : storage_put_once (r->st, key, "", 0);
  }
 out:
  repo_close (r);
  return rc;
}

int
qbak_protect (const char *location, const char *id)
{
  api_enter (__func__);
  error_clear ();
  return set_pin (location, id, true);
}

int
qbak_unprotect (const char *location, const char *id)
{
  api_enter (__func__);
  error_clear ();
  return set_pin (location, id, false);
}
