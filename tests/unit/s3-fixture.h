/* What the S3 tests share (s3-fixture.c). */
#ifndef QBAK_TEST_S3_FIXTURE_H
#define QBAK_TEST_S3_FIXTURE_H

#include <sys/types.h>

/* After cmocka.h and helpers.h (TEST_PATH_MAX). */

/* Export the gateway's settings from $QBAK_RGW_DIR/env ("export A=B
 * C=D" lines); fails the test if the gateway was not started. */
void load_gateway_env (void);
/* A bucket request (METHOD PUT or DELETE on bucket NAME) with curl's own
 * SigV4 signing: qbak never makes a bucket.  Returns curl's status. */
int bucket_request (const char *method, const char *name);

/* The settings of one test program: the gateway's, without a profile or
 * session token, with short retry backoffs; and a new bucket of its own,
 * named qbak-TAG-PID-TIME into BUCKET (LEN bytes). */
void gateway_bucket (char *bucket, size_t len, const char *tag);

/* How many multipart uploads are in progress under PREFIX ("P" for the
 * keys "P/...") of URL's bucket. */
int s3_uploads_in_progress (const char *url, const char *prefix);

/* tests/s3/fault-proxy.py between the client and the gateway. */
struct proxy {
  pid_t pid;
  char dir[TEST_PATH_MAX];
  char control[TEST_PATH_MAX + 32];
  char log[TEST_PATH_MAX + 32];
  char url[64];
  char *gateway;        /* the endpoint behind it */
};

/* Set the proxy's fault rules (a JSON array). */
void proxy_rules (struct proxy *p, const char *rules);
/* Start it and point AWS_ENDPOINT_URL at it. */
void proxy_start (struct proxy *p);
/* Stop it and point AWS_ENDPOINT_URL back at the gateway. */
void proxy_stop (struct proxy *p);
/* Stop the proxy a test left running when it failed half-way (a group
 * teardown), so that it does not keep the test's output open. */
void proxy_stop_stray (void);
/* How many requests the proxy logged with WORD in their line. */
int proxy_count (struct proxy *p, const char *word);

#endif
