/* lib/ internal: the parts of qbak_verify (lib/repo-verify*.c,
 * lib/verify-source.c). */
#ifndef QBAK_LIB_REPO_VERIFY_H
#define QBAK_LIB_REPO_VERIFY_H

#include <stdbool.h>

#include "lib/repo.h"
#include "qbak.h"

/* The point AT names: its id, the newest at or before a time
 * (YYYY-MM-DD[THH:MM[:SS]], with Z or +HH:MM, else local time), or
 * "latest"; among those holding DISK if given.  NULL with a usage error
 * naming what is missing. */
const struct repo_point *verify_choose_point (const struct repo *r,
                                              const char *at,
                                              const char *disk);

/* Compare each source of O with its disk's latest point in R (the
 * source callback gets the counts, the problem callback the mismatching
 * offsets).  *MISMATCH set if any differs where it should not.  -1 if a
 * comparison could not run. */
int verify_sources (struct repo *r, const struct qbak_verify_opts *o,
                    bool *mismatch);

#endif
