/* lib/ internal: the repository's small JSON files, encoded and decoded.
 *
 *   config            what the repository is: format, version, its id
 *                     (which names the bitmaps it owns in each disk),
 *                     when it was made and its time zone;
 *   points/ID.json    one immutable record per point in time: for each
 *                     disk, the level and why, the file holding it (a key
 *                     of the repository), its parent point, sizes, the
 *                     format the disk had, bytes copied, seconds.
 *
 * Decoding is strict: a record that is not exactly what qbak writes
 * (another format or version, a missing or mistyped field, a file name
 * outside the disk's folder) is refused, never guessed at, since restores
 * follow what records say.
 */
#ifndef QBAK_LIB_REPO_RECORD_H
#define QBAK_LIB_REPO_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPO_ID_HEX 32          /* a repository id: 128 random bits */
#define REPO_POINT_ID_MAX 32    /* "20261201T181000Z" or "...Z-2" */

struct repo_config {
  char id[REPO_ID_HEX + 1];
  char *created;                /* RFC 3339 UTC */
  char *timezone;               /* whose calendar retention periods follow
                                   ("Europe/Berlin"); "UTC" in
                                   repositories made before it was kept */
};

enum repo_level { REPO_LEVEL_FULL, REPO_LEVEL_INCREMENTAL };

struct repo_disk_record {
  char *name;                   /* the disk's name in the repository */
  enum repo_level level;
  char *reason;                 /* why this level, for people */
  char *file;                   /* key of the point's file of this disk */
  char *parent;                 /* point id of the file's backing, or NULL */
  char *format;                 /* the disk's format: "qcow2", "qcow", "raw" */
  uint64_t virtual_size;
  uint64_t cluster_size;        /* of the file */
  uint64_t bytes_copied;
  double seconds;
  char *manifest;               /* key of the file's manifest
                                   (formats/manifest.h), or NULL */
  char *manifest_digest;        /* its digest (MANIFEST_DIGEST_HEX hex
                                   digits), with it */
};

struct repo_point {
  char id[REPO_POINT_ID_MAX + 1];
  char *time;                   /* RFC 3339 UTC */
  int64_t unix_time;
  char *qbak_version;
  struct repo_disk_record *disks;
  size_t n_disks;
};

/* A point id for UNIX_TIME: "YYYYMMDDTHHMMSSZ", with "-N" appended for
 * the N-th point within one second (N >= 2).  IDs sort as times do. */
void repo_point_id (int64_t unix_time, unsigned n, char *out);
/* Order of two valid point ids: as the points were taken ("...Z" before
 * "...Z-2" before "...Z-10"). */
int repo_point_id_compare (const char *a, const char *b);
/* 0 if ID has the form repo_point_id makes. */
bool repo_point_id_valid (const char *id);
/* "2026-12-01T18:10:00Z" into OUT (at least 21 bytes). */
void repo_rfc3339 (int64_t unix_time, char *out);

/* Encode into a malloc'ed NUL-terminated string; NULL with the error set. */
char *repo_config_encode (const struct repo_config *c);
char *repo_point_encode (const struct repo_point *p);

/* Decode TEXT (LEN bytes) read from WHERE (for messages).  -1 with
 * STATUS_INVALID if it is not a record qbak wrote. */
int repo_config_decode (const char *where, const char *text, size_t len,
                        struct repo_config *c);
int repo_point_decode (const char *where, const char *text, size_t len,
                       struct repo_point *p);

void repo_config_free (struct repo_config *c);
void repo_point_free (struct repo_point *p);

/* The disk NAME of point P, or NULL. */
const struct repo_disk_record *repo_point_disk (const struct repo_point *p,
                                                const char *name);

#endif
