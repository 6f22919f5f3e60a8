/* libcurl loaded at run time (common/s3-curl.c): the table's functions
 * are libcurl's and work when called through it (checked against what
 * libcurl's documentation gives for fixed inputs), one load serves every
 * caller, and a library that cannot be loaded is one usage error naming
 * the location.  The load happens once per process, so each case that
 * loads runs in a child of its own; the failure needs QBAK_S3_LIBCURL, a
 * knob of test builds (QBAK_FAILPOINTS).  No service is needed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/s3-curl.h"

/* Run CHILD in a forked process; its exit status (0: passed), after a
 * message on stderr for anything else. */
static int
in_child (int (*child) (void))
{
  fflush (NULL);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    _exit (child ());
  int st;
  assert_int_equal (waitpid (pid, &st, 0), pid);
  assert_true (WIFEXITED (st));
  return WEXITSTATUS (st);
}

#define CHECK(cond) do { \
    if (!(cond)) { \
      fprintf (stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
      return 1; \
    } \
  } while (0)

static int
child_calls (void)
{
  unsetenv ("QBAK_S3_LIBCURL");
  const struct s3_curl *curl = s3_curl_load ("s3://bucket/p");
  CHECK (curl);
  /* One load for every caller. */
  CHECK (s3_curl_load ("s3://other") == curl);
  CHECK (s3_curl () == curl);

  /* The variadic ones with an int, a pointer and a long argument. */
  CURL *h = curl->easy_init ();
  CHECK (h);
  CHECK (curl->easy_setopt (h, CURLOPT_URL, "http://127.0.0.1:1/") ==
         CURLE_OK);
  CHECK (curl->easy_setopt (h, CURLOPT_CONNECTTIMEOUT, 5L) == CURLE_OK);
  long code = -1;
  CHECK (curl->easy_getinfo (h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK);
  CHECK (code == 0);            /* no transfer yet */
  char *e = curl->easy_escape (h, "a b/~é", 0);
  CHECK (e && strcmp (e, "a%20b%2F~%C3%A9") == 0);
  curl->free (e);
  curl->easy_reset (h);
  curl->easy_cleanup (h);

  /* RFC 1123 and RFC 850 dates, as S3's Date and Last-Modified. */
  CHECK (curl->getdate ("Sun, 06 Nov 1994 08:49:37 GMT", NULL) ==
         784111777);
  CHECK (curl->getdate ("Sunday, 06-Nov-94 08:49:37 GMT", NULL) ==
         784111777);
  CHECK (curl->getdate ("not a date", NULL) == -1);

  struct curl_slist *l = curl->slist_append (NULL, "A: 1");
  CHECK (l && (l = curl->slist_append (l, "B: 2")));
  CHECK (strcmp (l->data, "A: 1") == 0 && strcmp (l->next->data, "B: 2") == 0
         && !l->next->next);
  curl->slist_free_all (l);

  CHECK (strcmp (curl->easy_strerror (CURLE_COULDNT_CONNECT),
                 "Couldn't connect to server") == 0);
  return 0;
}

static void
test_calls_through_the_table (void **state)
{
  (void) state;
  assert_int_equal (in_child (child_calls), 0);
}

static int
child_missing (void)
{
  setenv ("QBAK_S3_LIBCURL", "libqbak-no-such-curl.so.4", 1);
  for (int i = 0; i < 2; i++) {
    /* The second call fails the same way, naming its own location. */
    const char *loc = i ? "s3://b2" : "s3://bucket/a/b";
    CHECK (!s3_curl_load (loc));
    CHECK (error_get_status () == STATUS_USAGE);
    CHECK (error_get_errno () == ELIBACC);
    char want[256];
    snprintf (want, sizeof want, "%s: S3 repositories need libcurl, which "
              "could not be loaded (libqbak-no-such-curl.so.4: ", loc);
    const char *msg = error_get_message ();
    CHECK (strncmp (msg, want, strlen (want)) == 0);
    const char *tail = "); install libcurl4";
    CHECK (strlen (msg) > strlen (tail) &&
           strcmp (msg + strlen (msg) - strlen (tail), tail) == 0);
    CHECK (!strchr (msg, '\n'));
  }
  return 0;
}

static void
test_missing_library (void **state)
{
  (void) state;
  assert_int_equal (in_child (child_missing), 0);
}

static int
child_fallback (void)
{
  setenv ("QBAK_S3_LIBCURL", "libqbak-no-such-curl.so.4::libcurl.so.4", 1);
  const struct s3_curl *curl = s3_curl_load ("s3://bucket");
  CHECK (curl);
  CURL *h = curl->easy_init ();
  CHECK (h);
  curl->easy_cleanup (h);
  return 0;
}

static void
test_fallback (void **state)
{
  (void) state;
  assert_int_equal (in_child (child_fallback), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_calls_through_the_table),
    cmocka_unit_test (test_missing_library),
    cmocka_unit_test (test_fallback),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
