/* lib/ internal: what retention keeps of a repository.
 *
 *   protect/ID     present while point ID is pinned (an empty object: its
 *                  existence is the flag, so pinning is one put-once and
 *                  unpinning one delete, both atomic on any storage)
 */
#ifndef QBAK_LIB_REPO_PRUNE_H
#define QBAK_LIB_REPO_PRUNE_H

#include <stdbool.h>

#include "lib/repo.h"

#define REPO_PROTECT_PREFIX "protect/"

/* FLAGS[i] (R->n_points entries) gets whether point i is pinned. */
int repo_protected_points (struct repo *r, bool *flags);

#endif
