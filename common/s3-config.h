/* Where an S3 repository is and how to reach it.
 *
 * A location is "s3://BUCKET/PREFIX" (PREFIX may be empty: the whole
 * bucket).  The endpoint and the credentials are taken the way the AWS
 * tools take them, the environment winning over the files:
 *
 *   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
 *   AWS_REGION (or AWS_DEFAULT_REGION; us-east-1 when unset)
 *   AWS_ENDPOINT_URL (an on-premises service: path-style addressing,
 *     http://HOST:PORT/BUCKET/KEY; unset, the bucket's virtual-hosted
 *     AWS endpoint https://BUCKET.s3.REGION.amazonaws.com/KEY)
 *   AWS_PROFILE (default "default") selects a section of
 *     ~/.aws/credentials ("[NAME]": aws_access_key_id,
 *     aws_secret_access_key, aws_session_token) and of ~/.aws/config
 *     ("[profile NAME]", or "[default]": region, endpoint_url);
 *     AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE name other files.
 *
 * The secret and the session token are never put in a message or a URL,
 * and are zeroed when the configuration is freed.
 */
#ifndef QBAK_COMMON_S3_CONFIG_H
#define QBAK_COMMON_S3_CONFIG_H

#include <stdbool.h>

struct s3_config {
  char *bucket;
  char *prefix;         /* "" or "a/b" (no leading or trailing '/') */
  char *endpoint;       /* "http://host:port" or "https://host", no '/' */
  bool path_style;      /* the bucket is the URL's first path component */
  char *region;
  char *access_key;
  char *secret_key;     /* never in a message */
  char *session_token;  /* NULL if none; never in a message */
};

/* Whether LOCATION names an S3 repository ("s3://..."). */
bool s3_is_location (const char *location);

/* Split "s3://BUCKET/PREFIX" into *BUCKET and *PREFIX (malloc'ed; the
 * prefix without leading or trailing '/').  The bucket follows S3's
 * naming rules (3-63 characters of [a-z0-9.-], starting and ending with
 * a letter or digit, no "..", not an IP address); the prefix is empty or
 * '/'-separated components a repository key could hold.  -1 with
 * STATUS_USAGE otherwise. */
int s3_parse_location (const char *location, char **bucket, char **prefix);

/* The configuration for LOCATION from the environment and the AWS files.
 * NULL with STATUS_USAGE when the location is malformed or no
 * credentials are found (the message says where they were looked for). */
struct s3_config *s3_config_load (const char *location);

/* A deep copy (for a worker thread's own client); NULL on ENOMEM. */
struct s3_config *s3_config_dup (const struct s3_config *c);

/* Free, zeroing the secrets first; accepts NULL. */
void s3_config_free (struct s3_config *c);

#endif
