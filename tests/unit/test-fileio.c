/* Unit tests for common/fileio.c: a failed flush is never retried.  Once
 * a flush of a file failed, every later flush of it fails too, with the
 * same errno, and fsync is not called again (after a failed write-back
 * Linux may have dropped the dirty pages, so a second fsync that succeeds
 * would prove nothing), until every byte written since the last good
 * flush was written again.
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

/* Flushes 1, 5 and 7 of the process that reach the fail points fail with
 * EIO (one per test, which run in order); the others are real.  A flush
 * refused for a poisoned file does not reach them. */
static const char failpoints[] = "flush:1:eio,flush:5:eio,flush:7:eio";

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

  /* Written again, every byte since the last good flush (here: since
   * the file was made) is in the page cache once more: a flush now makes
   * them durable and vouches for nothing older. */
  assert_int_equal (qbak_file_pwrite (f, "datamore", 8, 0), 0);
  assert_int_equal (qbak_file_flush (f), 0);
  assert_int_equal (f->flush_failed, 0);

  /* Another file is not affected: its flushes (3 and 4) really flush. */
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

/* Only a rewrite of every range written since the last good flush lifts
 * the poison, whatever the order and the pieces. */
static void
test_rewrite_must_cover_everything (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  char buf[300] = { 0 };
  test_tmpdir_create (dir);
  test_path (path, dir, "pieces");
  struct qbak_file *f = qbak_file_create (path);
  assert_non_null (f);
  assert_int_equal (qbak_file_pwrite (f, buf, 100, 0), 0);
  assert_int_equal (qbak_file_pwrite (f, buf, 100, 200), 0);
  assert_int_equal (qbak_file_flush (f), -1);          /* flush 5 */

  /* A hole in the middle of a range, then the rest around it. */
  assert_int_equal (qbak_file_pwrite (f, buf, 10, 40), 0);
  assert_int_equal (qbak_file_pwrite (f, buf, 100, 200), 0);
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (qbak_file_pwrite (f, buf, 40, 0), 0);
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (qbak_file_pwrite (f, buf, 51, 49), 0);
  assert_int_equal (qbak_file_flush (f), 0);           /* flush 6 */
  qbak_file_close (f);
  error_clear ();
  test_rmtree (dir);
}

/* A truncate cannot be written again: a failure after one is final. */
static void
test_truncate_poisons_for_good (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  test_tmpdir_create (dir);
  test_path (path, dir, "truncated");
  struct qbak_file *f = qbak_file_create (path);
  assert_non_null (f);
  assert_int_equal (qbak_file_pwrite (f, "data", 4, 0), 0);
  assert_int_equal (qbak_file_truncate (f, 2), 0);
  assert_int_equal (qbak_file_flush (f), -1);          /* flush 7 */
  assert_int_equal (qbak_file_pwrite (f, "data", 4, 0), 0);
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (error_get_errno (), EIO);
  qbak_file_close (f);
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
    cmocka_unit_test (test_rewrite_must_cover_everything),
    cmocka_unit_test (test_truncate_poisons_for_good),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
