/* What code that serves a repository's big objects on S3 (ranged reads,
 * multipart uploads: common/s3-client.h, common/s3-upload.h) needs from
 * an open S3 storage (storage_open_s3 in common/storage.h). */
#ifndef QBAK_COMMON_STORAGE_S3_H
#define QBAK_COMMON_STORAGE_S3_H

#include <stdbool.h>

#include "common/s3-client.h"
#include "common/s3-config.h"
#include "common/storage.h"

/* Whether ST is an S3 storage. */
bool storage_is_s3 (const struct storage *st);
/* Its configuration (for s3_upload_start, or a worker's own client). */
const struct s3_config *storage_s3_config (struct storage *st);
/* Its client: one thread at a time (the storage's user's). */
struct s3_client *storage_s3_client (struct storage *st);
/* The bucket key of repository key KEY (PREFIX/KEY), malloc'ed; NULL
 * with the error set (STATUS_USAGE for an invalid key). */
char *storage_s3_object_key (struct storage *st, const char *key);

#endif
