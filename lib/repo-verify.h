/* lib/ internal: the parts of qbak_verify (lib/repo-verify*.c,
 * lib/verify-source.c). */
#ifndef QBAK_LIB_REPO_VERIFY_H
#define QBAK_LIB_REPO_VERIFY_H

#include <stdbool.h>

#include "lib/repo.h"
#include "qbak.h"

/* Compare each source of O with its disk's latest point in R (the
 * source callback gets the counts, the problem callback the mismatching
 * offsets).  *MISMATCH set if any differs where it should not.  -1 if a
 * comparison could not run. */
int verify_sources (struct repo *r, const struct qbak_verify_opts *o,
                    bool *mismatch);

#endif
