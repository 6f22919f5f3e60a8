/* lib/ internal: a repository opened for reading or for a backup.
 *
 * Layout (keys of the storage, see common/storage.h):
 *
 *   config                   the repository's id, version and time zone
 *   lock                     held while a command changes the repository
 *   points/ID.json           one immutable record per complete point
 *   protect/ID               present while point ID is pinned against
 *                            retention (lib/repo-prune.h)
 *   disks/NAME/ID.qcow2      the file of disk NAME at point ID; an
 *                            incremental's backing file is its parent's
 *                            file, named relative ("PARENT.qcow2"), so
 *                            the folder can be moved or copied whole
 *
 * A point exists when, and only when, its record does: records are
 * written after every file they name is durable.  A file that no record
 * names belongs to an interrupted run: the next backup continues the
 * files of the newest such run (each is a valid image of what it had
 * copied, see lib/job.h) and removes the others.
 */
#ifndef QBAK_LIB_REPO_H
#define QBAK_LIB_REPO_H

#include <stdbool.h>

#include "common/storage.h"
#include "lib/repo-record.h"

/* The longest chain of one disk a repository follows (a full and its
 * incrementals). */
#define REPO_CHAIN_MAX 4096

struct repo {
  struct storage *st;
  struct repo_config config;
  struct repo_point *points;    /* oldest first */
  size_t n_points;
  struct storage_lock *lock;
};

/* Open the repository at LOCATION.  With CREATE, a missing or empty folder
 * becomes a new repository (*CREATED says so).  A folder that holds
 * anything but a repository is refused. */
struct repo *repo_open (const char *location, bool create, bool *created);
/* The same, the repository's time zone being ZONE: a new repository gets
 * it (NULL: the local zone), an existing one with another zone is
 * refused (STATUS_USAGE). */
struct repo *repo_open_in_zone (const char *location, bool create,
                                const char *zone, bool *created);
void repo_close (struct repo *r);

/* Take the repository's lock (STATUS_BUSY naming the holder if another
 * process has it). */
int repo_lock (struct repo *r);

/* Read every point record (oldest first). */
int repo_load_points (struct repo *r);

/* The newest point holding disk NAME, or NULL. */
const struct repo_point *repo_latest_of_disk (const struct repo *r,
                                              const char *name);
/* The point AT names: a point id, a time (the newest point at or before
 * it: "YYYY-MM-DD[THH:MM[:SS]][Z|+HH:MM]", local time without a zone),
 * "latest" or NULL (the newest); among those holding DISK if given.  NULL
 * with a usage error naming the repository otherwise (repo-at.c). */
const struct repo_point *repo_choose_point (const struct repo *r,
                                            const char *at,
                                            const char *disk);
/* The point with id ID, or NULL. */
const struct repo_point *repo_find_point (const struct repo *r,
                                          const char *id);

/* Remove files under disks/ that no record names (leftovers of
 * interrupted runs), except the files of the newest interrupted run if
 * it is newer than every point: a backup continues them.  INTERRUPTED
 * (REPO_POINT_ID_MAX + 1 bytes) gets that run's point id, or "".  Needs
 * the lock. */
int repo_remove_leftovers (struct repo *r, char *interrupted);

/* The bitmap name prefix this repository owns in its disks:
 * "qbak-<id>-".  OUT holds at least 64 bytes. */
void repo_bitmap_prefix (const struct repo *r, char *out);

/* repo-prune-apply.c: remove the points IDS (N of them; newer points of
 * their disks may stay), keeping every other point restorable at every
 * instant; an intent makes it finish after a crash.  Needs the lock;
 * reloads the points. */
int repo_prune_remove (struct repo *r, char **ids, size_t n);
/* Finish a prune a crash interrupted, if there is one (*FINISHED says
 * so); before anything else changes the repository. */
int repo_prune_finish_interrupted (struct repo *r, bool *finished);

/* Whether point ID is one an interrupted prune is removing (1), not (0),
 * or -1 on error. */
int repo_prune_pending (struct repo *r, const char *id);

/* The mark of this repository's unfinished files (the qcow2 writer's
 * partial mark, QCOW2_PARTIAL_ID_BYTES): the repository's id. */
void repo_partial_mark (const struct repo *r, uint8_t *mark);

#endif
