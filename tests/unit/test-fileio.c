/* Unit tests for common/fileio.c: a failed flush is never retried.  Once
 * a flush of a file failed, every later flush of it fails too, with the
 * same errno, and fsync is not called again (after a failed write-back
 * Linux may have dropped the dirty pages, so a second fsync that succeeds
 * would prove nothing).
 *
 * The failure comes from the fail points (common/failpoint.c), which read
 * QBAK_FAILPOINT once, at the first I/O: main sets it before any. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/error.h"
#include "common/fileio.h"
#include "qbak.h"
#include "helpers.h"

/* The first flush of the process fails with EIO; the later ones are real. */
static const char failpoints[] = "flush:1:eio";

static void
test_failed_flush_is_final (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], bad[TEST_PATH_MAX], good[TEST_PATH_MAX];
  char want[TEST_PATH_MAX + 64];
  test_tmpdir_create (dir);
  test_path (bad, dir, "poisoned");
  test_path (good, dir, "healthy");

  struct qbak_file *f = qbak_file_create (bad);
  assert_non_null (f);
  assert_int_equal (qbak_file_pwrite (f, "data", 4, 0), 0);

  /* Flush 1: the fail point. */
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (error_get_status (), STATUS_IO);
  assert_int_equal (error_get_errno (), EIO);
  snprintf (want, sizeof want, "%s: flush: %s", bad, strerror (EIO));
  assert_string_equal (error_get_message (), want);

  /* A retry fails the same way, also after new writes, although fsync
   * itself would now succeed. */
  error_clear ();
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (error_get_errno (), EIO);
  assert_string_equal (error_get_message (), want);
  assert_int_equal (qbak_file_pwrite (f, "more", 4, 4), 0);
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (error_get_errno (), EIO);
  assert_int_equal (f->flush_failed, EIO);

  /* Another file is not affected: its flush, the process's next one
   * that reaches the fail points, really flushes. */
  struct qbak_file *g = qbak_file_create (good);
  assert_non_null (g);
  assert_int_equal (qbak_file_pwrite (g, "data", 4, 0), 0);
  assert_int_equal (qbak_file_flush (g), 0);
  assert_int_equal (qbak_file_flush (g), 0);

  qbak_file_close (f);
  qbak_file_close (g);
  error_clear ();
  test_rmtree (dir);
}

int
main (void)
{
  /* Before the first I/O of the process: the fail points read it once. */
  if (setenv ("QBAK_FAILPOINT", failpoints, 1) < 0) {
    perror ("setenv");
    return 1;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_failed_flush_is_final),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
