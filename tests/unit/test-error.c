/* Unit tests for the error API (common/error.c and its public face in
 * include/qbak.h): one complete message per thread, its status class and
 * errno, and the errors of opening things that are not images. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/error.h"
#include "qbak.h"
#include "helpers.h"

#define ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))

static bool
starts_with (const char *s, const char *prefix)
{
  return strncmp (s, prefix, strlen (prefix)) == 0;
}

static void
test_message_without_errno (void **state)
{
  (void) state;
  qbak_internal_error (STATUS_INVALID, 0, "%s: bitmap '%s': %s",
                       "a.qcow2", "b0", "reserved bits set");
  assert_string_equal (qbak_get_error (),
                       "a.qcow2: bitmap 'b0': reserved bits set");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_int_equal (qbak_get_errno (), 0);
}

/* ERRNUM's strerror is appended after ": " and kept for qbak_get_errno. */
static void
test_message_with_errno (void **state)
{
  (void) state;
  static const int errnums[] = { ENOENT, EIO, ENOSPC, EACCES };
  for (size_t i = 0; i < ARRAY_SIZE (errnums); i++) {
    char want[256];
    snprintf (want, sizeof want, "x.qcow2: read at offset 512: %s",
              strerror (errnums[i]));
    qbak_internal_error (STATUS_IO, errnums[i],
                         "x.qcow2: read at offset %d", 512);
    assert_string_equal (qbak_get_error (), want);
    assert_int_equal (qbak_get_errno (), errnums[i]);
    assert_int_equal (qbak_get_status (), QBAK_STATUS_IO);
  }
}

static void
test_errno_preserved (void **state)
{
  (void) state;
  errno = EXDEV;
  qbak_internal_error (STATUS_IO, ENOENT, "something");
  assert_int_equal (errno, EXDEV);
  errno = EXDEV;
  qbak_internal_error_prefix ("ctx");
  assert_int_equal (errno, EXDEV);
}

/* The short forms set the documented status class. */
static void
test_status_mapping (void **state)
{
  (void) state;
  qbak_clear_error ();
  set_io_error (EIO, "io %d", 1);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_IO);
  assert_int_equal (qbak_get_errno (), EIO);
  assert_true (starts_with (qbak_get_error (), "io 1: "));

  set_invalid ("bad %s", "header");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_int_equal (qbak_get_errno (), 0);
  assert_string_equal (qbak_get_error (), "bad header");

  set_usage_error ("bad option '%s'", "--x");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_USAGE);
  assert_string_equal (qbak_get_error (), "bad option '--x'");

  set_busy (EAGAIN, "a.qcow2: locked");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_BUSY);
  assert_int_equal (qbak_get_errno (), EAGAIN);
  assert_true (starts_with (qbak_get_error (), "a.qcow2: locked: "));

  set_nomem ();
  assert_int_equal (qbak_get_status (), QBAK_STATUS_IO);
  assert_int_equal (qbak_get_errno (), ENOMEM);
  assert_true (starts_with (qbak_get_error (), "out of memory"));

  qbak_internal_error (STATUS_MISMATCH, 0, "differ");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_MISMATCH);
  qbak_internal_error (STATUS_CANCELLED, EINTR, "interrupted");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_CANCELLED);
  assert_int_equal (qbak_get_errno (), EINTR);
}

/* Context added on the way up goes in front; status and errno stay. */
static void
test_prefix_keeps_status_and_errno (void **state)
{
  (void) state;
  set_io_error (ENOSPC, "write at offset %d", 4096);
  qbak_internal_error_prefix ("%s", "out.qcow2");
  qbak_internal_error_prefix ("backup");
  char want[256];
  snprintf (want, sizeof want, "backup: out.qcow2: write at offset 4096: %s",
            strerror (ENOSPC));
  assert_string_equal (qbak_get_error (), want);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_IO);
  assert_int_equal (qbak_get_errno (), ENOSPC);
}

/* A later error replaces the earlier one whole (no stale errno). */
static void
test_error_replaces_previous (void **state)
{
  (void) state;
  set_io_error (EIO, "first");
  set_invalid ("second");
  assert_string_equal (qbak_get_error (), "second");
  assert_int_equal (qbak_get_errno (), 0);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
}

static void
test_clear_error (void **state)
{
  (void) state;
  set_io_error (EIO, "something");
  qbak_clear_error ();
  assert_int_equal (qbak_get_errno (), 0);
  assert_null (strstr (qbak_get_error (), "something"));
  assert_non_null (qbak_get_error ());
}

/* Messages are per thread: an error in another thread is not seen here. */
static void *
thread_sets_error (void *arg)
{
  (void) arg;
  set_io_error (EPIPE, "other thread");
  char *msg = strdup (qbak_get_error ());
  qbak_clear_error ();   /* the thread's message would leak otherwise */
  return msg;
}

static void
test_error_is_per_thread (void **state)
{
  (void) state;
  set_invalid ("main thread");
  pthread_t t;
  assert_int_equal (pthread_create (&t, NULL, thread_sets_error, NULL), 0);
  void *other = NULL;
  assert_int_equal (pthread_join (t, &other), 0);
  assert_non_null (other);
  assert_true (starts_with (other, "other thread: "));
  free (other);
  assert_string_equal (qbak_get_error (), "main thread");
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_int_equal (qbak_get_errno (), 0);
}

/* Cleanup between an error and its report keeps the error whole: its
 * message, status, errno, hint and context; a suffix says what cleanup
 * could not undo. */
static void
test_save_put_back_suffix (void **state)
{
  (void) state;
  const char *outer = error_enter ("qbak_test_call");
  set_io_error (EIO, "a.qcow2: write");
  error_set_hint (HINT_NONE);
  struct qbak_saved_error err;
  qbak_error_save (&err);
  set_invalid ("cleanup failed");
  qbak_error_put_back (&err, "fallback");
  error_leave (outer);
  qbak_internal_error_suffix ("; and %s could not be put back", "b.qcow2");
  char want[256];
  snprintf (want, sizeof want, "a.qcow2: write: %s; and b.qcow2 could not "
            "be put back", strerror (EIO));
  assert_string_equal (qbak_get_error (), want);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_IO);
  assert_int_equal (qbak_get_errno (), EIO);
  assert_string_equal (qbak_get_error_context (), "qbak_test_call");
}

/* The context names the public call that failed, the outer one when a
 * public call makes another; no call, no context. */
static void
test_context (void **state)
{
  (void) state;
  set_invalid ("outside any call");
  assert_null (qbak_get_error_context ());

  const char *outer = error_enter ("qbak_outer");
  const char *inner = error_enter ("qbak_inner");
  set_invalid ("inside");
  error_leave (inner);
  assert_string_equal (qbak_get_error_context (), "qbak_outer");
  error_leave (outer);
  /* The error keeps its context after the call returned... */
  assert_string_equal (qbak_get_error_context (), "qbak_outer");
  /* ...not a later one set outside. */
  set_invalid ("later");
  assert_null (qbak_get_error_context ());
  qbak_internal_error_prefix ("ctx");
  assert_null (qbak_get_error_context ());
  qbak_clear_error ();
  assert_null (qbak_get_error_context ());
}

/* ---- Errors of qbak_image_open --------------------------------------- */

static void
test_open_missing_file (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  test_tmpdir_create (dir);
  test_path (path, dir, "no-such-image.qcow2");
  struct qbak_image *img = qbak_image_open (path, QBAK_OPEN_READ);
  assert_null (img);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_int_equal (qbak_get_errno (), ENOENT);
  assert_non_null (strstr (qbak_get_error (), path));
  assert_true (starts_with (qbak_get_error (), path));
  assert_non_null (strstr (qbak_get_error (), strerror (ENOENT)));
  /* The context is beside the message, never in it. */
  assert_string_equal (qbak_get_error_context (), "qbak_image_open");
  assert_null (strstr (qbak_get_error (), "qbak_image_open"));
  test_rmtree (dir);
}

static void
test_open_directory (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX];
  test_tmpdir_create (dir);
  struct qbak_image *img = qbak_image_open (dir, QBAK_OPEN_READ);
  assert_null (img);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_true (starts_with (qbak_get_error (), dir));
  assert_non_null (strstr (qbak_get_error (), "directory"));
  test_rmtree (dir);
}

/* A qcow2 image whose backing file is missing: the message names the
 * image and the backing file, and keeps the status of the missing file. */
static void
test_open_missing_backing (void **state)
{
  (void) state;
  test_require_qemu ();
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  test_tmpdir_create (dir);
  test_path (path, dir, "top.qcow2");
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -u -b gone.qcow2 "
           "-F qcow2 top.qcow2 1M", dir);
  struct qbak_image *img = qbak_image_open (path, QBAK_OPEN_READ);
  assert_null (img);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_int_equal (qbak_get_errno (), ENOENT);
  assert_true (starts_with (qbak_get_error (), path));
  assert_non_null (strstr (qbak_get_error (), "gone.qcow2"));
  test_rmtree (dir);
}

/* A scratch folder DIR holding a 64 KiB raw disk at PATH (both
 * TEST_PATH_MAX bytes). */
static void
make_raw_disk (char *dir, char *path)
{
  test_tmpdir_create (dir);
  test_path (path, dir, "disk.raw");
  int fd = open (path, O_WRONLY | O_CREAT | O_EXCL, 0644);
  assert_true (fd >= 0);
  assert_int_equal (ftruncate (fd, 64 * 1024), 0);
  close (fd);
}

/* A read past the virtual size is a usage error naming the image. */
static void
test_pread_beyond_size (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  make_raw_disk (dir, path);
  struct qbak_image *img = qbak_image_open (path, QBAK_OPEN_READ);
  assert_non_null (img);
  static const struct { uint64_t count, offset; } cases[] = {
    { 1, 64 * 1024 }, { 2, 64 * 1024 - 1 }, { 64 * 1024 + 1, 0 },
    { 1, UINT64_MAX }, { UINT64_MAX, 1 },
  };
  char buf[16];
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    qbak_clear_error ();
    assert_int_equal (qbak_image_pread (img, buf, cases[i].count,
                                        cases[i].offset), -1);
    assert_int_equal (qbak_get_status (), QBAK_STATUS_USAGE);
    assert_true (starts_with (qbak_get_error (), path));
    assert_string_equal (qbak_get_error_context (), "qbak_image_pread");
  }
  /* The last byte is fine. */
  assert_int_equal (qbak_image_pread (img, buf, 1, 64 * 1024 - 1), 0);
  qbak_image_close (img);
  test_rmtree (dir);
}

/* A caller built against an older header passes a smaller structure: the
 * library writes none of its bytes past that size.  A size of 0 (never
 * set) or one larger than the library knows is refused. */
static void
test_struct_sizes (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  make_raw_disk (dir, path);
  struct qbak_image *img = qbak_image_open (path, QBAK_OPEN_READ);
  assert_non_null (img);

  struct qbak_image_info info;
  qbak_image_info_init (&info);
  assert_int_equal (info.size, sizeof info);
  assert_int_equal (qbak_image_get_info (img, &info), 0);
  assert_int_equal (info.size, sizeof info);
  assert_int_equal (info.virtual_size, 64 * 1024);
  assert_string_equal (info.format, "raw");
  assert_int_equal (info.data_file_mode, QBAK_DATA_FILE_NONE);

  /* An "older" caller that knows the fields up to virtual_size. */
  size_t old = offsetof (struct qbak_image_info, virtual_size) +
               sizeof info.virtual_size;
  memset (&info, 0xa5, sizeof info);
  info.size = old;
  assert_int_equal (qbak_image_get_info (img, &info), 0);
  assert_int_equal (info.size, old);
  assert_int_equal (info.virtual_size, 64 * 1024);
  for (size_t i = old; i < sizeof info; i++)
    assert_int_equal (((unsigned char *) &info)[i], 0xa5);

  static const size_t bad[] = { 0, 1, sizeof info + 1, SIZE_MAX };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++) {
    info.size = bad[i];
    assert_int_equal (qbak_image_get_info (img, &info), -1);
    assert_int_equal (qbak_get_status (), QBAK_STATUS_USAGE);
    assert_string_equal (qbak_get_error_context (), "qbak_image_get_info");
  }

  /* A raw image has no backing file: 0, not an error. */
  struct qbak_image *b = img;
  qbak_clear_error ();
  assert_int_equal (qbak_image_backing (img, &b), 0);
  assert_null (b);

  /* Operations: the array's stride is the first one's size. */
  struct qbak_bitmap_op op = { .kind = QBAK_BITMAP_ADD, .name = "x" };
  assert_int_equal (qbak_bitmap_apply (&img, 1, &op, 1), -1);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_USAGE);
  assert_string_equal (qbak_get_error_context (), "qbak_bitmap_apply");

  qbak_image_close (img);
  test_rmtree (dir);
}

/* A second writer of an image is refused as locked: the message says what
 * is wrong and names no flag of any program; the hint says what to do. */
static void
test_lock_hint (void **state)
{
  (void) state;
  char dir[TEST_PATH_MAX], path[TEST_PATH_MAX];
  make_raw_disk (dir, path);
  struct qbak_image *first = qbak_image_open (path, QBAK_OPEN_WRITE);
  assert_non_null (first);
  assert_null (qbak_image_open (path, QBAK_OPEN_WRITE));
  assert_int_equal (qbak_get_status (), QBAK_STATUS_BUSY);
  assert_int_equal (qbak_get_error_hint (), QBAK_HINT_IMAGE_PERMISSION_HELD);
  assert_string_equal (qbak_get_error_context (), "qbak_image_open");
  assert_true (starts_with (qbak_get_error (), path));
  assert_non_null (strstr (qbak_get_error (), "image is locked"));
  assert_null (strstr (qbak_get_error (), "-U"));
  assert_null (strstr (qbak_get_error (), "force-share"));
  qbak_image_close (first);
  test_rmtree (dir);
}

/* A hint's subjects name what it is about; a new error drops them, a
 * prefix, a suffix and a save/put-back keep them, and a name too long to
 * keep is not half kept. */
static void
test_hint_subjects (void **state)
{
  (void) state;
  set_invalid ("a.qcow2: bitmap 'b0' is in use");
  error_set_hint_about (HINT_BITMAP_IN_USE, "a.qcow2", "b0");
  assert_int_equal (qbak_get_error_hint (), QBAK_HINT_BITMAP_IN_USE);
  assert_string_equal (qbak_get_error_hint_subject (0), "a.qcow2");
  assert_string_equal (qbak_get_error_hint_subject (1), "b0");
  assert_null (qbak_get_error_hint_subject (2));
  qbak_internal_error_prefix ("copy");
  qbak_internal_error_suffix ("; more");
  struct qbak_saved_error saved;
  qbak_error_save (&saved);
  set_io_error (EIO, "cleanup failed");
  assert_null (qbak_get_error_hint_subject (0));
  assert_int_equal (qbak_get_error_hint (), QBAK_HINT_NONE);
  qbak_error_put_back (&saved, "lost");
  assert_string_equal (qbak_get_error (),
                       "copy: a.qcow2: bitmap 'b0' is in use; more");
  assert_int_equal (qbak_get_error_hint (), QBAK_HINT_BITMAP_IN_USE);
  assert_string_equal (qbak_get_error_hint_subject (0), "a.qcow2");
  assert_string_equal (qbak_get_error_hint_subject (1), "b0");

  char *longname = malloc (ERROR_SUBJECT_MAX + 1);
  assert_non_null (longname);
  memset (longname, 'x', ERROR_SUBJECT_MAX);
  longname[ERROR_SUBJECT_MAX] = '\0';
  error_set_hint_about (HINT_BITMAP_IN_USE, longname, "b0");
  assert_null (qbak_get_error_hint_subject (0));
  assert_string_equal (qbak_get_error_hint_subject (1), "b0");
  free (longname);
}

static void
test_close_null (void **state)
{
  (void) state;
  qbak_image_close (NULL);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_message_without_errno),
    cmocka_unit_test (test_message_with_errno),
    cmocka_unit_test (test_errno_preserved),
    cmocka_unit_test (test_status_mapping),
    cmocka_unit_test (test_prefix_keeps_status_and_errno),
    cmocka_unit_test (test_error_replaces_previous),
    cmocka_unit_test (test_clear_error),
    cmocka_unit_test (test_error_is_per_thread),
    cmocka_unit_test (test_save_put_back_suffix),
    cmocka_unit_test (test_context),
    cmocka_unit_test (test_open_missing_file),
    cmocka_unit_test (test_open_directory),
    cmocka_unit_test (test_open_missing_backing),
    cmocka_unit_test (test_pread_beyond_size),
    cmocka_unit_test (test_struct_sizes),
    cmocka_unit_test (test_lock_hint),
    cmocka_unit_test (test_hint_subjects),
    cmocka_unit_test (test_close_null),
  };
  int r = cmocka_run_group_tests (tests, NULL, NULL);
  qbak_clear_error ();   /* free the thread's message for leak checkers */
  return r;
}
