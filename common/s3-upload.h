/* Writing one large object to S3 as a multipart upload, several parts in
 * flight at once.
 *
 * The writer hands over parts by number, in any order: a qcow2 target
 * streams its data from part 2 on and gives part 1 (which holds the
 * header, written last) at the end.  S3 wants every part but the last
 * (the highest number) to hold at least S3_MIN_PART bytes, and the parts
 * to be numbered 1..N without gaps here, so part 1 must be that large
 * too unless it is the only part.
 *
 * Each part is copied when it is handed over, so the caller may reuse
 * its buffer; at most PARALLEL parts are held (being sent or waiting),
 * and handing over another waits for one to finish: memory is bounded
 * by PARALLEL times the part size.  Each worker thread has its own
 * client (its own connection).
 *
 * Nothing is visible at the key until s3_upload_finish completes the
 * upload; a failure, or s3_upload_cancel, abandons it (its parts are
 * deleted), so an interrupted writer leaves no object.  A process that
 * dies leaves an upload in progress, which s3_mpu_list finds. */
#ifndef QBAK_COMMON_S3_UPLOAD_H
#define QBAK_COMMON_S3_UPLOAD_H

#include <stddef.h>

#include "common/s3-config.h"

struct s3_upload;

/* Start uploading the object KEY (a whole key in CFG's bucket) with
 * PARALLEL (1..16) parts in flight. */
struct s3_upload *s3_upload_start (const struct s3_config *cfg,
                                   const char *key, unsigned parallel);

/* Hand over part NUMBER (1..S3_MAX_PARTS, each number once).  -1 if it
 * is refused, or if an earlier part failed (that part's error). */
int s3_upload_part (struct s3_upload *u, unsigned number, const void *buf,
                    size_t len);

/* Wait for every part, check that they are 1..N with all but part N at
 * least S3_MIN_PART bytes, and complete the upload: the object appears
 * whole.  On any failure the upload is abandoned.  Frees U either way. */
int s3_upload_finish (struct s3_upload *u);

/* Abandon the upload (nothing becomes visible) and free U; accepts
 * NULL.  The current error, if any, is kept. */
void s3_upload_cancel (struct s3_upload *u);

#endif
