/* A small S3 client over libcurl: the primitives a repository needs on
 * S3-compatible object storage (AWS, Ceph RGW, MinIO).
 *
 * A client owns one curl handle, so its requests reuse one connection;
 * it is used by one thread at a time (a worker thread makes its own).
 * Requests are signed with AWS Signature Version 4 by curl; the payload
 * is declared UNSIGNED-PAYLOAD.  Keys given here are whole keys in the
 * bucket (the repository's prefix included) and are sent as they are:
 * callers pass only repository keys ([A-Za-z0-9._-/]), which need no
 * escaping.  Failures and retries: s3-request.h.  Every function
 * returns -1 with the error set (common/error.h) on failure. */
#ifndef QBAK_COMMON_S3_CLIENT_H
#define QBAK_COMMON_S3_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "common/s3-config.h"

#define S3_ETAG_MAX 128
/* S3's smallest part of a multipart upload, except the last. */
#define S3_MIN_PART ((size_t) 5 << 20)
/* S3's largest part number. */
#define S3_MAX_PARTS 10000

struct s3_client;

/* A client for CFG (copied).  NULL on ENOMEM or if curl cannot start. */
struct s3_client *s3_client_new (const struct s3_config *cfg);
/* Accepts NULL. */
void s3_client_free (struct s3_client *c);
const struct s3_config *s3_client_config (const struct s3_client *c);
/* Whether the last request had to be sent more than once: a conditional
 * request whose first attempt's answer was lost may have succeeded, and
 * its retry then fails its condition. */
bool s3_client_retried (const struct s3_client *c);

/* Is the bucket there and readable with these credentials?  0 if so; -1
 * with STATUS_USAGE naming the bucket and S3's code if not. */
int s3_check_bucket (struct s3_client *c);

/* PUT BUF as KEY.  IF_NONE_MATCH: only if KEY does not exist (-1 with
 * errno EEXIST, STATUS_USAGE, otherwise).  IF_MATCH (an ETag, or NULL):
 * only if KEY still has that ETag (-1 with errno ESTALE, STATUS_BUSY,
 * otherwise).  ETAG (or NULL) receives the new object's ETag. */
int s3_put (struct s3_client *c, const char *key, const void *buf,
            size_t len, bool if_none_match, const char *if_match,
            char *etag);

/* GET the whole of KEY into a malloc'ed buffer, NUL-terminated past
 * *LEN; more than MAX bytes is refused (STATUS_INVALID).  ENOENT (and
 * STATUS_INVALID) if missing. */
int s3_get (struct s3_client *c, const char *key, size_t max, void **buf,
            size_t *len);

/* GET LEN bytes of KEY from OFFSET into BUF.  The number of bytes read:
 * fewer than LEN only where the object ends (0 at or past its end). */
ssize_t s3_get_range (struct s3_client *c, const char *key, uint64_t offset,
                      size_t len, void *buf);

struct s3_object_info {
  uint64_t size;
  char etag[S3_ETAG_MAX];
  time_t last_modified;         /* by the service's clock */
  time_t now;                   /* the service's clock when it answered */
};
/* HEAD KEY: 1 and *INFO if it exists, 0 if not. */
int s3_head (struct s3_client *c, const char *key,
             struct s3_object_info *info);

/* Every object whose key starts with PREFIX, in byte order (ListObjectsV2,
 * page by page).  Non-zero from CB stops and is returned. */
typedef int (*s3_list_cb) (const char *key, uint64_t size, void *opaque);
int s3_list (struct s3_client *c, const char *prefix, s3_list_cb cb,
             void *opaque);

/* DELETE KEY; 0 whether or not it existed. */
int s3_delete (struct s3_client *c, const char *key);

/* Copy FROM to TO on the service (x-amz-copy-source), replacing TO.  At
 * most 5 GiB (S3's limit for one copy). */
int s3_copy (struct s3_client *c, const char *from, const char *to);

/* ---- multipart uploads ------------------------------------------------ */

struct s3_part {
  unsigned number;              /* 1 .. S3_MAX_PARTS */
  char etag[S3_ETAG_MAX];
};

/* Start an upload of KEY; *UPLOAD_ID is malloc'ed.  Nothing is visible
 * at KEY until it is completed. */
int s3_mpu_create (struct s3_client *c, const char *key, char **upload_id);
/* Upload part NUMBER; ETAG receives its ETag for the completion. */
int s3_mpu_upload_part (struct s3_client *c, const char *key,
                        const char *upload_id, unsigned number,
                        const void *buf, size_t len, char *etag);
/* Make KEY the parts PARTS[0..N) joined in order of their numbers (PARTS
 * must be sorted by number). */
int s3_mpu_complete (struct s3_client *c, const char *key,
                     const char *upload_id, const struct s3_part *parts,
                     size_t n);
/* Drop the upload and its parts; 0 if it was gone already. */
int s3_mpu_abort (struct s3_client *c, const char *key,
                  const char *upload_id);
/* Every upload in progress whose key starts with PREFIX. */
typedef int (*s3_upload_list_cb) (const char *key, const char *upload_id,
                                  void *opaque);
int s3_mpu_list (struct s3_client *c, const char *prefix,
                 s3_upload_list_cb cb, void *opaque);

#endif
