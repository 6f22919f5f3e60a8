/* lib/ internal: what retention keeps of a repository.
 *
 *   protect/ID     present while point ID is pinned (an empty object: its
 *                  existence is the flag, so pinning is one put-once and
 *                  unpinning one delete, both atomic on any storage)
 */
#ifndef QBAK_LIB_REPO_PRUNE_H
#define QBAK_LIB_REPO_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/prune-policy.h"
#include "lib/repo.h"
#include "qbak.h"

#define REPO_PROTECT_PREFIX "protect/"

/* FLAGS[i] (R->n_points entries) gets whether point i is pinned. */
int repo_protected_points (struct repo *r, bool *flags);

/* The policy of O's keep_... fields; -1 with STATUS_USAGE for a bad
 * duration or an empty policy. */
int repo_prune_policy (const struct qbak_prune_opts *o,
                       struct prune_policy *pol);

/* What POL keeps of R's points (loaded; the lock held if the decision
 * is acted on, so that no point comes or goes meanwhile), on R's time
 * zone, pins included: REASONS[i] gets point i's enum prune_reason bits
 * (0: remove), OFFSETS[i] (or NULL) its UTC offset in that zone.  Both
 * have R->n_points entries.  The points to remove are those with
 * REASONS[i] == 0. */
int repo_prune_decide (struct repo *r, const struct prune_policy *pol,
                       unsigned *reasons, int32_t *offsets);

#endif
