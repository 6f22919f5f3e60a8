/* Where an S3 repository is and how it is reached (common/s3-config.c):
 * s3:// locations and S3's bucket naming rules, and the configuration
 * the AWS tools use (environment first, then the profile's sections of
 * the credentials and config files).  No service is needed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/s3-config.h"
#include "common/storage.h"
#include "helpers.h"

static void
test_locations (void **state)
{
  (void) state;
  static const struct { const char *loc, *bucket, *prefix; } good[] = {
    { "s3://my-bucket", "my-bucket", "" },
    { "s3://my-bucket/", "my-bucket", "" },
    { "s3://abc/backups/vm1", "abc", "backups/vm1" },
    { "s3://abc/backups/vm1/", "abc", "backups/vm1" },
    { "s3://a.b-c.9/x_y.z", "a.b-c.9", "x_y.z" },
  };
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    char *b, *p;
    assert_true (s3_is_location (good[i].loc));
    assert_int_equal (s3_parse_location (good[i].loc, &b, &p), 0);
    assert_string_equal (b, good[i].bucket);
    assert_string_equal (p, good[i].prefix);
    free (b);
    free (p);
  }
  static const char *const bad[] = {
    "s3://", "s3://ab", "s3://Upper", "s3://-lead", "s3://trail-",
    "s3://a..b", "s3://a.-b", "s3://192.168.1.2", "s3://under_score",
    "s3://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "s3://ok-bucket/../x", "s3://ok-bucket/a//b", "s3://ok-bucket/sp ace",
    "s3://ok-bucket/.hidden", "/some/folder",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *b, *p;
    assert_int_equal (s3_parse_location (bad[i], &b, &p), -1);
    assert_int_equal (error_get_status (), STATUS_USAGE);
    assert_null (b);
  }
  assert_false (s3_is_location ("/srv/repo"));
  assert_false (s3_is_location ("S3://x"));
}

static char dir[TEST_PATH_MAX];
static char creds[TEST_PATH_MAX + 32], conf[TEST_PATH_MAX + 32];

static void
clear_env (void)
{
  static const char *const vars[] = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
  };
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
    unsetenv (vars[i]);
}

static int
setup (void **state)
{
  (void) state;
  clear_env ();
  test_tmpdir_create (dir);
  snprintf (creds, sizeof creds, "%s/credentials", dir);
  snprintf (conf, sizeof conf, "%s/config", dir);
  FILE *f = fopen (creds, "w");
  assert_non_null (f);
  fputs ("[default]\naws_access_key_id = DEFKEY\n"
         "aws_secret_access_key = defsecret\n\n"
         "# a comment\n[work]\n  aws_access_key_id=WORKKEY\n"
         "aws_secret_access_key=work/secret+x\naws_session_token = tok\n",
         f);
  fclose (f);
  f = fopen (conf, "w");
  assert_non_null (f);
  fputs ("[default]\nregion = eu-west-1\n\n[profile work]\n"
         "region = ca-central-1\nendpoint_url = http://10.0.0.5:7480/\n"
         "[work]\nregion = wrong-section\n", f);
  fclose (f);
  setenv ("AWS_SHARED_CREDENTIALS_FILE", creds, 1);
  setenv ("AWS_CONFIG_FILE", conf, 1);
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  clear_env ();
  test_sh_status ("rm -rf '%s'", dir);
  return 0;
}

static void
test_default_profile (void **state)
{
  (void) state;
  struct s3_config *c = s3_config_load ("s3://bkt/p");
  assert_non_null (c);
  assert_string_equal (c->access_key, "DEFKEY");
  assert_string_equal (c->secret_key, "defsecret");
  assert_null (c->session_token);
  assert_string_equal (c->region, "eu-west-1");
  /* No endpoint: AWS, the bucket in the host name. */
  assert_false (c->path_style);
  assert_string_equal (c->endpoint, "https://bkt.s3.eu-west-1.amazonaws.com");
  s3_config_free (c);
}

static void
test_named_profile (void **state)
{
  (void) state;
  setenv ("AWS_PROFILE", "work", 1);
  struct s3_config *c = s3_config_load ("s3://bkt");
  assert_non_null (c);
  assert_string_equal (c->access_key, "WORKKEY");
  assert_string_equal (c->secret_key, "work/secret+x");
  assert_string_equal (c->session_token, "tok");
  /* "[profile work]" in the config file, not "[work]". */
  assert_string_equal (c->region, "ca-central-1");
  assert_true (c->path_style);
  assert_string_equal (c->endpoint, "http://10.0.0.5:7480");
  struct s3_config *d = s3_config_dup (c);
  assert_non_null (d);
  assert_string_equal (d->secret_key, c->secret_key);
  assert_string_equal (d->prefix, "");
  s3_config_free (d);
  s3_config_free (c);
}

static void
test_env_wins (void **state)
{
  (void) state;
  setenv ("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  setenv ("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
  setenv ("AWS_REGION", "us-west-2", 1);
  setenv ("AWS_ENDPOINT_URL", "https://minio.example:9000", 1);
  struct s3_config *c = s3_config_load ("s3://bkt/p");
  assert_non_null (c);
  assert_string_equal (c->access_key, "ENVKEY");
  assert_string_equal (c->secret_key, "envsecret");
  assert_string_equal (c->region, "us-west-2");
  assert_true (c->path_style);
  assert_string_equal (c->endpoint, "https://minio.example:9000");
  s3_config_free (c);

  /* A key without its secret in the environment is not paired with the
   * file's secret: both come from the file. */
  unsetenv ("AWS_SECRET_ACCESS_KEY");
  c = s3_config_load ("s3://bkt/p");
  assert_non_null (c);
  assert_string_equal (c->access_key, "DEFKEY");
  assert_string_equal (c->secret_key, "defsecret");
  s3_config_free (c);

  /* Nothing anywhere: where to put them is said, and no region is
   * needed (us-east-1). */
  clear_env ();
  setenv ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
  setenv ("AWS_CONFIG_FILE", "/nonexistent", 1);
  assert_null (s3_config_load ("s3://bkt/p"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_non_null (strstr (error_get_message (), "AWS_ACCESS_KEY_ID"));
  setenv ("AWS_ACCESS_KEY_ID", "K", 1);
  setenv ("AWS_SECRET_ACCESS_KEY", "S", 1);
  c = s3_config_load ("s3://bkt.with.dots/p");
  assert_non_null (c);
  assert_string_equal (c->region, "us-east-1");
  /* A dotted bucket cannot match the certificate's wildcard. */
  assert_true (c->path_style);
  assert_string_equal (c->endpoint, "https://s3.us-east-1.amazonaws.com");
  s3_config_free (c);
  setenv ("AWS_ENDPOINT_URL", "ftp://x", 1);
  assert_null (s3_config_load ("s3://bkt/p"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_locations),
    cmocka_unit_test_setup_teardown (test_default_profile, setup, teardown),
    cmocka_unit_test_setup_teardown (test_named_profile, setup, teardown),
    cmocka_unit_test_setup_teardown (test_env_wins, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
