/* What the S3 tests share: the gateway the s3 fixture starts, buckets
 * made with curl's own signing, and tests/s3/fault-proxy.py between the
 * client and the gateway. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/s3-client.h"
#include "common/s3-config.h"
#include "helpers.h"
#include "s3-fixture.h"

/* Export the gateway's settings from $QBAK_RGW_DIR/env ("export A=B
 * C=D" lines). */
void
load_gateway_env (void)
{
  const char *dir = getenv ("QBAK_RGW_DIR");
  if (!dir || !*dir)
    fail_msg ("QBAK_RGW_DIR is not set: run this test through ctest "
              "(label s3), whose fixture starts the gateway");
  char path[TEST_PATH_MAX];
  snprintf (path, sizeof path, "%s/env", dir);
  FILE *f = fopen (path, "re");
  if (!f)
    fail_msg ("%s: %s (is the gateway started? tests/s3/rgw.sh start %s)",
              path, strerror (errno), dir);
  char line[4096];
  while (fgets (line, sizeof line, f)) {
    char *save;
    for (char *tok = strtok_r (line, " \t\n", &save); tok;
         tok = strtok_r (NULL, " \t\n", &save)) {
      char *eq = strchr (tok, '=');
      if (strcmp (tok, "export") == 0 || !eq)
        continue;
      *eq = '\0';
      char *v = eq + 1;
      size_t n = strlen (v);
      if (n >= 2 && (v[0] == '\'' || v[0] == '"') && v[n - 1] == v[0]) {
        v[n - 1] = '\0';
        v++;
      }
      setenv (tok, v, 1);
    }
  }
  fclose (f);
  if (!getenv ("AWS_ENDPOINT_URL") || !getenv ("AWS_SECRET_ACCESS_KEY"))
    fail_msg ("%s: no AWS_ENDPOINT_URL or keys in it", path);
}

/* Buckets are made by the test (qbak never makes one), with curl's own
 * SigV4 signing. */
int
bucket_request (const char *method, const char *name)
{
  return test_sh_status ("curl -sf -o /dev/null --retry 8 --retry-delay 0 "
                         "--retry-all-errors --aws-sigv4 "
                         "\"aws:amz:${AWS_REGION:-us-east-1}:s3\" "
                         "--user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" "
                         "-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "
                         "-X %s \"$AWS_ENDPOINT_URL/%s\"", method, name);
}

/* Set the proxy's fault rules (a JSON array), replacing the file so that
 * the proxy sees a change. */
void
proxy_rules (struct proxy *p, const char *rules)
{
  char tmp[TEST_PATH_MAX + 48];
  snprintf (tmp, sizeof tmp, "%s.new", p->control);
  FILE *f = fopen (tmp, "w");
  assert_non_null (f);
  fprintf (f, "{\"seed\": 1, \"rules\": %s}\n", rules);
  assert_int_equal (fclose (f), 0);
  assert_int_equal (rename (tmp, p->control), 0);
}

/* The proxy running now, if a test stopped half-way with it running. */
static pid_t stray_proxy;

void
proxy_stop_stray (void)
{
  if (stray_proxy > 0) {
    kill (stray_proxy, SIGTERM);
    waitpid (stray_proxy, NULL, 0);
  }
  stray_proxy = 0;
}

void
proxy_start (struct proxy *p)
{
  const char *src = getenv ("QBAK_SRCDIR");
  if (!src || !*src)
    fail_msg ("QBAK_SRCDIR is not set (run through ctest)");
  char script[TEST_PATH_MAX];
  snprintf (script, sizeof script, "%s/tests/s3/fault-proxy.py", src);
  if (access (script, R_OK) < 0)
    fail_msg ("%s: %s", script, strerror (errno));
  test_tmpdir_create (p->dir);
  snprintf (p->control, sizeof p->control, "%s/control.json", p->dir);
  snprintf (p->log, sizeof p->log, "%s/proxy.log", p->dir);
  char port_file[TEST_PATH_MAX + 32];
  snprintf (port_file, sizeof port_file, "%s/port", p->dir);
  proxy_rules (p, "[]");
  p->gateway = strdup (getenv ("AWS_ENDPOINT_URL"));
  assert_non_null (p->gateway);
  fflush (NULL);
  p->pid = fork ();
  assert_true (p->pid >= 0);
  if (p->pid == 0) {
    execlp ("python3", "python3", script, "--upstream", p->gateway,
            "--control", p->control, "--port-file", port_file, "--log",
            p->log, (char *) NULL);
    _exit (127);
  }
  stray_proxy = p->pid;
  for (int i = 0; i < 200; i++) {
    FILE *f = fopen (port_file, "r");
    unsigned port = 0;
    if (f) {
      int n = fscanf (f, "%u", &port);
      fclose (f);
      if (n == 1 && port) {
        snprintf (p->url, sizeof p->url, "http://127.0.0.1:%u", port);
        setenv ("AWS_ENDPOINT_URL", p->url, 1);
        return;
      }
    }
    usleep (50000);
  }
  fail_msg ("fault-proxy.py did not start (no %s)", port_file);
}

void
proxy_stop (struct proxy *p)
{
  kill (p->pid, SIGTERM);
  waitpid (p->pid, NULL, 0);
  stray_proxy = 0;
  setenv ("AWS_ENDPOINT_URL", p->gateway, 1);
  free (p->gateway);
  test_sh_status ("rm -rf '%s'", p->dir);
}

/* How many requests the proxy logged with WORD in their line. */
int
proxy_count (struct proxy *p, const char *word)
{
  FILE *f = fopen (p->log, "r");
  if (!f)
    return 0;
  char line[4096];
  int n = 0;
  while (fgets (line, sizeof line, f))
    if (strstr (line, word))
      n++;
  fclose (f);
  return n;
}

void
gateway_bucket (char *bucket, size_t len, const char *tag)
{
  load_gateway_env ();
  unsetenv ("AWS_PROFILE");
  unsetenv ("AWS_SESSION_TOKEN");
  setenv ("QBAK_S3_BACKOFF_MS", "10", 1);
  snprintf (bucket, len, "qbak-%s-%ld-%ld", tag, (long) getpid (),
            (long) time (NULL));
  assert_int_equal (bucket_request ("PUT", bucket), 0);
}

static int
count_upload (const char *key, const char *upload_id, void *opaque)
{
  (void) key;
  (void) upload_id;
  (*(int *) opaque)++;
  return 0;
}

int
s3_uploads_in_progress (const char *url, const char *prefix)
{
  struct s3_config *cfg = s3_config_load (url);
  assert_non_null (cfg);
  struct s3_client *c = s3_client_new (cfg);
  assert_non_null (c);
  int n = 0;
  char keys[300];
  snprintf (keys, sizeof keys, "%s/", prefix);
  assert_int_equal (s3_mpu_list (c, keys, count_upload, &n), 0);
  s3_client_free (c);
  s3_config_free (cfg);
  return n;
}
