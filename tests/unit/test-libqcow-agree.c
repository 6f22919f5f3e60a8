/* libqcow (libyal) as a second, independent reader: on qcow2 images
 * without zero clusters, qbak's and libqcow's readings of every guest byte
 * agree.
 *
 * The images avoid what libqcow 20201213 gets wrong or lacks: no zero
 * clusters (it ignores the v3 zero flag), no zstd, no extended
 * L2.  They do have plain and compressed clusters (some compressed ones
 * partly rewritten), unallocated gaps, partial-cluster writes and data in
 * the last cluster.  The fixture's preconditions are checked with
 * qemu-img, so a change in QEMU cannot quietly weaken the test. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <libqcow.h>

#include "qbak.h"
#include "helpers.h"

#define KiB 1024ULL
#define MiB (1024ULL * KiB)
#define DISK_SIZE (8 * MiB)

#define fixture pattern_fixture

static int
setup (void **state)
{
  return pattern_fixture_setup (state, 21);
}

static int
teardown (void **state)
{
  return pattern_fixture_teardown (state);
}

/* Several patterns, compressed clusters (text compresses; random data
 * falls back to a plain cluster), a compressed cluster partly rewritten
 * (COW through decompression), unallocated gaps, data in the last
 * cluster.  No zero writes and no discards: no zero clusters. */
static void
build_image (struct fixture *fx, const char *create_opts)
{
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -o %s img.qcow2 %llu",
           fx->dir, create_opts, (unsigned long long) DISK_SIZE);
  test_sh ("cd '%s' && qemu-io -f qcow2 "
           "-c 'write -s rand.bin 0 64k' "
           "-c 'write -s text.bin 100k 30k' "
           "-c 'write -P 0x5a 1M 200k' "
           "-c 'write -P 0xa5 1300k 1' "
           "-c 'write -c -s text.bin 2M 64k' "
           "-c 'write -c -P 0x33 2112k 64k' "
           "-c 'write -c -s rand.bin 2176k 64k' "
           "-c 'write -c -s text.bin 3M 64k' "
           "-c 'write -P 0x44 3077k 3k' "
           "-c 'write -c -P 0x66 5M 64k' "
           "-c 'write -s rand.bin 8188k 4k' "
           "img.qcow2", fx->dir);
  /* Preconditions: consistent, some compressed clusters, and no zero
   * cluster (present, zero and no data; "zero": true with "data": true
   * is only a hole in the host file under a data cluster). */
  test_sh ("cd '%s' && qemu-img check -q img.qcow2", fx->dir);
  test_sh ("cd '%s' && qemu-img check img.qcow2 | "
           "grep -q '[1-9][0-9]*\\.[0-9]*%% compressed clusters'", fx->dir);
  test_sh ("cd '%s' && ! qemu-img map --output=json img.qcow2 | "
           "grep -q '\"present\": true, \"zero\": true, \"data\": false'",
           fx->dir);
}

static void
fail_libqcow (const char *what, libqcow_error_t *err)
{
  char buf[1024] = "";
  if (err) {
    libqcow_error_sprint (err, buf, sizeof buf);
    libqcow_error_free (&err);
  }
  fail_msg ("libqcow: %s: %s", what, buf);
}

/* All guest bytes of PATH as libqcow reads them; malloc'ed. */
static uint8_t *
read_with_libqcow (const char *path, uint64_t size)
{
  libqcow_file_t *f = NULL;
  libqcow_error_t *err = NULL;
  if (libqcow_file_initialize (&f, &err) != 1)
    fail_libqcow ("initialize", err);
  if (libqcow_file_open (f, path, LIBQCOW_OPEN_READ, &err) != 1)
    fail_libqcow (path, err);
  size64_t media = 0;
  if (libqcow_file_get_media_size (f, &media, &err) != 1)
    fail_libqcow ("media size", err);
  assert_int_equal (media, size);
  uint8_t *buf = malloc (size);
  assert_non_null (buf);
  for (uint64_t off = 0; off < size; ) {
    size_t n = size - off < 1 * MiB ? (size_t) (size - off) : 1 * MiB;
    ssize_t r = libqcow_file_read_buffer_at_offset (f, buf + off, n,
                                                    (off64_t) off, &err);
    if (r <= 0)
      fail_libqcow ("read", err);
    off += (uint64_t) r;
  }
  if (libqcow_file_close (f, &err) != 0)
    fail_libqcow ("close", err);
  libqcow_file_free (&f, NULL);
  return buf;
}

static void
check_agree (struct fixture *fx, uint32_t want_version)
{
  char path[TEST_PATH_MAX];
  test_path (path, fx->dir, "img.qcow2");
  struct qbak_image *img = qbak_image_open (path, QBAK_OPEN_READ);
  if (!img)
    fail_msg ("qbak_image_open: %s", qbak_get_error ());
  struct qbak_image_info info;
  qbak_image_info_init (&info);
  assert_int_equal (qbak_image_get_info (img, &info), 0);
  assert_string_equal (info.format, "qcow2");
  assert_int_equal (info.qcow2_version, want_version);
  assert_int_equal (info.virtual_size, DISK_SIZE);
  assert_false (info.extended_l2);

  uint8_t *theirs = read_with_libqcow (path, DISK_SIZE);
  int r = test_compare_pread (img, theirs, DISK_SIZE, 1 * MiB,
                              "qbak vs libqcow");
  if (r == 0)
    r = test_compare_pread (img, theirs, DISK_SIZE, 77777, "qbak vs libqcow");
  /* A sanity check that libqcow read the data at all. */
  bool sane = theirs[1 * MiB] == 0x5a && theirs[1300 * KiB] == 0xa5;
  free (theirs);
  qbak_image_close (img);
  if (r < 0)
    fail_msg ("%s", test_compare_msg);
  assert_true (sane);
}

static void
test_qcow2_v3_agrees_with_libqcow (void **state)
{
  struct fixture *fx = *state;
  build_image (fx, "compat=1.1,cluster_size=64k,compression_type=zlib,"
               "extended_l2=off");
  check_agree (fx, 3);
}

static void
test_qcow2_v2_agrees_with_libqcow (void **state)
{
  struct fixture *fx = *state;
  build_image (fx, "compat=0.10,cluster_size=64k");
  check_agree (fx, 2);
}

#define T(f) cmocka_unit_test_setup_teardown (f, setup, teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_qcow2_v3_agrees_with_libqcow),
    T (test_qcow2_v2_agrees_with_libqcow),
  };
  int r = cmocka_run_group_tests (tests, NULL, NULL);
  qbak_clear_error ();
  return r;
}
