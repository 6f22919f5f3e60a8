/* The S3 location and the configuration the AWS tools use (s3-config.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/s3-config.h"
#include "common/storage.h"

#define SCHEME "s3://"

bool
s3_is_location (const char *location)
{
  return strncmp (location, SCHEME, strlen (SCHEME)) == 0;
}

/* S3's bucket naming rules (the strict, DNS-compatible ones every
 * service accepts). */
static bool
bucket_name_valid (const char *b, size_t n)
{
  if (n < 3 || n > 63 || !isalnum ((unsigned char) b[0]) ||
      !isalnum ((unsigned char) b[n - 1]))
    return false;
  bool all_ip = true;
  for (size_t i = 0; i < n; i++) {
    char c = b[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '-'))
      return false;
    if (c == '.' && (b[i + 1] == '.' || b[i + 1] == '-' ||
                     (i > 0 && b[i - 1] == '-')))
      return false;
    if (!(isdigit ((unsigned char) c) || c == '.'))
      all_ip = false;
  }
  /* "192.168.5.4" is refused: it reads as an address. */
  return !all_ip;
}

int
s3_parse_location (const char *location, char **bucket, char **prefix)
{
  *bucket = *prefix = NULL;
  if (!s3_is_location (location)) {
    set_usage_error ("%s: not an S3 location (s3://BUCKET/PREFIX)",
                     location);
    return -1;
  }
  const char *b = location + strlen (SCHEME);
  const char *slash = strchr (b, '/');
  size_t blen = slash ? (size_t) (slash - b) : strlen (b);
  if (!bucket_name_valid (b, blen)) {
    set_usage_error ("%s: '%.*s' is not a valid bucket name (3 to 63 "
                     "lowercase letters, digits, '.' and '-')", location,
                     (int) (blen > 80 ? 80 : blen), b);
    return -1;
  }
  const char *p = slash ? slash + 1 : "";
  size_t plen = strlen (p);
  while (plen > 0 && p[plen - 1] == '/')
    plen--;
  *bucket = strndup (b, blen);
  *prefix = strndup (p, plen);
  if (!*bucket || !*prefix) {
    free (*bucket);
    free (*prefix);
    *bucket = *prefix = NULL;
    set_nomem ();
    return -1;
  }
  /* The prefix is made of components a key could hold, so that every
   * object's name is PREFIX/KEY with nothing to escape. */
  if (plen > 0 && (plen > 512 || !storage_key_valid (*prefix))) {
    set_usage_error ("%s: '%s' is not a valid prefix (components of "
                     "letters, digits, '.', '_' and '-', separated by "
                     "'/')", location, *prefix);
    free (*bucket);
    free (*prefix);
    *bucket = *prefix = NULL;
    return -1;
  }
  return 0;
}

/* ---- the AWS files ---------------------------------------------------- */

static char *
trim (char *s)
{
  while (isspace ((unsigned char) *s))
    s++;
  size_t n = strlen (s);
  while (n > 0 && isspace ((unsigned char) s[n - 1]))
    s[--n] = '\0';
  return s;
}

/* Set *OUT (if still NULL) to the value of KEY in SECTION of the INI file
 * PATH.  A missing file is no error. */
static int
ini_lookup (const char *path, const char *section, const char *key,
            char **out)
{
  if (*out)
    return 0;
  FILE *f = fopen (path, "re");
  if (!f)
    return 0;
  char line[4096];
  bool in_section = false;
  int r = 0;
  while (fgets (line, sizeof line, f)) {
    char *s = trim (line);
    if (*s == '#' || *s == ';' || *s == '\0')
      continue;
    if (*s == '[') {
      char *end = strchr (s, ']');
      if (end) {
        *end = '\0';
        in_section = strcmp (trim (s + 1), section) == 0;
      }
      continue;
    }
    char *eq = strchr (s, '=');
    if (!in_section || !eq)
      continue;
    *eq = '\0';
    if (strcmp (trim (s), key) != 0)
      continue;
    if (!(*out = strdup (trim (eq + 1)))) {
      set_nomem ();
      r = -1;
    }
    break;
  }
  explicit_bzero (line, sizeof line);
  fclose (f);
  return r;
}

/* A file under ~/.aws unless VAR names it; NULL if neither. */
static char *
aws_file (const char *var, const char *name)
{
  const char *v = getenv (var);
  if (v && *v)
    return strdup (v);
  const char *home = getenv ("HOME");
  if (!home || !*home)
    return NULL;
  char *p;
  if (asprintf (&p, "%s/.aws/%s", home, name) < 0)
    return NULL;
  return p;
}

static int
from_env (const char *var, char **out)
{
  const char *v = getenv (var);
  if (*out || !v || !*v)
    return 0;
  if (!(*out = strdup (v))) {
    set_nomem ();
    return -1;
  }
  return 0;
}

static void
free_secret (char *s)
{
  if (s) {
    explicit_bzero (s, strlen (s));
    free (s);
  }
}

void
s3_config_free (struct s3_config *c)
{
  if (!c)
    return;
  free (c->bucket);
  free (c->prefix);
  free (c->endpoint);
  free (c->region);
  free (c->access_key);
  free_secret (c->secret_key);
  free_secret (c->session_token);
  free (c);
}

static int
load_settings (struct s3_config *c, const char *location)
{
  const char *profile = getenv ("AWS_PROFILE");
  if (!profile || !*profile)
    profile = "default";
  char *creds = aws_file ("AWS_SHARED_CREDENTIALS_FILE", "credentials");
  char *conf = aws_file ("AWS_CONFIG_FILE", "config");
  char *conf_section = NULL;
  char *endpoint = NULL;
  int r = -1;
  if (strcmp (profile, "default") == 0)
    conf_section = strdup ("default");
  else if (asprintf (&conf_section, "profile %s", profile) < 0)
    conf_section = NULL;
  if (!conf_section) {
    set_nomem ();
    goto out;
  }
  /* The environment first: a value found is kept over the files'. */
  if (from_env ("AWS_ACCESS_KEY_ID", &c->access_key) < 0 ||
      from_env ("AWS_SECRET_ACCESS_KEY", &c->secret_key) < 0 ||
      from_env ("AWS_SESSION_TOKEN", &c->session_token) < 0 ||
      from_env ("AWS_REGION", &c->region) < 0 ||
      from_env ("AWS_DEFAULT_REGION", &c->region) < 0 ||
      from_env ("AWS_ENDPOINT_URL_S3", &endpoint) < 0 ||
      from_env ("AWS_ENDPOINT_URL", &endpoint) < 0)
    goto out;
  /* Keys come from the environment as a pair or not at all, so that a
   * key from one place is never signed with a secret from another. */
  if (!c->access_key || !c->secret_key) {
    free (c->access_key);
    free_secret (c->secret_key);
    free_secret (c->session_token);
    c->access_key = c->secret_key = c->session_token = NULL;
    if (creds &&
        (ini_lookup (creds, profile, "aws_access_key_id", &c->access_key) < 0
         || ini_lookup (creds, profile, "aws_secret_access_key",
                        &c->secret_key) < 0
         || ini_lookup (creds, profile, "aws_session_token",
                        &c->session_token) < 0))
      goto out;
    /* The config file may hold keys too. */
    if (conf &&
        (ini_lookup (conf, conf_section, "aws_access_key_id",
                     &c->access_key) < 0
         || ini_lookup (conf, conf_section, "aws_secret_access_key",
                        &c->secret_key) < 0))
      goto out;
  }
  if (conf &&
      (ini_lookup (conf, conf_section, "region", &c->region) < 0 ||
       ini_lookup (conf, conf_section, "endpoint_url", &endpoint) < 0))
    goto out;
  if (!c->access_key || !c->secret_key) {
    /* The environment's fault, not the command line's: an errno keeps
     * the CLI from pointing at --help. */
    qbak_internal_error_errno_only (STATUS_USAGE, EACCES,
                                    "%s: no S3 credentials: set "
                                    "AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY, or give profile "
                                    "'%s' keys in %s", location, profile,
                                    creds ? creds : "~/.aws/credentials");
    goto out;
  }
  if (!c->region && !(c->region = strdup ("us-east-1"))) {
    set_nomem ();
    goto out;
  }
  if (endpoint) {
    size_t n = strlen (endpoint);
    while (n > 0 && endpoint[n - 1] == '/')
      endpoint[--n] = '\0';
    if (strncmp (endpoint, "http://", 7) != 0 &&
        strncmp (endpoint, "https://", 8) != 0) {
      set_usage_error ("%s: the endpoint URL '%s' is not http:// or "
                       "https://", location, endpoint);
      goto out;
    }
    c->endpoint = endpoint;
    endpoint = NULL;
    c->path_style = true;
  }
  else {
    /* Virtual-hosted addressing; a bucket with dots would not match the
     * certificate's wildcard, so it is addressed by path. */
    c->path_style = strchr (c->bucket, '.') != NULL;
    int n = c->path_style
      ? asprintf (&c->endpoint, "https://s3.%s.amazonaws.com", c->region)
      : asprintf (&c->endpoint, "https://%s.s3.%s.amazonaws.com", c->bucket,
                  c->region);
    if (n < 0) {
      c->endpoint = NULL;
      set_nomem ();
      goto out;
    }
  }
  r = 0;
 out:
  free (endpoint);
  free (conf_section);
  free (creds);
  free (conf);
  return r;
}

struct s3_config *
s3_config_load (const char *location)
{
  struct s3_config *c = calloc (1, sizeof *c);
  if (!c) {
    set_nomem ();
    return NULL;
  }
  if (s3_parse_location (location, &c->bucket, &c->prefix) < 0 ||
      load_settings (c, location) < 0) {
    s3_config_free (c);
    return NULL;
  }
  return c;
}

static int
dup_str (char **to, const char *from)
{
  if (!from) {
    *to = NULL;
    return 0;
  }
  return (*to = strdup (from)) ? 0 : -1;
}

struct s3_config *
s3_config_dup (const struct s3_config *c)
{
  struct s3_config *d = calloc (1, sizeof *d);
  if (!d) {
    set_nomem ();
    return NULL;
  }
  d->path_style = c->path_style;
  if (dup_str (&d->bucket, c->bucket) < 0 ||
      dup_str (&d->prefix, c->prefix) < 0 ||
      dup_str (&d->endpoint, c->endpoint) < 0 ||
      dup_str (&d->region, c->region) < 0 ||
      dup_str (&d->access_key, c->access_key) < 0 ||
      dup_str (&d->secret_key, c->secret_key) < 0 ||
      dup_str (&d->session_token, c->session_token) < 0) {
    s3_config_free (d);
    set_nomem ();
    return NULL;
  }
  return d;
}
