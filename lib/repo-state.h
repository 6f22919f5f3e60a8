/* lib/ internal: a point's mutable state, beside its immutable record.
 *
 *   state/ID.json   what the last verification of point ID found: ok or
 *                   failed, when, whether it checked only a share of the
 *                   data or only some disks, its errors, and when the
 *                   point last passed a complete verification
 *
 * Written whole with storage_replace (the old state or the new one
 * survives a crash), under the repository's lock.  Nothing a restore
 * follows is ever read from here.
 */
#ifndef QBAK_LIB_REPO_STATE_H
#define QBAK_LIB_REPO_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/storage.h"

struct repo_state_error {
  char *disk;
  char *file;
  bool has_offset;
  uint64_t offset;
  char *what;
};

struct repo_verify_state {
  bool known;                   /* the point was ever verified */
  bool failed;
  int64_t unix_time;            /* of that verification */
  unsigned sampled;             /* percent of data clusters, 0: all */
  bool partial;                 /* only some of the point's disks */
  int64_t last_complete_ok;     /* unix time of the last complete
                                   verification that passed, or 0 */
  char chain[17];               /* what was verified: a fingerprint of the
                                   files (and manifest digests) of the
                                   point's chains, "" if unknown; a
                                   prune that merges files changes it */
  struct repo_state_error *errors;
  size_t n_errors;
};

/* Read point ID's state; STATE->known false if it has none.  -1 with
 * STATUS_INVALID naming the file if it is not what qbak writes. */
int repo_state_read (struct storage *st, const char *id,
                     struct repo_verify_state *state);
/* Write point ID's state (replacing the old one). */
int repo_state_write (struct storage *st, const char *id,
                      const struct repo_verify_state *state);
void repo_state_free (struct repo_verify_state *state);

/* The fingerprint of what point P reads (repo-verify-info.c): the files
 * and manifest digests of each of its disks' chains, as its records name
 * them now, into OUT (16 hex digits and a NUL).  A state whose CHAIN
 * differs was found for other files: a prune has merged them since. */
struct repo;
struct repo_point;
void repo_chain_fingerprint (const struct repo *r, const struct repo_point *p,
                             char *out);
/* What the last verification of R's point I found, as
 * qbak_repo_get_point_verify tells it. */
struct qbak_point_verify_info;
int repo_point_verify_info (struct repo *r, size_t i,
                            struct qbak_point_verify_info *info);

#endif
