/* One signed S3 request with retries: the transport under s3-client.c
 * and s3-upload.c, not for other callers.
 *
 * A request is retried, after an exponential backoff with full jitter
 * (a random wait between 0 and min(cap, base * 2^attempt)), when it
 * could not be sent or its answer was lost (connection refused or reset,
 * a timeout: 10 s to connect, or under 1 byte/s for 60 s), or when the
 * service asks for it (HTTP 500, 502, 503 SlowDown, 504, 408, 429, or
 * S3's RequestTimeout): at most 8 attempts and 2 minutes of waiting.
 * Any other answer is final and handed to the caller, who maps it to an
 * error with s3_response_error.  In test builds QBAK_S3_BACKOFF_MS sets
 * the base wait (200 ms otherwise; the cap is 100 times the base, at
 * most 20 s) and QBAK_S3_LOW_SPEED_TIME (seconds) the stall limit. */
#ifndef QBAK_COMMON_S3_REQUEST_H
#define QBAK_COMMON_S3_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/s3-client.h"

/* The client (s3-client.h) behind its opaque name. */
struct s3_client {
  struct s3_config *cfg;
  void *curl;                   /* CURL *, reused for every request */
  char *userpwd;                /* "KEY:SECRET" for curl's signer */
  char *sigv4;                  /* "aws:amz:REGION:s3" */
  uint64_t rng;                 /* the backoff's jitter */
  unsigned last_attempts;
};

struct s3_request {
  const char *method;           /* "GET", "PUT", "HEAD", "POST", "DELETE" */
  const char *key;              /* object key in the bucket; NULL: bucket */
  const char *query;            /* encoded and sorted by name, or NULL */
  const void *body;             /* PUT and POST */
  size_t body_len;
  const char *headers[6];       /* extra "Name: value" lines, NULL-ended */
  /* A successful answer's body goes to SINK (at most SINK_LEN bytes)
   * when set, else to a malloc'ed buffer of at most MAX_BODY bytes (0:
   * the body is not wanted and dropped).  An error's body is always
   * kept (S3's XML), up to 64 KiB. */
  void *sink;
  size_t sink_len;
  size_t max_body;
};

struct s3_response {
  long status;                  /* HTTP status of the final answer */
  char *body;                   /* malloc'ed, NUL-terminated (or NULL) */
  size_t len;                   /* bytes in BODY or in the sink */
  char etag[S3_ETAG_MAX];
  uint64_t content_length;
  time_t last_modified;         /* the service's clock; -1 if not sent */
  time_t date;                  /* the service's clock; -1 if not sent */
  char code[64];                /* S3's error code, or "" */
  char message[256];            /* S3's error message, or "" */
  unsigned attempts;            /* how many times the request was sent */
};

/* Send REQ, retrying as above.  0 with RESP filled for any final HTTP
 * answer (the caller checks RESP->status); -1 with STATUS_IO set when
 * no answer came within the attempts.  RESP->body is the caller's to
 * free either way (s3_response_free). */
int s3_send (struct s3_client *c, const struct s3_request *req,
             struct s3_response *resp);
void s3_response_free (struct s3_response *resp);

/* Fill RESP's code and message from an <Error> in its body (done for
 * every non-2xx answer; for a 200 whose body turns out to be an error,
 * as a copy or a completion can send, the caller calls it). */
void s3_response_parse_error (struct s3_response *resp);

/* Record the error a non-2xx RESP means for KEY (NULL: the bucket): 404
 * is ENOENT (STATUS_INVALID: no such object), except NoSuchBucket, which
 * like 401 and 403 (AccessDenied, SignatureDoesNotMatch,
 * InvalidAccessKeyId, ...) is STATUS_USAGE: the location or the
 * credentials are wrong, and retrying cannot help; other answers are
 * STATUS_INVALID (4xx) or STATUS_IO (5xx).  The message names
 * s3://BUCKET/KEY, what was being done (WHAT), the HTTP status and S3's
 * error code. */
void s3_response_error (struct s3_client *c, const struct s3_response *resp,
                        const char *key, const char *what);

/* The test knob NAME (a non-negative number in the environment) in a
 * test build (QBAK_FAILPOINTS); DFLT if unset, invalid, or in any other
 * build.  tests/FAILPOINTS.md lists them. */
long s3_test_knob (const char *name, long dflt);

/* "s3://BUCKET/KEY" (KEY NULL: the bucket) in BUF for messages. */
const char *s3_object_name (struct s3_client *c, const char *key,
                            char *buf, size_t size);

#endif
